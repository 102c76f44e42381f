//! What a limiter resumes from the shared budget's memory: the learnt
//! share, climbing back, and the credentials accepted lately.

use super::simulated::{simulate_with, Service, StrictServer, ON_TIME};
use super::*;

fn learnt(allowed: u32, failed_probes: u32, age_secs: u64) -> Memory {
    Memory {
        share: Some(LearntShare {
            allowed,
            failed_probes,
            age: Duration::from_secs(age_secs),
        }),
        accepted: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_remembered_share_climbs_back_a_call_every_eight_windows_after_the_probe() {
    for (age, allowed) in [
        (0, 15),
        (4, 15),
        (5, 16),
        (44, 16),
        (45, 17),
        (125, 19),
        (3_600, 25),
    ] {
        let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
        limiter.resume(learnt(15, 0, age));
        assert_eq!(limiter.allowed(), allowed, "learnt {age} s ago");
    }
    // After probes that drew 429s, the next probe waits longer.
    let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
    limiter.resume(learnt(15, 2, 15));
    assert_eq!(limiter.allowed(), 15, "the probe waits 4 windows");
    tokio::time::sleep(Duration::from_secs(5)).await;
    limiter.acquire().await.unwrap().completed();
    assert_eq!(limiter.allowed(), 16);
}

/// Guards the second run of the night: what the first learnt from a steady
/// competitor holds from its first call, so it does not pay the first
/// window's 429s again.
#[tokio::test(start_paused = true)]
async fn a_run_that_resumes_a_learnt_share_is_refused_far_less_than_one_that_learns_it() {
    let run = |memory: Option<Memory>| async move {
        let server = StrictServer::new(Rate::DEFAULT);
        let competitor = server.steady_competitor();
        let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
        if let Some(memory) = memory {
            limiter.resume(memory);
        }
        let got = simulate_with(limiter, server, 300, Service::range(50, 300), ON_TIME).await;
        competitor.abort();
        got.refused as f64 / got.calls as f64
    };
    let first = run(None).await;
    assert!(first <= 0.10, "first run: {first}");
    // Started right after the first, or half a minute after its last 429.
    for (failed_probes, age) in [(1, 2), (1, 25), (2, 30), (3, 30)] {
        let second = run(Some(learnt(15, failed_probes, age))).await;
        assert!(second <= 0.02, "second run, {age} s after: {second}");
    }
}

#[tokio::test(start_paused = true)]
async fn probes_that_draw_429s_wait_longer_each_time() {
    let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
    limiter.resume(learnt(10, 0, 0));
    let t0 = Instant::now();
    let mut probes = Vec::new();
    while probes.len() < 4 {
        let permit = limiter.acquire().await.unwrap();
        let allowed = limiter.allowed();
        permit.completed();
        if allowed > 10 {
            // The probe: the competitor is still there.
            probes.push((Instant::now() - t0).as_secs());
            limiter.pause(None);
        }
    }
    let gaps: Vec<u64> = probes.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] >= g[0]) && gaps[2] >= 4 * gaps[0] - 1,
        "probes at {probes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn credentials_accepted_lately_are_proven_and_others_are_not() {
    let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
    assert!(!limiter.accepted_recently("m1"));
    limiter.resume(Memory {
        share: None,
        accepted: Some(("m1".into(), Duration::from_secs(3_600))),
    });
    assert!(limiter.accepted_recently("m1"));
    assert!(!limiter.accepted_recently("m2"), "other credentials");
    limiter.resume(Memory {
        share: None,
        accepted: Some(("m1".into(), ACCEPTED_FOR)),
    });
    assert!(!limiter.accepted_recently("m1"), "too long ago");
}
