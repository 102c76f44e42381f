//! The sandbox's sliding-window budget and each fault setting over real
//! HTTP, asserted by counts rather than timings.

use std::time::Duration;

use futures::future::join_all;
use lsq_sandbox::{SandboxConfig, Stats};
use reqwest::StatusCode;

use super::{budget, count, error_of, range, send, Api, LEAD};

#[tokio::test]
async fn a_spent_window_answers_429_without_retry_after() {
    // A window far longer than the test: none of its calls leave it. How
    // the window slides is proven on a paused clock, beside the code.
    let api = Api::with(|c| c.budget = budget(25, 60_000)).await;
    let burst = join_all((0..25).map(|_| api.generate_status(LEAD))).await;
    assert_eq!(count(&burst, StatusCode::OK), 25);

    let over = api.generate(LEAD).await.unwrap();
    assert!(over.headers().get("retry-after").is_none());
    let (status, _, message) = error_of(over).await;
    assert_eq!(status, 429);
    assert_eq!(
        message,
        "API calls exceeded the limit of 25 in 60 second(s)"
    );

    let stats = api.sandbox.stats();
    assert_eq!(stats.max_in_window, 25);
    assert_eq!(stats.by_status[&429], 1);
    // The 429 was not counted: 25 arrivals on record.
    assert_eq!(api.sandbox.arrivals().len(), 25);
}

#[tokio::test]
async fn default_budget_is_25_in_5_seconds() {
    let api = Api::with(|c| c.retry_after = Some(Duration::from_secs(2))).await;
    let burst = join_all((0..26).map(|_| api.generate_status(LEAD))).await;
    assert_eq!(count(&burst, StatusCode::OK), 25);
    assert_eq!(count(&burst, StatusCode::TOO_MANY_REQUESTS), 1);

    let over = api.generate(LEAD).await.unwrap();
    assert_eq!(over.headers()["retry-after"], "2");
    let (status, kind, message) = error_of(over).await;
    assert_eq!(
        (status, kind.as_str()),
        (429, "MXAPIRateLimitExceededException")
    );
    assert_eq!(message, "API calls exceeded the limit of 25 in 5 second(s)");
}

/// Waits until the sandbox has counted `n` competitor calls.
async fn competitor_calls(api: &Api, n: u64) {
    let counted = async {
        while api.sandbox.stats().competitor_calls < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), counted)
        .await
        .expect("the competitor calls");
}

#[tokio::test]
async fn competitor_calls_are_counted_but_not_ours() {
    // 5 of 10 calls a minute: its first call comes at start, its next 12 s on.
    let config = SandboxConfig {
        budget: budget(10, 60_000),
        competitor: 5,
        ..SandboxConfig::default()
    };
    let api = Api::start(config).await;
    competitor_calls(&api, 1).await;
    let burst = join_all((0..10).map(|_| api.generate_status(LEAD))).await;
    assert_eq!(count(&burst, StatusCode::OK), 9);
    let stats = api.sandbox.stats();
    assert_eq!((stats.competitor_calls, stats.max_in_window), (1, 10));
    assert_eq!(stats.calls, 10);
    assert_eq!(api.sandbox.arrivals().len(), 9);

    let alone = Api::with(|c| c.budget = budget(10, 60_000)).await;
    let burst = join_all((0..10).map(|_| alone.generate_status(LEAD))).await;
    assert_eq!(count(&burst, StatusCode::OK), 10);
}

#[tokio::test]
async fn counted_rejections_hold_a_slot() {
    // How a hammering client is kept out over time is proven on a paused
    // clock, beside the code; over HTTP, what is counted.
    let config = |count_rejected| SandboxConfig {
        budget: budget(2, 60_000),
        count_rejected,
        ..SandboxConfig::default()
    };
    for (count_rejected, counted) in [(false, 2), (true, 4)] {
        let api = Api::start(config(count_rejected)).await;
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(api.generate_status(LEAD).await);
        }
        assert_eq!(count(&statuses, StatusCode::OK), 2, "{statuses:?}");
        assert_eq!(api.sandbox.arrivals().len(), counted);
        assert_eq!(api.sandbox.stats().max_in_window as usize, counted);
    }
}

// ---- faults -------------------------------------------------------------------------

/// Sends one Generate per LeadId, `spacing` apart, and reports which were accepted.
async fn staggered(api: &Api, leads: &[String], spacing: Duration) -> Vec<bool> {
    let calls = leads.iter().enumerate().map(|(i, lead)| async move {
        tokio::time::sleep(spacing * i as u32).await;
        api.generate_status(lead).await == StatusCode::OK
    });
    join_all(calls).await
}

