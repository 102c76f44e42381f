//! An API answer is read up to a cap and then refused: a server that
//! answers with a gigabyte costs the run a few hundred KiB, not gigabytes
//! (with fifty calls in flight, that would be the machine).

use std::io::Read as _;
use std::process::{Child, Output};

use super::{command, key_for};
use crate::support::hostile_server::{Answer, Body, HostileServer};
use crate::support::read_report;

const GIGABYTE: u64 = 1 << 30;

/// Waits for the run and returns its output and its peak resident memory in
/// bytes, as the kernel counted it (`wait4`'s `ru_maxrss`).
fn wait_with_peak_memory(mut child: Child) -> (Output, u64) {
    let pipe = |r: Option<Box<dyn std::io::Read + Send>>| {
        let mut r = r.unwrap();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).unwrap();
            buf
        })
    };
    let stdout = pipe(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = pipe(child.stderr.take().map(|p| Box::new(p) as _));
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 writes only
    // into the two locals it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4 reaps the run");
    let output = Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    eprintln!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Linux counts ru_maxrss in KiB.
    (output, usage.ru_maxrss as u64 * 1024)
}

/// The peak memory of the same one-lead run answered with an ordinary key,
/// measured now: what any run costs on this machine under its present load.
fn ordinary_peak() -> u64 {
    let server = HostileServer::start(key_for);
    let dir = tempfile::tempdir().unwrap();
    let child = command(&server, dir.path(), 1).spawn().unwrap();
    let (out, peak) = wait_with_peak_memory(child);
    assert_eq!(out.status.code(), Some(0), "the ordinary run");
    peak
}

/// Runs one lead against a server whose every answer is a 200 of one
/// gigabyte, announced or not, and checks the row failed on the cap. Its
/// peak memory may exceed an ordinary run's by less than half the answer:
/// an answer read whole would cost all of it, while the bound moves with
/// whatever the machine adds to every run.
fn refused(declared: bool) {
    let ordinary = ordinary_peak();
    let server = HostileServer::start(move |_| Answer {
        status: 200,
        headers: Vec::new(),
        body: Body::Stream {
            len: GIGABYTE,
            declared,
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let child = command(&server, dir.path(), 1).spawn().unwrap();
    let (out, peak) = wait_with_peak_memory(child);
    println!(
        "peak memory of a run refusing a 1 GiB answer ({}): {:.1} MB, of an ordinary run {:.1} MB",
        if declared {
            "with its Content-Length"
        } else {
            "streamed without a length"
        },
        peak as f64 / 1e6,
        ordinary as f64 / 1e6
    );
    assert!(
        peak < ordinary + GIGABYTE / 2,
        "peak memory {peak} bytes, an ordinary run's {ordinary}"
    );
    assert_eq!(out.status.code(), Some(3));
    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(rows[0]["status"], "failed");
    assert!(rows[0]["error"].contains("256 KiB"), "{rows:?}");
}

#[test]
fn a_gigabyte_answer_streamed_without_a_length_is_refused_in_little_memory() {
    refused(false);
}

#[test]
fn a_gigabyte_answer_announced_by_its_length_is_refused_in_little_memory() {
    refused(true);
}
