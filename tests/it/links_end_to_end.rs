//! Redirect links from end to end, through the real binary on both sides:
//! `run --links redirect` mails links into an outbox, `serve` answers them,
//! and the sandbox's portal page says whom the key logs in. Nothing here is
//! sealed or opened in the test's own process; API calls are counted with
//! the sandbox's admin stats.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lsq_sandbox::{Sandbox, SandboxConfig};

use crate::support::link_service::{admin_stats, click, no_redirects, outbox_links, LinkService};
use crate::support::{
    fast_config, lead_ids, leads_with_email, login, lsq, read_report, run_ok, run_on_sandbox,
    sample, sandbox, stdout,
};

/// A new link secret, made by `links new-secret` as an operator makes one.
pub(crate) fn new_secret() -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(lsq(dir.path()).args(["links", "new-secret"]));
    stdout(&out).trim().to_owned()
}

/// A run in `dir` against `sandbox` that mails `n` leads (the first `n` of
/// [`lead_ids`]) redirect links to `service`, sealed with `secret` and
/// minted `mint`, into `dir/outbox`. Callers add anything else.
pub(crate) fn mail_run(
    sandbox: &Sandbox,
    dir: &Path,
    n: usize,
    service: &str,
    secret: &str,
    mint: &str,
) -> Command {
    std::fs::create_dir_all(dir).unwrap();
    let input = leads_with_email(dir, n);
    let mut cmd = run_on_sandbox(sandbox, dir, &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--campaign", "spring"])
        .args(["--state", "state.sqlite"])
        .args(["--links", "redirect", "--link-base", service])
        .args(["--mint", mint])
        .args(["--email", "--outbox", "outbox", "--templates"])
        .arg(sample("templates"))
        .args(["--from", "Acme <invites@acme.example>"])
        .env("LSQ_LINK_SECRET", secret);
    cmd
}

/// The link mailed to each of the run's `n` leads in `dir/outbox`, by LeadId.
pub(crate) fn mailed_links(dir: &Path, n: usize, service: &str) -> HashMap<String, String> {
    let lead_of = lead_ids(n)
        .into_iter()
        .enumerate()
        .map(|(i, lead)| (format!("lead{i}@example.com"), lead))
        .collect();
    let links = outbox_links(&dir.join("outbox"), service, &lead_of);
    assert_eq!(links.len(), n, "one mail a lead: {links:?}");
    links
}

/// Asserts that a click's answer is a 303 to the sandbox portal page with a
/// key that the page takes as `lead`'s.
async fn assert_signs_in(sandbox: &Sandbox, clicked: reqwest::Response, lead: &str) -> String {
    assert_eq!(clicked.status(), 303);
    let location = clicked.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&sandbox.portal_url()), "{location}");
    let (status, who) = login(&location).await;
    assert_eq!(status, 200, "the portal page takes the key");
    assert_eq!(who["LeadId"], lead, "as that lead");
    location
}

