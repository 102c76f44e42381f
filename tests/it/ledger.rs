//! The campaign ledger across real workflows: review then send, a corrected
//! portal URL, another server or tenant, unrelated files with one name, the
//! dry run's view of stored links, and readers and other campaigns while a
//! run holds the state file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{
    fast_config, fast_sandbox, lead_ids, leads_csv, leads_with_email, login, lsq, read_report, run,
    run_ok, run_on_sandbox, sample, sandbox, statuses, stdout, write,
};
use lsq_sandbox::{Sandbox, SandboxConfig};

fn state(dir: &Path) -> PathBuf {
    dir.join("state.sqlite")
}

/// A run of `input` on `sandbox` with the shared state file and this report.
fn on(sandbox: &Sandbox, dir: &Path, input: &Path, report: &str) -> Command {
    on_page(sandbox, dir, input, report, &sandbox.portal_url())
}

/// [`on`] with links to this portal page.
fn on_page(sandbox: &Sandbox, dir: &Path, input: &Path, report: &str, page: &str) -> Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, page);
    cmd.args(["--quiet", "--report", report, "--state"])
        .arg(state(dir));
    cmd
}

fn with_smtp<'a>(cmd: &'a mut Command, smtp: &SmtpServer) -> &'a mut Command {
    crate::support::with_email(cmd, &smtp.url(), &sample("templates"))
}

/// Messages the SMTP server accepted, per recipient.
fn deliveries(smtp: &SmtpServer) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for message in smtp.messages() {
        for to in &message.to {
            *counts.entry(to.clone()).or_default() += 1;
        }
    }
    counts
}

