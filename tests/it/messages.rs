//! Messages for the mistakes people make most: each says what is wrong and
//! what to do, with the exit code that says whether any work was done (2: a
//! usage error before any; 1: the run stopped).

use std::time::Duration;

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{
    fast_sandbox, leads_with_email, lsq, read_report, run, run_on_sandbox, sample, sandbox, stderr,
    wait_until, with_email, write, RefusedPort,
};
use lsq_sandbox::SandboxConfig;

/// A one-lead CSV without a PortalId column.
fn one_lead(dir: &std::path::Path) -> std::path::PathBuf {
    write(
        dir,
        "leads.csv",
        "LeadId\n7d6d8886-d5dd-4a6f-ad00-d038090d1bc9\n",
    )
}

#[test]
fn a_secret_given_as_a_flag_is_pointed_to_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let input = one_lead(dir.path());
    for (flag, variable) in [
        ("--access-key", "LSQ_ACCESS_KEY"),
        ("--secret-key=s3cret", "LSQ_SECRET_KEY"),
        ("--tenant-auth-key", "LSQ_TENANT_AUTH_KEY"),
        ("--public-auth-key", "LSQ_PUBLIC_AUTH_KEY"),
    ] {
        let out = run(lsq(dir.path())
            .arg("run")
            .arg(&input)
            .args([flag, "x", "--dry-run"]));
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = stderr(&out);
        assert!(err.contains(variable), "{flag}: {err}");
        assert!(err.contains("--config"), "{flag}: {err}");
        assert!(!err.contains("use '--"), "{flag}: {err}");
        assert!(!err.contains("s3cret"), "{flag}: {err}");
    }
    let out = run(lsq(dir.path()).args(["otp", "request", "--phone", "1", "--access-key", "x"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("LSQ_ACCESS_KEY"), "{}", stderr(&out));
}

/// `run --dry-run` of a one-lead file with this portal URL and host.
fn plan_with(dir: &std::path::Path, portal_url: &str, host: &str) -> std::process::Output {
    let input = one_lead(dir);
    run(lsq(dir)
        .arg("run")
        .arg(&input)
        .args(["--dry-run", "--report", "plan.csv"])
        .args(["--portal-id", "9b2c4f6e-1d3a-4c5b-8e7f-a0b1c2d3e4f5"])
        .args(["--portal-url", portal_url, "--host", host]))
}

#[test]
fn a_url_missing_its_colon_or_slashes_gets_the_url_it_meant() {
    let dir = tempfile::tempdir().unwrap();
    let host = "portalapi.leadsquared.com";
    for (typed, meant) in [
        ("https//apply.example.com", "https://apply.example.com"),
        ("http:/localhost:8080/login", "http://localhost:8080/login"),
        ("https:apply.example.com/x", "https://apply.example.com/x"),
        ("https:///apply.example.com", "https://apply.example.com"),
    ] {
        let out = plan_with(dir.path(), typed, host);
        assert_eq!(out.status.code(), Some(2), "{typed}");
        let err = stderr(&out);
        assert!(err.contains(&format!("{meant}\n")), "{typed}: {err}");
        assert!(!err.contains("https://https"), "{typed}: {err}");
        assert!(!dir.path().join("plan.csv").exists(), "{typed}");
    }
    let page = "https://apply.example.com/";
    let out = plan_with(dir.path(), page, "https//portalapi.leadsquared.com");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("https://portalapi.leadsquared.com\n"), "{err}");
}

#[test]
fn plain_http_is_refused_except_to_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let host = "portalapi.leadsquared.com";
    let out = plan_with(dir.path(), "http://remote-host/login", host);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--portal-url") && err.contains("https://remote-host/login"),
        "{err}"
    );
    let out = plan_with(
        dir.path(),
        "https://apply.example.com/",
        "http://remote-host",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("use https://"), "{}", stderr(&out));
    for page in [
        "http://localhost:8080/login",
        "http://127.0.0.1/x",
        "http://[::1]/",
    ] {
        let out = plan_with(dir.path(), page, "http://127.0.0.1:9");
        assert_eq!(out.status.code(), Some(0), "{page}");
    }
}

/// `run --email` of `input` on `sandbox`, sending through `smtp_url`.
fn email_run(
    sandbox: &lsq_sandbox::Sandbox,
    dir: &std::path::Path,
    input: &std::path::Path,
    smtp_url: &str,
) -> std::process::Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--quiet"]);
    with_email(&mut cmd, smtp_url, &sample("templates"));
    cmd
}

