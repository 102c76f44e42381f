//! SIGTERM and SIGHUP (an SSH session closing) end every wait a run can be
//! in: the limiter's wait for the budget, a Retry-After pause, the SMTP
//! login check at the start, a slow SMTP transaction (finished, then
//! stopped), a pause another run stored in the budget file, and `otp`'s
//! wait for the tenant's budget; `serve` stops cleanly (0) while it still
//! connects to its budget store. Each run ends in 130 with the state
//! consistent: no lead `sending` that was not in an SMTP transaction, and a
//! re-run that agrees with what the first recorded.
//!
//! Each test waits for an event that shows the run is in the wait (a count
//! at a server, a log line) before it signals.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::watch::Captured;
use crate::support::{
    budget_file, fast_sandbox, lead_ids, leads_csv, leads_with_email, lsq, read_report, run,
    run_on_mock, run_on_sandbox, sample, sandbox, send_signal, wait_until, wall_ms, with_email,
};
use lsq_dispatch::state::StateStore;
use lsq_sandbox::{Sandbox, SandboxConfig};

/// The signals that stop a run, by name.
const SIGNALS: [(i32, &str); 2] = [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")];

/// A run on `sandbox` with its report, campaign and state in `dir`.
fn command(sandbox: &Sandbox, dir: &Path, input: &Path) -> Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    campaign(&mut cmd, dir);
    cmd
}

/// Adds the report, campaign and state file in `dir` to a run.
fn campaign<'a>(cmd: &'a mut Command, dir: &Path) -> &'a mut Command {
    cmd.args(["--report", "report.csv", "--campaign", "leads", "--state"])
        .arg(dir.join("state.sqlite"))
}

/// A started run whose standard error a test can wait on.
struct Running {
    child: Child,
    log: Captured,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Captured::start(child.stderr.take().unwrap());
        Running { child, log }
    }

    async fn wait_for_line(&self, needle: &str) {
        wait_until(needle, || self.log.contains(needle)).await;
    }

    /// Sends `signal`, and asserts that the run ends in 130.
    fn stopped_by(mut self, signal: (i32, &str)) -> String {
        send_signal(&self.child, signal.0);
        let status = self.child.wait().unwrap();
        let log = String::from_utf8_lossy(&self.log.finish()).into_owned();
        eprintln!("--- stderr after {}\n{log}", signal.1);
        assert_eq!(status.code(), Some(130), "after {}: {status:?}", signal.1);
        log
    }
}

/// The campaign's leads by state, the states that hold none left out.
fn state_counts(dir: &Path) -> BTreeMap<String, u64> {
    let store = StateStore::open(&dir.join("state.sqlite")).unwrap();
    let mut counts = store.counts("leads").unwrap();
    counts.retain(|_, n| *n > 0);
    counts
}

/// A server on loopback that takes connections and never says a word.
struct Silent(std::net::TcpListener);

impl Silent {
    fn bind() -> Silent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Silent(listener)
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.0.local_addr().unwrap()
    }

    /// Waits for the first connection (`what`), and holds it open.
    async fn connection(&self, what: &str) -> std::net::TcpStream {
        let mut held = None;
        wait_until(what, || {
            held = held.take().or_else(|| self.0.accept().ok().map(|(s, _)| s));
            held.is_some()
        })
        .await;
        held.unwrap()
    }
}

