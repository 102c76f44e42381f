//! A lead's stored key is used again for an emailed link only while it has
//! long enough to live for the lead to read the email and click.

use chrono::{DateTime, TimeDelta, Utc};

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{
    fast_sandbox, leads_with_email, read_report, run, run_on_sandbox, sample, with_email,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_email_gets_a_fresh_key_rather_than_one_with_90_minutes_left() {
    let sandbox = fast_sandbox().await;
    // The first message is refused for good, so the lead is failed with
    // its key stored.
    let smtp = SmtpServer::start(SmtpBehaviour::new().rcpt_replies(["550 5.1.1 no such user"]));
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 1);
    let email_run = |extra: &[&str]| {
        let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
        cmd.args(["--report", "report.csv", "--campaign", "invites"])
            .args(extra);
        with_email(&mut cmd, &smtp.url(), &sample("templates"));
        run(&mut cmd)
    };
    // Stored as living 90 minutes: what a key made 2.5 h ago has left.
    let out = email_run(&["--key-lifetime", "90m"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        read_report(&dir.path().join("report.csv"))[0]["status"],
        "failed"
    );
    let minted = sandbox.stats().keys_issued.values().sum::<u64>();
    assert_eq!(minted, 1);

    let out = email_run(&[]);
    assert_eq!(out.status.code(), Some(0));
    let row = &read_report(&dir.path().join("report.csv"))[0];
    assert_eq!(row["status"], "sent");
    let expires: DateTime<Utc> = row["expires_at"].parse().unwrap();
    assert!(
        expires > Utc::now() + TimeDelta::hours(3),
        "the emailed link dies at {expires}"
    );
    assert_eq!(
        sandbox.stats().keys_issued.values().sum::<u64>(),
        2,
        "a fresh key"
    );

    // Asked to, a run accepts a key with less life left.
    let out = email_run(&["--min-link-life", "30m", "--resend"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        sandbox.stats().keys_issued.values().sum::<u64>(),
        2,
        "reused"
    );
}
