//! Idle connections: closed after the sandbox's idle timeout, so clients
//! that connect and go quiet cannot use up its file descriptors; a call that
//! takes longer than the timeout to serve is still answered.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{Api, LEAD};
use reqwest::StatusCode;

const IDLE: Duration = Duration::from_millis(300);

/// Reads until the sandbox closes the connection; fails the test if it is
/// still open after `within`. Returns what was read.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut read = Vec::new();
    let closed = tokio::time::timeout(within, stream.read_to_end(&mut read)).await;
    assert!(closed.is_ok(), "still open after {within:?}");
    String::from_utf8_lossy(&read).into_owned()
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed() {
    let api = Api::with(|c| c.idle_timeout = IDLE).await;
    let mut stream = TcpStream::connect(api.sandbox.addr()).await.unwrap();
    let read = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(read, "");
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_once_idle() {
    let api = Api::with(|c| c.idle_timeout = IDLE).await;
    let mut stream = TcpStream::connect(api.sandbox.addr()).await.unwrap();
    stream
        .write_all(b"GET /admin/stats HTTP/1.1\r\nHost: sandbox\r\n\r\n")
        .await
        .unwrap();
    let read = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(read.starts_with("HTTP/1.1 200"), "{read}");
    assert!(
        read.contains("\"calls\""),
        "the whole answer came first: {read}"
    );
}

#[tokio::test]
async fn a_call_served_slower_than_the_idle_timeout_is_answered() {
    let api = Api::with(|c| {
        c.idle_timeout = IDLE;
        c.service_time = (IDLE * 3, IDLE * 3);
    })
    .await;
    let response = api
        .generate(LEAD)
        .await
        .expect("an answer, not a closed connection");
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn the_default_is_a_minute() {
    let config = lsq_sandbox::SandboxConfig::default();
    assert_eq!(config.idle_timeout, Duration::from_secs(60));
}

/// `slow_accept`: the kernel drops the SYNs of a burst that find the small
/// backlog full, and the client sends them again a second later, so some
/// connections of the burst open at once and others a second or more late,
/// as the client's connect time shows.
#[tokio::test]
async fn a_burst_beyond_a_slow_listeners_backlog_waits_for_its_syns_to_be_sent_again() {
    let api = Api::with(|c| c.slow_accept = Some((2, Duration::from_millis(300)))).await;
    let addr = api.sandbox.addr();
    let connects = (0..12).map(|_| async move {
        let started = tokio::time::Instant::now();
        let stream = TcpStream::connect(addr).await.unwrap();
        (started.elapsed(), stream)
    });
    let opened = futures::future::join_all(connects).await;
    let quick = opened
        .iter()
        .filter(|(took, _)| *took < Duration::from_millis(500))
        .count();
    let late = opened
        .iter()
        .filter(|(took, _)| *took >= Duration::from_millis(900))
        .count();
    assert!(quick >= 2, "the backlog's connections open at once");
    assert!(late >= 1, "no SYN of the burst was dropped");
}
