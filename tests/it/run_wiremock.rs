//! `lsq-dispatch run` against exact answer sequences from a wiremock server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{
    answering, key_for, lead_ids, leads_csv, read_report, run, run_on_mock, unauthorized,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
const LIMIT: &str = r#"{"Status":"Error","ExceptionType":"MXAPIRateLimitExceededException","ExceptionMessage":"API calls exceeded the limit of 25 in 5 second(s)"}"#;

/// A server whose Generate answers the first two calls with `failure` and
/// then issues keys, and expects each exactly as often as a one-lead run
/// that retries should make them.
async fn two_failures_then_a_key(failure: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/AutoLogin/Generate"))
        .respond_with(failure)
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/AutoLogin/Generate"))
        .respond_with(key_for)
        .expect(1)
        .mount(&server)
        .await;
    server
}

fn command(dir: &std::path::Path, server: &MockServer, ids: &[String]) -> std::process::Command {
    let input = leads_csv(dir, ids);
    let mut cmd = run_on_mock(server, dir, &input);
    cmd.args(["--report", "report.csv", "--quiet"]);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn two_429s_then_200_ends_linked_after_three_attempts() {
    let server = two_failures_then_a_key(ResponseTemplate::new(429).set_body_string(LIMIT)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut command(dir.path(), &server, &lead_ids(1)));
    assert_eq!(out.status.code(), Some(0));
    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "linked");
    assert_eq!(rows[0]["attempts"], "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried() {
    let server = two_failures_then_a_key(ResponseTemplate::new(500).set_body_string("oops")).await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut command(dir.path(), &server, &lead_ids(1)));
    assert_eq!(out.status.code(), Some(0));
    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["attempts"].as_str()),
        ("linked", "3")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured() {
    let server = MockServer::start().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let first = Arc::clone(&seen);
    Mock::given(method("POST"))
        .respond_with(move |_: &Request| {
            first.lock().unwrap().push(Instant::now());
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "2")
                .set_body_string(LIMIT)
        })
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let second = Arc::clone(&seen);
    Mock::given(method("POST"))
        .respond_with(move |request: &Request| {
            second.lock().unwrap().push(Instant::now());
            key_for(request)
        })
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut command(dir.path(), &server, &lead_ids(1)));
    assert_eq!(out.status.code(), Some(0));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    // Without Retry-After the pause would be one 100 ms window plus the margin.
    assert!(
        seen[1] - seen[0] >= Duration::from_secs(2),
        "{:?}",
        seen[1] - seen[0]
    );
    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(rows[0]["attempts"], "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_aborts_after_one_call() {
    let server = answering(unauthorized(), 1).await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut command(dir.path(), &server, &lead_ids(40)));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("LSQ_ACCESS_KEY") && stderr.contains("--host"),
        "{stderr}"
    );
    // The report exists and holds the header at least.
    assert!(dir.path().join("report.csv").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_aborts_and_names_the_host() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut command(dir.path(), &server, &lead_ids(3)));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_body_with_200_fails_the_row_and_the_run_goes_on() {
    let server = answering(
        ResponseTemplate::new(200).set_body_string(
            r#"{"Status":"Error","ExceptionType":"MXInvalidInputException","ExceptionMessage":"Portal is disabled"}"#,
        ),
        3,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut command(dir.path(), &server, &lead_ids(3)));
    assert_eq!(out.status.code(), Some(3));
    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(rows.len(), 3);
    assert!(rows
        .iter()
        .all(|r| r["status"] == "failed" && r["error"] == "Portal is disabled"));
}
