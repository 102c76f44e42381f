//! `lsq-dispatch otp request` / `otp signin` end to end against the built-in
//! sandbox on loopback: the OTP read back from the sandbox stands in for the
//! SMS the lead would receive.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::planted::{self, ACCESS, PUBLIC, REGISTER, SECRET};
use crate::support::{login, lsq, mode, run, stderr, stdout, RefusedPort};
use lsq_sandbox::{Sandbox, DEFAULT_PORTAL_ID, DEMO_LEAD_ID, DEMO_LEAD_PHONE, SECOND_PORTAL_ID};

/// A fast sandbox that knows the planted credentials.
async fn sandbox() -> Sandbox {
    crate::support::sandbox(planted::sandbox_config()).await
}

/// `otp STEP` against the sandbox with only the public key in the environment.
fn otp(dir: &Path, sandbox: &Sandbox, step: &str) -> Command {
    let mut cmd = otp_without_credentials(dir, sandbox, step);
    cmd.env("LSQ_PUBLIC_AUTH_KEY", PUBLIC);
    cmd
}

fn otp_without_credentials(dir: &Path, sandbox: &Sandbox, step: &str) -> Command {
    let mut cmd = lsq(dir);
    cmd.args(["otp", step])
        .args(["--host", &sandbox.base_url()])
        .args(["--rate", "1000/1s"]);
    cmd
}

fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "exit {:?}", output.status.code());
    serde_json::from_slice(&output.stdout).expect("stdout is one JSON object")
}

/// Requests an OTP for the demo lead and returns the code.
fn request_code(dir: &Path, sandbox: &Sandbox) -> String {
    let out = json(&run(otp(dir, sandbox, "request")
        .args(["--phone", DEMO_LEAD_PHONE])
        .arg("--json")));
    out["code"].as_str().expect("a code").to_owned()
}

/// The OTP the sandbox would have sent by SMS.
fn sms(sandbox: &Sandbox, code: &str) -> String {
    sandbox.otp(code).expect("the sandbox knows the code").otp
}

/// An OTP that differs from the right one in its last digit.
fn wrong(otp: &str) -> String {
    let last = otp.chars().last().unwrap().to_digit(10).unwrap();
    format!("{}{}", &otp[..otp.len() - 1], (last + 1) % 10)
}

/// Asserts that the step exited 1 and that its stderr names every one of
/// `needles`: what went wrong and what to check.
#[track_caller]
fn assert_fails_naming(output: &Output, needles: &[&str]) {
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(output);
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in:\n{message}");
    }
}

