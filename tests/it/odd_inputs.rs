//! Odd inputs that once gave wrong results or crashes: a subject too long for
//! one header line, addresses SMTP cannot deliver to, a portal URL that
//! already carries a login parameter, a closed stdout, absurd durations and
//! rates.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::watch::catches_sigterm;
use crate::support::{
    fast_sandbox, lead_ids, lsq, read_report, run, run_on_sandbox, sample, sigterm, stderr,
    with_email, write, write_templates,
};
use lsq_sandbox::{Sandbox, DEMO_LEAD_PHONE};

/// RFC 5322's hard limit on a line, without its CRLF.
const MAX_LINE: usize = 998;
/// RFC 5322's recommended limit, met wherever a header can be folded.
const FOLDED_LINE: usize = 78;

/// The header lines of a raw message: everything before the first empty line.
fn header_lines(raw: &str) -> Vec<&str> {
    raw.split("\r\n").take_while(|l| !l.is_empty()).collect()
}

/// The Subject header, unfolded and with its RFC 2047 encoded words decoded.
fn decoded_subject(raw: &str) -> String {
    let lines = header_lines(raw);
    let start = lines
        .iter()
        .position(|l| l.to_ascii_lowercase().starts_with("subject:"))
        .expect("a Subject header");
    let mut words = vec![lines[start]["subject:".len()..].trim()];
    words.extend(
        lines[start + 1..]
            .iter()
            .take_while(|l| l.starts_with([' ', '\t']))
            .map(|l| l.trim()),
    );
    let mut out = String::new();
    let mut last_was_encoded = false;
    for word in words.iter().flat_map(|w| w.split(' ')) {
        let encoded = word
            .strip_prefix("=?utf-8?b?")
            .and_then(|w| w.strip_suffix("?="));
        match encoded {
            Some(b64) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap();
                // Whitespace between two encoded words is not part of the text.
                if !out.is_empty() && !last_was_encoded {
                    out.push(' ');
                }
                out.push_str(&String::from_utf8(bytes).unwrap());
                last_was_encoded = true;
            }
            None => {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(word);
                last_was_encoded = false;
            }
        }
    }
    out
}

/// Asserts that every header line of `raw` fits RFC 5322's limit, that the
/// subject's lines are folded to the recommended length, and that the
/// subject reads back as `subject`.
#[track_caller]
fn assert_folded(raw: &str, subject: &str) {
    for line in header_lines(raw) {
        assert!(line.len() <= MAX_LINE, "a {}-byte header line", line.len());
    }
    let lines = header_lines(raw);
    let start = lines
        .iter()
        .position(|l| l.starts_with("Subject:"))
        .unwrap();
    let subject_lines = std::iter::once(lines[start]).chain(
        lines[start + 1..]
            .iter()
            .copied()
            .take_while(|l| l.starts_with(' ')),
    );
    for line in subject_lines {
        assert!(
            line.len() <= FOLDED_LINE,
            "a {}-byte subject line",
            line.len()
        );
    }
    assert_eq!(decoded_subject(raw), subject);
}

/// Runs one lead whose `Code` cell is `code`, with templates whose subject
/// is `Your code {{ Code }}`, through an email run with `extra` flags; returns
/// the exit code. The input and templates are written on the first call.
fn mail_code(sandbox: &Sandbox, smtp: &SmtpServer, dir: &Path, code: &str, extra: &[&str]) -> i32 {
    let templates = dir.join("templates");
    if !templates.exists() {
        write_templates(dir, "Your code {{ Code }}", "{{ link }}\n");
    }
    let id = &lead_ids(1)[0];
    let input = write(
        dir,
        "leads.csv",
        &format!("LeadId,Email,Code\n{id},ann@example.com,{code}\n"),
    );
    let mut cmd = run_on_sandbox(sandbox, dir, &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--quiet"]).args(extra);
    with_email(&mut cmd, &smtp.url(), &templates);
    run(&mut cmd).status.code().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_unbroken_subject_is_folded_for_smtp_and_the_outbox_alike() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let code = "x".repeat(3000);
    let subject = format!("Your code {code}");

    assert_eq!(mail_code(&sandbox, &smtp, dir.path(), &code, &[]), 0);
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert_folded(&messages[0].data, &subject);

    let review = ["--outbox", "outbox", "--campaign", "review"];
    assert_eq!(mail_code(&sandbox, &smtp, dir.path(), &code, &review), 0);
    let eml = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "eml"))
        .expect("an .eml file");
    assert_folded(&std::fs::read_to_string(eml).unwrap(), &subject);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_non_ascii_subject_reads_back_unchanged() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let code = format!("{}ü{}", "é".repeat(400), "y".repeat(200));
    assert_eq!(mail_code(&sandbox, &smtp, dir.path(), &code, &[]), 0);
    assert_folded(&smtp.messages()[0].data, &format!("Your code {code}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_smtp_cannot_deliver_to_is_invalid_before_any_key_is_minted() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    for address in ["u@[127.0.0.1]", "u@[IPv6:::1]", "u@127.0.0.1"] {
        let dir = tempfile::tempdir().unwrap();
        let id = &lead_ids(1)[0];
        let input = write(
            dir.path(),
            "leads.csv",
            &format!("LeadId,FirstName,Email\n{id},Ann,{address}\n"),
        );
        let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
        cmd.args(["--report", "report.csv", "--quiet"]);
        with_email(&mut cmd, &smtp.url(), &sample("templates"));
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(5), "{address}");
        let rows = read_report(&dir.path().join("report.csv"));
        assert_eq!(rows[0]["status"], "invalid", "{address}");
        assert!(rows[0]["error"].contains(address), "{:?}", rows[0]);
    }
    assert_eq!(sandbox.stats().calls, 0, "no key was minted");
    assert!(smtp.payloads().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_portal_url_that_already_holds_a_login_parameter_is_a_usage_error() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_csv(dir.path(), &lead_ids(2));
    for (page, name) in [
        ("https://p.example/?authKey=X", "authKey"),
        ("https://p.example/login?lang=en&AUTHKEY=X#top", "AUTHKEY"),
        (
            "https://p.example/?leadid=3f2b8c1e-9d4a-4e7b-a6c5-1b0f7e2d9c84",
            "leadid",
        ),
        ("https://p.example/?PortalId=P", "PortalId"),
        ("https://p.example/?auth%4Bey=X", "authKey"),
    ] {
        let out =
            run(run_on_sandbox(&sandbox, dir.path(), &input, page).args(["--report", "r.csv"]));
        assert_eq!(out.status.code(), Some(2), "{page}");
        let err = stderr(&out);
        assert!(
            err.contains("--portal-url") && err.contains(name),
            "{page}: {err}"
        );
        let out = run(crate::support::lsq(dir.path())
            .arg("run")
            .arg(&input)
            .args(["--dry-run", "--portal-url", page]));
        assert_eq!(out.status.code(), Some(2), "dry run, {page}");
    }
    assert_eq!(sandbox.stats().calls, 0);
    assert!(!dir.path().join("r.csv").exists());
}

