//! `status`: the counts per campaign as JSON, a campaign the state file does
//! not hold, pruning finished campaigns (never one in progress), and the
//! migration that records when each campaign last ran.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{fast_sandbox, lead_ids, lsq, run, run_on_sandbox, stderr, stdout, write};
use lsq_dispatch::state::StateStore;
use lsq_sandbox::Sandbox;

fn state(dir: &Path) -> PathBuf {
    dir.join("state.sqlite")
}

/// Runs campaign `name` against the sandbox over `n` leads, numbered from
/// `first`: each is linked.
fn run_campaign(sandbox: &Sandbox, dir: &Path, name: &str, n: usize, first: usize) {
    let ids = lead_ids(first + n);
    let mut text = String::from("LeadId\n");
    for id in &ids[first..] {
        text.push_str(id);
        text.push('\n');
    }
    let input = write(dir, &format!("{name}.csv"), &text);
    let mut cmd = run_on_sandbox(sandbox, dir, &input, &sandbox.portal_url());
    cmd.args(["--quiet", "--campaign", name, "--report"])
        .arg(dir.join(format!("{name}-report.csv")))
        .arg("--state")
        .arg(state(dir));
    assert_eq!(run(&mut cmd).status.code(), Some(0));
}

fn status(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = lsq(dir);
    cmd.arg("status").arg("--state").arg(state(dir)).args(args);
    cmd
}

/// The one JSON object a `--json` command printed.
fn json_of(output: &Output) -> Value {
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(output);
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    serde_json::from_str(text.trim()).expect("stdout is JSON")
}

/// Campaign name → its object, from `status --json`.
fn by_campaign(json: &Value) -> std::collections::BTreeMap<String, Value> {
    json["campaigns"]
        .as_array()
        .expect("a campaigns array")
        .iter()
        .map(|c| (c["campaign"].as_str().unwrap().to_owned(), c.clone()))
        .collect()
}

