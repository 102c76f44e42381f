//! Faults of the machine under the campaign state, through the real binary:
//! a state file reached by two hard links, a full disk under it while emails
//! go out, a connection lost after a message was sent, an age too large to
//! prune by, and `XDG_STATE_HOME` naming a file.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::smtp_server::{Hold, Silence, SmtpBehaviour, SmtpServer};
use crate::support::tmpfs::Tmpfs;
use crate::support::{
    fast_sandbox, lead_ids, leads_csv, leads_with_email, lsq, read_report, run, run_ok,
    run_on_sandbox, sample, statuses, stderr, wait_until, with_email, write,
};
use lsq_sandbox::Sandbox;

/// `run INPUT --email` of campaign `spring` with the state file `state`,
/// its report at `report`. Messages a test holds at the server wait for
/// their replies as long as a loaded machine may need.
fn email_run(
    sandbox: &Sandbox,
    smtp: &SmtpServer,
    dir: &Path,
    input: &Path,
    state: &Path,
    report: &str,
) -> Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    let config = write(dir, "patient.toml", "smtp_timeout = \"10m\"\n");
    cmd.args(["--campaign", "spring", "--report", report, "--config"])
        .arg(config)
        .arg("--state")
        .arg(state);
    with_email(&mut cmd, &smtp.url(), &sample("templates"));
    cmd
}