#[tokio::test]
async fn jitter_reorders_arrivals() {
    // With a budget of 10 and 20 calls sent in order, exactly the first ten
    // sent are accepted, unless jitter lets later ones overtake.
    let leads: Vec<String> = (0..20)
        .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        .collect();
    let config = |jitter| SandboxConfig {
        budget: budget(10, 60_000),
        jitter,
        seed: Some(3),
        ..SandboxConfig::default()
    };
    let steady = Api::start(config((Duration::ZERO, Duration::ZERO))).await;
    let accepted = staggered(&steady, &leads, Duration::from_millis(30)).await;
    assert_eq!(accepted, [[true; 10], [false; 10]].concat());

    let jittery = Api::start(config((Duration::ZERO, Duration::from_millis(600)))).await;
    let accepted = staggered(&jittery, &leads, Duration::from_millis(30)).await;
    assert_eq!(accepted.iter().filter(|&&a| a).count(), 10);
    let overtakers = accepted[10..].iter().filter(|&&a| a).count();
    assert!(overtakers > 0, "{accepted:?}");
}

#[tokio::test]
async fn service_time_outlasts_an_impatient_client() {
    let config = |service_time| SandboxConfig {
        service_time,
        ..SandboxConfig::default()
    };
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    for (service, want_timeouts) in [(range(0), 0), (range(2000), 5)] {
        let mut api = Api::start(config(service)).await;
        api.http = impatient.clone();
        let results = join_all((0..5).map(|_| api.generate(LEAD))).await;
        let timeouts = results
            .iter()
            .filter(|r| r.as_ref().is_err_and(|e| e.is_timeout()))
            .count();
        assert_eq!(timeouts, want_timeouts, "service time {service:?}");
        // Counted at arrival, whether or not the client waited for the answer.
        assert_eq!(api.sandbox.arrivals().len(), 5);
    }
}

#[tokio::test]
async fn error_rate_answers_500() {
    let all = Api::with(|c| c.error_rate = 1.0).await;
    for _ in 0..10 {
        let (status, kind, _) = error_of(all.generate(LEAD).await.unwrap()).await;
        assert_eq!((status, kind.as_str()), (500, "MXUnknownException"));
    }
    assert!(all.sandbox.stats().keys_issued.is_empty());

    let half = |seed| {
        Api::start(SandboxConfig {
            budget: budget(1000, 1000),
            error_rate: 0.5,
            seed: Some(seed),
            ..SandboxConfig::default()
        })
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let api = half(11).await;
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(api.generate_status(LEAD).await);
        }
        runs.push(statuses);
    }
    let errors = count(&runs[0], StatusCode::INTERNAL_SERVER_ERROR);
    // Seed 11 draws 15 errors in 40: about half, and the same every run.
    assert_eq!(errors, 15, "{errors} of 40");
    assert_eq!(errors + count(&runs[0], StatusCode::OK), 40);
    assert_eq!(runs[0], runs[1], "the same seed replays the same faults");
}

#[tokio::test]
async fn drop_rate_cuts_connections_without_an_answer() {
    let api = Api::with(|c| c.drop_rate = 1.0).await;
    for _ in 0..5 {
        let err = api.generate(LEAD).await.expect_err("no answer");
        assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    }
    let stats = api.sandbox.stats();
    assert_eq!((stats.dropped, stats.calls), (5, 5));
    assert!(stats.by_status.is_empty(), "{stats:?}");

    let some = Api::start(SandboxConfig {
        budget: budget(1000, 1000),
        drop_rate: 0.5,
        seed: Some(5),
        ..SandboxConfig::default()
    })
    .await;
    let mut dropped = 0;
    for _ in 0..30 {
        match some.generate(LEAD).await {
            Ok(r) => assert_eq!(r.status(), StatusCode::OK),
            Err(_) => dropped += 1,
        }
    }
    // Seed 5 draws 14 drops in 30: about half, and the same every run.
    assert_eq!(dropped, 14, "{dropped} of 30");
    assert_eq!(some.sandbox.stats().dropped, dropped);
}

// ---- admin ------------------------------------------------------------------------

#[tokio::test]
async fn admin_reports_and_resets_without_being_counted() {
    let api = Api::with(|c| c.budget = budget(3, 60_000)).await;
    for _ in 0..4 {
        api.generate(LEAD).await.unwrap();
    }
    let stats: Stats = send(api.get("/admin/stats")).await.json().await.unwrap();
    assert_eq!(stats, api.sandbox.stats());
    assert_eq!(stats.calls, 4);
    assert_eq!((stats.by_status[&200], stats.by_status[&429]), (3, 1));
    assert_eq!(stats.max_in_window, 3);
    let arrivals: Vec<u64> = send(api.get("/admin/arrivals")).await.json().await.unwrap();
    assert_eq!(arrivals.len(), 3);
    assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));

    let reset = send(api.post("/admin/reset")).await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.sandbox.stats(), Stats::default());
    assert!(api.sandbox.arrivals().is_empty());
    // The spent budget is real state and survives the reset.
    assert_eq!(
        api.generate_status(LEAD).await,
        StatusCode::TOO_MANY_REQUESTS
    );

    let missing = send(api.get("/admin/otp").query(&[("code", "nope")])).await;
    assert_eq!(error_of(missing).await.0, 404);
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let api = Api::default().await;
    let url = api.url("/admin/stats");
    api.sandbox.shutdown().await;
    assert!(reqwest::get(url).await.is_err());
}