/// Runs an email run through `smtp_url`, which must stop it before any API
/// call (exit 1) with a message that does not blame the login; its stderr.
async fn stopped_before_any_call(smtp_url: &str) -> String {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 2);
    let out = run(&mut email_run(&sandbox, dir.path(), &input, smtp_url));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        !err.contains("LSQ_SMTP_PASSWORD"),
        "not a login fault: {err}"
    );
    assert_eq!(sandbox.stats().calls, 0, "no API call before SMTP works");
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn smtps_to_a_plaintext_server_says_it_did_not_answer_tls_and_what_to_use() {
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let err = stopped_before_any_call(&format!("smtps://{}", smtp.addr)).await;
    assert!(err.contains("did not answer TLS"), "{err}");
    let starttls = format!("smtp://127.0.0.1:{}?tls=required", smtp.addr.port());
    assert!(err.contains(&starttls), "{err}");
    assert!(!err.contains("InvalidContentType"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_smtp_connection_says_it_could_not_connect() {
    let refused = RefusedPort::bind();
    let err = stopped_before_any_call(&format!("smtp://{}", refused.addr)).await;
    let expected = format!(
        "cannot connect to the SMTP server {} (connection refused)",
        refused.addr
    );
    assert!(err.contains(&expected), "{err}");
    assert!(!err.contains("temporary"), "{err}");
}

/// The server answered the check at the start and then went away: the run
/// stops after a few messages in a row could not connect, rather than try
/// every lead, and leaves none of them in doubt. Those already in flight
/// (up to the 25 messages a run sends at once) fail too.
#[tokio::test(flavor = "multi_thread")]
async fn an_smtp_server_that_goes_away_stops_the_run_with_nothing_in_doubt() {
    let sandbox = sandbox(SandboxConfig {
        service_time: (Duration::from_millis(400), Duration::from_millis(400)),
        ..crate::support::fast_config()
    })
    .await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 40);
    let state = dir.path().join("state.sqlite");
    let mut cmd = email_run(&sandbox, dir.path(), &input, &smtp.url());
    cmd.args(["--campaign", "c", "--max-attempts", "1"])
        .arg("--state")
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // The SMTP check comes before the first call.
    wait_until("the first API call", || sandbox.stats().calls > 0).await;
    let url = smtp.url();
    drop(smtp);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("cannot connect to the SMTP server"), "{err}");
    assert!(err.contains("3 messages in a row"), "{err}");
    let failed = read_report(&dir.path().join("report.csv"))
        .iter()
        .filter(|r| r["status"] == "failed")
        .count();
    assert!(failed < 40, "every lead was tried: {failed}");

    let again = SmtpServer::start(SmtpBehaviour::new());
    let out = run(email_run(&sandbox, dir.path(), &input, &again.url())
        .args(["--campaign", "c", "--state"])
        .arg(&state));
    assert_eq!(out.status.code(), Some(0), "{url}: none in doubt");
    assert_eq!(again.messages().len(), 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_portal_anywhere_is_a_usage_error_before_any_row() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = one_lead(dir.path());
    let plan =
        run(lsq(dir.path())
            .arg("run")
            .arg(&input)
            .args(["--dry-run", "--report", "plan.csv"]));
    let config = sandbox.config();
    let live = run(lsq(dir.path())
        .arg("run")
        .arg(&input)
        .args(["--host", &sandbox.base_url()])
        .args([
            "--portal-url",
            &sandbox.portal_url(),
            "--report",
            "report.csv",
        ])
        .env("LSQ_ACCESS_KEY", &config.access_key)
        .env("LSQ_SECRET_KEY", &config.secret_key)
        .env("LSQ_TENANT_AUTH_KEY", &config.tenant_auth_key));
    for (out, report) in [(plan, "plan.csv"), (live, "report.csv")] {
        assert_eq!(out.status.code(), Some(2), "{report}");
        let err = stderr(&out);
        assert!(
            err.contains("no PortalId column") && err.contains("--portal-id"),
            "{err}"
        );
        assert!(!dir.path().join(report).exists(), "{report}");
    }
    assert_eq!(sandbox.stats().calls, 0);

    // The sandbox's own portal stands in for a --sandbox plan, as for its run.
    let out = run(lsq(dir.path()).arg("run").arg(&input).args([
        "--sandbox",
        "--dry-run",
        "--report",
        "plan.csv",
    ]));
    assert_eq!(out.status.code(), Some(0));
    let rows = read_report(&dir.path().join("plan.csv"));
    assert_eq!(rows[0]["status"], "planned");
}

#[test]
fn a_preview_needs_no_outbox_and_goes_to_preview() {
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 5);
    let out = run(lsq(dir.path())
        .arg("run")
        .arg(&input)
        .args([
            "--dry-run",
            "--email",
            "--preview",
            "3",
            "--report",
            "plan.csv",
        ])
        .args(["--portal-id", "9b2c4f6e-1d3a-4c5b-8e7f-a0b1c2d3e4f5"])
        .args(["--from", "Acme <invites@acme.example>", "--templates"])
        .arg(sample("templates")));
    assert_eq!(out.status.code(), Some(0));
    let previews = std::fs::read_dir(dir.path().join("preview"))
        .unwrap()
        .count();
    assert_eq!(previews, 3);
}

/// `run --sandbox --test-email qa@acme.example` of five leads.
fn sandbox_test_email(dir: &std::path::Path) -> std::process::Command {
    let input = leads_with_email(dir, 5);
    let mut cmd = lsq(dir);
    cmd.arg("run")
        .arg(&input)
        .args([
            "--sandbox",
            "--test-email",
            "qa@acme.example",
            "--templates",
        ])
        .arg(sample("templates"));
    cmd
}

#[test]
fn the_sandbox_sends_one_test_message_and_says_where_it_went() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let out = run(sandbox_test_email(dir.path()).args(["--smtp-url", &smtp.url()]));
    assert_eq!(out.status.code(), Some(0));
    assert!(crate::support::stdout(&out).contains("sent to qa@acme.example"));
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to, ["qa@acme.example"]);

    // Without an SMTP server the sandbox writes it to ./outbox, and says so.
    let out = run(&mut sandbox_test_email(dir.path()));
    assert_eq!(out.status.code(), Some(0));
    let said = crate::support::stdout(&out);
    assert!(said.contains("written to the outbox outbox"), "{said}");
    assert!(!said.contains("sent to"), "{said}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .count(),
        1
    );

    // A plan sends nothing, so it cannot send a test message.
    let out = run(sandbox_test_email(dir.path()).arg("--dry-run"));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--test-email") && err.contains("--dry-run") && err.contains("--preview"),
        "{err}"
    );
    assert!(!err.contains("no row could be linked"), "{err}");
}

