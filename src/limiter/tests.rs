//! The limiter's promises, on a paused clock.

mod memory;
mod simulated;

use super::*;

fn busiest_window(instants: &[Instant], window: Duration) -> usize {
    let mut sorted = instants.to_vec();
    sorted.sort();
    let mut most = 0;
    let mut first = 0;
    for (last, t) in sorted.iter().enumerate() {
        while *t - sorted[first] >= window {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

#[tokio::test(start_paused = true)]
async fn first_burst_goes_at_once_and_the_next_call_waits_a_window() {
    let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
    let t0 = Instant::now();
    for _ in 0..25 {
        limiter.acquire().await.unwrap().completed();
    }
    assert_eq!(Instant::now(), t0, "the first 25 calls need no wait");
    let permit = limiter.acquire().await.unwrap();
    assert!(permit.sent_at() - t0 > Duration::from_secs(5));
}

/// Guards the core promise: however calls, retries and 429 pauses interleave,
/// no window of W holds more than N starts, nor more than N arrivals when
/// arrivals lag their sends by up to 100 ms of jitter.
#[tokio::test(start_paused = true)]
async fn no_window_holds_more_than_the_budget_across_retries_and_pauses() {
    use rand::{Rng, SeedableRng};
    let rate = Rate::DEFAULT;
    let limiter = Limiter::new(LimiterSettings::new(rate));
    limiter.record_starts();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for worker in 0..50u64 {
        let limiter = Arc::clone(&limiter);
        let arrivals = Arc::clone(&arrivals);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(worker);
            for _ in 0..6 {
                loop {
                    let permit = limiter.acquire().await.unwrap();
                    let jitter = Duration::from_millis(rng.random_range(0..=100));
                    tokio::time::sleep(jitter).await;
                    arrivals.lock().unwrap().push(Instant::now());
                    let service = Duration::from_millis(rng.random_range(50..=1000));
                    tokio::time::sleep(service).await;
                    let outcome = rng.random_range(0..100);
                    if outcome < 5 {
                        // A timeout: the permit is dropped unreported.
                        drop(permit);
                        continue;
                    }
                    permit.completed();
                    if outcome < 10 {
                        limiter.pause(None);
                        continue;
                    }
                    break;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let starts = limiter.starts();
    assert!(starts.len() >= 300);
    assert!(busiest_window(&starts, rate.window) <= 25);
    assert!(busiest_window(&arrivals.lock().unwrap(), rate.window) <= 25);
}

#[tokio::test(start_paused = true)]
async fn a_429_holds_every_task_until_our_window_has_room_and_retry_after_as_given() {
    let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
    for _ in 0..25 {
        limiter.acquire().await.unwrap().completed();
    }
    let t0 = Instant::now();
    limiter.pause(None);
    assert_eq!(limiter.allowed(), 24, "the server counted 24 of ours");
    let next = limiter.acquire().await.unwrap();
    assert!(
        next.sent_at() - t0 >= Duration::from_secs(5),
        "no call before our window clears"
    );
    next.completed();
    limiter.pause(Some(Duration::from_secs(7)));
    let t1 = Instant::now();
    let after = limiter.acquire().await.unwrap();
    assert!(
        after.sent_at() - t1 >= Duration::from_secs(7),
        "Retry-After as given"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_with_room_in_our_window_shrinks_our_share_which_climbs_back() {
    let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
    for _ in 0..15 {
        limiter.acquire().await.unwrap().completed();
    }
    let t0 = Instant::now();
    limiter.pause(None);
    assert_eq!(
        limiter.allowed(),
        14,
        "the server counted 14 of ours, refused the 15th"
    );
    let next = limiter.acquire().await.unwrap();
    assert!(
        next.sent_at() - t0 >= Duration::from_secs(5),
        "no 16th call in the window"
    );
    next.completed();
    // Three windows without a 429 bring the whole budget back.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        limiter.acquire().await.unwrap().completed();
    }
    assert_eq!(limiter.allowed(), 25);
}

#[tokio::test(start_paused = true)]
async fn no_pause_is_longer_than_the_cap() {
    let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
    let t0 = Instant::now();
    limiter.pause(Some(Duration::from_secs(100_000)));
    limiter.pause(Some(Duration::MAX));
    let permit = limiter.acquire().await.unwrap();
    assert_eq!(permit.sent_at() - t0, MAX_PAUSE);
    assert_eq!(limiter.paused_total(), MAX_PAUSE);
    assert!(capped_warning(Duration::from_secs(100_000)).contains("wait 100000s"));
    assert!(capped_warning(Duration::MAX).contains("waiting 5m instead"));
}

#[tokio::test(start_paused = true)]
async fn a_smaller_burst_spreads_the_first_calls() {
    let mut settings = LimiterSettings::new(Rate::DEFAULT);
    settings.burst = 5;
    let limiter = Limiter::new(settings);
    let t0 = Instant::now();
    for _ in 0..6 {
        limiter.acquire().await.unwrap().completed();
    }
    assert_eq!(Instant::now() - t0, Duration::from_millis(200));
}

/// A call that waited for an idle connection wrote its request when it got
/// it: its slot is blocked a window from then (plus the margin), or from its
/// answer when the client could not tell when.
#[tokio::test(start_paused = true)]
async fn a_call_that_waited_for_an_idle_connection_is_timed_from_when_it_got_it() {
    let waited = Duration::from_secs(1);
    let answered = waited + Duration::from_millis(200);
    // The window, and the millisecond that keeps a call off its edge.
    let window = Rate::DEFAULT.window + Duration::from_millis(1);
    for (told, free_after) in [
        (Some(waited), waited + DEFAULT_ARRIVAL_MARGIN + window),
        (None, answered + window),
    ] {
        let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
        let t0 = Instant::now();
        let permits: Vec<_> = futures::future::join_all((0..25).map(|_| limiter.acquire())).await;
        tokio::time::sleep(answered).await;
        for permit in permits {
            permit
                .unwrap()
                .completed_on(Connection::Pooled { waited: told });
        }
        let next = limiter.acquire().await.unwrap();
        assert_eq!(next.sent_at() - t0, free_after, "told {told:?}");
    }
}

/// A request that may have waited unseen (its connection opened a SYN
/// late, or untimed) reached the server no later than its answer less the
/// quickest answer seen, plus the margin. Before any answer, or when it is
/// answered quicker than any, it is blocked from its answer.
#[tokio::test(start_paused = true)]
async fn a_late_request_is_blocked_from_its_answer_less_the_quickest_answer_seen() {
    let ms = Duration::from_millis;
    let rate = Rate {
        calls: 2,
        window: Duration::from_secs(5),
    };
    // The window, and the millisecond that keeps a call off its edge.
    let window = rate.window + ms(1);
    let late = Connection::New {
        setup: Some(ms(1000)),
    };
    let untimed = Connection::New { setup: None };
    // The quick call's answer after its writing; how the other call went,
    // and when its slot is free again, from the start.
    for (quick_answer, other, answered, free_after) in [
        // Answered 300 ms slower than the quickest: it waited at most that.
        (
            Some(ms(900)),
            late,
            ms(2200),
            ms(2200) - ms(900) + DEFAULT_ARRIVAL_MARGIN + window,
        ),
        (
            Some(ms(900)),
            untimed,
            ms(2200),
            ms(2200) - ms(900) + DEFAULT_ARRIVAL_MARGIN + window,
        ),
        // Answered quicker than any: the server can be quicker still.
        (Some(ms(900)), late, ms(1800), ms(1800) + window),
        // Nothing answered yet.
        (None, untimed, ms(2200), ms(2200) + window),
    ] {
        let limiter = Limiter::new(LimiterSettings::new(rate));
        let t0 = Instant::now();
        let first = limiter.acquire().await.unwrap();
        let second = limiter.acquire().await.unwrap();
        // The quick call's slot, when it is answered, goes to a third call.
        let mut third = None;
        if let Some(answer) = quick_answer {
            tokio::time::sleep(ms(10) + answer).await;
            first.completed_on(Connection::New {
                setup: Some(ms(10)),
            });
            tokio::time::sleep_until(t0 + answered).await;
            second.completed_on(other);
            third = Some(limiter.acquire().await.unwrap());
        } else {
            tokio::time::sleep_until(t0 + answered).await;
            second.completed_on(other);
        }
        let again = limiter.acquire().await.unwrap();
        assert_eq!(
            again.sent_at() - t0,
            free_after,
            "quickest {quick_answer:?}, {other:?} answered after {answered:?}"
        );
        drop(third);
    }
}
