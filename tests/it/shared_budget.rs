//! The tenant's API budget shared by processes: two runs at once on one
//! machine share it through the budget file beside the campaign state, two
//! runs anywhere share it through Redis (`--budget-store`), and a Redis that
//! cannot be used stops the run without a call beyond what it allowed.
//!
//! The sandbox counts rejected calls in its window too, so its highest count
//! in any window shows whether the two runs together ever went over.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::redis_server::RedisServer;
use crate::support::{
    lead_ids, leads_csv, lsq, mode, read_report, run, run_on_sandbox, sandbox, statuses, stderr,
    tenant_of, RefusedPort,
};
use lsq_sandbox::{Sandbox, SandboxConfig};

/// Calls allowed per window in these tests: small, so that two runs at once
/// would overrun it many times over if they did not share it.
const CALLS: u32 = 10;

/// A sandbox with a budget of 10 calls a second that counts rejected calls.
async fn strict_sandbox() -> Sandbox {
    sandbox(SandboxConfig {
        budget: format!("{CALLS}/1s").parse().unwrap(),
        count_rejected: true,
        ..SandboxConfig::default()
    })
    .await
}

/// A run of `ids` in `dir/name`, with its campaign state (and so its budget
/// file) under `state_home`; output is captured.
fn run_in(sandbox: &Sandbox, dir: &Path, name: &str, ids: &[String], state_home: &Path) -> Command {
    let home = dir.join(name);
    std::fs::create_dir(&home).unwrap();
    let input = leads_csv(&home, ids);
    let mut cmd = run_on_sandbox(sandbox, &home, &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--quiet"])
        .env("XDG_STATE_HOME", state_home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for a run and prints what it said.
fn finish(child: Child) -> Output {
    let output = child.wait_with_output().unwrap();
    eprintln!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Starts the two runs at once, waits for both and asserts that each linked
/// every one of its 30 leads and that the sandbox never saw more than the
/// budget in a window, nor answered a 429.
fn two_runs_within_the_budget(sandbox: &Sandbox, mut a: Command, mut b: Command, dir: &Path) {
    let (a, b) = (a.spawn().unwrap(), b.spawn().unwrap());
    let (a, b) = (finish(a), finish(b));
    assert_eq!((a.status.code(), b.status.code()), (Some(0), Some(0)));
    for name in ["a", "b"] {
        let counts = statuses(&dir.join(name).join("report.csv"));
        assert_eq!(counts.get("linked"), Some(&30), "{name}: {counts:?}");
    }
    let stats = sandbox.stats();
    assert_eq!(stats.calls, 60, "{stats:?}");
    assert_eq!(stats.by_status.get(&429), None, "{stats:?}");
    assert!(stats.max_in_window <= CALLS, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_at_once_on_one_machine_share_the_tenants_budget_file() {
    let sandbox = strict_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let state_home = dir.path().join("state");
    let ids = lead_ids(60);
    let a = run_in(&sandbox, dir.path(), "a", &ids[..30], &state_home);
    let b = run_in(&sandbox, dir.path(), "b", &ids[30..], &state_home);
    two_runs_within_the_budget(&sandbox, a, b, dir.path());

    // One file for the tenant, beside the campaign state, private.
    let budget = state_home
        .join("lsq-dispatch")
        .join(format!("budget-{}.log", &tenant_of(&sandbox)[..16]));
    assert_eq!(mode(&budget), 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_share_the_tenants_budget_through_redis() {
    let Some(redis) = RedisServer::start("two_runs_share_the_tenants_budget_through_redis") else {
        return;
    };
    let sandbox = strict_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(60);
    // Each with a state directory of its own, as on two machines.
    let mut a = run_in(
        &sandbox,
        dir.path(),
        "a",
        &ids[..30],
        &dir.path().join("sa"),
    );
    let mut b = run_in(
        &sandbox,
        dir.path(),
        "b",
        &ids[30..],
        &dir.path().join("sb"),
    );
    a.args(["--budget-store", &redis.url()]);
    b.env("LSQ_BUDGET_STORE", redis.url());
    two_runs_within_the_budget(&sandbox, a, b, dir.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_redis_stops_the_run_before_any_call() {
    let sandbox = strict_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(3));
    let refused = RefusedPort::bind();
    let store = format!("redis://:pw-of-redis@{}/2", refused.addr);
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--quiet"])
        .args(["--budget-store", &store]);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(sandbox.stats().calls, 0);
    let message = stderr(&out);
    assert!(
        message.contains(&format!("redis://{}/2", refused.addr)),
        "{message}"
    );
    assert!(message.contains("--budget-store"), "{message}");
    assert!(!message.contains("pw-of-redis"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_lost_mid_run_stops_new_calls_and_records_those_in_flight() {
    let Some(mut redis) =
        RedisServer::start("a_redis_lost_mid_run_stops_new_calls_and_records_those_in_flight")
    else {
        return;
    };
    // Each call is answered a second after it arrives: the run's first call
    // goes ahead, nine follow at 0.1 s, and all are in flight when Redis is
    // lost.
    let sandbox = sandbox(SandboxConfig {
        budget: format!("{CALLS}/1s").parse().unwrap(),
        service_time: (Duration::from_secs(1), Duration::from_secs(1)),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = run_in(
        &sandbox,
        dir.path(),
        "a",
        &lead_ids(40),
        &dir.path().join("s"),
    );
    cmd.args(["--budget-store", &redis.url()]);
    let child = cmd.spawn().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while sandbox.arrivals().len() < CALLS as usize {
        assert!(Instant::now() < deadline, "the first window never filled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let arrived = sandbox.arrivals().len();
    redis.kill();
    let out = finish(child);

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        sandbox.arrivals().len(),
        arrived,
        "calls started after the loss"
    );
    let stats = sandbox.stats();
    assert_eq!(
        stats.by_status.get(&200),
        Some(&(arrived as u64)),
        "{stats:?}"
    );
    let message = stderr(&out);
    assert!(message.contains(&redis.url()), "{message}");
    // Every call answered is in the report, those in flight at the loss too.
    let rows = read_report(&dir.path().join("a").join("report.csv"));
    assert_eq!(rows.len(), arrived, "{rows:?}");
    assert!(rows.iter().all(|row| row["status"] == "linked"), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_otp_request_takes_its_call_from_the_tenants_budget_file() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = sandbox.config();
    let out = run(lsq(dir.path())
        .args(["otp", "request", "--host", &sandbox.base_url()])
        .args(["--phone", lsq_sandbox::DEMO_LEAD_PHONE])
        .env("LSQ_ACCESS_KEY", &config.access_key)
        .env("LSQ_SECRET_KEY", &config.secret_key)
        .env("LSQ_PUBLIC_AUTH_KEY", &config.public_auth_key));
    assert_eq!(out.status.code(), Some(0));
    let budget = dir
        .path()
        .join("state")
        .join("lsq-dispatch")
        .join(format!("budget-{}.log", &tenant_of(&sandbox)[..16]));
    assert_eq!(mode(&budget), 0o600);
    let log = std::fs::read_to_string(&budget).unwrap();
    assert_eq!(
        log.lines().filter(|l| !l.starts_with('#')).count(),
        1,
        "one call, one entry:\n{log}"
    );
}

/// The tenant's budget file remembers that the API accepted these
/// credentials: the next run within hours sends its first burst at once,
/// while a run with other credentials sends its first call ahead again.
/// The first call goes ahead for at most 100 ms: against this slow API (every
/// answer, a refusal too, takes 400 ms) the burst follows before the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_credentials_were_accepted_lately_does_not_send_its_first_call_ahead() {
    let service = Duration::from_millis(400);
    let sandbox = sandbox(SandboxConfig {
        service_time: (service, service),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let state_home = dir.path().join("state");
    let ids = lead_ids(10);
    let gap_between_first_two = |from: usize| {
        let arrivals = sandbox.arrivals();
        arrivals[from + 1] - arrivals[from]
    };
    // The first call goes ahead for 100 ms; a burst's calls go together.
    let ahead = Duration::from_millis(80);

    let mut first = run_in(&sandbox, dir.path(), "first", &ids[..5], &state_home);
    assert!(run(&mut first).status.success());
    let gap = gap_between_first_two(0);
    assert!(
        gap >= ahead && gap < service,
        "a first run sends its first call ahead, for less than a slow answer: {gap:?}"
    );

    let mut second = run_in(&sandbox, dir.path(), "second", &ids[5..], &state_home);
    assert!(run(&mut second).status.success());
    let gap = gap_between_first_two(5);
    assert!(
        gap < ahead,
        "the accepted credentials sent their first call ahead again: {gap:?}"
    );

    // Other credentials go ahead again; refused after 400 ms, the first
    // call's burst has gone, and nothing after it.
    let calls = sandbox.stats().calls;
    let mut other = run_in(&sandbox, dir.path(), "other", &ids[..5], &state_home);
    other.env("LSQ_SECRET_KEY", "not-the-secret");
    assert_eq!(run(&mut other).status.code(), Some(1));
    let arrivals = sandbox.arrivals();
    let gap = arrivals[calls as usize + 1] - arrivals[calls as usize];
    assert!(gap >= ahead, "other credentials went at once: {gap:?}");
    assert!(sandbox.stats().calls <= calls + 5);
}

/// The share learnt from a competitor holds for the tenant's budget file as a
/// whole, not only for one run's own calls: a second run started as the
/// first ends finds the first's latest calls still in the window and adds
/// only what is left of the share, so it pays no 429s for them.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_right_after_the_first_keeps_to_the_share_the_first_learnt() {
    let sandbox = sandbox(SandboxConfig {
        budget: format!("{CALLS}/1s").parse().unwrap(),
        competitor: 4,
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let state_home = dir.path().join("state");
    let ids = lead_ids(80);
    let mut refused = Vec::new();
    for (name, ids) in [("first", &ids[..40]), ("second", &ids[40..])] {
        let mut cmd = run_in(&sandbox, dir.path(), name, ids, &state_home);
        cmd.args(["--summary-json", "s.json", "--max-attempts", "10"]);
        let out = finish(cmd.spawn().unwrap());
        assert_eq!(out.status.code(), Some(0));
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(name).join("s.json")).unwrap())
                .unwrap();
        refused.push(summary["rate_limited"].as_u64().unwrap());
    }
    // The first learns the share from its first window's 429s; the second
    // starts from it, and at most its probe is refused.
    assert!(refused[0] >= 2, "the competitor was not met: {refused:?}");
    assert!(refused[1] <= 1, "429s of the second run: {refused:?}");
}