fn issued(stats: &lsq_sandbox::Stats, lead: &str) -> u64 {
    stats.keys_issued.get(lead).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mailed_link_shows_its_page_for_free_and_its_button_signs_that_lead_in() {
    let sandbox = sandbox(fast_config()).await;
    let secret = new_secret();
    let service = LinkService::start(&sandbox, &secret, &[]);
    let dir = tempfile::tempdir().unwrap();
    run_ok(&mut mail_run(
        &sandbox,
        dir.path(),
        3,
        service.base(),
        &secret,
        "at-send",
    ));
    assert_eq!(admin_stats(&sandbox).await.calls, 3, "one Generate a lead");

    let links = mailed_links(dir.path(), 3, service.base());
    for (lead, link) in &links {
        let page = no_redirects().get(link).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("<form"));
        let head = no_redirects().head(link).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(admin_stats(&sandbox).await.calls, 3, "GET and HEAD cost 0");

        let first = assert_signs_in(&sandbox, click(link).await, lead).await;
        let again = assert_signs_in(&sandbox, click(link).await, lead).await;
        assert_eq!(first, again, "the key sealed in the link, twice");
    }
    let stats = admin_stats(&sandbox).await;
    assert_eq!(
        stats.calls, 3,
        "clicks on at-send links while the key lives cost 0"
    );
    assert_eq!(stats.by_status.get(&200), Some(&3));
    let token_keys = |log: &str| log.matches("\"outcome\":\"token_key\"").count();
    service
        .wait_for_log("six clicks logged", |log| token_keys(log) >= 6)
        .await;
    assert_eq!(token_keys(&service.log()), 6, "{}", service.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_click_after_the_mailed_key_died_mints_once_and_signs_the_lead_in() {
    // Keys live 4 s: the two clicks after the re-mint must fall within the
    // new key's cached life (4 s less an eighth) even on a loaded machine.
    let sandbox = sandbox(SandboxConfig {
        key_ttl: Duration::from_secs(4),
        ..fast_config()
    })
    .await;
    let secret = new_secret();
    let service = LinkService::start(&sandbox, &secret, &["--key-lifetime", "4s"]);
    let dir = tempfile::tempdir().unwrap();
    let mut run = mail_run(&sandbox, dir.path(), 1, service.base(), &secret, "at-send");
    run_ok(run.args(["--key-lifetime", "4s"]));
    let lead = &lead_ids(1)[0];
    assert_eq!(issued(&admin_stats(&sandbox).await, lead), 1);
    let link = &mailed_links(dir.path(), 1, service.base())[lead];

    // The point of the test: the key sealed in the link dies.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let location = assert_signs_in(&sandbox, click(link).await, lead).await;
    assert_eq!(
        issued(&admin_stats(&sandbox).await, lead),
        2,
        "the dead key minted once more"
    );
    let again = assert_signs_in(&sandbox, click(link).await, lead).await;
    assert_eq!(again, location, "the new key, from the service's cache");
    let stats = admin_stats(&sandbox).await;
    assert_eq!(
        (stats.calls, issued(&stats, lead)),
        (2, 2),
        "a second click costs 0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn at_click_links_cost_no_call_to_send_and_one_per_lead_who_clicks() {
    let sandbox = sandbox(fast_config()).await;
    let secret = new_secret();
    let service = LinkService::start(&sandbox, &secret, &[]);
    let dir = tempfile::tempdir().unwrap();
    run_ok(&mut mail_run(
        &sandbox,
        dir.path(),
        5,
        service.base(),
        &secret,
        "at-click",
    ));
    assert_eq!(
        admin_stats(&sandbox).await.calls,
        0,
        "no call during the run"
    );

    let links = mailed_links(dir.path(), 5, service.base());
    for link in links.values() {
        assert_eq!(no_redirects().get(link).send().await.unwrap().status(), 200);
    }
    let leads = lead_ids(5);
    let clicked = [&leads[1], &leads[3]];
    for lead in clicked {
        assert_signs_in(&sandbox, click(&links[lead]).await, lead).await;
    }
    assert_signs_in(&sandbox, click(&links[&leads[1]]).await, &leads[1]).await;
    let stats = admin_stats(&sandbox).await;
    assert_eq!(stats.calls, 2, "2 of 5 leads clicked: 2 calls");
    for lead in &leads {
        let want = u64::from(clicked.contains(&lead));
        assert_eq!(issued(&stats, lead), want, "{lead}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn altered_foreign_and_expired_links_get_their_pages_and_a_rotated_secret_opens_old_links() {
    let sandbox = sandbox(fast_config()).await;
    let (old, new, foreign) = (new_secret(), new_secret(), new_secret());
    let service = LinkService::start(
        &sandbox,
        &format!("{new},{old}"),
        &["--contact", "Acme Support"],
    );
    let base = service.base();
    let dir = tempfile::tempdir().unwrap();
    let made = |name: &str, secret: &str, mint: &str, extra: &[&str]| {
        let dir = dir.path().join(name);
        run_ok(mail_run(&sandbox, &dir, 1, base, secret, mint).args(extra));
        let expires: DateTime<Utc> = read_report(&dir.join("report.csv"))[0]["expires_at"]
            .parse()
            .unwrap();
        let link = mailed_links(&dir, 1, base).into_values().next().unwrap();
        (link, expires)
    };
    let (expired, expires) = made("expired", &old, "at-click", &["--link-ttl", "1s"]);
    // Its key is sealed with the old secret too: the service must open both.
    let (before_rotation, _) = made("old", &old, "at-send", &[]);
    let (after_rotation, _) = made("new", &new, "at-click", &[]);
    let (of_another_secret, _) = made("foreign", &foreign, "at-click", &[]);
    assert_eq!(admin_stats(&sandbox).await.calls, 1, "the at-send run's");
    let altered = {
        let mut bytes = before_rotation.clone().into_bytes();
        let at = bytes.len() - 20;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };

    // The point of this wait: the link outlives its --link-ttl.
    let left = (expires - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(1100)).await;
    for (link, status, says) in [
        (&altered, 404, "This link is not valid"),
        (&of_another_secret, 404, "This link is not valid"),
        (&expired, 410, "please ask Acme Support"),
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let answer = no_redirects()
                .request(method.clone(), link)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), status, "{method} {link}");
            let html = answer.text().await.unwrap();
            assert!(html.contains(says), "{html}");
            assert!(!html.contains("<form"), "no button on a dead link");
        }
        let head = no_redirects().head(link).send().await.unwrap();
        assert_eq!(head.status(), status, "HEAD {link}");
    }
    assert_eq!(admin_stats(&sandbox).await.calls, 1, "bad links cost 0");

    let lead = &lead_ids(1)[0];
    assert_signs_in(&sandbox, click(&before_rotation).await, lead).await;
    assert_eq!(
        admin_stats(&sandbox).await.calls,
        1,
        "the key sealed with the old secret, opened"
    );
    assert_signs_in(&sandbox, click(&after_rotation).await, lead).await;
    assert_eq!(admin_stats(&sandbox).await.calls, 2, "minted at the click");
}
