//! `lsq-dispatch run` end to end against the built-in sandbox on loopback.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{
    fast_config, fast_sandbox, lead_ids, leads_csv, login, lsq, read_report, run, run_on_sandbox,
    sample, sandbox, write,
};
use lsq_sandbox::{Sandbox, SandboxConfig};

fn command_for(
    sandbox: &Sandbox,
    dir: &std::path::Path,
    input: &std::path::Path,
) -> std::process::Command {
    command_with_page(sandbox, dir, input, &sandbox.portal_url())
}

fn command_with_page(
    sandbox: &Sandbox,
    dir: &std::path::Path,
    input: &std::path::Path,
    page: &str,
) -> std::process::Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, page);
    cmd.args(["--report", "report.csv", "--summary-json", "summary.json"]);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn every_valid_lead_gets_a_link_that_logs_it_in_and_bad_rows_keep_their_line() {
    let ids = lead_ids(12);
    let unknown = "0badbad0-1111-4222-8333-000000000000".to_string();
    let sandbox = sandbox(SandboxConfig {
        unknown_leads: vec![unknown.clone()],
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("LeadId,FirstName\n");
    for id in &ids[..10] {
        csv.push_str(&format!("{id},Ann\n"));
    }
    csv.push_str(&format!("{},Upper\n", ids[10].to_uppercase())); // line 12
    csv.push_str(&format!("{{{}}},Braced\n", ids[11])); // line 13
    csv.push_str(&format!("{},Again\n", ids[0].to_uppercase())); // line 14: duplicate of line 2
    csv.push_str("not-a-guid,Bad\n"); // line 15
    csv.push_str(&format!("{unknown},Gone\n")); // line 16: the API answers 400
    csv.push_str(",Empty\n"); // line 17
    let input = write(dir.path(), "leads.csv", &csv);
    let page = format!("{}?campaign=spring&lang=en#welcome", sandbox.portal_url());
    let out = run(&mut command_with_page(&sandbox, dir.path(), &input, &page));
    assert_eq!(
        out.status.code(),
        Some(3),
        "invalid and failed rows mean exit 3"
    );

    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(rows.len(), 16, "every input row is accounted for");
    let by_row: HashMap<String, &HashMap<String, String>> =
        rows.iter().map(|r| (r["row"].clone(), r)).collect();
    assert_eq!(by_row["14"]["status"], "duplicate");
    assert!(by_row["14"]["error"].contains('2'));
    assert_eq!(by_row["15"]["status"], "invalid");
    assert_eq!(by_row["17"]["status"], "invalid");
    assert_eq!(by_row["16"]["status"], "failed");
    assert!(
        by_row["16"]["error"].contains("Lead does not exist"),
        "{}",
        by_row["16"]["error"]
    );

    let linked: Vec<_> = rows.iter().filter(|r| r["status"] == "linked").collect();
    assert_eq!(linked.len(), 12);
    for row in linked {
        let link = url::Url::parse(&row["portal_url"]).unwrap();
        assert_eq!(link.path(), "/portal/login");
        assert_eq!(link.fragment(), Some("welcome"));
        assert!(link
            .query()
            .unwrap()
            .starts_with("campaign=spring&lang=en&authKey="));
        let key = link
            .query_pairs()
            .find(|(k, _)| k == "authKey")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        assert!(
            key.contains('+') && key.contains('/') && key.ends_with('='),
            "{key}"
        );
        assert!(!row["expires_at"].is_empty());
        let (status, body) = login(link.as_str()).await;
        assert_eq!(status, 200);
        assert_eq!(body["LeadId"].as_str().unwrap(), row["lead_id"]);
    }
    let stats = sandbox.stats();
    assert!(stats.keys_issued.values().all(|n| *n == 1));
    assert_eq!(stats.keys_issued.len(), 12);

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["counts"]["linked"], 12);
    assert_eq!(summary["counts"]["invalid"], 2);
    assert_eq!(summary["counts"]["duplicate"], 1);
    assert_eq!(summary["counts"]["failed"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn links_with_ids_put_lead_and_portal_before_the_key() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(2));
    let out = run(command_for(&sandbox, dir.path(), &input).arg("--link-ids"));
    assert_eq!(out.status.code(), Some(0));
    for row in read_report(&dir.path().join("report.csv")) {
        let link = url::Url::parse(&row["portal_url"]).unwrap();
        let names: Vec<_> = link.query_pairs().map(|(k, _)| k.into_owned()).collect();
        assert_eq!(names, ["leadId", "portalId", "authKey"]);
        assert_eq!(login(link.as_str()).await.0, 200);
    }
}

/// Guards the limiter end to end: with arrivals bunched by 0-100 ms of jitter,
/// the sandbox never sees more than the budget in any window, and never says 429.
#[tokio::test(flavor = "multi_thread")]
async fn jittered_arrivals_never_exceed_the_window() {
    let sandbox = sandbox(SandboxConfig {
        budget: "10/1s".parse().unwrap(),
        jitter: (Duration::ZERO, Duration::from_millis(100)),
        service_time: (Duration::from_millis(10), Duration::from_millis(60)),
        seed: Some(7),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(45));
    let out = run(&mut command_for(&sandbox, dir.path(), &input));
    assert_eq!(out.status.code(), Some(0));
    let stats = sandbox.stats();
    assert!(stats.max_in_window <= 10, "{stats:?}");
    assert_eq!(stats.by_status.get(&429), None, "{stats:?}");
    assert_eq!(stats.keys_issued.len(), 45);
}

/// Guards the rule for a full accept queue end to end: a listener with a
/// backlog of 5 that accepts a connection every 50 ms drops the SYNs of a
/// first burst of 25 beyond it (sent again 1 s, then 3 s later) and holds
/// the requests of the connections it queued, unseen by the client. The late
/// set-ups show it, and the run never puts more than the budget into a
/// window.
#[tokio::test(flavor = "multi_thread")]
async fn a_listener_dropping_a_bursts_syns_sees_no_window_over_the_budget() {
    let sandbox = sandbox(SandboxConfig {
        budget: lsq_sandbox::Budget::DEFAULT,
        jitter: (Duration::ZERO, Duration::from_millis(100)),
        service_time: (Duration::from_millis(900), Duration::from_millis(1100)),
        slow_accept: Some((5, Duration::from_millis(50))),
        count_rejected: true,
        seed: Some(5),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(60));
    let out = run(&mut command_for(&sandbox, dir.path(), &input));
    let said = crate::support::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    let stats = sandbox.stats();
    assert!(stats.max_in_window <= 25, "{stats:?}");
    assert_eq!(stats.by_status.get(&429), None, "{stats:?}");
    assert_eq!(stats.keys_issued.len(), 60);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_and_dropped_connections_are_retried_until_every_lead_is_linked() {
    let sandbox = sandbox(SandboxConfig {
        error_rate: 0.2,
        drop_rate: 0.1,
        seed: Some(11),
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(30));
    let out = run(command_for(&sandbox, dir.path(), &input).args(["--max-attempts", "10"]));
    assert_eq!(out.status.code(), Some(0));
    let rows = read_report(&dir.path().join("report.csv"));
    assert!(rows.iter().all(|r| r["status"] == "linked"));
    let retried = rows.iter().filter(|r| r["attempts"] != "1").count();
    assert!(
        retried > 0,
        "faults were injected, some rows needed retries"
    );
    let stats = sandbox.stats();
    assert!(stats.by_status.get(&500).copied().unwrap_or(0) > 0);
    assert!(stats.dropped > 0);
}

#[test]
fn the_sandbox_flag_runs_the_sample_with_no_account() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(lsq(dir.path()).arg("run").arg(sample("leads.csv")).args([
        "--sandbox",
        "--rate",
        "1000/1s",
        "--report",
        "report.csv",
    ]));
    assert_eq!(
        out.status.code(),
        Some(5),
        "the sample has bad rows on purpose, and every lead is linked"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("SANDBOX"));
    let rows = read_report(&dir.path().join("report.csv"));
    assert!(rows.iter().filter(|r| r["status"] == "linked").count() >= 5);
    assert!(rows.iter().any(|r| r["status"] == "invalid"));
    assert!(rows.iter().any(|r| r["status"] == "duplicate"));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_tenant_key_one_is_minted_first() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(3));
    let mut cmd = command_for(&sandbox, dir.path(), &input);
    cmd.env_remove("LSQ_TENANT_AUTH_KEY");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0));
    let stats = sandbox.stats();
    assert_eq!(stats.calls, 4, "one mint, then three keys: {stats:?}");
    for row in read_report(&dir.path().join("report.csv")) {
        assert_eq!(login(&row["portal_url"]).await.0, 200);
    }
}

/// A host nothing answers on: the run gives up after a few leads in a row
/// could not connect, instead of trying every row five times.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_host_aborts_the_run_after_a_few_calls() {
    let refused = crate::support::RefusedPort::bind();
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_csv(dir.path(), &crate::support::lead_ids(40));
    let out = crate::support::run(
        crate::support::lsq(dir.path())
            .arg("run")
            .arg(&input)
            .args(["--host", &format!("http://{}", refused.addr)])
            .args(["--portal-id", "9b2c4f6e-1d3a-4c5b-8e7f-a0b1c2d3e4f5"])
            .args(["--portal-url", "https://portal.example.com/login"])
            .args(["--report", "report.csv", "--quiet"])
            .args(["--summary-json", "summary.json"])
            .env("LSQ_ACCESS_KEY", "a")
            .env("LSQ_SECRET_KEY", "s")
            .env("LSQ_TENANT_AUTH_KEY", "t"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = crate::support::stderr(&out);
    assert!(stderr.contains("cannot reach the API host"), "{stderr}");
    assert!(stderr.contains(&refused.addr.to_string()), "{stderr}");
    let rows = crate::support::read_report(&dir.path().join("report.csv"));
    let attempts: Vec<u32> = rows
        .iter()
        .map(|r| r["attempts"].parse().unwrap())
        .collect();
    assert!(
        attempts.iter().all(|a| *a <= 2),
        "no lead was tried five times: {attempts:?}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    let calls = summary["api_calls"].as_u64().unwrap();
    // A few first attempts and a retry, not five tries for each of a few leads.
    assert!((5..=10).contains(&calls), "gave up after {calls} calls");
}
