//! The recipients' day: `expires_at_readable` in `--timezone`, and the
//! warning, in the plan and in the run, that emailed links would expire
//! during the recipients' night (`--working-hours`).

use std::process::Command;

use chrono::{DateTime, TimeDelta, Timelike, Utc};

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{
    fast_sandbox, leads_with_email, lsq, read_report, run, run_on_sandbox, sample, stderr, stdout,
    with_email, write,
};

const NIGHT_WARNING: &str = "emailed links would expire during the recipients' night";

/// Working hours in UTC that leave out, by over an hour either way, the
/// moment a link made now expires: its 4 h life ends at their night.
fn hours_missing_the_expiry() -> &'static str {
    let expires = Utc::now() + TimeDelta::hours(4);
    match expires.hour() < 12 {
        true => "13:00-23:00",
        false => "01:00-11:00",
    }
}

/// A zone and working hours that hold, by hours either way, the moment a
/// link made now expires.
fn daytime_holding_the_expiry() -> [&'static str; 4] {
    let expires = Utc::now() + TimeDelta::hours(4);
    // Etc/GMT+12 is UTC-12: an afternoon expiry is that morning there.
    let zone = match expires.hour() < 12 {
        true => "UTC",
        false => "Etc/GMT+12",
    };
    ["--timezone", zone, "--working-hours", "00:00-23:00"]
}

#[tokio::test(flavor = "multi_thread")]
async fn emails_show_the_expiry_in_the_recipients_time_zone_and_the_report_stays_utc() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 2);
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--timezone", "Asia/Kolkata"]);
    with_email(&mut cmd, &smtp.url(), &sample("templates"));
    assert_eq!(run(&mut cmd).status.code(), Some(0));

    let rows = read_report(&dir.path().join("report.csv"));
    let messages = smtp.messages();
    assert_eq!(messages.len(), 2);
    for row in rows {
        assert!(row["expires_at"].ends_with('Z'), "{row:?}");
        let expires: DateTime<Utc> = row["expires_at"].parse().unwrap();
        // India keeps UTC+5:30 all year.
        let local = expires + TimeDelta::minutes(330);
        let readable = format!("{} IST (Asia/Kolkata)", local.format("%-d %B %Y, %H:%M"));
        let message = messages.iter().find(|m| m.to == [row["email"].clone()]);
        let text = message.unwrap().text().unwrap();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            text.contains(&format!("The link works until {readable}.")),
            "{readable} in {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_email_run_warns_when_its_links_would_expire_in_the_recipients_night() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 1);
    let email_run = |daytime: &[&str]| {
        let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
        cmd.args(["--report", "report.csv"]).args(daytime);
        with_email(&mut cmd, &smtp.url(), &sample("templates"));
        run(&mut cmd)
    };

    let at_night = email_run(&[
        "--timezone",
        "UTC",
        "--working-hours",
        hours_missing_the_expiry(),
    ]);
    assert_eq!(at_night.status.code(), Some(0), "a warning, not a failure");
    let said = stderr(&at_night);
    let line = said.lines().find(|l| l.contains(NIGHT_WARNING));
    assert!(line.is_some_and(|l| l.contains("WARN")), "{said}");
    assert!(said.contains("in UTC, outside the working hours"), "{said}");
    assert_eq!(smtp.messages().len(), 1, "the email still goes out");

    let by_day = email_run(&daytime_holding_the_expiry());
    assert_eq!(by_day.status.code(), Some(0));
    assert!(
        !stderr(&by_day).contains(NIGHT_WARNING),
        "{}",
        stderr(&by_day)
    );
}

/// `run --dry-run --email` of `leads_with_email`'s leads, with a stand-in
/// portal, sender and SMTP server (a dry run connects to none), so only the
/// plan's settings vary.
fn email_plan(dir: &std::path::Path) -> Command {
    let input = leads_with_email(dir, 3);
    let mut cmd = lsq(dir);
    cmd.arg("run")
        .arg(input)
        .args(["--dry-run", "--email", "--templates"])
        .arg(sample("templates"))
        .args(["--from", "Acme <invites@acme.example>"])
        .args(["--smtp-url", "smtp://127.0.0.1:2525"])
        .args(["--portal-id", "7f3c2a9e-5b1d-4c8e-9a6f-2d4b8e1c0f37"]);
    cmd
}

#[test]
fn the_plan_of_an_email_run_warns_of_links_expiring_at_night_with_settings_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "lsq.toml",
        &format!(
            "timezone = \"UTC\"\nworking_hours = \"{}\"\n",
            hours_missing_the_expiry()
        ),
    );
    let out = run(email_plan(dir.path()).arg("--config").arg(&config));
    assert_eq!(out.status.code(), Some(0));
    let plan = stdout(&out);
    assert!(
        plan.contains(&format!("warning: {NIGHT_WARNING}")),
        "{plan}"
    );

    let out = run(email_plan(dir.path()).args(daytime_holding_the_expiry()));
    assert_eq!(out.status.code(), Some(0));
    assert!(!stdout(&out).contains(NIGHT_WARNING), "{}", stdout(&out));
}

#[test]
fn a_malformed_time_zone_or_working_hours_is_a_usage_error_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "lsq.toml", "working_hours = \"20:00-08:00\"\n");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--timezone", "Berlin"],
            "--timezone: \"Berlin\" is not an IANA time zone name (did you mean Europe/Berlin?)",
        ),
        (
            &["--working-hours", "9 to 5"],
            "--working-hours \"9 to 5\": use a start and an end of the same day",
        ),
        (&["--config", config.to_str().unwrap()], "working_hours in "),
    ];
    for (args, expected) in cases {
        let out = run(email_plan(dir.path()).args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}
