//! A redirect from the API is never followed: the keys in its query and body
//! would go to whatever host the answer names. The run stops, naming that
//! host but not the rest of the Location, which may echo the keys.

use super::{command, finish, key_for};
use crate::support::hostile_server::{Answer, HostileServer};
use crate::support::{planted, read_report, stderr};

/// Runs three leads against a server that answers every call with `status`
/// and a Location on another loopback host (127.0.0.2) whose path and query
/// echo the request's; that host issues keys to anyone who asks.
fn redirected(status: u16) {
    let thief = HostileServer::start_on([127, 0, 0, 2].into(), key_for);
    let to = thief.url();
    let server = HostileServer::start(move |request| {
        Answer::new(status, "").header("Location", &format!("{to}{}", request.target))
    });
    let dir = tempfile::tempdir().unwrap();
    let child = command(&server, dir.path(), 3).spawn().unwrap();
    let out = finish(child, std::time::Duration::from_secs(30));

    assert!(
        thief.requests().is_empty(),
        "{status}: {:?}",
        thief.requests()
    );
    assert_eq!(out.status.code(), Some(1), "{status}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{status}")) && err.contains("redirect") && err.contains("127.0.0.2"),
        "{err}"
    );
    assert!(!err.contains("/api/AutoLogin/Generate"), "{err}");
    planted::assert_absent(&planted::outputs(&out), &[]);
    let calls = server.requests();
    assert_eq!(
        calls.len(),
        1,
        "the run's first call goes alone, and stops it"
    );
    assert_eq!(calls[0].header("referer"), None);
    let rows = read_report(&dir.path().join("report.csv"));
    assert!(rows.iter().all(|r| r["status"] != "linked"), "{rows:?}");
}

#[test]
fn a_307_is_not_followed_and_stops_the_run() {
    redirected(307);
}

#[test]
fn a_302_is_not_followed_and_stops_the_run() {
    redirected(302);
}
