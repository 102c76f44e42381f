//! `run --links redirect`: the signed links a run writes, mails and reports
//! instead of portal URLs with keys, minted at send or left to the click; and
//! `--key-lifetime`, which expiry, key reuse and warnings follow.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use lsq_dispatch::redirect::{new_secret, LinkClaims, LinkSecrets};
use lsq_dispatch::secret::Secret;
use lsq_sandbox::{Sandbox, SandboxConfig};

use crate::support::smtp_server::{ReceivedMessage, SmtpBehaviour, SmtpServer};
use crate::support::{
    fast_config, lead_ids, leads_csv, leads_with_email, login, lsq, read_report, run, run_ok,
    run_on_sandbox, sample, sandbox, stderr, stdout, with_email,
};

const BASE: &str = "https://go.example.com";

/// A run against `sandbox` that writes redirect links sealed with `secret`.
fn redirect_run(sandbox: &Sandbox, dir: &Path, input: &Path, secret: &str, mint: &str) -> Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--campaign", "spring"])
        .args(["--state", "state.sqlite"])
        .args(["--links", "redirect", "--link-base", &format!("{BASE}/")])
        .args(["--mint", mint])
        .env("LSQ_LINK_SECRET", secret);
    cmd
}

/// The token of the one redirect link in `text`.
fn token_in(text: &str) -> String {
    let prefix = format!("{BASE}/l/");
    let at = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no link in {text}"));
    let rest = &text[at + prefix.len()..];
    assert_eq!(text.matches(&prefix).count(), 1, "{text}");
    rest.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// Opens a token the way the link service does.
fn open(secret: &str, token: &str) -> LinkClaims {
    let secrets = LinkSecrets::parse(&Secret::new(secret)).unwrap();
    secrets.open(token, Utc::now().timestamp() as u64).unwrap()
}

/// Every `.eml` file in `outbox`, read as a received message.
fn outbox_messages(outbox: &Path) -> Vec<ReceivedMessage> {
    std::fs::read_dir(outbox)
        .unwrap()
        .map(|entry| {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            ReceivedMessage {
                from: String::new(),
                to: Vec::new(),
                data: text.replace("\r\n", "\n").replace('\n', "\r\n"),
                user: None,
            }
        })
        .collect()
}

/// The sandbox portal page's link for a key, percent-encoded.
fn portal_link(sandbox: &Sandbox, key: &str) -> String {
    let mut url = url::Url::parse(&sandbox.portal_url()).unwrap();
    url.query_pairs_mut().append_pair("authKey", key);
    url.into()
}

fn status_json(dir: &Path) -> serde_json::Value {
    let out = run_ok(lsq(dir).args(["status", "--state", "state.sqlite", "--json"]));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_run_mails_signed_links_that_open_to_each_lead_with_a_key_the_portal_takes() {
    let sandbox = sandbox(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 3);
    let secret = new_secret();
    let mut cmd = redirect_run(&sandbox, dir.path(), &input, &secret, "at-send");
    cmd.args(["--email", "--outbox", "outbox", "--templates"])
        .arg(sample("templates"))
        .args(["--from", "Acme <invites@acme.example>"]);
    let started = Utc::now();
    run_ok(&mut cmd);
    assert_eq!(sandbox.stats().calls, 3, "one Generate per lead");

    let rows = read_report(&dir.path().join("report.csv"));
    let messages = outbox_messages(&dir.path().join("outbox"));
    assert_eq!((rows.len(), messages.len()), (3, 3));
    let portal = &sandbox.config().portal_ids[0];
    let mut leads = Vec::new();
    for message in &messages {
        let text = message.text().unwrap();
        assert!(!text.contains("authKey"), "no key in the mail: {text}");
        assert!(!text.contains(&sandbox.portal_url()), "{text}");
        let claims = open(&secret, &token_in(&text));
        assert_eq!(
            (&claims.portal_id, claims.campaign.as_str()),
            (portal, "spring")
        );
        let row = rows
            .iter()
            .find(|r| r["lead_id"] == claims.lead_id)
            .unwrap();
        assert_eq!(row["portal_url"], format!("{BASE}/l/{}", token_in(&text)));
        assert_eq!(row["status"], "linked", "an outbox is a review");
        // The link lives --link-ttl (30 days), not the key's 4 hours.
        let expires: DateTime<Utc> = row["expires_at"].parse().unwrap();
        assert!(expires > started + TimeDelta::days(29), "{expires}");
        assert_eq!(claims.expires as i64, expires.timestamp());
        let (key, key_expires) = claims.key.clone().expect("at-send seals the key");
        assert!(!text.contains(key.expose()));
        assert!((key_expires as i64) < (started + TimeDelta::hours(5)).timestamp());
        let (status, who) = login(&portal_link(&sandbox, key.expose())).await;
        assert_eq!(status, 200, "the sealed key logs the lead in");
        assert_eq!(who["LeadId"], claims.lead_id.as_str());
        leads.push(claims.lead_id);
    }
    leads.sort();
    let mut expected = lead_ids(3);
    expected.sort();
    assert_eq!(leads, expected, "each lead its own link");

    let report = std::fs::read_to_string(dir.path().join("report.csv")).unwrap();
    assert!(!report.contains("authKey"), "{report}");

    let status = status_json(dir.path());
    let links = &status["campaigns"][0]["links"];
    assert_eq!(
        [&links["at-send"], &links["direct"], &links["at-click"]],
        [3, 0, 0]
    );
    let text = run_ok(lsq(dir.path()).args(["status", "--state", "state.sqlite"]));
    assert!(
        stdout(&text).contains("; links: 3 redirect at-send;"),
        "{}",
        stdout(&text)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mint_at_click_makes_no_api_call_and_still_mails_every_lead_once() {
    let sandbox = sandbox(fast_config()).await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 5);
    let secret = new_secret();
    let mut cmd = redirect_run(&sandbox, dir.path(), &input, &secret, "at-click");
    cmd.args(["--link-ttl", "7d", "--summary-json", "summary.json"]);
    with_email(&mut cmd, &smtp.url(), &sample("templates"));
    let started = Utc::now();
    run_ok(&mut cmd);
    assert_eq!(
        sandbox.stats().calls,
        0,
        "no tenant key, no Generate, no check"
    );

    let messages = smtp.messages();
    let mut recipients: Vec<_> = messages.iter().flat_map(|m| m.to.clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!((messages.len(), recipients.len()), (5, 5));
    let rows = read_report(&dir.path().join("report.csv"));
    for row in &rows {
        // No API call; one SMTP attempt.
        assert_eq!(
            (row["status"].as_str(), row["attempts"].as_str()),
            ("sent", "1")
        );
        let expires: DateTime<Utc> = row["expires_at"].parse().unwrap();
        assert!(expires > started + TimeDelta::days(6), "{expires}");
        assert!(expires < started + TimeDelta::days(8), "{expires}");
        let message = messages.iter().find(|m| m.to == [row["email"].clone()]);
        let text = message.unwrap().text().unwrap();
        let claims = open(&secret, &token_in(&text));
        assert_eq!(claims.lead_id, row["lead_id"]);
        assert!(claims.key.is_none(), "the key is minted at the click");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["api_calls"], 0, "{summary}");
    assert_eq!(
        status_json(dir.path())["campaigns"][0]["links"]["at-click"],
        5
    );

    // A re-run of the campaign skips the leads sent, as for direct links.
    run_ok(&mut redirect_run(
        &sandbox,
        dir.path(),
        &input,
        &secret,
        "at-click",
    ));
    assert_eq!(smtp.messages().len(), 5);
}

#[test]
fn mint_at_click_needs_no_host_or_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(2));
    let out = run_ok(
        lsq(dir.path())
            .arg("run")
            .arg(&input)
            .args(["--portal-id", "9b2c4f6e-0000-4000-8000-000000000001"])
            .args([
                "--links",
                "redirect",
                "--link-base",
                "http://127.0.0.1:8080",
            ])
            .args(["--mint", "at-click", "--report", "report.csv"])
            .args(["--state", "state.sqlite"])
            .env("LSQ_LINK_SECRET", new_secret()),
    );
    let said = stderr(&out) + &stdout(&out);
    assert!(said.contains("host none (keys minted at click)"), "{said}");
    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(rows.len(), 2, "{said}");
    for row in rows {
        assert!(
            row["portal_url"].starts_with("http://127.0.0.1:8080/l/1"),
            "{row:?}"
        );
    }
}

#[test]
fn redirect_settings_that_cannot_work_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(1));
    let secret = new_secret();
    let cases: [(&[&str], Option<&str>, &str); 6] = [
        (
            &["--links", "redirect"],
            Some(&secret),
            "--links redirect needs --link-base URL",
        ),
        (
            &["--links", "redirect", "--link-base", BASE],
            None,
            "--links redirect needs LSQ_LINK_SECRET",
        ),
        (
            &["--links", "redirect", "--link-base", BASE],
            Some("c2hvcnQ"),
            "LSQ_LINK_SECRET: secret 1 holds 5 bytes",
        ),
        (
            &["--mint", "at-click"],
            Some(&secret),
            "--mint goes with --links redirect",
        ),
        (
            &[
                "--links",
                "redirect",
                "--link-base",
                "http://go.example.com",
            ],
            Some(&secret),
            "plain http is only allowed to this machine",
        ),
        (
            &["--key-lifetime", "0s"],
            None,
            "--key-lifetime: invalid duration",
        ),
    ];
    for (args, secret, said) in cases {
        let mut cmd = lsq(dir.path());
        cmd.arg("run").arg(&input).arg("--sandbox").args(args);
        if let Some(secret) = secret {
            cmd.env("LSQ_LINK_SECRET", secret);
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(said), "{args:?}: {}", stderr(&out));
        if let Some(secret) = secret {
            assert!(!stderr(&out).contains(secret), "no secret shown");
        }
    }
    // A plan needs no secret, but checks one given.
    let plan = |secret: Option<&str>| {
        let mut cmd = lsq(dir.path());
        cmd.arg("run").arg(&input).args(["--sandbox", "--dry-run"]);
        cmd.args(["--links", "redirect", "--link-base", BASE]);
        if let Some(secret) = secret {
            cmd.env("LSQ_LINK_SECRET", secret);
        }
        run(&mut cmd)
    };
    assert_eq!(plan(None).status.code(), Some(0));
    assert_eq!(plan(Some("c2hvcnQ")).status.code(), Some(2));
    let planned = read_report(&dir.path().join("leads-plan.csv"));
    assert_eq!(planned[0]["status"], "planned");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_key_lifetime_re_mints_keys_that_died_instead_of_reusing_them() {
    let sandbox = sandbox(SandboxConfig {
        key_ttl: Duration::from_secs(3),
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(4));
    let linked = |sandbox: &Sandbox| {
        let mut cmd = run_on_sandbox(sandbox, dir.path(), &input, &sandbox.portal_url());
        cmd.args(["--report", "report.csv", "--campaign", "short"])
            .args(["--state", "state.sqlite", "--key-lifetime", "3s"]);
        run_ok(&mut cmd);
        read_report(&dir.path().join("report.csv"))
    };
    let started = Utc::now();
    let first = linked(&sandbox);
    assert_eq!(sandbox.stats().calls, 4);
    for row in &first {
        let expires: DateTime<Utc> = row["expires_at"].parse().unwrap();
        assert!(expires < started + TimeDelta::seconds(30), "{expires}");
        assert_eq!(login(&row["portal_url"]).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for row in &first {
        assert_eq!(
            login(&row["portal_url"]).await.0,
            401,
            "the portal refuses a dead key"
        );
    }

    let second = linked(&sandbox);
    assert_eq!(sandbox.stats().calls, 8, "every dead key minted again");
    for row in &second {
        assert_eq!(
            (row["status"].as_str(), row["attempts"].as_str()),
            ("linked", "1")
        );
        let (status, who) = login(&row["portal_url"]).await;
        assert_eq!(status, 200);
        assert_eq!(who["LeadId"], row["lead_id"].as_str());
    }
}

/// A zone in which the moment `at` falls between 12:00 and 13:00.
fn zone_at_noon(at: DateTime<Utc>) -> String {
    let mut offset = 12 - at.hour() as i32;
    if offset > 12 {
        offset -= 24;
    } else if offset < -11 {
        offset += 24;
    }
    match offset {
        0 => "UTC".into(),
        // Etc/GMT-N is N hours ahead of UTC.
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

#[test]
fn warnings_follow_the_key_lifetime() {
    const NIGHT: &str = "emailed links would expire during the recipients' night";
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 1);
    // Working hours 11:00-16:00 hold a 4 h key's expiry (12:00-13:00 there)
    // and not a 90 minutes key's (09:30-10:30).
    let zone = zone_at_noon(Utc::now() + TimeDelta::hours(4));
    let plan = |extra: &[&str]| {
        let mut cmd = lsq(dir.path());
        cmd.arg("run").arg(&input).args(["--sandbox", "--dry-run"]);
        cmd.args(["--email", "--templates"])
            .arg(sample("templates"));
        cmd.args(["--timezone", &zone, "--working-hours", "11:00-16:00"]);
        let out = run_ok(cmd.args(extra));
        stdout(&out) + &stderr(&out)
    };
    let default = plan(&[]);
    assert!(!default.contains(NIGHT), "{default}");
    let short = plan(&["--key-lifetime", "90m"]);
    assert!(short.contains(NIGHT), "{short}");
    assert!(
        short.contains("a link lives 1h 30m from when it is made"),
        "{short}"
    );
    // Redirect links outlive their keys: no night to warn about.
    let redirect = plan(&[
        "--key-lifetime",
        "90m",
        "--links",
        "redirect",
        "--link-base",
        BASE,
    ]);
    assert!(!redirect.contains(NIGHT), "{redirect}");

    // A run of 20 calls at 1 a second outlasts a 3 s key, not a 4 h one.
    let many = leads_csv(dir.path(), &lead_ids(20));
    let outlast = |extra: &[&str]| {
        let mut cmd = lsq(dir.path());
        cmd.arg("run")
            .arg(&many)
            .args(["--sandbox", "--dry-run", "--rate", "1/1s"]);
        let out = run_ok(cmd.args(extra));
        stdout(&out) + &stderr(&out)
    };
    assert!(!outlast(&[]).contains("would outlast"));
    let short = outlast(&["--key-lifetime", "3s"]);
    assert!(
        short.contains("the run would outlast the 3s key lifetime"),
        "{short}"
    );
}

#[test]
fn the_sandbox_banner_gives_the_key_lifetime_of_its_key_ttl() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let mut child = lsq(dir.path())
        .args(["sandbox", "--port", "0", "--key-ttl", "3s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut found = None;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("export LSQ_KEY_LIFETIME=") {
            found = Some(line);
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(found.as_deref(), Some("export LSQ_KEY_LIFETIME=3s"));
}
