//! The metrics file as node_exporter's textfile collector, running as a user
//! of its own, reads it: readable by others whatever the run's umask, and
//! its last success kept across nights whose campaigns have names of their
//! own.

use std::os::unix::process::CommandExt as _;

use crate::support::prometheus::parse;
use crate::support::{fast_sandbox, lead_ids, mode, run, run_on_sandbox, write};

const LAST_SUCCESS: &str = "lsq_dispatch_last_success_timestamp_seconds";

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_file_is_readable_by_the_collector_even_under_umask_0077() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_csv(dir.path(), &lead_ids(2));
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args([
        "--report",
        "report.csv",
        "--metrics-file",
        "lsq-dispatch.prom",
    ]);
    // As the sample unit's UMask=0077 makes it.
    // SAFETY: umask is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    assert_eq!(run(&mut cmd).status.code(), Some(0));
    assert_eq!(mode(&dir.path().join("lsq-dispatch.prom")), 0o644);
    assert_eq!(
        mode(&dir.path().join("report.csv")),
        0o600,
        "links stay private"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_night_keeps_the_last_success_of_a_night_with_another_campaign_name() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(2);
    let night = |campaign: &str, csv: &str| {
        let input = write(dir.path(), "leads.csv", csv);
        let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
        cmd.args([
            "--report",
            "report.csv",
            "--metrics-file",
            "lsq-dispatch.prom",
        ])
        .args(["--campaign", campaign]);
        let code = run(&mut cmd).status.code();
        let text = std::fs::read_to_string(dir.path().join("lsq-dispatch.prom")).unwrap();
        let parsed = parse(&text).unwrap();
        let last = parsed.value(LAST_SUCCESS, &[("job_name", "lsq-dispatch")]);
        (code, last, text)
    };
    let (code, first, text) = night("reminder-2026-11-23", &format!("LeadId\n{}\n", ids[0]));
    assert_eq!(code, Some(0));
    let first = first.unwrap_or_else(|| panic!("{text}"));
    assert!(first > 0.0, "{text}");
    let (code, second, text) = night("reminder-2026-11-24", "LeadId\nnot-a-lead\n");
    assert_eq!(code, Some(5));
    assert_eq!(second, Some(first), "{text}");
}
