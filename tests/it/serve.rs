//! `lsq-dispatch serve`, the real binary, against the built-in sandbox, with
//! links sealed here as a run would seal them: what a GET, a HEAD and a POST
//! cost and answer, the pages of bad and expired links, rotated secrets, the
//! per-client cap, the budget wait, shared keys through Redis, and a
//! graceful stop.

use std::time::Duration;

use lsq_dispatch::redirect::{LinkClaims, LinkSecrets};
use lsq_dispatch::secret::Secret;
use lsq_sandbox::{Sandbox, SandboxConfig};

use crate::support::link_service::LinkService;
use crate::support::{fast_config, lead_ids, sandbox, wait_until};

pub(crate) const SECRET_A: &str = "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY";
pub(crate) const SECRET_B: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const SECRET_C: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8";

pub(crate) fn secrets(list: &[&str]) -> LinkSecrets {
    LinkSecrets::parse(&Secret::new(list.join(","))).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A link for `lead` at the sandbox's first portal, valid for a day.
pub(crate) fn claims(sandbox: &Sandbox, lead: &str) -> LinkClaims {
    LinkClaims {
        lead_id: lead.to_owned(),
        portal_id: sandbox.config().portal_ids[0].clone(),
        campaign: "spring".into(),
        issued: now(),
        expires: now() + 86_400,
        key: None,
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Asserts the headers every answer carries.
fn assert_guarded(response: &reqwest::Response) {
    let headers = response.headers();
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
}

async fn post(link: &str) -> reqwest::Response {
    client().post(link).send().await.unwrap()
}

fn issued(sandbox: &Sandbox, lead: &str) -> u64 {
    sandbox.stats().keys_issued.get(lead).copied().unwrap_or(0)
}

#[tokio::test]
async fn get_and_head_cost_nothing_and_a_post_signs_the_lead_in_once_per_key() {
    let sandbox = sandbox(fast_config()).await;
    let served = LinkService::start(&sandbox, SECRET_A, &[]);
    let lead = &lead_ids(1)[0];
    let token = secrets(&[SECRET_A]).seal(&claims(&sandbox, lead));
    let link = served.link(&token);

    let page = client().get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_guarded(&page);
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\">"), "{html}");
    let head = client().head(&link).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_guarded(&head);
    assert_eq!(sandbox.stats().calls, 0, "a GET or HEAD makes no call");

    let clicked = post(&link).await;
    assert_eq!(clicked.status(), 303);
    assert_guarded(&clicked);
    let location = clicked.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&sandbox.portal_url()), "{location}");
    let (status, who) = crate::support::login(&location).await;
    assert_eq!(status, 200);
    assert_eq!(who["LeadId"], lead.as_str());
    assert_eq!(issued(&sandbox, lead), 1);

    let again = post(&link).await;
    assert_eq!(again.status(), 303);
    assert_eq!(again.headers()["location"], location.as_str());
    assert_eq!(issued(&sandbox, lead), 1, "a second click costs no call");

    let metrics = client()
        .get(format!("{}/metrics", served.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("lsq_dispatch_serve_keys_minted_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lsq_dispatch_serve_cache_hits_total 1\n"),
        "{metrics}"
    );
    for probe in ["healthz", "readyz"] {
        let answer = client()
            .get(format!("{}/{probe}", served.base()))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "/{probe}");
    }

    served
        .wait_for_log("both clicks logged", |log| {
            log.matches("\"click\"").count() >= 2
        })
        .await;
    let log = served.log();
    let clicks: Vec<&str> = log.lines().filter(|l| l.contains("\"click\"")).collect();
    assert_eq!(clicks.len(), 2, "{log}");
    assert!(clicks[0].contains("\"outcome\":\"minted\""), "{log}");
    assert!(clicks[1].contains("\"outcome\":\"cached\""), "{log}");
    assert!(clicks[0].contains(lead.as_str()) && clicks[0].contains("\"latency_ms\""));
    let key = location.split("authKey=").nth(1).unwrap();
    let decoded = percent_encoding::percent_decode_str(key)
        .decode_utf8()
        .unwrap();
    for secret in [&token[..], key, &decoded] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
}