/// Value of the `Name: value` line in human output.
fn line_value(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name:?} line in:\n{text}"))
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn request_then_signin_prints_a_link_that_logs_in_the_demo_lead() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox().await;

    let requested = run(otp(dir.path(), &sandbox, "request").args(["--phone", DEMO_LEAD_PHONE]));
    assert!(requested.status.success());
    let text = stdout(&requested);
    let code = line_value(&text, "Code:");
    let next = format!(
        "lsq-dispatch otp signin --host {} --phone {DEMO_LEAD_PHONE} --code {code} --otp OTP",
        sandbox.base_url()
    );
    assert!(
        text.contains(&next),
        "the next command is spelled out:\n{text}"
    );

    // With the keys Generate needs, the link carries the lead's portal key.
    let signed = run(otp(dir.path(), &sandbox, "signin")
        .args(["--phone", DEMO_LEAD_PHONE, "--code", &code])
        .args(["--otp", &sms(&sandbox, &code)])
        .args(["--portal-url", &sandbox.portal_url()])
        .args(["--portal-id", DEFAULT_PORTAL_ID])
        .env("LSQ_ACCESS_KEY", ACCESS)
        .env("LSQ_SECRET_KEY", SECRET)
        .env("LSQ_TENANT_AUTH_KEY", planted::TENANT));
    assert!(signed.status.success());
    let text = stdout(&signed);
    assert!(text.contains(DEMO_LEAD_ID), "{text}");
    let expires = line_value(&text, "Key expires at");
    let expires = expires.split_whitespace().next().unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(expires).unwrap();
    let minutes = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_minutes();
    assert!((235..=240).contains(&minutes), "expires in {minutes} min");

    let (status, page) = login(&line_value(&text, "Login link:")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["LeadId"], DEMO_LEAD_ID);
    assert_eq!(page["PortalId"], DEFAULT_PORTAL_ID);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_output_parses_on_both_steps() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox().await;

    let out = json(&run(otp(dir.path(), &sandbox, "request")
        .args(["--phone", DEMO_LEAD_PHONE])
        .arg("--json")));
    assert_eq!(out["field"], "Phone");
    assert_eq!(out["field_content"], DEMO_LEAD_PHONE);
    assert_eq!(out["message"], "OTP sent");
    let code = out["code"].as_str().unwrap();
    assert!(out["next"].as_str().unwrap().contains(code), "{out}");

    let out = json(&run(otp(dir.path(), &sandbox, "signin")
        .args(["--phone", DEMO_LEAD_PHONE, "--code", code])
        .args(["--otp", &sms(&sandbox, code)])
        .args(["--portal-url", &sandbox.portal_url()])
        .arg("--json")));
    assert_eq!(out["lead_id"], DEMO_LEAD_ID);
    chrono::DateTime::parse_from_rfc3339(out["expires_at"].as_str().unwrap()).unwrap();
    let (status, page) = login(out["login_link"].as_str().unwrap()).await;
    assert_eq!((status, &page["LeadId"]), (200, &DEMO_LEAD_ID.into()));

    // Without a portal page there is no link to give.
    let code = request_code(dir.path(), &sandbox);
    let out = json(&run(otp(dir.path(), &sandbox, "signin")
        .args(["--phone", DEMO_LEAD_PHONE, "--code", &code])
        .args(["--otp", &sms(&sandbox, &code)])
        .arg("--json")));
    assert_eq!(out["login_link"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_code_file_is_private_and_feeds_the_signin() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox().await;
    let path = dir.path().join("code.txt");

    let requested = run(otp(dir.path(), &sandbox, "request")
        .args(["--phone", DEMO_LEAD_PHONE])
        .arg("--code-file")
        .arg(&path));
    assert!(requested.status.success());
    let code = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(
        !stdout(&requested).contains(&code),
        "the code stays in the file"
    );
    assert!(stdout(&requested).contains("--code-file"));
    assert_eq!(mode(&path), 0o600);

    // LSQ_OTP keeps the OTP out of the command line.
    let signed = run(otp(dir.path(), &sandbox, "signin")
        .args(["--phone", DEMO_LEAD_PHONE])
        .arg("--code-file")
        .arg(&path)
        .env("LSQ_OTP", sms(&sandbox, &code)));
    assert!(signed.status.success());
    assert!(stdout(&signed).contains(DEMO_LEAD_ID));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_otp_fails_clearly_and_the_right_one_still_works_once() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox().await;
    let code = request_code(dir.path(), &sandbox);
    let right = sms(&sandbox, &code);
    let signin = |otp_value: &str| {
        run(otp(dir.path(), &sandbox, "signin")
            .args(["--phone", DEMO_LEAD_PHONE, "--code", &code])
            .args(["--otp", otp_value]))
    };

    let failed = signin(&wrong(&right));
    assert_fails_naming(&failed, &["Invalid OTP", "check --otp"]);
    assert!(stdout(&failed).is_empty());

    // The sandbox lets a few wrong guesses pass before it burns the code.
    let signed = signin(&right);
    assert!(signed.status.success());
    assert!(stdout(&signed).contains(DEMO_LEAD_ID));

    let again = signin(&right);
    assert_fails_naming(&again, &["already been used", "otp request"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_phone_or_code_fails_with_the_servers_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox().await;

    let failed = run(otp(dir.path(), &sandbox, "request").args(["--phone", "+1-5550000"]));
    assert_fails_naming(&failed, &["No lead found", "check --phone"]);

    let failed = run(otp(dir.path(), &sandbox, "signin")
        .args(["--phone", DEMO_LEAD_PHONE])
        .args(["--code", "00000000-0000-4000-8000-000000000000"])
        .args(["--otp", "123456"]));
    assert_fails_naming(&failed, &["Invalid OTP code", "otp request"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_flags_and_missing_settings_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox().await;
    let cases: Vec<(Command, &str)> = vec![
        (
            {
                let mut cmd = otp(dir.path(), &sandbox, "request");
                cmd.args(["--phone", DEMO_LEAD_PHONE, "--portal-id", "nope"]);
                cmd
            },
            "not a GUID",
        ),
        (
            {
                let mut cmd = otp_without_credentials(dir.path(), &sandbox, "request");
                cmd.args(["--phone", DEMO_LEAD_PHONE]);
                cmd
            },
            "LSQ_PUBLIC_AUTH_KEY",
        ),
        (
            {
                let mut cmd = lsq(dir.path());
                cmd.args(["otp", "request", "--phone", DEMO_LEAD_PHONE])
                    .env("LSQ_PUBLIC_AUTH_KEY", PUBLIC);
                cmd
            },
            "--host",
        ),
        (
            {
                let mut cmd = lsq(dir.path());
                cmd.args(["otp", "request", "--phone", DEMO_LEAD_PHONE])
                    .args(["--host", "http://example.com"])
                    .env("LSQ_PUBLIC_AUTH_KEY", PUBLIC);
                cmd
            },
            "unencrypted",
        ),
        (
            {
                let mut cmd = otp(dir.path(), &sandbox, "signin");
                cmd.args(["--phone", DEMO_LEAD_PHONE, "--otp", "123456"]);
                cmd
            },
            "--code",
        ),
        (
            {
                let mut cmd = otp(dir.path(), &sandbox, "signin");
                cmd.args(["--phone", DEMO_LEAD_PHONE, "--code", "c", "--otp", "1"])
                    .args(["--portal-url", "portal.example.com"]);
                cmd
            },
            "--portal-url",
        ),
    ];
    for (mut cmd, needle) in cases {
        let output = run(&mut cmd);
        assert_eq!(output.status.code(), Some(2));
        assert!(stderr(&output).contains(needle), "wanted {needle:?}");
    }
    assert_eq!(
        sandbox.stats().calls,
        0,
        "no call before the flags are good"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_public_key_is_fetched_only_when_not_given() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox().await;

    // Given: one call per step.
    request_code(dir.path(), &sandbox);
    assert_eq!(sandbox.stats().calls, 1);

    // Not given: the access and secret keys fetch it first, on both steps.
    let fetching = |step: &str| {
        let mut cmd = otp_without_credentials(dir.path(), &sandbox, step);
        cmd.env("LSQ_ACCESS_KEY", ACCESS)
            .env("LSQ_SECRET_KEY", SECRET);
        cmd
    };
    let out = json(&run(fetching("request")
        .args(["--phone", DEMO_LEAD_PHONE])
        .arg("--json")));
    assert_eq!(sandbox.stats().calls, 3);
    let code = out["code"].as_str().unwrap();
    let out = json(&run(fetching("signin")
        .args(["--phone", DEMO_LEAD_PHONE, "--code", code])
        .args(["--otp", &sms(&sandbox, code)])
        .arg("--json")));
    assert_eq!(out["lead_id"], DEMO_LEAD_ID);
    assert_eq!(sandbox.stats().calls, 5);
    assert_eq!(sandbox.stats().by_status.get(&200), Some(&5));

    // Wrong access keys: the fetch's 401 names what to check.
    let failed = run(fetching("request")
        .args(["--phone", DEMO_LEAD_PHONE])
        .env("LSQ_ACCESS_KEY", "wrong"));
    assert_fails_naming(&failed, &["public auth key", "LSQ_ACCESS_KEY"]);
    assert_eq!(sandbox.stats().calls, 6, "no OTP call after a failed fetch");
}

#[tokio::test(flavor = "multi_thread")]
async fn portal_and_register_token_headers_arrive_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox().await;

    let code = request_code(dir.path(), &sandbox);
    let record = sandbox.otp(&code).unwrap();
    assert_eq!((record.portal_id, record.register_token), (None, None));

    // By flag.
    let out = json(&run(otp(dir.path(), &sandbox, "request")
        .args(["--phone", DEMO_LEAD_PHONE, "--json"])
        .args(["--portal-id", &SECOND_PORTAL_ID.to_uppercase()])
        .args(["--register-token", REGISTER])));
    let code = out["code"].as_str().unwrap();
    let record = sandbox.otp(code).unwrap();
    assert_eq!(record.portal_id.as_deref(), Some(SECOND_PORTAL_ID));
    assert_eq!(record.register_token.as_deref(), Some(REGISTER));
    let next = out["next"].as_str().unwrap();
    assert!(
        next.contains(&format!("--portal-id {SECOND_PORTAL_ID}")),
        "{next}"
    );
    assert!(!next.contains(REGISTER), "{next}");

    // By environment; the key is issued for the portal named.
    let signed = json(&run(otp(dir.path(), &sandbox, "signin")
        .args(["--phone", DEMO_LEAD_PHONE, "--code", code, "--json"])
        .args(["--otp", &sms(&sandbox, code)])
        .args(["--portal-url", &sandbox.portal_url()])
        .env("LSQ_PORTAL_ID", SECOND_PORTAL_ID)
        .env("LSQ_REGISTER_TOKEN", REGISTER)));
    let (status, page) = login(signed["login_link"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(page["PortalId"], SECOND_PORTAL_ID);

    let out = json(&run(otp(dir.path(), &sandbox, "request")
        .args(["--phone", DEMO_LEAD_PHONE, "--json"])
        .env("LSQ_PORTAL_ID", SECOND_PORTAL_ID)
        .env("LSQ_REGISTER_TOKEN", REGISTER)));
    let record = sandbox.otp(out["code"].as_str().unwrap()).unwrap();
    assert_eq!(record.portal_id.as_deref(), Some(SECOND_PORTAL_ID));
    assert_eq!(record.register_token.as_deref(), Some(REGISTER));
}

/// Asserts that neither stdout nor stderr holds a planted credential or any
/// of these OTPs.
fn assert_no_secret(output: &Output, otps: &[&str]) {
    planted::assert_absent(&planted::outputs(output), otps);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_or_otp_in_the_output_of_a_failing_signin() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox().await;
    let code = request_code(dir.path(), &sandbox);
    let right = sms(&sandbox, &code);
    let guess = wrong(&right);

    let failed = run(otp_without_credentials(dir.path(), &sandbox, "signin")
        .args(["--phone", DEMO_LEAD_PHONE, "--code", &code, "--otp", &guess])
        .args(["--register-token", REGISTER])
        .env("LSQ_ACCESS_KEY", ACCESS)
        .env("LSQ_SECRET_KEY", SECRET));
    assert_fails_naming(&failed, &["Invalid OTP"]);
    assert_no_secret(&failed, &[&guess, &right]);

    // A refused public key, and a host that does not answer (the fetch's URL
    // carries the access and secret keys).
    let failed = run(otp(dir.path(), &sandbox, "signin")
        .args(["--phone", DEMO_LEAD_PHONE, "--code", &code, "--otp", &right])
        .env("LSQ_PUBLIC_AUTH_KEY", "PKwrong+/=&9"));
    assert_fails_naming(&failed, &["LSQ_PUBLIC_AUTH_KEY"]);
    assert_no_secret(&failed, &[&right, "PKwrong"]);

    let closed = RefusedPort::bind();
    let host = format!("http://{}", closed.addr);
    let failed = run(lsq(dir.path())
        .args(["otp", "signin", "--host", &host, "--rate", "1000/1s"])
        .args(["--phone", DEMO_LEAD_PHONE, "--code", &code, "--otp", &right])
        .env("LSQ_ACCESS_KEY", ACCESS)
        .env("LSQ_SECRET_KEY", SECRET));
    assert_fails_naming(&failed, &["attempts"]);
    assert_no_secret(&failed, &[&right]);
}
