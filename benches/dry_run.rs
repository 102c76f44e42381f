//! Dry-run benchmark: generates a CSV of 1,000,000 leads (GUID LeadIds, a
//! FirstName and an Email, with a few invalid rows and duplicates sprinkled
//! in), then times `lsq-dispatch run --dry-run` over it as a child process and
//! reads the child's peak RSS from `wait4`. Prints the median rows/s and the
//! highest peak RSS over the runs, next to the targets: at least 1,000,000
//! rows/s and at most 100 MB. Each run is timed twice, side by side: with no
//! state file, and with a state file holding 100,000 leads of other
//! campaigns and 10,000 of this one (half linked with a good key, half sent).
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

/// The campaign the runs plan.
const CAMPAIGN: &str = "bench";

/// Writes a state file holding `others` leads spread over ten other
/// campaigns and `ours` leads of [`CAMPAIGN`] (the CSV's first leads), half
/// linked with a key that is still good and half sent. The store lays the
/// file out; the rows go in through one transaction, as a year of runs
/// would have left them.
fn write_state(path: &Path, others: u64, ours: u64) {
    drop(lsq_dispatch::state::StateStore::open(path).expect("create the state file"));
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO leads (campaign, tenant, lead_id, portal_id, row, state, auth_key, \
                 link, expires_at, message_id, sent_at, updated_at) \
                 VALUES (?1, 't', ?2, ?3, ?4, ?5, 'k', 'https://p/', \
                 '2999-01-01T00:00:00.000000000Z', ?6, ?7, '2025-01-01T00:00:00.000000000Z')",
            )
            .unwrap();
        let sent = Some("2025-01-01T00:00:00.000000000Z");
        for i in 0..others + ours {
            let (campaign, lead) = if i < ours {
                (CAMPAIGN.to_owned(), guid(i))
            } else {
                (format!("other-{}", i % 10), guid(10_000_000 + i))
            };
            let (state, message_id, sent_at) = match i % 2 {
                0 => ("linked", None, None),
                _ => ("sent", Some(format!("<{i}@x>")), sent),
            };
            insert
                .execute(rusqlite::params![
                    campaign,
                    lead,
                    PORTAL_ID,
                    i + 2,
                    state,
                    message_id,
                    sent_at
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Runs one dry run and waits for it with `wait4`, which hands back the
/// child's resource usage; std's `Child::wait` would discard it. `state` is
/// the state file to plan against; `name` tells the run's files apart.
fn once(bin: &str, csv: &Path, dir: &Path, name: &str, state: &Path) -> Figures {
    let report = dir.join(format!("report-{name}.csv"));
    let stderr = File::create(dir.join(format!("stderr-{name}.txt"))).unwrap();
    let mut command = Command::new(bin);
    command
        .arg("run")
        .arg(csv)
        .args(["--dry-run", "--quiet", "--portal-id", PORTAL_ID])
        .args(["--campaign", CAMPAIGN, "--report"])
        .arg(&report)
        .arg("--state")
        .arg(state)
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

/// Report rows by status (planned, skipped, invalid, duplicate), to check
/// that the run really handled every row.
fn report_counts(path: &Path) -> [u64; 4] {
    let file = BufReader::new(File::open(path).expect("the report exists"));
    let mut counts = [0; 4];
    for line in file.lines().skip(1) {
        let line = line.unwrap();
        let slot = match line.split(',').nth(3) {
            Some("planned") => 0,
            Some("skipped") => 1,
            Some("invalid") => 2,
            Some("duplicate") => 3,
            _ => continue,
        };
        counts[slot] += 1;
    }
    counts
}

/// One timed run, checked: its figures printed, its rows per second back.
fn measured(bin: &str, csv: &Path, dir: &Path, name: &str, state: &Path, rows: u64) -> Figures {
    let figures = once(bin, csv, dir, name, state);
    let stderr = fs::read_to_string(dir.join(format!("stderr-{name}.txt"))).unwrap_or_default();
    // A dry run over rows with invalid or duplicate ones among them exits 5
    // by design.
    if !matches!(figures.exit_code, 0 | 5) {
        eprintln!(
            "{name}: lsq-dispatch exited with {}:\n{stderr}",
            figures.exit_code
        );
        std::process::exit(1);
    }
    let counts = report_counts(&dir.join(format!("report-{name}.csv")));
    let [planned, skipped, bad, dupes] = counts;
    println!(
        "{name}: {:.2}s, {:.0} rows/s, peak RSS {:.1} MB, exit {} \
         (report: {planned} planned, {skipped} skipped, {bad} invalid, {dupes} duplicate)",
        figures.secs,
        rows as f64 / figures.secs,
        figures.peak_rss_mb,
        figures.exit_code
    );
    if counts.iter().sum::<u64>() != rows {
        eprintln!("{name}: the report holds {counts:?} rows, expected {rows}");
    }
    figures
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

    let empty = dir.path().join("no-state.sqlite");
    let state = dir.path().join("state.sqlite");
    let start = Instant::now();
    write_state(&state, 100_000, 10_000);
    println!(
        "state file: 100000 leads of other campaigns, 10000 of this one ({:.0} MB), \
         written in {:.1}s",
        fs::metadata(&state).unwrap().len() as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );

    let (mut bare, mut with_state, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut peak = 0.0_f64;
    for run in 0..runs {
        for (name, path, rates) in [
            ("no-state", &empty, &mut bare),
            ("state", &state, &mut with_state),
        ] {
            let figures = measured(bin, &csv, dir.path(), &format!("{name}-{run}"), path, rows);
            rates.push(rows as f64 / figures.secs);
            peak = peak.max(figures.peak_rss_mb);
        }
        // The pair ran back to back: their ratio is what load shifts least.
        ratios.push(with_state[with_state.len() - 1] / bare[bare.len() - 1]);
    }

    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let (bare, with_state) = (median(&mut bare), median(&mut with_state));
    for (label, rate) in [("no state file", bare), ("with a state file", with_state)] {
        println!(
            "{label}: median {rate:.0} rows/s (target >= {TARGET_ROWS_PER_SEC:.0}: {})",
            verdict(rate >= TARGET_ROWS_PER_SEC)
        );
    }
    println!(
        "with / without a state file: median of the side-by-side ratios {:.2}; \
         peak RSS {peak:.1} MB (target <= {TARGET_RSS_MB:.0}: {})",
        median(&mut ratios),
        verdict(peak <= TARGET_RSS_MB)
    );
}
