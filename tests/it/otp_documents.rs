//! The OTP flow as LeadSquared's documents describe it, and a sandbox as
//! strict as the service: the sign-in uses the `FieldContent` the OTP
//! request answered, not the one typed.

use std::path::Path;
use std::process::Command;

use crate::support::planted::{self, PUBLIC};
use crate::support::{lsq, run, stdout};
use lsq_sandbox::{Sandbox, DEMO_LEAD_ID, DEMO_LEAD_PHONE};

fn otp(dir: &Path, sandbox: &Sandbox, step: &str) -> Command {
    let mut cmd = lsq(dir);
    cmd.args(["otp", step])
        .args(["--host", &sandbox.base_url()])
        .args(["--rate", "1000/1s"])
        .env("LSQ_PUBLIC_AUTH_KEY", PUBLIC);
    cmd
}

/// `--flag VALUE` out of a printed command line (no value there is quoted).
fn flag<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == name)?;
    words.get(at + 1).copied()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_signin_sends_the_field_content_the_otp_request_answered() {
    let sandbox = crate::support::sandbox(planted::sandbox_config()).await;
    let dir = tempfile::tempdir().unwrap();
    // As a person types it; the service answers with its own form.
    let typed = DEMO_LEAD_PHONE.replace('-', " ");
    let page = format!("{}/portal/login", sandbox.base_url());
    let out = run(otp(dir.path(), &sandbox, "request")
        .args(["--phone", &typed, "--json"])
        .args(["--portal-url", &page]));
    assert_eq!(out.status.code(), Some(0));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["field_content"], DEMO_LEAD_PHONE);
    let next = answer["next"].as_str().unwrap();
    assert_eq!(flag(next, "--phone"), Some(DEMO_LEAD_PHONE), "{next}");
    assert_eq!(flag(next, "--portal-url"), Some(page.as_str()), "{next}");
    let code = answer["code"].as_str().unwrap();

    // What a client that kept the typed phone sends is refused, as the
    // service refuses it.
    let otp_value = sandbox.otp(code).unwrap().otp;
    let out = run(otp(dir.path(), &sandbox, "signin")
        .args(["--phone", &typed, "--code", code, "--otp", &otp_value]));
    assert_eq!(out.status.code(), Some(1));
    assert!(crate::support::stderr(&out).contains("FieldContent"));

    // The printed next command, OTP filled in, signs the lead in.
    let out = run(otp(dir.path(), &sandbox, "request").args(["--phone", &typed, "--json"]));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let next = answer["next"].as_str().unwrap();
    let code = flag(next, "--code").unwrap();
    let otp_value = sandbox.otp(code).unwrap().otp;
    let out = run(otp(dir.path(), &sandbox, "signin")
        .args(["--phone", flag(next, "--phone").unwrap(), "--code", code])
        .args(["--otp", &otp_value]));
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains(&format!("Signed in lead {DEMO_LEAD_ID}")));
}