/// Asserts that a run stopped before any lead got its key left none
/// `linked` and none `sending`.
fn nothing_linked_nor_sending(dir: &Path, signal: &str) {
    let state = state_counts(dir);
    assert_eq!(state.get("sending"), None, "{signal}: {state:?}");
    assert_eq!(state.get("linked"), None, "{signal}: {state:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_during_the_wait_for_the_budget_stops_the_run_and_a_rerun_finishes_it() {
    for signal in SIGNALS {
        // 5 calls a second: 20 leads take four seconds of budget waits.
        let sandbox = sandbox(SandboxConfig {
            budget: "5/1s".parse().unwrap(),
            ..SandboxConfig::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let input = leads_csv(dir.path(), &lead_ids(20));
        let running = Running::start(&mut command(&sandbox, dir.path(), &input));
        wait_until("the first window's calls", || sandbox.stats().calls >= 5).await;
        running.stopped_by(signal);

        let linked = read_report(&dir.path().join("report.csv"))
            .iter()
            .filter(|row| row["status"] == "linked")
            .count() as u64;
        let state = state_counts(dir.path());
        assert_eq!(
            state.get("linked"),
            Some(&linked),
            "{}: {state:?}",
            signal.1
        );
        assert_eq!(state.get("sending"), None, "{state:?}");
        assert!(linked < 20, "{}: the run did not stop", signal.1);

        // The re-run reuses the keys the first recorded (no call) and
        // links the rest: one key a lead.
        let out = run(&mut command(&sandbox, dir.path(), &input));
        assert_eq!(out.status.code(), Some(0), "{}", signal.1);
        let rows = read_report(&dir.path().join("report.csv"));
        assert!(rows.iter().all(|r| r["status"] == "linked"), "{rows:?}");
        let reused = rows.iter().filter(|r| r["attempts"] == "0").count() as u64;
        assert_eq!(reused, linked, "{}: {rows:?}", signal.1);
        assert_eq!(sandbox.stats().keys_issued.len(), 20);
        assert!(sandbox.stats().keys_issued.values().all(|n| *n == 1));
        assert_eq!(state_counts(dir.path()).get("linked"), Some(&20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_during_a_retry_after_pause_stops_the_run() {
    for signal in SIGNALS {
        // A 429 asking for two minutes.
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .respond_with(
                wiremock::ResponseTemplate::new(429)
                    .insert_header("Retry-After", "120")
                    .set_body_string("API calls exceeded the limit of 25 in 5 second(s)"),
            )
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let input = leads_csv(dir.path(), &lead_ids(3));
        let mut cmd = run_on_mock(&server, dir.path(), &input);
        campaign(&mut cmd, dir.path()).arg("-v");
        let running = Running::start(&mut cmd);
        running.wait_for_line("trying again").await;
        running.stopped_by(signal);

        let calls = server.received_requests().await.unwrap().len();
        assert_eq!(calls, 1, "{}: only the first call was made", signal.1);
        nothing_linked_nor_sending(dir.path(), signal.1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_during_the_smtp_login_check_stops_the_run_before_any_call() {
    for signal in SIGNALS {
        // A server that takes the connection and never greets.
        let silent = Silent::bind();
        let url = format!("smtp://{}", silent.addr());
        let sandbox = fast_sandbox().await;
        let dir = tempfile::tempdir().unwrap();
        let input = leads_with_email(dir.path(), 3);
        let mut cmd = command(&sandbox, dir.path(), &input);
        with_email(&mut cmd, &url, &sample("templates"));
        let running = Running::start(&mut cmd);
        let held = silent.connection("the login check's connection").await;
        running.stopped_by(signal);
        drop(held);

        assert_eq!(sandbox.stats().calls, 0, "{}", signal.1);
        assert!(read_report(&dir.path().join("report.csv")).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_during_a_slow_smtp_transaction_finishes_it_records_it_and_stops() {
    for signal in SIGNALS {
        let sandbox = fast_sandbox().await;
        let smtp = SmtpServer::start(SmtpBehaviour::new().delay(Duration::from_secs(2)));
        let dir = tempfile::tempdir().unwrap();
        let input = leads_with_email(dir.path(), 4);
        let mut cmd = command(&sandbox, dir.path(), &input);
        cmd.args(["--email-concurrency", "1"]);
        with_email(&mut cmd, &smtp.url(), &sample("templates"));
        let running = Running::start(&mut cmd);
        wait_until("a transaction", || smtp.transactions() >= 1).await;
        running.stopped_by(signal);

        assert_eq!(
            smtp.transactions(),
            1,
            "{}: no other message started",
            signal.1
        );
        assert_eq!(smtp.messages().len(), 1, "{}", signal.1);
        let rows = read_report(&dir.path().join("report.csv"));
        let count = |status: &str| rows.iter().filter(|r| r["status"] == status).count() as u64;
        assert_eq!(count("sent"), 1, "{}: {rows:?}", signal.1);
        let state = state_counts(dir.path());
        assert_eq!(state.get("sent"), Some(&1), "{}: {state:?}", signal.1);
        let linked = state.get("linked").copied().unwrap_or(0);
        assert_eq!(linked, count("linked"), "{}: {state:?} {rows:?}", signal.1);
        assert_eq!(state.get("sending"), None, "{}: {state:?}", signal.1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_during_a_pause_stored_in_the_budget_file_stops_the_run() {
    for signal in SIGNALS {
        let sandbox = fast_sandbox().await;
        let dir = tempfile::tempdir().unwrap();
        let file = budget_file(dir.path(), &sandbox);
        std::fs::write(&file, format!("pause {}\n", wall_ms() + 120_000)).unwrap();
        let input = leads_csv(dir.path(), &lead_ids(3));
        let running = Running::start(&mut command(&sandbox, dir.path(), &input));
        running.wait_for_line("is paused for").await;
        running.stopped_by(signal);

        assert_eq!(sandbox.stats().calls, 0, "{}", signal.1);
        nothing_linked_nor_sending(dir.path(), signal.1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_while_otp_waits_for_the_tenants_budget_stops_it() {
    for signal in SIGNALS {
        let sandbox = fast_sandbox().await;
        let dir = tempfile::tempdir().unwrap();
        let budget_dir = dir.path().join("state").join("lsq-dispatch");
        std::fs::create_dir_all(&budget_dir).unwrap();
        let file = budget_file(&budget_dir, &sandbox);
        std::fs::write(&file, format!("pause {}\n", wall_ms() + 120_000)).unwrap();
        let config = sandbox.config();
        let mut cmd = lsq(dir.path());
        cmd.args(["otp", "request", "--host", &sandbox.base_url()])
            .args(["--phone", lsq_sandbox::DEMO_LEAD_PHONE])
            .env("LSQ_ACCESS_KEY", &config.access_key)
            .env("LSQ_SECRET_KEY", &config.secret_key)
            .env("LSQ_PUBLIC_AUTH_KEY", &config.public_auth_key);
        let running = Running::start(&mut cmd);
        running.wait_for_line("is paused for").await;
        let log = running.stopped_by(signal);
        assert_eq!(sandbox.stats().calls, 0, "{}: {log}", signal.1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_while_serve_connects_to_its_budget_store_stops_it_cleanly() {
    for signal in SIGNALS {
        // A "Redis" that takes the connection and never answers.
        let silent = Silent::bind();
        let store = format!("redis://{}", silent.addr());
        let sandbox = fast_sandbox().await;
        let dir = tempfile::tempdir().unwrap();
        let config = sandbox.config();
        let mut cmd = lsq(dir.path());
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--host", &sandbox.base_url()])
            .args([
                "--portal-url",
                &sandbox.portal_url(),
                "--budget-store",
                &store,
            ])
            .env("LSQ_ACCESS_KEY", &config.access_key)
            .env("LSQ_SECRET_KEY", &config.secret_key)
            .env("LSQ_TENANT_AUTH_KEY", &config.tenant_auth_key)
            .env("LSQ_LINK_SECRET", crate::serve::SECRET_A);
        let mut running = Running::start(&mut cmd);
        let _held = silent.connection("serve's connection to its store").await;
        send_signal(&running.child, signal.0);
        let status = running.child.wait().unwrap();
        let log = String::from_utf8_lossy(&running.log.finish()).into_owned();
        // serve's code for a stop asked by a signal.
        assert_eq!(
            status.code(),
            Some(0),
            "after {}: {status:?}\n{log}",
            signal.1
        );
        assert!(log.contains("stopped"), "{}: {log}", signal.1);
    }
}