/// How many accepted messages each recipient got.
fn deliveries(smtp: &SmtpServer) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for message in smtp.messages() {
        for to in message.to {
            *counts.entry(to).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_of_a_campaign_through_two_hard_links_email_each_lead_once() {
    let sandbox = fast_sandbox().await;
    let hold = Hold::new();
    let smtp = SmtpServer::start(SmtpBehaviour::new().hold(&hold));
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let (a, b) = (a.join("state.sqlite"), b.join("state.sqlite"));
    let one = leads_csv(dir.path(), &lead_ids(1));
    run_ok(
        run_on_sandbox(&sandbox, dir.path(), &one, &sandbox.portal_url())
            .args(["--campaign", "init", "--report", "init.csv", "--state"])
            .arg(&a),
    );
    std::fs::hard_link(&a, &b).unwrap();

    let input = leads_with_email(dir.path(), 50);
    let mut first = email_run(&sandbox, &smtp, dir.path(), &input, &a, "first.csv")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first run holds the campaign while its messages wait for replies.
    wait_until("the first run's first message", || {
        smtp.data_attempts() >= 1
    })
    .await;

    let second = run(&mut email_run(
        &sandbox,
        &smtp,
        dir.path(),
        &input,
        &b,
        "second.csv",
    ));
    hold.release();
    assert_eq!(second.status.code(), Some(4), "the state file is in use");
    let text = stderr(&second);
    assert!(text.contains(&b.display().to_string()), "{text}");
    assert!(text.contains("another name"), "{text}");
    assert!(first.wait().unwrap().success());

    let counts = deliveries(&smtp);
    assert_eq!(counts.len(), 50, "every lead emailed");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert_eq!(statuses(&dir.path().join("first.csv"))["sent"], 50);
    // Every name of the file opens again, one at a time, and holds one log.
    for name in [&a, &b] {
        let status = run(lsq(dir.path()).arg("status").arg("--state").arg(name));
        assert_eq!(status.status.code(), Some(0), "{}", name.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_under_the_state_says_which_emails_went_out_and_holds_them_in_doubt() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount_or_skip(
        &dir.path().join("disk"),
        4 << 20,
        "a_full_disk_under_the_state_says_which_emails_went_out_and_holds_them_in_doubt",
    ) else {
        return;
    };
    let state = disk.path.join("state.sqlite");
    let sandbox = fast_sandbox().await;
    let hold = Hold::new();
    let smtp = SmtpServer::start(SmtpBehaviour::new().hold(&hold));
    let input = leads_with_email(dir.path(), 20);
    let log = dir.path().join("first.log");
    let mut first = email_run(&sandbox, &smtp, dir.path(), &input, &state, "first.csv")
        .args(["--email-concurrency", "8"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Eight messages are with the server, each recorded `sending`; then the
    // disk fills and the server accepts them.
    wait_until("eight messages under way", || smtp.data_attempts() == 8).await;
    let filler = disk.fill();
    hold.release();
    let code = first.wait().unwrap().code();
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!("--- first run\n{text}");
    assert_eq!(code, Some(1), "the run aborted");
    let accepted = smtp.messages().len();
    assert_eq!(accepted, 8, "no message started once the state failed");
    assert!(
        text.contains("the SMTP server accepted 8 emails"),
        "says what was sent: {text}"
    );
    assert!(text.contains("in_doubt"), "{text}");
    assert!(text.contains(&state.display().to_string()), "{text}");
    assert!(!text.contains("no input row was processed"), "{text}");
    let first_rows = read_report(&dir.path().join("first.csv"));
    let sent: Vec<_> = first_rows
        .iter()
        .filter(|r| r["status"] == "sent")
        .collect();
    assert_eq!(sent.len(), 8, "{first_rows:?}");

    // Space again: the next run holds the eight in doubt and sends the rest.
    std::fs::remove_file(filler).unwrap();
    let out = run(&mut email_run(
        &sandbox,
        &smtp,
        dir.path(),
        &input,
        &state,
        "second.csv",
    ));
    assert_eq!(out.status.code(), Some(3), "leads in doubt");
    let counts = statuses(&dir.path().join("second.csv"));
    assert_eq!(counts["in_doubt"], 8, "{counts:?}");
    assert_eq!(counts["sent"], 12, "{counts:?}");
    let delivered = deliveries(&smtp);
    assert_eq!(delivered.len(), 20);
    assert!(delivered.values().all(|n| *n == 1), "{delivered:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lead_whose_connection_was_lost_after_data_is_held_in_doubt_saying_so() {
    const LOST: &str = "lead1@example.com";
    let smtp = SmtpServer::start(SmtpBehaviour::new().unanswered(Silence::HangUp, 1, Some(LOST)));
    let (sandbox, dir) = (fast_sandbox().await, tempfile::tempdir().unwrap());
    let input = leads_with_email(dir.path(), 3);
    // The first run loses the connection; the second finds the lead in doubt.
    for report in ["first.csv", "second.csv"] {
        let state = dir.path().join("campaign.sqlite");
        let mut cmd = email_run(&sandbox, &smtp, dir.path(), &input, &state, report);
        assert_eq!(run(&mut cmd).status.code(), Some(3), "{report}");
    }
    let rows = read_report(&dir.path().join("second.csv"));
    let lost = rows.iter().find(|r| r["email"] == LOST).unwrap();
    assert_eq!(lost["status"], "in_doubt");
    let error = &lost["error"];
    assert!(
        error.contains("the connection to the SMTP server was lost after the message was sent"),
        "{error}"
    );
    assert!(!error.contains("a run stopped"), "{error}");
    assert!(error.contains("--resend-in-doubt"), "{error}");
}

#[test]
fn an_age_too_large_to_prune_by_says_the_largest() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(lsq(dir.path())
        .args(["status", "--prune", "--older-than", "100000d", "--state"])
        .arg(dir.path().join("state.sqlite")));
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(
        text.contains("--older-than \"100000d\" is too large"),
        "{text}"
    );
    assert!(text.contains("36500d"), "{text}");
    assert!(!text.contains("use a number of days"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn xdg_state_home_naming_a_file_is_blamed_not_the_budget() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = write(dir.path(), "state-home", "a file\n");
    let input = leads_csv(dir.path(), &lead_ids(1));
    let out = run(
        run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url())
            .env("XDG_STATE_HOME", &not_a_dir),
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    let path = not_a_dir.join("lsq-dispatch").join("state.sqlite");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("XDG_STATE_HOME"), "{text}");
    assert!(text.contains("--state"), "{text}");
    assert!(!text.contains("API budget"), "{text}");
    assert_eq!(sandbox.stats().calls, 0);
}