#[tokio::test]
async fn a_key_alive_in_the_token_costs_no_call() {
    let sandbox = sandbox(fast_config()).await;
    let served = LinkService::start(&sandbox, SECRET_A, &[]);
    let lead = &lead_ids(1)[0];
    let with_key = LinkClaims {
        key: Some((Secret::new("k+y/="), now() + 3600)),
        ..claims(&sandbox, lead)
    };
    let clicked = post(&served.link(&secrets(&[SECRET_A]).seal(&with_key))).await;
    assert_eq!(clicked.status(), 303);
    let location = clicked.headers()["location"].to_str().unwrap();
    assert!(location.ends_with("authKey=k%2By%2F%3D"), "{location}");
    assert_eq!(sandbox.stats().calls, 0);
}

#[tokio::test]
async fn a_click_after_the_key_died_mints_once_more_and_signs_in() {
    let sandbox = sandbox(SandboxConfig {
        key_ttl: Duration::from_secs(2),
        ..fast_config()
    })
    .await;
    let served = LinkService::start(&sandbox, SECRET_A, &["--key-lifetime", "2s"]);
    let lead = &lead_ids(1)[0];
    let link = served.link(&secrets(&[SECRET_A]).seal(&claims(&sandbox, lead)));
    assert_eq!(post(&link).await.status(), 303);
    assert_eq!(issued(&sandbox, lead), 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let clicked = post(&link).await;
    assert_eq!(clicked.status(), 303);
    assert_eq!(issued(&sandbox, lead), 2, "the dead key was not handed out");
    let location = clicked.headers()["location"].to_str().unwrap();
    let (status, who) = crate::support::login(location).await;
    assert_eq!((status, who["LeadId"].as_str()), (200, Some(lead.as_str())));
}

#[tokio::test]
async fn altered_foreign_and_expired_links_get_their_pages_and_rotated_secrets_still_open() {
    let sandbox = sandbox(fast_config()).await;
    let rotated = format!("{SECRET_B},{SECRET_A}");
    let served = LinkService::start(&sandbox, &rotated, &["--contact", "Acme Support"]);
    let lead = &lead_ids(1)[0];
    let old = secrets(&[SECRET_A]).seal(&claims(&sandbox, lead));
    let mut altered = old.clone().into_bytes();
    altered[10] = if altered[10] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let foreign = secrets(&[SECRET_C]).seal(&claims(&sandbox, lead));
    let expired = secrets(&[SECRET_A]).seal(&LinkClaims {
        issued: now() - 100,
        expires: now() - 1,
        ..claims(&sandbox, lead)
    });
    for (token, status, says) in [
        (&altered, 404, "not valid"),
        (&foreign, 404, "not valid"),
        (&expired, 410, "Acme Support"),
    ] {
        for response in [
            client().get(served.link(token)).send().await.unwrap(),
            post(&served.link(token)).await,
        ] {
            assert_eq!(response.status(), status);
            assert_guarded(&response);
            let html = response.text().await.unwrap();
            assert!(html.contains(says), "{html}");
        }
    }
    let nowhere = client()
        .get(format!("{}/nothing-here", served.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);
    assert_guarded(&nowhere);
    assert_eq!(sandbox.stats().calls, 0);

    assert_eq!(
        post(&served.link(&old)).await.status(),
        303,
        "an old link opens"
    );
    let new = secrets(&[SECRET_B]).seal(&claims(&sandbox, &lead_ids(2)[1]));
    assert_eq!(post(&served.link(&new)).await.status(), 303);
}

#[tokio::test]
async fn past_its_cap_a_client_gets_a_page_not_a_429_and_each_forwarded_client_has_its_own() {
    let sandbox = sandbox(fast_config()).await;
    let served = LinkService::start(
        &sandbox,
        SECRET_A,
        &["--client-rate", "2/1m", "--trusted-proxy", "127.0.0.1"],
    );
    let lead = &lead_ids(1)[0];
    let link = served.link(&secrets(&[SECRET_A]).seal(&claims(&sandbox, lead)));
    let from = |client: &'static str| {
        let link = link.clone();
        async move {
            self::client()
                .post(link)
                .header("x-forwarded-for", client)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(from("198.51.100.1").await.status(), 303);
    assert_eq!(from("198.51.100.1").await.status(), 303);
    let capped = from("198.51.100.1").await;
    assert_eq!(capped.status(), 503);
    assert_guarded(&capped);
    let html = capped.text().await.unwrap();
    assert!(html.contains("Too many attempts"), "{html}");
    assert_eq!(from("198.51.100.2").await.status(), 303, "another client");
    assert_eq!(issued(&sandbox, lead), 1);
}

#[tokio::test]
async fn a_spent_budget_gives_a_page_that_tries_again_and_concurrent_clicks_share_one_mint() {
    let sandbox = sandbox(SandboxConfig {
        budget: "1/10s".parse().unwrap(),
        service_time: (Duration::from_millis(300), Duration::from_millis(300)),
        ..fast_config()
    })
    .await;
    let served = LinkService::start(&sandbox, SECRET_A, &["--budget-wait", "1s"]);
    let leads = lead_ids(2);
    let seal = |lead: &str| served.link(&secrets(&[SECRET_A]).seal(&claims(&sandbox, lead)));
    let first = seal(&leads[0]);
    let clicks: Vec<_> = (0..5).map(|_| post(&first)).collect();
    for clicked in futures::future::join_all(clicks).await {
        assert_eq!(clicked.status(), 303);
    }
    assert_eq!(issued(&sandbox, &leads[0]), 1, "five clicks, one mint");

    let busy = post(&seal(&leads[1])).await;
    assert_eq!(busy.status(), 503);
    assert_guarded(&busy);
    let csp = busy.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = busy.text().await.unwrap();
    assert!(
        html.contains("<script>") && html.contains("<form method=\"post\">"),
        "{html}"
    );
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert_eq!(sandbox.stats().by_status.get(&429), None, "no 429");
}

#[tokio::test]
async fn two_services_on_one_redis_store_share_the_keys_they_mint() {
    let Some(redis) = crate::support::redis_server::RedisServer::start(
        "two_services_on_one_redis_store_share_the_keys_they_mint",
    ) else {
        return;
    };
    let sandbox = sandbox(fast_config()).await;
    let store = redis.url();
    let flags = ["--budget-store", store.as_str()];
    let one = LinkService::start(&sandbox, SECRET_A, &flags);
    let two = LinkService::start(&sandbox, SECRET_A, &flags);
    let lead = &lead_ids(1)[0];
    let token = secrets(&[SECRET_A]).seal(&claims(&sandbox, lead));
    let first = post(&one.link(&token)).await;
    assert_eq!(first.status(), 303);
    let second = post(&two.link(&token)).await;
    assert_eq!(second.status(), 303);
    assert_eq!(first.headers()["location"], second.headers()["location"]);
    assert_eq!(
        issued(&sandbox, lead),
        1,
        "the second service took the shared key"
    );
    two.wait_for_log("the second service's click logged as cached", |log| {
        log.contains("\"outcome\":\"cached\"")
    })
    .await;
}

#[tokio::test]
async fn sigterm_lets_the_click_in_flight_finish_and_exits_0() {
    let sandbox = sandbox(SandboxConfig {
        service_time: (Duration::from_millis(800), Duration::from_millis(800)),
        ..fast_config()
    })
    .await;
    let mut served = LinkService::start(&sandbox, SECRET_A, &[]);
    let link = served.link(&secrets(&[SECRET_A]).seal(&claims(&sandbox, &lead_ids(1)[0])));
    let click = tokio::spawn(async move { post(&link).await.status() });
    wait_until("the click's call to arrive", || sandbox.stats().calls == 1).await;
    served.sigterm();
    assert_eq!(click.await.unwrap(), 303);
    let status = served.wait();
    assert_eq!(status.code(), Some(0), "{}", served.log());
}
