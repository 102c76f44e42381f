//! One tenant budget, three spenders: two `serve` processes minting keys for
//! clicks and a batch run minting keys for its rows, all on one Redis budget
//! store, against one sandbox that enforces the same budget as a strict
//! sliding window. Not one call may be refused.

use std::process::Stdio;

use lsq_sandbox::SandboxConfig;

use crate::links_end_to_end::{mail_run, mailed_links, new_secret};
use crate::support::link_service::{admin_stats, click, token_of, LinkService};
use crate::support::redis_server::RedisServer;
use crate::support::{
    lead_ids, leads_csv, login, read_report, run_on_sandbox, sandbox, wait_until,
};

/// Leads who click, and as many more that the batch run links.
const CLICKS: usize = 40;

#[tokio::test(flavor = "multi_thread")]
async fn two_services_and_a_batch_run_on_one_redis_budget_get_no_429_at_a_strict_window() {
    let Some(redis) = RedisServer::start(
        "two_services_and_a_batch_run_on_one_redis_budget_get_no_429_at_a_strict_window",
    ) else {
        return;
    };
    // A fast budget keeps the test short; the window is as strict as 25/5s.
    let sandbox = sandbox(SandboxConfig {
        budget: "20/1s".parse().unwrap(),
        ..SandboxConfig::default()
    })
    .await;
    let store = redis.url();
    let secret = new_secret();
    // Every click here comes from 127.0.0.1: lift the per-client cap that
    // would otherwise stop the twenty-first.
    let flags = ["--budget-store", &store, "--client-rate", "1000/1m"];
    let services = [
        LinkService::start(&sandbox, &secret, &flags),
        LinkService::start(&sandbox, &secret, &flags),
    ];

    // The clicked leads' links, minted at click: no call yet.
    let dir = tempfile::tempdir().unwrap();
    let mailed = dir.path().join("mailed");
    let base = services[0].base();
    crate::support::run_ok(&mut mail_run(
        &sandbox, &mailed, CLICKS, base, &secret, "at-click",
    ));
    assert_eq!(admin_stats(&sandbox).await.calls, 0);
    let links = mailed_links(&mailed, CLICKS, base);

    // The batch run links other leads, on the same budget.
    let batch_leads = lead_ids(2 * CLICKS).split_off(CLICKS);
    let input = leads_csv(dir.path(), &batch_leads);
    let mut batch = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    let mut batch = batch
        .args(["--report", "batch.csv", "--state", "state.sqlite"])
        .args(["--budget-store", &store])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the batch run starts");
    wait_until("the batch run's first call", || {
        sandbox.stats().calls > 0 || batch.try_wait().unwrap().is_some()
    })
    .await;

    let clicks: Vec<_> = links
        .iter()
        .enumerate()
        .map(|(i, (lead, link))| {
            let link = services[i % 2].link(token_of(link));
            let lead = lead.clone();
            tokio::spawn(async move { (lead, click(&link).await) })
        })
        .collect();
    let mut portal_links = Vec::new();
    for clicked in clicks {
        let (lead, answer) = clicked.await.unwrap();
        assert_eq!(answer.status(), 303, "{lead}'s click");
        let location = answer.headers()["location"].to_str().unwrap().to_owned();
        portal_links.push((lead, location));
    }
    let batch = batch.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&batch.stderr);
    assert_eq!(batch.status.code(), Some(0), "the batch run: {said}");

    let stats = admin_stats(&sandbox).await;
    let seen = format!(
        "{:?}, at most {} in a window",
        stats.by_status, stats.max_in_window
    );
    assert_eq!(stats.by_status.get(&429), None, "no 429: {seen}");
    assert_eq!(stats.calls, 2 * CLICKS as u64, "one call a lead: {seen}");
    assert!(stats.max_in_window <= 20, "{seen}");
    let rows = read_report(&dir.path().join("batch.csv"));
    assert_eq!(rows.len(), CLICKS);
    assert!(rows.iter().all(|r| r["status"] == "linked"), "{rows:?}");
    for (lead, location) in portal_links {
        let (status, who) = login(&location).await;
        assert_eq!((status, who["LeadId"].as_str()), (200, Some(lead.as_str())));
    }
    let minted = || {
        services
            .iter()
            .map(|s| s.log().matches("\"outcome\":\"minted\"").count())
            .sum::<usize>()
    };
    wait_until("every click logged", || minted() >= CLICKS).await;
    assert_eq!(minted(), CLICKS, "every click minted its own lead's key");
}
