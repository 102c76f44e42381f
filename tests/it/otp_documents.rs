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

/// Signs the demo lead in with `extra` settings and returns what it printed.
async fn signed_in(sandbox: &Sandbox, dir: &Path, extra: &mut dyn FnMut(&mut Command)) -> String {
    let out = run(otp(dir, sandbox, "request").args(["--phone", DEMO_LEAD_PHONE, "--json"]));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let code = answer["code"].as_str().unwrap().to_owned();
    let mut cmd = otp(dir, sandbox, "signin");
    cmd.args(["--phone", DEMO_LEAD_PHONE, "--code", &code])
        .args(["--otp", &sandbox.otp(&code).unwrap().otp])
        .args(["--portal-url", &sandbox.portal_url()]);
    extra(&mut cmd);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0));
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_signin_link_carries_a_generate_key_or_says_plainly_it_does_not() {
    let sandbox = crate::support::sandbox(planted::sandbox_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = sandbox.config();

    let text = signed_in(&sandbox, dir.path(), &mut |cmd| {
        cmd.env("LSQ_ACCESS_KEY", &config.access_key)
            .env("LSQ_SECRET_KEY", &config.secret_key)
            .env("LSQ_TENANT_AUTH_KEY", &config.tenant_auth_key)
            .args(["--portal-id", &config.portal_ids[0]]);
    })
    .await;
    let issued = || sandbox.stats().keys_issued.get(DEMO_LEAD_ID).copied();
    assert_eq!(issued(), Some(2), "the sign-in key, then the Generate key");
    assert!(text.contains("portal key from Generate"), "{text}");
    let link = text
        .lines()
        .find_map(|l| l.strip_prefix("Login link: "))
        .unwrap_or_else(|| panic!("{text}"));
    let (status, page) = crate::support::login(link).await;
    assert_eq!((status, page["LeadId"].as_str()), (200, Some(DEMO_LEAD_ID)));

    // Given only the public key, no Generate key can be had: said plainly.
    let text = signed_in(&sandbox, dir.path(), &mut |_| {}).await;
    assert_eq!(issued(), Some(3), "the sign-in key alone");
    assert!(!text.contains("Login link:"), "{text}");
    assert!(text.contains("Session link: "), "{text}");
    assert!(text.contains("documents as a session key"), "{text}");
}
