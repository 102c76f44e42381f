//! Greylisting: a server that answers 4xx asks for minutes, not seconds.
//! A deferred message waits on the `--smtp-defer` schedule while the other
//! leads go on; one still refused when the schedule ends is `failed` with
//! an error saying it was deferred and that a re-run retries it, and the
//! report's `attempts` counts the SMTP attempts beside the API calls.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{
    fast_sandbox, leads_with_email, read_report, run, run_on_sandbox, sample, with_email,
};
use lsq_sandbox::Sandbox;

fn command(
    sandbox: &Sandbox,
    smtp: &SmtpServer,
    dir: &Path,
    input: &Path,
) -> std::process::Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--quiet"]);
    with_email(&mut cmd, &smtp.url(), &sample("templates"));
    cmd
}

fn attempts(rows: &[std::collections::HashMap<String, String>]) -> u32 {
    rows.iter()
        .map(|r| r["attempts"].parse::<u32>().unwrap())
        .sum()
}

/// Ten 451s to RCPT: more than the quick retries of one message take. The
/// deferred message is sent on the schedule, each lead gets one message,
/// and `attempts` adds every SMTP attempt to the API call.
#[tokio::test(flavor = "multi_thread")]
async fn a_greylisted_message_is_sent_on_the_defer_schedule() {
    let sandbox = fast_sandbox().await;
    let greylisted = vec!["451 4.7.1 greylisted, try again later"; 10];
    let smtp = SmtpServer::start(SmtpBehaviour::new().rcpt_replies(greylisted));
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 2);
    let started = Instant::now();
    let out = run(command(&sandbox, &smtp, dir.path(), &input).args(["--smtp-defer", "1s,1s,1s"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&out)
    );
    let rows = read_report(&dir.path().join("report.csv"));
    assert!(rows.iter().all(|r| r["status"] == "sent"), "{rows:?}");
    assert_eq!(smtp.messages().len(), 2, "one message per lead");
    // 2 API calls, 10 refused SMTP attempts and 2 accepted ones.
    assert_eq!(attempts(&rows), 14, "{rows:?}");
    assert!(started.elapsed() >= Duration::from_secs(1));
}

/// A server that never stops deferring: the row ends `failed`, says it was
/// deferred and that a re-run retries it, is listed to retry, and the next
/// run sends it.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_deferred_to_the_end_fails_and_the_next_run_sends_it() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(
        SmtpBehaviour::new().rcpt_replies(vec!["451 4.7.1 greylisted, try again later"; 100]),
    );
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 1);
    let out =
        run(command(&sandbox, &smtp, dir.path(), &input).args(["--smtp-defer", "200ms,200ms"]));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        crate::support::stderr(&out)
    );
    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(rows[0]["status"], "failed");
    let error = &rows[0]["error"];
    assert!(error.contains("deferred"), "{error}");
    assert!(error.contains("451 4.7.1 greylisted"), "{error}");
    assert!(error.contains("re-run"), "{error}");
    // 1 API call, 5 quick SMTP attempts, 2 on the schedule.
    assert_eq!(rows[0]["attempts"], "8", "{rows:?}");
    let retry = std::fs::read_to_string(dir.path().join("report-retry.csv")).unwrap();
    assert!(retry.contains(&rows[0]["lead_id"]), "{retry}");

    let accepting = SmtpServer::start(SmtpBehaviour::new());
    let out = run(&mut command(&sandbox, &accepting, dir.path(), &input));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&out)
    );
    assert_eq!(
        read_report(&dir.path().join("report.csv"))[0]["status"],
        "sent"
    );
    assert_eq!(accepting.messages().len(), 1);
}
