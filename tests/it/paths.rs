//! Where a run writes, and how it reads: the sandbox's scratch state is
//! private and gone however the run ends, and the input is opened and read
//! once, so a pipe or a FIFO is read whole.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    lead_ids, leads_with_email, lsq, mode, read_report, run, sample, wait_until, with_email,
    RefusedPort,
};

/// The entries of the scratch `TMPDIR` a run was given.
fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_scratch_state_is_private_and_gone_after_sigint_and_after_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let input = leads_with_email(dir.path(), 3);

    // One call every 10 s: the run is still going when it is interrupted.
    let mut child = lsq(dir.path())
        .arg("run")
        .arg(&input)
        .args(["--sandbox", "--rate", "1/10s", "--report", "report.csv"])
        .env("TMPDIR", &tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let report = dir.path().join("report.csv");
    wait_until("the first row", || {
        std::fs::read_to_string(&report).is_ok_and(|r| r.lines().count() >= 2)
    })
    .await;
    let scratch = entries(&tmp);
    let inside: Vec<_> = scratch
        .iter()
        .filter(|p| p.is_dir())
        .flat_map(|p| entries(p))
        .collect();
    let private = scratch.len() == 1
        && scratch[0].is_dir()
        && mode(&scratch[0]) == 0o700
        && inside
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "sqlite"));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert!(private, "not one private directory: {scratch:?} {inside:?}");
    assert_eq!(status.code(), Some(130));
    assert_eq!(entries(&tmp), Vec::<PathBuf>::new(), "left after Ctrl-C");

    // Aborted before the first call: the SMTP server cannot be reached.
    let refused = RefusedPort::bind();
    let mut cmd = lsq(dir.path());
    cmd.arg("run")
        .arg(&input)
        .args(["--sandbox", "--report", "aborted.csv", "--quiet"])
        .env("TMPDIR", &tmp);
    let out = run(with_email(
        &mut cmd,
        &format!("smtp://{}", refused.addr),
        &sample("templates"),
    ));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(entries(&tmp), Vec::<PathBuf>::new(), "left after an abort");
}

/// Runs `cmd` and kills it if it has not finished within a minute: an
/// input read twice hangs instead of failing.
fn output_within_a_minute(mut cmd: Command) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the run hung; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    run_output(child)
}

fn run_output(child: std::process::Child) -> std::process::Output {
    let out = child.wait_with_output().unwrap();
    eprintln!("--- stderr\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A dry run of `input` planning for the sandbox's first portal, its plan
/// in `dir/plan.csv`.
fn plan(dir: &Path, input: &Path) -> Command {
    let mut cmd = lsq(dir);
    cmd.arg("run")
        .arg(input)
        .args(["--dry-run", "--quiet", "--report", "plan.csv"])
        .args(["--portal-id", lsq_dispatch::sandbox::DEFAULT_PORTAL_ID]);
    cmd
}

/// The text of a CSV of `n` leads, about 37 bytes a row.
fn csv_of(n: usize) -> String {
    format!("LeadId\n{}\n", lead_ids(n).join("\n"))
}

#[test]
fn a_fifo_input_is_read_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("leads.fifo");
    let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `name` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let text = csv_of(10_000);
    let writer = {
        let (fifo, text) = (fifo.clone(), text.clone());
        std::thread::spawn(move || {
            // Errors are the run's to report: a reader that closes early
            // ends this write with a broken pipe.
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) {
                let _ = f.write_all(text.as_bytes());
            }
        })
    };
    let out = output_within_a_minute(plan(dir.path(), &fifo));
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let rows = read_report(&dir.path().join("plan.csv"));
    assert_eq!(rows.len(), 10_000);
    assert!(rows.iter().all(|r| r["status"] == "planned"));
}

#[test]
fn piped_stdin_of_more_than_256_kb_loses_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let text = csv_of(20_000);
    assert!(text.len() > 512 * 1024);
    let mut cmd = plan(dir.path(), Path::new("/dev/stdin"));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let out = run_output(child);
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let rows = read_report(&dir.path().join("plan.csv"));
    assert_eq!(rows.len(), 20_000);
    assert_eq!(rows[0]["row"], "2");
    assert_eq!(rows[19_999]["row"], "20001");
}
