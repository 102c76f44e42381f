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

/// A quiet email run (as the sample unit and crontab make it) whose links
/// expire in the recipients' night, with a summary, metrics and a monitor.
fn quiet_night_run(
    sandbox: &lsq_sandbox::Sandbox,
    smtp: &SmtpServer,
    dir: &std::path::Path,
    ping: &str,
) -> Command {
    let input = leads_with_email(dir, 2);
    let mut cmd = run_on_sandbox(sandbox, dir, &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--quiet", "--timezone", "UTC"])
        .args(["--campaign", "nightly"])
        .args(["--working-hours", hours_missing_the_expiry()])
        .args(["--summary-json", "summary.json", "--metrics-file", "m.prom"])
        .args(["--ping-url", ping]);
    with_email(&mut cmd, &smtp.url(), &sample("templates"));
    cmd
}

/// The `warnings` the summary JSON at `path` lists.
fn summary_warnings(summary: &serde_json::Value) -> Vec<String> {
    summary["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("warnings in {summary}"))
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_run_still_tells_its_summary_metrics_and_monitor_of_the_night_warning() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let monitor = crate::monitoring::PingServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut quiet_night_run(
        &sandbox,
        &smtp,
        dir.path(),
        &monitor.url,
    ));
    assert_eq!(out.status.code(), Some(0), "a warning, not a failure");
    assert!(
        !stderr(&out).contains(NIGHT_WARNING),
        "--quiet keeps the log quiet"
    );

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    let warnings = summary_warnings(&summary);
    assert!(
        warnings.iter().any(|w| w.contains(NIGHT_WARNING)),
        "{warnings:?}"
    );
    assert_eq!(
        summary_warnings(&monitor.last_body()),
        warnings,
        "the ping's body too"
    );
    let metrics = std::fs::read_to_string(dir.path().join("m.prom")).unwrap();
    let parsed = crate::support::prometheus::parse(&metrics).unwrap();
    assert_eq!(
        parsed.value("lsq_dispatch_warnings", &[("campaign", "nightly")]),
        Some(warnings.len() as f64),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refuse_night_links_sends_no_link_that_would_die_at_night_and_says_so() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let monitor = crate::monitoring::PingServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = quiet_night_run(&sandbox, &smtp, dir.path(), &monitor.url);
    let out = run(cmd.arg("--refuse-night-links"));
    assert_eq!(out.status.code(), Some(1));
    assert!(smtp.messages().is_empty(), "no email goes out");
    let said = stderr(&out);
    assert!(
        said.contains("run refused (--refuse-night-links): no key was made and no email sent"),
        "{said}"
    );
    assert!(said.contains(NIGHT_WARNING), "{said}");
    assert_eq!(monitor.paths(), ["/start", "/fail"]);
    assert!(summary_warnings(&monitor.last_body())
        .iter()
        .any(|w| w.contains(NIGHT_WARNING)));
}

#[test]
fn the_plan_shows_times_and_reads_send_before_in_the_recipients_time_zone() {
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_csv(dir.path(), &crate::support::lead_ids(3));
    // Three calls at one an hour: the run takes two hours.
    let kolkata = Utc::now() + TimeDelta::minutes(330);
    let in_an_hour = (kolkata + TimeDelta::hours(1)).format("%H:%M").to_string();
    let mut cmd = lsq(dir.path());
    cmd.arg("run")
        .arg(&input)
        .args([
            "--dry-run",
            "--portal-id",
            "7f3c2a9e-5b1d-4c8e-9a6f-2d4b8e1c0f37",
        ])
        .args(["--rate", "1/1h", "--timezone", "Asia/Kolkata"])
        .args(["--send-before", &in_an_hour])
        .env("TZ", "UTC")
        .env("LSQ_TENANT_AUTH_KEY", "given");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0));
    let plan = stdout(&out);
    let finish = (kolkata + TimeDelta::hours(2))
        .format("%Y-%m-%d %H")
        .to_string();
    let line = plan.lines().find(|l| l.starts_with("finish by")).unwrap();
    assert!(line.contains(&finish), "{finish} in {plan}");
    assert!(line.ends_with("+05:30 (Asia/Kolkata)"), "{plan}");
    let expires = plan
        .lines()
        .find(|l| l.starts_with("first key expires"))
        .unwrap();
    assert!(expires.ends_with("+05:30 (Asia/Kolkata)"), "{plan}");
    // An hour from now in Kolkata; the machine's clock reads it as 6.5 h.
    assert!(
        plan.contains(&format!("after --send-before {in_an_hour}")),
        "{plan}"
    );
}
