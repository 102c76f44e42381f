//! Outputs that are no regular file: a device (`/dev/full`, `/dev/zero`)
//! or the run's own standard output as the metrics file, and FIFOs. Such an
//! output is never read, opened once and written once; a FIFO nobody reads
//! is waited for, and a signal ends that wait.

use std::path::Path;
use std::process::Command;

use crate::support::fifo::{mkfifo, FifoReader, Watched};
use crate::support::prometheus::{self, Exposition};
use crate::support::{fast_sandbox, lead_ids, leads_csv, run_measured, run_on_sandbox, sigterm};
use crate::support::{run, wait_until};
use lsq_sandbox::Sandbox;

/// `run` of `leads` on `sandbox` in `dir`, for `campaign`, with a state file
/// and report of its own.
fn command(sandbox: &Sandbox, dir: &Path, input: &Path, campaign: &str) -> Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    cmd.args(["--campaign", campaign])
        .arg("--report")
        .arg(dir.join(format!("{campaign}.csv")))
        .arg("--state")
        .arg(dir.join("state.sqlite"));
    cmd
}

/// The metrics in `text`, parsed strictly: one exposition, whole.
fn metrics(text: &str) -> Exposition {
    prometheus::parse(text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

/// Asserts `metrics` are those of a run of `campaign` that ended with 0
/// after linking `linked` leads.
fn assert_ended_well(metrics: &Exposition, campaign: &str, linked: f64) {
    let labels = [("campaign", campaign)];
    assert_eq!(metrics.value("lsq_dispatch_running", &labels), Some(0.0));
    assert_eq!(metrics.value("lsq_dispatch_exit_code", &labels), Some(0.0));
    let rows = [("campaign", campaign), ("status", "linked")];
    assert_eq!(metrics.value("lsq_dispatch_rows", &rows), Some(linked));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metrics_file_on_dev_full_or_dev_zero_is_written_never_read_and_memory_stays_bounded() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(20));
    let mut ordinary = command(&sandbox, dir.path(), &input, "ordinary");
    ordinary.args(["--metrics-file", "lsq.prom"]);
    let baseline = run_measured(&ordinary, dir.path());
    assert_eq!(baseline.code, Some(0));
    for device in ["/dev/full", "/dev/zero"] {
        let campaign = &device[5..];
        let mut cmd = command(&sandbox, dir.path(), &input, campaign);
        cmd.args(["--metrics-file", device]);
        let measured = run_measured(&cmd, dir.path());
        eprintln!(
            "{device}: peak RSS {:.1} MB, an ordinary run {:.1} MB",
            measured.peak_rss_mb, baseline.peak_rss_mb
        );
        assert_eq!(measured.code, Some(0), "{device}: the run finishes");
        assert!(
            measured.peak_rss_mb < baseline.peak_rss_mb + 32.0,
            "{device}: peak RSS {:.1} MB against {:.1} MB for an ordinary run",
            measured.peak_rss_mb,
            baseline.peak_rss_mb
        );
        let rows = crate::support::statuses(&dir.path().join(format!("{campaign}.csv")));
        assert_eq!(rows.get("linked"), Some(&20), "{device}");
        let warned = measured
            .stderr
            .contains(&format!("cannot write the metrics file {device}"));
        // The run's work matters more than its metrics: a warning, once.
        if device == "/dev/full" {
            assert!(warned, "{}", measured.stderr);
            assert!(measured.stderr.contains("No space left on device"));
            assert_eq!(measured.stderr.matches(" WARN ").count(), 1);
        } else {
            assert!(!warned, "{}", measured.stderr);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_on_the_runs_own_standard_output_reach_the_program_reading_it() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(3));
    let mut cmd = command(&sandbox, dir.path(), &input, "piped");
    // As `lsq-dispatch run … --metrics-file /dev/stdout | cat`.
    cmd.args(["--metrics-file", "/dev/stdout"]);
    let out = Watched::spawn(&mut cmd).ends_by_itself();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let exposition: String = text
        .lines()
        .filter(|line| line.starts_with('#') || line.starts_with("lsq_dispatch_"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ended_well(&metrics(&exposition), "piped", 3.0);
    assert!(text.contains(" INFO  done: 3 linked in "), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifos_with_a_reader_get_the_summary_and_the_metrics_once_and_whole() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(4));
    let (summary_fifo, metrics_fifo) = (dir.path().join("s.fifo"), dir.path().join("m.fifo"));
    mkfifo(&summary_fifo);
    mkfifo(&metrics_fifo);
    // As `cat s.fifo > s.json & cat m.fifo > m.prom &` before the run.
    let summary_reader = FifoReader::start(&summary_fifo);
    let metrics_reader = FifoReader::start(&metrics_fifo);
    let mut cmd = command(&sandbox, dir.path(), &input, "fifos");
    cmd.arg("--summary-json")
        .arg(&summary_fifo)
        .arg("--metrics-file")
        .arg(&metrics_fifo);
    let out = Watched::spawn(&mut cmd).ends_by_itself();
    assert_eq!(out.status.code(), Some(0));

    let summary = summary_reader.finish();
    let summary: serde_json::Value = serde_json::from_slice(&summary).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}): {:?}",
            String::from_utf8_lossy(&summary)
        )
    });
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["counts"]["linked"], 4);
    let text = String::from_utf8(metrics_reader.finish()).unwrap();
    assert_ended_well(&metrics(&text), "fifos", 4.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_waiting_for_a_reader_of_a_fifo_ends_the_run_with_130_and_frees_the_campaign()
{
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(2));
    let fifo = dir.path().join("s.fifo");
    mkfifo(&fifo);
    let mut cmd = command(&sandbox, dir.path(), &input, "waiting");
    cmd.arg("--summary-json").arg(&fifo);
    let running = Watched::spawn(&mut cmd);
    wait_until("the run waits for a reader of the FIFO", || {
        running
            .stderr
            .contains("waiting up to 30 s for a program to read the FIFO")
    })
    .await;
    sigterm(running.child());
    let out = running.ends_by_itself();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&fifo.display().to_string()), "{err}");
    assert_eq!(sandbox.stats().calls, 0, "nothing was done");

    // The campaign is free: the same run, with a regular file, goes through.
    let mut again = command(&sandbox, dir.path(), &input, "waiting");
    again.arg("--summary-json").arg(dir.path().join("s.json"));
    assert_eq!(run(&mut again).status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_no_program_reads_is_given_up_after_30_s_with_what_to_do() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(2));
    let fifo = dir.path().join("lsq.prom");
    mkfifo(&fifo);
    let mut cmd = command(&sandbox, dir.path(), &input, "unread");
    cmd.arg("--metrics-file").arg(&fifo);
    let out = Watched::spawn(&mut cmd).ends_by_itself();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "no program read the FIFO {} (--metrics-file) within 30 s",
            fifo.display()
        )),
        "{err}"
    );
    assert!(err.contains("start the program that reads it"), "{err}");
    assert_eq!(sandbox.stats().calls, 0, "nothing was done");
    assert!(
        !dir.path().join("unread.csv").exists(),
        "no report was made"
    );
}
