//! No key leaks from the other texts that come from outside: what the API
//! answers the `otp` steps, what an SMTP server replies to a login, and what
//! the TOML parser says about a broken `--config` file (it used to quote
//! the offending line, key and all).

use std::process::Output;

use base64::Engine as _;

use super::leaks::{assert_nothing_leaked, error_body};
use crate::support::hostile_server::{Answer, HostileServer, Request};
use crate::support::planted::{self, ACCESS, PUBLIC, REGISTER, SECRET, SMTP_PASSWORD};
use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{leads_with_email, lsq, run, run_on_host, sample, stderr, with_email, write};

/// The OTP the tests sign in with.
const OTP: &str = "918273";

/// `otp STEP` against a server that answers every call with a 400 echoing
/// the request (its Authorization and register-token headers included);
/// with a public key in the environment, or the access and secret keys
/// that fetch one.
fn otp(step: &str, public_key: bool) -> Output {
    let echo = |r: &Request| Answer::new(400, error_body(&r.echo()));
    let server = HostileServer::start(echo);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = lsq(dir.path());
    cmd.args([
        "otp",
        step,
        "--host",
        &server.url(),
        "--phone",
        "+14-157415569",
    ])
    .args(["--rate", "1000/1s", "--register-token", REGISTER]);
    if step == "signin" {
        cmd.args(["--code", "c0de", "--otp", OTP]);
    }
    if public_key {
        cmd.env("LSQ_PUBLIC_AUTH_KEY", PUBLIC);
    } else {
        cmd.env("LSQ_ACCESS_KEY", ACCESS)
            .env("LSQ_SECRET_KEY", SECRET);
    }
    let out = run(&mut cmd);
    assert!(!server.requests().is_empty());
    out
}

#[test]
fn no_key_leaks_when_the_api_echoes_an_otp_step() {
    for (step, public_key) in [("request", false), ("request", true), ("signin", true)] {
        let out = otp(step, public_key);
        assert_eq!(out.status.code(), Some(1), "{step}");
        planted::assert_absent(&planted::outputs(&out), &[OTP]);
    }
}

#[test]
fn no_smtp_password_leaks_when_the_server_echoes_the_login() {
    let smtp = SmtpServer::start(SmtpBehaviour::new().auth("u", "other").echo_auth());
    let api = HostileServer::start(super::key_for);
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 1);
    let mut cmd = run_on_host(&api.url(), dir.path(), &input);
    with_email(&mut cmd, &smtp.url(), &sample("templates"))
        .args(["--report", "report.csv"])
        .env("LSQ_SMTP_USER", "invites@acme.example")
        .env("LSQ_SMTP_PASSWORD", SMTP_PASSWORD);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(smtp.auth_failures(), 1);
    assert!(stderr(&out).contains("535"), "the server's reply is shown");
    let login = format!("\0invites@acme.example\0{SMTP_PASSWORD}");
    let blob = base64::engine::general_purpose::STANDARD.encode(login);
    let texts = assert_nothing_leaked(dir.path(), &out);
    let named: Vec<(&str, String)> = texts.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    planted::assert_absent(&named, &[&blob, &blob[..12]]);
}

#[test]
fn no_key_leaks_from_a_broken_config_file() {
    let line = format!("secret_key = \"{SECRET}\"");
    let broken = [
        (
            format!("secret_key = \"{SECRET}\n"),
            "line 1, column 29 (secret_key)",
        ),
        (format!("host = \"h\"\n{line}\n{line}\n"), "line 3"),
        (format!("secret_kye = \"{SECRET}\"\n"), "(secret_kye)"),
        (format!("secret_key = {SECRET}\n"), "line 1"),
        (format!("concurrency = \"{SECRET}\"\n"), "(concurrency)"),
        // An unclosed multi-line string runs to the end of the file.
        (format!("secret_key = \"\"\"{SECRET}\n"), "line 2"),
    ];
    for (text, named) in broken {
        let dir = tempfile::tempdir().unwrap();
        let config = write(dir.path(), "bad.toml", &text);
        let input = write(dir.path(), "leads.csv", "LeadId\n");
        let out = run(lsq(dir.path())
            .arg("run")
            .arg(input)
            .arg("--config")
            .arg(config));
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = stderr(&out);
        assert!(
            err.contains("bad.toml") && err.contains(named),
            "{text}: {err}"
        );
        planted::assert_absent(&planted::outputs(&out), &[]);
    }
}
