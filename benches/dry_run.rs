//! Dry-run benchmark: generates a CSV of 1,000,000 leads (GUID LeadIds, a
//! FirstName and an Email, with a few invalid rows and duplicates sprinkled
//! in), then times `lsq-dispatch run --dry-run` over it as a child process and
//! reads the child's peak RSS from `wait4`. Prints the median rows/s and the
//! highest peak RSS over the runs, next to the targets: at least 1,000,000
//! rows/s and at most 100 MB.
//!
//!     cargo bench --bench dry_run                        # 1,000,000 rows, 3 runs
//!     BENCH_ROWS=100000 BENCH_RUNS=1 cargo bench --bench dry_run
//!
//! The binary is the one cargo builds for the benchmark (release profile), run
//! with an environment holding only PATH and HOME so the machine's settings do
//! not change what is measured.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;

use common::{env_number, median};

const TARGET_ROWS_PER_SEC: f64 = 1_000_000.0;
const TARGET_RSS_MB: f64 = 100.0;

/// Every row gets this portal, so valid rows are planned rather than
/// reported as missing a PortalId.
const PORTAL_ID: &str = "c4e8a2f1-7b3d-4a96-8e15-2d9f0b6c7a31";

struct Figures {
    secs: f64,
    peak_rss_mb: f64,
    exit_code: i32,
}

/// A well-mixed 64-bit value from a counter, so the LeadIds look like real
/// random GUIDs to the de-duplication set, yet every run writes the same file.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A version-4-shaped GUID for lead `i`.
fn guid(i: u64) -> String {
    let a = splitmix64(2 * i);
    let b = splitmix64(2 * i + 1);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// Writes `rows` data rows and returns how many are invalid and duplicated.
/// One row in 100,000 has a malformed LeadId, one in 250,000 repeats an
/// earlier lead, and one in 1,000 is upper-case and braced, which the reader
/// normalises.
fn write_csv(path: &Path, rows: u64) -> (u64, u64) {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).expect("create the CSV"));
    writeln!(out, "LeadId,FirstName,Email").unwrap();
    let (mut invalid, mut duplicates) = (0, 0);
    for i in 0..rows {
        let lead = if i % 100_000 == 99_999 {
            invalid += 1;
            format!("LD-{i}")
        } else if i % 250_000 == 123_456 {
            duplicates += 1;
            guid(i - 1000)
        } else if i % 1000 == 500 {
            format!("{{{}}}", guid(i).to_uppercase())
        } else {
            guid(i)
        };
        writeln!(out, "{lead},Lead{i},lead{i}@example.com").unwrap();
    }
    out.flush().expect("write the CSV");
    (invalid, duplicates)
}

/// Runs one dry run and waits for it with `wait4`, which hands back the
/// child's resource usage; std's `Child::wait` would discard it.
fn once(bin: &str, csv: &Path, dir: &Path, run: u64) -> Figures {
    let report = dir.join(format!("report-{run}.csv"));
    let state = dir.join(format!("state-{run}.db"));
    let stderr = File::create(dir.join(format!("stderr-{run}.txt"))).unwrap();
    let mut command = Command::new(bin);
    command
        .arg("run")
        .arg(csv)
        .args(["--dry-run", "--quiet", "--portal-id", PORTAL_ID, "--report"])
        .arg(&report)
        .arg("--state")
        .arg(&state)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }

    let start = Instant::now();
    let child = command.spawn().expect("start lsq-dispatch");
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    let mut status = 0;
    // SAFETY: rusage is plain old data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped; both pointers are valid
    // for the call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(
        reaped,
        pid,
        "wait4 failed: {}",
        std::io::Error::last_os_error()
    );
    // The child is reaped; dropping the handle neither waits nor kills.
    drop(child);

    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // ru_maxrss is in KiB on Linux.
    let peak_rss_mb = usage.ru_maxrss as f64 / 1024.0;
    Figures {
        secs,
        peak_rss_mb,
        exit_code,
    }
}

/// Report rows by status, to check that the run really handled every row.
fn report_counts(path: &Path) -> (u64, u64, u64) {
    let file = BufReader::new(File::open(path).expect("the report exists"));
    let (mut planned, mut invalid, mut duplicate) = (0, 0, 0);
    for line in file.lines().skip(1) {
        let line = line.unwrap();
        match line.split(',').nth(3) {
            Some("planned") => planned += 1,
            Some("invalid") => invalid += 1,
            Some("duplicate") => duplicate += 1,
            _ => {}
        }
    }
    (planned, invalid, duplicate)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // should not spend a minute generating a million rows.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rows: u64 = env_number("BENCH_ROWS", 1_000_000);
    let runs: u64 = env_number("BENCH_RUNS", 3).max(1);
    let bin = env!("CARGO_BIN_EXE_lsq-dispatch");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let csv = dir.path().join("leads.csv");
    let start = Instant::now();
    let (invalid, duplicates) = write_csv(&csv, rows);
    let size_mb = fs::metadata(&csv).unwrap().len() as f64 / 1e6;
    println!(
        "dry run over {rows} rows ({size_mb:.0} MB; {invalid} invalid, {duplicates} duplicates), \
         generated in {:.1}s",
        start.elapsed().as_secs_f64()
    );

    let mut rates = Vec::new();
    let mut peak = 0.0_f64;
    for run in 0..runs {
        let figures = once(bin, &csv, dir.path(), run);
        let stderr =
            fs::read_to_string(dir.path().join(format!("stderr-{run}.txt"))).unwrap_or_default();
        // A dry run over rows with invalid ones among them exits 3 by design.
        if !matches!(figures.exit_code, 0 | 3) {
            eprintln!(
                "run {run}: lsq-dispatch exited with {}:\n{stderr}",
                figures.exit_code
            );
            std::process::exit(1);
        }
        let (planned, bad, dupes) = report_counts(&dir.path().join(format!("report-{run}.csv")));
        let per_sec = rows as f64 / figures.secs;
        println!(
            "run {run}: {:.2}s, {:.0} rows/s, peak RSS {:.1} MB, exit {} \
             (report: {planned} planned, {bad} invalid, {dupes} duplicate)",
            figures.secs, per_sec, figures.peak_rss_mb, figures.exit_code
        );
        if planned + bad + dupes != rows {
            eprintln!(
                "run {run}: the report holds {} rows, expected {rows}",
                planned + bad + dupes
            );
        }
        rates.push(per_sec);
        peak = peak.max(figures.peak_rss_mb);
    }

    let rate = median(&mut rates);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "median {rate:.0} rows/s (target >= {TARGET_ROWS_PER_SEC:.0}: {}), \
         peak RSS {peak:.1} MB (target <= {TARGET_RSS_MB:.0}: {})",
        verdict(rate >= TARGET_ROWS_PER_SEC),
        verdict(peak <= TARGET_RSS_MB)
    );
}