/// Puts every trace of `campaign` `days` days in the past, as if it had
/// last run then.
fn age(dir: &Path, campaign: &str, days: i64) {
    let then = (chrono::Utc::now() - chrono::TimeDelta::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let conn = rusqlite::Connection::open(state(dir)).unwrap();
    conn.execute(
        "UPDATE leads SET updated_at = ?1 WHERE campaign = ?2",
        [&then, campaign],
    )
    .unwrap();
    conn.execute(
        "UPDATE campaigns SET last_run_at = ?1 WHERE campaign = ?2",
        [&then, campaign],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn status_json_gives_each_campaigns_counts_as_the_state_holds_them() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    run_campaign(&sandbox, dir.path(), "alpha", 3, 0);
    run_campaign(&sandbox, dir.path(), "beta", 2, 3);
    let before = chrono::Utc::now();

    let json = json_of(&run(&mut status(dir.path(), &["--json"])));
    assert_eq!(
        Path::new(json["state_file"].as_str().unwrap()),
        std::fs::canonicalize(state(dir.path())).unwrap()
    );
    let campaigns = by_campaign(&json);
    assert_eq!(campaigns.keys().collect::<Vec<_>>(), ["alpha", "beta"]);
    let store = StateStore::open_to_read(&state(dir.path())).unwrap();
    for (name, leads) in [("alpha", 3), ("beta", 2)] {
        let c = &campaigns[name];
        assert_eq!(c["leads"], leads, "{c}");
        assert_eq!(c["running"], false, "{c}");
        let counts: std::collections::BTreeMap<String, u64> =
            serde_json::from_value(c["counts"].clone()).unwrap();
        assert_eq!(counts, store.counts(name).unwrap(), "{c}");
        assert_eq!(counts["linked"], leads);
        let last = chrono::DateTime::parse_from_rfc3339(c["last_activity"].as_str().unwrap())
            .expect("RFC 3339");
        assert!(last <= before + chrono::TimeDelta::seconds(1), "{c}");
    }

    let one = json_of(&run(&mut status(
        dir.path(),
        &["--json", "--campaign", "beta"],
    )));
    assert_eq!(by_campaign(&one).keys().collect::<Vec<_>>(), ["beta"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_campaign_the_state_file_does_not_hold_is_a_usage_error_naming_those_it_does() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    run_campaign(&sandbox, dir.path(), "alpha", 1, 0);
    run_campaign(&sandbox, dir.path(), "beta", 1, 1);

    for extra in [&[][..], &["--json"], &["--export", "x.csv"]] {
        let out = run(status(dir.path(), &["--campaign", "nosuch"]).args(extra));
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert_eq!(stdout(&out), "", "no zeros printed");
        let err = stderr(&out);
        assert!(
            err.contains("no campaign \"nosuch\"") && err.contains("its campaigns: alpha, beta"),
            "{err}"
        );
    }
    assert!(!dir.path().join("x.csv").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_removes_an_old_finished_campaign_and_keeps_a_running_one_and_a_recent_one() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    run_campaign(&sandbox, dir.path(), "old", 2, 0);
    run_campaign(&sandbox, dir.path(), "held", 2, 2);
    run_campaign(&sandbox, dir.path(), "recent", 2, 4);
    // A run holds `held`, which has not changed for as long as `old`.
    let running = StateStore::open(&state(dir.path())).unwrap();
    running.claim("held").unwrap();
    age(dir.path(), "old", 120);
    age(dir.path(), "held", 120);
    age(dir.path(), "recent", 30);

    let out = run(&mut status(dir.path(), &["--prune", "--older-than", "90d"]));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("removed campaign old: 2 leads"), "{text}");
    assert!(
        text.contains("kept campaign held: in progress, a run holds it"),
        "{text}"
    );
    assert!(!text.contains("recent"), "{text}");
    assert!(text.contains("pruned 1 campaign(s), 2 lead(s)"), "{text}");

    let left = by_campaign(&json_of(&run(&mut status(dir.path(), &["--json"]))));
    assert_eq!(left.keys().collect::<Vec<_>>(), ["held", "recent"]);
    assert_eq!(left["held"]["running"], true);
    assert_eq!(left["held"]["leads"], 2);
    assert_eq!(left["recent"]["leads"], 2);

    // Once the run is over, the held campaign is finished and goes too.
    drop(running);
    let json = json_of(&run(&mut status(
        dir.path(),
        &["--prune", "--older-than", "90d", "--json"],
    )));
    let removed: Vec<&str> = json["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["campaign"].as_str().unwrap())
        .collect();
    assert_eq!(removed, ["held"]);
    assert_eq!(json["in_progress"], serde_json::json!([]));
    let left = by_campaign(&json_of(&run(&mut status(dir.path(), &["--json"]))));
    assert_eq!(left.keys().collect::<Vec<_>>(), ["recent"]);
}

#[test]
fn prune_needs_an_age_it_can_read() {
    let dir = tempfile::tempdir().unwrap();
    StateStore::open(&state(dir.path())).unwrap();
    let out = run(&mut status(dir.path(), &["--prune"]));
    assert_eq!(out.status.code(), Some(2), "--older-than is required");
    let out = run(&mut status(dir.path(), &["--prune", "--older-than", "90"]));
    assert_eq!(out.status.code(), Some(0), "a bare number is seconds");
    let out = run(&mut status(
        dir.path(),
        &["--prune", "--older-than", "3 moons"],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("such as 90d or 12h"),
        "{}",
        stderr(&out)
    );
}

/// A state file written by the previous release (schema version 2):
/// campaign `nightly` with leads last changed on 2026-01-10 and a retry file;
/// campaign `invite` last changed on 2026-03-01, one lead left `sending`.
const VERSION_2_STATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/state-v2.sqlite"
);

#[test]
fn a_state_file_of_the_previous_version_gets_each_campaigns_last_run_from_its_leads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(VERSION_2_STATE, state(dir.path())).unwrap();

    let json = json_of(&run(&mut status(dir.path(), &["--json"])));
    let campaigns = by_campaign(&json);
    assert_eq!(
        campaigns["nightly"]["last_activity"],
        "2026-01-10T02:00:03Z"
    );
    assert_eq!(campaigns["invite"]["last_activity"], "2026-03-01T07:30:06Z");
    assert_eq!(campaigns["invite"]["counts"]["sending"], 1);

    let conn = rusqlite::Connection::open(state(dir.path())).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, lsq_dispatch::state::SCHEMA_VERSION);
    let retry: String = conn
        .query_row("SELECT campaign FROM retry_files", [], |r| r.get(0))
        .unwrap();
    assert_eq!(retry, "nightly", "retry files are kept");
    drop(conn);

    // The `sending` lead keeps `invite` however old it is.
    let out = run(&mut status(dir.path(), &["--prune", "--older-than", "1h"]));
    let text = stdout(&out);
    assert!(text.contains("removed campaign nightly: 3 leads"), "{text}");
    assert!(
        text.contains("kept campaign invite: in progress, 1 lead(s) in sending"),
        "{text}"
    );
}

/// A state file of schema version 3, before link modes: campaign `spring`
/// with one lead linked, one sent and one whose Generate failed.
const VERSION_3_STATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/state-v3.sqlite"
);

#[test]
fn a_state_file_before_link_modes_counts_its_links_as_direct() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(VERSION_3_STATE, state(dir.path())).unwrap();

    let json = json_of(&run(&mut status(dir.path(), &["--json"])));
    let spring = &by_campaign(&json)["spring"];
    assert_eq!(spring["leads"], 3);
    assert_eq!(spring["counts"]["failed"], 1);
    let links = &spring["links"];
    assert_eq!(
        [&links["direct"], &links["at-send"], &links["at-click"]],
        [2, 0, 0],
        "the failed lead was never given a link"
    );
    let text = stdout(&run(&mut status(dir.path(), &[])));
    assert!(text.contains("; links: 2 direct; last active"), "{text}");

    let conn = rusqlite::Connection::open(state(dir.path())).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, lsq_dispatch::state::SCHEMA_VERSION);
}