/// The lines `lsq-dispatch sandbox` prints at start, up to its budget line.
fn sandbox_banner(dir: &std::path::Path, access_key: Option<&str>) -> Vec<String> {
    use std::io::BufRead as _;
    let mut cmd = lsq(dir);
    if let Some(key) = access_key {
        cmd.env("LSQ_ACCESS_KEY", key);
    }
    let mut child = cmd
        .args(["sandbox", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let last = line.contains("budget");
        lines.push(line);
        if last {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    lines
}

#[test]
fn the_sandbox_banner_pastes_into_a_shell_with_every_key_whole() {
    use lsq_sandbox::{DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, DEFAULT_TENANT_AUTH_KEY};
    let dir = tempfile::tempdir().unwrap();
    let banner = sandbox_banner(dir.path(), None).join("\n");
    let script = format!(
        "set -eu\n{banner}\nprintf '%s\\n' \"$LSQ_ACCESS_KEY\" \"$LSQ_SECRET_KEY\" \"$LSQ_TENANT_AUTH_KEY\""
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{banner}\n{}", stderr(&out));
    let keys = crate::support::stdout(&out);
    assert_eq!(
        keys.lines().collect::<Vec<_>>(),
        [
            DEFAULT_ACCESS_KEY,
            DEFAULT_SECRET_KEY,
            DEFAULT_TENANT_AUTH_KEY
        ],
        "{banner}"
    );
}

#[test]
fn the_sandbox_banner_never_shows_a_key_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let planted = crate::support::planted::ACCESS;
    let banner = sandbox_banner(dir.path(), Some(planted)).join("\n");
    assert!(
        banner.contains("# LSQ_ACCESS_KEY: the one in your environment (not shown)"),
        "{banner}"
    );
    crate::support::planted::assert_absent(&[("banner", banner)], &[]);
}

#[test]
fn a_config_file_with_a_secret_that_others_can_read_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let input = one_lead(dir.path());
    let plan = |config: &std::path::Path| {
        run(lsq(dir.path())
            .arg("run")
            .arg(&input)
            .args(["--dry-run", "--report", "plan.csv", "--config"])
            .arg(config)
            .args(["--portal-id", "9b2c4f6e-1d3a-4c5b-8e7f-a0b1c2d3e4f5"]))
    };
    let secret = write(dir.path(), "secret.toml", "access_key = \"AKplant$1\"\n");
    let plain = write(dir.path(), "plain.toml", "rate = \"25/5s\"\n");
    for (config, mode, warned) in [
        (&secret, 0o644, true),
        (&secret, 0o600, false),
        (&plain, 0o644, false),
    ] {
        std::fs::set_permissions(config, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = plan(config);
        assert_eq!(out.status.code(), Some(0));
        let err = stderr(&out);
        let warning = format!("chmod 600 {}", config.display());
        assert_eq!(err.contains(&warning), warned, "{mode:o}: {err}");
        assert!(!err.contains("AKplant"), "{err}");
    }
}

#[test]
fn a_missing_input_is_named_once_by_a_real_run_too() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(lsq(dir.path()).args(["run", "missing.csv", "--sandbox"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("missing.csv"), "{err}");
}