/// The README's one-off invite (docs/email.md's review, then send).
#[tokio::test(flavor = "multi_thread")]
async fn an_outbox_review_is_not_a_send_and_the_smtp_run_after_it_sends_every_lead() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 6);
    let mut review = on(&sandbox, dir.path(), &input, "review.csv");
    crate::support::with_email(&mut review, "smtp://127.0.0.1:1", &sample("templates"))
        .args(["--outbox", "outbox"]);
    run_ok(&mut review);
    assert_eq!(
        std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .count(),
        6
    );
    let calls = sandbox.stats().calls;

    run_ok(with_smtp(
        &mut on(&sandbox, dir.path(), &input, "send.csv"),
        &smtp,
    ));
    assert_eq!(smtp.messages().len(), 6, "every reviewed lead is sent");
    assert_eq!(statuses(&dir.path().join("send.csv"))["sent"], 6);
    assert_eq!(
        sandbox.stats().calls,
        calls,
        "the reviewed keys are still good: no new call"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrected_portal_url_and_link_ids_rebuild_every_link() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(3);
    let input = leads_csv(dir.path(), &ids);
    run_ok(&mut on_page(
        &sandbox,
        dir.path(),
        &input,
        "r1.csv",
        "https://wrong-portal.example.com/",
    ));

    run_ok(&mut on(&sandbox, dir.path(), &input, "r2.csv"));
    for row in read_report(&dir.path().join("r2.csv")) {
        assert!(
            row["portal_url"].starts_with(&sandbox.portal_url()),
            "{row:?}"
        );
        let (status, who) = login(&row["portal_url"]).await;
        assert_eq!(status, 200, "{row:?}");
        assert_eq!(who["LeadId"], row["lead_id"]);
    }
    run_ok(on(&sandbox, dir.path(), &input, "r3.csv").arg("--link-ids"));
    for row in read_report(&dir.path().join("r3.csv")) {
        assert!(row["portal_url"].contains("leadId="), "{row:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn links_from_a_rehearsal_server_are_never_reused_against_another() {
    let rehearsal = fast_sandbox().await;
    let real = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(4));
    run_ok(&mut on(&rehearsal, dir.path(), &input, "rehearsal.csv"));

    run_ok(&mut on(&real, dir.path(), &input, "real.csv"));
    assert_eq!(real.stats().calls, 4, "every key minted at the real server");
    for row in read_report(&dir.path().join("real.csv")) {
        let (status, _) = login(&row["portal_url"]).await;
        assert_eq!(status, 200, "{row:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_access_key_on_the_same_host_is_another_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let input = leads_with_email(dir.path(), 3);
    let first = fast_sandbox().await;
    let port: u16 = first
        .base_url()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    run_ok(with_smtp(
        &mut on(&first, dir.path(), &input, "a.csv"),
        &smtp,
    ));
    drop(first);

    // The first sandbox's port is freed once its server task has ended.
    let start = Instant::now();
    let second = loop {
        let config = SandboxConfig {
            port,
            access_key: "another$access+key".into(),
            ..fast_config()
        };
        match Sandbox::start(config).await {
            Ok(second) => break second,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                eprintln!("waiting for port {port}: {e:#}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:#}"),
        }
    };
    run_ok(with_smtp(
        &mut on(&second, dir.path(), &input, "b.csv"),
        &smtp,
    ));
    assert_eq!(
        second.stats().calls,
        3,
        "nothing reused from the other tenant"
    );
    assert_eq!(statuses(&dir.path().join("b.csv"))["sent"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_that_share_a_name_in_different_folders_are_different_campaigns() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for month in ["march", "april"] {
        let folder = dir.path().join(month);
        std::fs::create_dir(&folder).unwrap();
        inputs.push(leads_with_email(&folder, 4));
    }
    for (input, report) in inputs.iter().zip(["march.csv", "april.csv"]) {
        run_ok(with_smtp(
            &mut on(&sandbox, dir.path(), input, report),
            &smtp,
        ));
    }
    assert_eq!(statuses(&dir.path().join("april.csv"))["sent"], 4);
    assert!(deliveries(&smtp).values().all(|n| *n == 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plan_counts_links_it_would_reuse_as_needing_no_call() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(5));
    run_ok(&mut on(&sandbox, dir.path(), &input, "real.csv"));

    let out = run(on(&sandbox, dir.path(), &input, "plan.csv").args([
        "--dry-run",
        "--summary-json",
        "plan.json",
    ]));
    assert_eq!(out.status.code(), Some(0));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("plan.json")).unwrap()).unwrap();
    assert_eq!(summary["plan"]["api_calls_needed"], 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_for_another_host_does_not_count_what_the_sandbox_did() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 3);
    run_ok(with_smtp(
        &mut on(&sandbox, dir.path(), &input, "real.csv"),
        &smtp,
    ));

    let config = sandbox.config();
    let mut plan = lsq(dir.path());
    plan.arg("run")
        .arg(&input)
        .args(["--dry-run", "--host", "portalapi.leadsquared.com"]);
    let out = run(with_smtp(&mut plan, &smtp)
        .args(["--portal-id", &config.portal_ids[0]])
        .args([
            "--report",
            "plan.csv",
            "--summary-json",
            "plan.json",
            "--state",
        ])
        .arg(state(dir.path()))
        .env("LSQ_ACCESS_KEY", "production-access-key"));
    assert_eq!(out.status.code(), Some(0));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("plan.json")).unwrap()).unwrap();
    assert_eq!(summary["plan"]["already_done"], 0, "{summary}");
    assert_eq!(summary["plan"]["planned"], 3, "{summary}");
}

/// Waits until `what` holds, for at most 20 s.
async fn until(what: impl Fn() -> bool) {
    let start = Instant::now();
    while !what() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_other_campaigns_go_on_while_a_run_holds_the_state_file() {
    let slow = sandbox(SandboxConfig {
        service_time: (Duration::from_millis(300), Duration::from_millis(300)),
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let nightly = leads_csv(dir.path(), &lead_ids(20));
    let mut long = on(&slow, dir.path(), &nightly, "nightly.csv");
    long.args(["--campaign", "nightly", "--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = long.spawn().unwrap();
    until(|| slow.stats().calls >= 2).await;

    let status = run(lsq(dir.path())
        .arg("status")
        .arg("--state")
        .arg(state(dir.path())));
    assert_eq!(status.status.code(), Some(0), "status reads during a run");
    assert!(stdout(&status).contains("nightly"), "{}", stdout(&status));

    let other = fast_sandbox().await;
    let invite = write(
        dir.path(),
        "invite.csv",
        "LeadId\n11111111-2222-4333-8444-555555555555\n",
    );
    let out =
        run(on(&other, dir.path(), &invite, "invite-report.csv").args(["--campaign", "invite"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "another campaign runs meanwhile"
    );

    let same = run(on(&other, dir.path(), &nightly, "again.csv").args(["--campaign", "nightly"]));
    assert_eq!(same.status.code(), Some(4), "the same campaign is busy");
    assert_eq!(other.stats().calls, 1);
    assert!(child.wait().unwrap().success());
}

/// A state file written by the previous release (schema version 1): campaign
/// `nightly` with leads 1 and 2 linked and lead 3 failed; campaign `invite`
/// with leads 4 and 5 sent and lead 6 left `sending` by a crash.
const VERSION_1_STATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/state-v1.sqlite"
);

fn guid(digit: char) -> String {
    let d = |n: usize| digit.to_string().repeat(n);
    format!("{}-{}-4{}-8{}-{}", d(8), d(4), d(3), d(3), d(12))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_file_of_the_previous_version_is_migrated_in_place_and_resumed() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(VERSION_1_STATE, state(dir.path())).unwrap();
    let nightly = leads_csv(dir.path(), &['1', '2', '3'].map(guid));
    let mut invite = String::from("LeadId,FirstName,Email\n");
    for (digit, name) in [('4', "Dee"), ('5', "Eve"), ('6', "Fay")] {
        invite.push_str(&format!(
            "{},{name},{}@example.com\n",
            guid(digit),
            name.to_lowercase()
        ));
    }
    let invite = write(dir.path(), "invite.csv", &invite);

    run_ok(on(&sandbox, dir.path(), &nightly, "nightly.csv").args(["--campaign", "nightly"]));
    assert_eq!(
        sandbox.stats().calls,
        3,
        "keys of an unknown tenant are minted again, the failed lead retried"
    );
    let out = run(with_smtp(
        on(&sandbox, dir.path(), &invite, "invite-report.csv").args(["--campaign", "invite"]),
        &smtp,
    ));
    assert_eq!(out.status.code(), Some(3), "lead 6 is in doubt");
    assert_eq!(
        smtp.messages().len(),
        0,
        "sent and in-doubt leads are not mailed again"
    );
    let invite_statuses = statuses(&dir.path().join("invite-report.csv"));
    assert_eq!(
        (invite_statuses["skipped"], invite_statuses["in_doubt"]),
        (2, 1)
    );

    let conn = rusqlite::Connection::open(state(dir.path())).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, lsq_dispatch::state::SCHEMA_VERSION);
    let per_campaign: Vec<(String, i64)> = conn
        .prepare("SELECT campaign, COUNT(*) FROM leads GROUP BY campaign ORDER BY campaign")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(per_campaign, [("invite".into(), 3), ("nightly".into(), 3)]);
}

/// The retry file a run wrote beside its report.
fn retry_file(dir: &Path) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-retry.csv"))
        .collect();
    assert_eq!(found.len(), 1, "one retry file: {found:?}");
    found.into_iter().next().unwrap()
}

/// Adds up deliveries per recipient over several SMTP servers.
fn total_deliveries(servers: &[&SmtpServer]) -> HashMap<String, usize> {
    let mut total = HashMap::new();
    for server in servers {
        for (to, n) in deliveries(server) {
            *total.entry(to).or_default() += n;
        }
    }
    total
}

/// An email run as docs/email.md writes it: default report beside the input.
fn emailing(sandbox: &Sandbox, dir: &Path, input: &Path, smtp: &SmtpServer) -> Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    cmd.args(["--quiet", "--state"]).arg(state(dir));
    with_smtp(&mut cmd, smtp);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn retrying_failed_rows_resumes_their_campaign_so_the_next_run_sends_nothing_again() {
    let sandbox = fast_sandbox().await;
    let refusing =
        SmtpServer::start(SmtpBehaviour::new().data_replies(["550 5.1.1 mailbox unavailable"; 3]));
    let accepting = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 8);

    let first = run(&mut emailing(&sandbox, dir.path(), &input, &refusing));
    assert_eq!(first.status.code(), Some(3));
    let retry = retry_file(dir.path());
    run_ok(&mut emailing(&sandbox, dir.path(), &retry, &accepting));
    run_ok(&mut emailing(&sandbox, dir.path(), &input, &accepting));

    let total = total_deliveries(&[&refusing, &accepting]);
    assert_eq!(total.len(), 8, "every lead reached: {total:?}");
    assert!(total.values().all(|n| *n == 1), "no lead twice: {total:?}");
}

/// The workflows of docs/nightly.md end to end: a nightly email campaign is killed,
/// re-run to finish (three leads refused by the mail server), its failed rows
/// retried as docs/guide.md says, and the same input run again the next night.
/// Every lead is delivered exactly once, except leads reported in doubt,
/// which are delivered at most once.
#[tokio::test(flavor = "multi_thread")]
async fn kill_resume_retry_and_next_night_deliver_every_lead_exactly_once() {
    const LEADS: usize = 40;
    let sandbox = fast_sandbox().await;
    let slow = SmtpServer::start(SmtpBehaviour::new().delay(Duration::from_millis(20)));
    let refusing =
        SmtpServer::start(SmtpBehaviour::new().data_replies(["550 5.1.1 mailbox unavailable"; 3]));
    let accepting = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), LEADS);
    let nightly = |smtp: &SmtpServer, input: &Path| {
        let mut cmd = emailing(&sandbox, dir.path(), input, smtp);
        cmd.args(["--campaign", "nightly"]);
        cmd
    };

    let mut child = nightly(&slow, &input)
        .args(["--email-concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until(|| slow.messages().len() >= 5).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let resumed = run(&mut nightly(&refusing, &input));
    assert_eq!(resumed.status.code(), Some(3), "three leads refused");
    let retry = retry_file(dir.path());
    run_ok(&mut nightly(&accepting, &retry));
    let next_night = run(&mut nightly(&accepting, &input));
    assert!(matches!(next_night.status.code(), Some(0 | 3)));

    let report = read_report(&dir.path().join("leads-report.csv"));
    let in_doubt: Vec<&str> = report
        .iter()
        .filter(|r| r["status"] == "in_doubt")
        .map(|r| r["email"].as_str())
        .collect();
    assert!(report
        .iter()
        .all(|r| r["status"] == "skipped" || r["status"] == "in_doubt"));
    let total = total_deliveries(&[&slow, &refusing, &accepting]);
    for i in 0..LEADS {
        let to = format!("lead{i}@example.com");
        let n = total.get(&to).copied().unwrap_or(0);
        if in_doubt.contains(&to.as_str()) {
            assert!(n <= 1, "{to} in doubt, delivered {n} times");
        } else {
            assert_eq!(n, 1, "{to} delivered {n} times");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_state_file_reached_by_two_paths_is_one_file_to_its_campaign_lock() {
    let slow = sandbox(SandboxConfig {
        service_time: (Duration::from_millis(300), Duration::from_millis(300)),
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("st");
    std::fs::create_dir(&folder).unwrap();
    let real = folder.join("state.sqlite");
    let alias = folder.join("alias.sqlite");
    let input = leads_csv(dir.path(), &lead_ids(10));
    let command = |state: &Path, report: &str| {
        let mut cmd = run_on_sandbox(&slow, dir.path(), &input, &slow.portal_url());
        cmd.args(["--quiet", "--campaign", "nightly", "--concurrency", "1"])
            .args(["--report", report, "--state"])
            .arg(state);
        cmd
    };
    let mut first = command(&real, "first.csv")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until(|| slow.stats().calls >= 1).await;
    std::os::unix::fs::symlink(&real, &alias).unwrap();

    let second = run(&mut command(&alias, "second.csv"));
    assert_eq!(second.status.code(), Some(4), "the campaign is busy");
    assert!(first.wait().unwrap().success());
    let keys = slow.stats().keys_issued;
    assert!(keys.values().all(|n| *n == 1), "{keys:?}");
}