/// Runs `cmd` with its stdout a pipe whose reading end is already closed, as
/// `lsq-dispatch … | true` leaves it, and returns how it ended.
fn with_stdout_closed(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    eprintln!("--- stderr\n{}", stderr(&out));
    out
}

#[track_caller]
fn assert_ended(out: &Output, code: i32) {
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
    assert_eq!(out.status.code(), Some(code));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_is_no_panic_and_the_exit_code_is_the_runs() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_csv(dir.path(), &lead_ids(3));
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--state", "state.sqlite"]);
    assert_ended(&with_stdout_closed(&mut cmd), 0);
    assert_eq!(read_report(&dir.path().join("report.csv")).len(), 3);

    let mut ids = lead_ids(4);
    ids[3] = "not-a-guid".into();
    let input = crate::support::leads_csv(dir.path(), &ids);
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--state", "state.sqlite"]);
    assert_ended(&with_stdout_closed(&mut cmd), 5);

    let mut status = lsq(dir.path());
    status.args(["status", "--state", "state.sqlite"]);
    assert_ended(&with_stdout_closed(&mut status), 0);

    let mut otp = lsq(dir.path());
    otp.args(["otp", "request", "--host", &sandbox.base_url()])
        .args(["--phone", DEMO_LEAD_PHONE])
        .env("LSQ_PUBLIC_AUTH_KEY", &sandbox.config().public_auth_key);
    assert_ended(&with_stdout_closed(&mut otp), 0);
}

#[test]
fn the_sandbox_keeps_serving_with_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = lsq(dir.path())
        .args(["sandbox", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    // It watches for SIGTERM only once its settings are printed; a panic
    // while printing them would end it first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !catches_sigterm(child.id()) {
        if let Some(ended) = child.try_wait().unwrap() {
            panic!("the sandbox ended ({ended}) before it served");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sandbox never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(child.try_wait().unwrap(), None, "the sandbox ended");
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sandbox: stopping"),
        "{}",
        stderr(&out)
    );
}

/// Runs `cmd` with its address space capped at 4 GB, so a value that makes
/// the binary reserve memory for it fails fast instead of exhausting the
/// machine.
fn capped(cmd: &mut Command) -> Output {
    use std::os::unix::process::CommandExt as _;
    let limit = libc::rlimit {
        rlim_cur: 4 << 30,
        rlim_max: 4 << 30,
    };
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_AS, &limit) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    run(cmd)
}

#[track_caller]
fn assert_usage_error(out: &Output, setting: &str) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(2), "{setting}: {err}");
    assert!(err.contains(setting), "{setting}: {err}");
}

#[test]
fn absurd_durations_and_rates_are_usage_errors_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_csv(dir.path(), &lead_ids(1));
    let config = write(dir.path(), "lsq.toml", "rate = \"25/2h\"\n");
    let sandbox_run = ["--sandbox", "--report", "r.csv"];
    let dry_run = ["--dry-run", "--report", "r.csv"];
    for (mode, flag, value) in [
        (sandbox_run, "--timeout", "99999999999999999999999h"),
        (sandbox_run, "--timeout", "25h"),
        (dry_run, "--arrival-margin", "99999999999999999999h"),
        (dry_run, "--arrival-margin", "2m"),
        (dry_run, "--rate", "25/99999999999999999999h"),
        (dry_run, "--rate", "25/2h"),
        (dry_run, "--rate", "4294967295/5s"),
        (dry_run, "--rate", "10001/5s"),
        (dry_run, "--smtp-rate", "10/2h"),
        (dry_run, "--config", config.to_str().unwrap()),
    ] {
        let mut cmd = lsq(dir.path());
        cmd.arg("run").arg(&input).args(mode).args([flag, value]);
        let setting = if flag == "--config" { "rate in" } else { flag };
        assert_usage_error(&capped(&mut cmd), setting);
    }
    assert!(!dir.path().join("r.csv").exists());
    for (flag, value) in [
        ("--key-ttl", "99999999999999999999999h"),
        ("--budget", "25/99999999999999999999h"),
        ("--budget", "4294967295/5s"),
        ("--jitter", "0-99999999999999999999h"),
    ] {
        let mut cmd = lsq(dir.path());
        cmd.args(["sandbox", flag, value]);
        assert_usage_error(&capped(&mut cmd), flag);
    }
}
