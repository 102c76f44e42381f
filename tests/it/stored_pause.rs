//! A pause stored in the tenant's shared budget, by another run's 429 or
//! by a clock that ran ahead: a run waits out a plausible one, says so at
//! the default verbosity and counts it in the summary's `paused_secs`; one
//! longer than any run stores (a far-future time in the budget file, a
//! long-lived pause key or far-future log entries in Redis) is said to be
//! implausible and cut, so the run goes on within a window. Garbage lines in
//! the budget file are named, by line, once per run.

use std::path::Path;
use std::process::Command;

use crate::support::redis_server::RedisServer;
use crate::support::{
    budget_file, fast_config, lead_ids, leads_csv, redis_budget_keys, run, run_on_sandbox, sandbox,
    statuses, stderr, wall_ms,
};
use lsq_sandbox::Sandbox;

/// A run of three leads on `sandbox`, its campaign state (and so its budget
/// file) in `dir`, at the default verbosity, writing a summary.
fn three_leads(sandbox: &Sandbox, dir: &Path) -> Command {
    let input = leads_csv(dir, &lead_ids(3));
    let mut cmd = run_on_sandbox(sandbox, dir, &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--summary-json", "summary.json"])
        .arg("--state")
        .arg(dir.join("state.sqlite"));
    cmd
}

/// The summary's `(paused_secs, api_calls)`.
fn paused_and_calls(dir: &Path) -> (f64, u64) {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    (
        summary["paused_secs"].as_f64().unwrap(),
        summary["api_calls"].as_u64().unwrap(),
    )
}

/// Asserts that the run linked its three leads with three calls.
fn linked_all_three(dir: &Path, sandbox: &Sandbox) {
    assert_eq!(
        statuses(&dir.join("report.csv")).get("linked"),
        Some(&3),
        "{:?}",
        statuses(&dir.join("report.csv"))
    );
    assert_eq!(sandbox.stats().calls, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pause_another_run_stored_is_waited_out_said_and_counted_in_paused_secs() {
    let sandbox = sandbox(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = budget_file(dir.path(), &sandbox);
    std::fs::write(&file, format!("pause {}\n", wall_ms() + 3_000)).unwrap();

    let out = run(&mut three_leads(&sandbox, dir.path()));
    assert_eq!(out.status.code(), Some(0));
    let log = stderr(&out);
    assert!(
        log.contains("waits") && log.contains("429") && log.contains(&file.display().to_string()),
        "the wait is said, with why and where:\n{log}"
    );
    assert!(!log.contains("implausible"), "{log}");
    linked_all_three(dir.path(), &sandbox);
    let (paused, calls) = paused_and_calls(dir.path());
    assert_eq!(calls, 3);
    // The pause the file held when the run read it: under 3 s, and far
    // more than nothing.
    assert!((1.0..=3.0).contains(&paused), "paused_secs {paused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_far_future_pause_in_the_budget_file_is_cut_to_a_window_and_said() {
    // A clock that ran two hours ahead, and was set right, left this.
    let sandbox = sandbox(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = budget_file(dir.path(), &sandbox);
    std::fs::write(&file, format!("pause {}\n", wall_ms() + 2 * 3_600_000)).unwrap();

    let out = run(&mut three_leads(&sandbox, dir.path()));
    assert_eq!(out.status.code(), Some(0));
    let log = stderr(&out);
    assert!(
        log.contains("implausible") && log.contains(&file.display().to_string()),
        "the far-future pause is named implausible, with the file:\n{log}"
    );
    assert!(log.contains("waits"), "{log}");
    linked_all_three(dir.path(), &sandbox);
    let (paused, _) = paused_and_calls(dir.path());
    // Cut to the budget's window (1 s here), not the two hours.
    assert!(paused > 0.0 && paused <= 1.0, "paused_secs {paused}");
    let text = std::fs::read_to_string(&file).unwrap();
    let until: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("pause "))
        .map_or(0, |t| t.parse().unwrap());
    assert!(
        until < wall_ms() + 60_000,
        "the file still holds it:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_lines_in_the_budget_file_are_named_once_and_dropped() {
    let sandbox = sandbox(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = budget_file(dir.path(), &sandbox);
    std::fs::write(
        &file,
        "# a comment\npause soon\n12 34 56\n\nshare 10 0 1\nnonsense\n",
    )
    .unwrap();

    let out = run(&mut three_leads(&sandbox, dir.path()));
    assert_eq!(out.status.code(), Some(0));
    let log = stderr(&out);
    let shown = file.display().to_string();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(&shown)).collect();
    assert_eq!(warnings.len(), 1, "one warning a run:\n{log}");
    assert!(warnings[0].contains("lines 2, 3 and 6"), "{}", warnings[0]);
    linked_all_three(dir.path(), &sandbox);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("nonsense") && !text.contains("soon"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_lived_pause_key_and_far_future_entries_in_redis_are_cut_and_said() {
    let Some(redis) = RedisServer::start(
        "a_long_lived_pause_key_and_far_future_entries_in_redis_are_cut_and_said",
    ) else {
        return;
    };
    let sandbox = sandbox(lsq_sandbox::SandboxConfig {
        budget: "3/1s".parse().unwrap(),
        ..fast_config()
    })
    .await;
    let (log_key, pause_key) = redis_budget_keys(&sandbox);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    // A pause key two hours long, and every slot of a 3-call budget held
    // by an entry that expires in 2286.
    let _: () = redis::cmd("SET")
        .arg(&pause_key)
        .arg("1")
        .arg("PX")
        .arg(2 * 3_600_000)
        .query(&mut connection)
        .unwrap();
    for token in 1..=3 {
        let _: () = redis::cmd("ZADD")
            .arg(&log_key)
            .arg(9_999_999_999_999u64)
            .arg(token)
            .query(&mut connection)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = three_leads(&sandbox, dir.path());
    // A budget of 3 calls a second and calls that time out after 2 s: an
    // entry lives at most 3 s.
    cmd.args(["--timeout", "2s"])
        .args(["--budget-store", &redis.url()]);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0));
    let log = stderr(&out);
    assert!(
        log.contains("implausible") && log.contains(&redis.url()),
        "the long pause is named implausible, with the store:\n{log}"
    );
    assert!(
        log.contains("3 entries"),
        "the far-future entries are said:\n{log}"
    );
    linked_all_three(dir.path(), &sandbox);
    let (paused, _) = paused_and_calls(dir.path());
    assert!(paused > 0.0 && paused <= 1.0, "paused_secs {paused}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&pause_key)
        .query(&mut connection)
        .unwrap();
    assert!(ttl < 60_000, "the pause key still lives {ttl} ms");
}
