//! Retry-After from a hostile server: values no clock can hold are read
//! without a panic, every pause is capped with a warning, and a SIGTERM
//! during a pause ends the run at once.

use std::time::{Duration, Instant};

use super::{command, finish, limited, wait_until};
use crate::support::hostile_server::HostileServer;
use crate::support::watch::Captured;
use crate::support::{read_report, sigterm, stderr};

/// Runs one lead against a server that answers every call with a 429 asking
/// to wait `retry_after`, sends SIGTERM once the pause has begun, and returns
/// the output and how long the run took to end after the signal.
fn signalled_in_a_pause(retry_after: &'static str) -> (std::process::Output, Duration) {
    let server = HostileServer::start(move |_| limited(retry_after));
    let dir = tempfile::tempdir().unwrap();
    // -v: the run says when the 429 is taken and the pause has begun.
    let mut child = command(&server, dir.path(), 1).arg("-v").spawn().unwrap();
    let stderr = Captured::start(child.stderr.take().unwrap());
    wait_until("the pause", || {
        stderr.contains("API attempt 1 failed") || child.try_wait().unwrap().is_some()
    });
    sigterm(&child);
    let signalled = Instant::now();
    let mut out = finish(child, Duration::from_secs(20));
    out.stderr = stderr.finish();
    let took = signalled.elapsed();
    let calls = server.requests();
    assert_eq!(calls.len(), 1, "no call after the 429");
    assert_eq!(calls[0].method, "POST");
    assert!(calls[0].target.starts_with("/api/AutoLogin/Generate?"));
    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(rows.len(), 1, "the row is in the report");
    assert_eq!(rows[0]["status"], "failed");
    assert!(rows[0]["error"].contains("rate limited"), "{rows:?}");
    (out, took)
}

#[test]
fn a_retry_after_no_clock_can_hold_is_no_panic_and_no_success() {
    for value in [
        "1e300",
        "18446744073709551615",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        let (out, _) = signalled_in_a_pause(value);
        assert_eq!(out.status.code(), Some(130), "Retry-After: {value}");
        assert!(!stderr(&out).contains("panicked"), "Retry-After: {value}");
    }
}

#[test]
fn a_long_retry_after_is_capped_with_a_warning_and_a_sigterm_ends_the_pause() {
    let (out, took) = signalled_in_a_pause("100000");
    assert_eq!(out.status.code(), Some(130));
    assert!(took < Duration::from_secs(5), "{took:?}");
    let err = stderr(&out);
    assert!(
        err.contains("Retry-After") && err.contains("100000s") && err.contains("5m"),
        "{err}"
    );
}
