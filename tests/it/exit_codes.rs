//! Exit codes refined by the one exit-code type: a template problem is a
//! usage error (2) found before any call, and a second signal returns 130
//! through `main` at once, with the report still whole.

use std::time::{Duration, Instant};

use crate::support::watch::Captured;
use crate::support::{
    fast_sandbox, lead_ids, leads_with_email, read_report, run, run_on_sandbox, sandbox, sigterm,
    wait_until, with_email, write_templates,
};
use lsq_sandbox::SandboxConfig;

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_template_variable_is_a_usage_error_before_any_call() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 3);
    let templates = write_templates(dir.path(), "Hi {{ NoSuchColumn }}", "{{ link }}");
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--quiet"]);
    with_email(&mut cmd, "smtp://127.0.0.1:9", &templates);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NoSuchColumn"), "{stderr}");
    assert_eq!(sandbox.stats().calls, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_quits_at_once_with_130_and_a_whole_report() {
    // Every call takes 20 s, so the first signal alone would wait for them.
    let sandbox = sandbox(SandboxConfig {
        service_time: (Duration::from_secs(20), Duration::from_secs(20)),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_csv(dir.path(), &lead_ids(10));
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = Captured::start(child.stderr.take().unwrap());
    // The first call is in flight: the sandbox counted its arrival.
    wait_until("the first call", || sandbox.stats().max_in_window >= 1).await;
    let signalled = Instant::now();
    sigterm(&child);
    // The run took the first signal before the second is sent, so the two
    // are not seen as one.
    wait_until("the first signal taken", || stderr.contains("stopping:")).await;
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let out = std::process::Output {
        stderr: stderr.finish(),
        ..out
    };
    assert_eq!(out.status.code(), Some(130));
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "quit took {:?}, as long as the calls in flight",
        signalled.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("quitting at once"), "{stderr}");
    // The report was flushed on the way out: a header and whole rows only.
    let rows = read_report(&dir.path().join("report.csv"));
    assert!(rows.len() < 10, "{} rows", rows.len());
}
