//! The run against a hostile API server (see `support::hostile_server`): one
//! that asks for absurd pauses, echoes the request with its keys back in
//! every kind of answer, redirects to another host, or answers with a
//! gigabyte. The run never panics, never leaks a key, never follows a
//! redirect, never reads an unbounded answer, and a SIGTERM ends any pause.

mod huge_answer;
mod leaks;
mod other_leaks;
mod redirects;
mod retry_after;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::hostile_server::{Answer, HostileServer, Request};
use crate::support::{lead_ids, leads_csv, planted, run_on_host};

/// LeadSquared's answer when the budget is spent, asking to wait `retry_after`.
fn limited(retry_after: &str) -> Answer {
    Answer::new(
        429,
        r#"{"Status":"Error","ExceptionType":"MXAPIRateLimitExceededException","ExceptionMessage":"API calls exceeded the limit of 25 in 5 second(s)"}"#,
    )
    .header("Retry-After", retry_after)
}

/// A run of `leads` leads against `server` with the planted credentials,
/// writing `report.csv` in `dir`, with its output piped.
fn command(server: &HostileServer, dir: &Path, leads: usize) -> Command {
    let input = leads_csv(dir, &lead_ids(leads));
    let mut cmd = run_on_host(&server.url(), dir, &input);
    cmd.args(["--report", "report.csv"])
        .env("LSQ_ACCESS_KEY", planted::ACCESS)
        .env("LSQ_SECRET_KEY", planted::SECRET)
        .env("LSQ_TENANT_AUTH_KEY", planted::TENANT)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// An answer that issues a key for the lead the request names, as
/// LeadSquared's Generate does (for a request naming none, for no lead).
fn key_for(request: &Request) -> Answer {
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
    let key = serde_json::json!({ "AuthKey": "k+ey/for=", "LeadId": body["LeadId"] });
    Answer::new(200, key.to_string())
}

/// Polls until `ready` holds; panics after 30 s.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits up to `within` for the run to end and returns its output (printed,
/// for a failing test); a run still going then is killed and fails the test.
fn finish(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the run did not end within {within:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
