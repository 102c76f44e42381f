//! Stopping is prompt: after the first SIGTERM no API call and no SMTP
//! transaction starts, while the ones already under way finish and are
//! recorded in the report and the campaign state; the run exits 130.
//!
//! Each test signals in the middle of a quiet stretch (right after a wave of
//! calls arrived, or halfway through a wave of messages), so that the next
//! wave would start well after the signal if the run did not stop.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{
    fast_sandbox, lead_ids, leads_csv, leads_with_email, read_report, run_on_sandbox, sample,
    sandbox, sigterm, wait_until, with_email,
};
use lsq_dispatch::state::StateStore;
use lsq_sandbox::{Sandbox, SandboxConfig};

/// The run on `sandbox`, writing `report.csv` and `state.sqlite` in `dir`.
fn command(sandbox: &Sandbox, dir: &Path, input: &Path) -> Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    cmd.args([
        "--report",
        "report.csv",
        "--quiet",
        "--campaign",
        "leads",
        "--state",
    ])
    .arg(dir.join("state.sqlite"))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Waits for the run to end and asserts it ended interrupted (130).
fn interrupted(child: Child) {
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(130));
}

fn state_counts(dir: &Path) -> BTreeMap<String, u64> {
    let store = StateStore::open(&dir.join("state.sqlite")).unwrap();
    store.counts("leads").unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn after_sigterm_no_api_call_starts_and_every_answered_call_is_reported() {
    // 5 calls a second, each answered after 500 ms: the run's first call
    // goes ahead, four follow at 0.1 s, one more at about 1.12 s, and the
    // next four not before 1.22 s. Rows beyond those wait in the limiter.
    let sandbox = sandbox(SandboxConfig {
        budget: "5/1s".parse().unwrap(),
        service_time: (Duration::from_millis(500), Duration::from_millis(500)),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(40));
    let child = command(&sandbox, dir.path(), &input).spawn().unwrap();

    wait_until("the sixth call", || sandbox.stats().calls >= 6).await;
    let at_signal = sandbox.stats();
    sigterm(&child);
    interrupted(child);

    let after = sandbox.stats();
    let answered: u64 = after.by_status.values().sum();
    assert_eq!(
        after.calls,
        at_signal.calls,
        "calls arrived after the signal (at the signal {} had arrived, {} answered)",
        at_signal.calls,
        at_signal.by_status.values().sum::<u64>()
    );
    assert_eq!(answered, after.calls, "a call in flight was not finished");
    assert_eq!(after.by_status.get(&200), Some(&answered));

    // Every answered call is in the report, linked, and in the state.
    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(rows.len() as u64, answered, "{rows:?}");
    for row in &rows {
        assert_eq!(row["status"], "linked", "{row:?}");
        assert_eq!(row["attempts"], "1", "{row:?}");
        assert_eq!(after.keys_issued.get(&row["lead_id"]), Some(&1), "{row:?}");
    }
    assert_eq!(state_counts(dir.path())["linked"], answered);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_sigterm_no_smtp_transaction_starts_and_unsent_leads_stay_linked() {
    // Two messages at a time, each taking the server a second: every lead is
    // linked at once, then the messages go out in waves of two.
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new().delay(Duration::from_secs(1)));
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 20);
    let mut cmd = command(&sandbox, dir.path(), &input);
    cmd.args(["--email-concurrency", "2"]);
    let child = with_email(&mut cmd, &smtp.url(), &sample("templates"))
        .spawn()
        .unwrap();

    // The second wave has begun: two transactions are in flight, each a
    // second from its answer.
    wait_until("the second wave", || smtp.transactions() >= 4).await;
    let started = smtp.transactions();
    sigterm(&child);
    interrupted(child);

    assert_eq!(
        smtp.transactions(),
        started,
        "SMTP transactions started after the signal"
    );
    let sent = smtp.messages().len();
    assert_eq!(sent, started, "a message in flight was not finished");

    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(rows.len(), 20, "every lead was linked before the signal");
    let (sent_rows, linked_rows): (Vec<_>, Vec<_>) =
        rows.iter().partition(|row| row["status"] == "sent");
    assert_eq!(sent_rows.len(), sent);
    for row in &linked_rows {
        assert_eq!(row["status"], "linked", "{row:?}");
        assert!(!row["portal_url"].is_empty(), "{row:?}");
        assert!(row["message_id"].is_empty(), "{row:?}");
        assert!(row["error"].contains("not emailed"), "{row:?}");
    }
    let state = state_counts(dir.path());
    assert_eq!(state["sent"], sent as u64);
    assert_eq!(state["linked"], 20 - sent as u64);
    assert_eq!(state["sending"], 0);
}
