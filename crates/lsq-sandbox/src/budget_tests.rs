//! The budget as calls arrive over time, on tokio's paused clock: the window
//! sliding, the competing integration's share of every window, and counted
//! rejections. The sandbox keeps its time on tokio's clock, so these counts
//! are exact; over HTTP, real time between calls would blur them.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::sleep;

use crate::{compete, routes::admit, window, Budget, SandboxConfig, Shared};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A sandbox's state without its server, with `calls` per second and what
/// `change` sets; its competitor, if any, runs as it does in a sandbox.
fn shared(calls: u32, change: impl FnOnce(&mut SandboxConfig)) -> Arc<Shared> {
    let mut config = SandboxConfig {
        budget: Budget {
            calls,
            window: ms(1000),
        },
        ..SandboxConfig::default()
    };
    change(&mut config);
    let shared = Arc::new(Shared::new(config, false).unwrap());
    let period = window::competitor_period(shared.config.budget, shared.config.competitor);
    if let Some(period) = period {
        tokio::spawn(compete(shared.clone(), period));
    }
    shared
}

/// How many of `n` calls arriving together now the budget admits.
fn burst(shared: &Shared, n: usize) -> usize {
    (0..n).filter(|_| admit(shared)).count()
}

#[tokio::test(start_paused = true)]
async fn the_window_admits_n_then_refuses_until_it_slides() {
    let shared = shared(25, |_| {});
    assert_eq!(burst(&shared, 25), 25);
    sleep(ms(999)).await;
    assert_eq!(burst(&shared, 1), 0);
    // Exactly a window after the first burst, that burst has left it.
    sleep(ms(1)).await;
    assert_eq!(burst(&shared, 26), 25);
    let stats = shared.stats();
    assert_eq!(stats.max_in_window, 25);
    // Rejected calls were not counted: two bursts of 25 on record.
    assert_eq!(shared.ledger().arrivals.len(), 50);
}

#[tokio::test(start_paused = true)]
async fn competitor_takes_part_of_every_window() {
    // 5 of 10 calls a second: one every 200 ms, from the start.
    let shared = shared(10, |c| c.competitor = 5);
    sleep(ms(1100)).await;
    assert_eq!(shared.stats().competitor_calls, 6);
    assert_eq!(burst(&shared, 10), 5);
    // A window later ours have left, and the competitor has taken 5 again.
    sleep(ms(1000)).await;
    assert_eq!(burst(&shared, 10), 5);
    let stats = shared.stats();
    assert_eq!((stats.competitor_calls, stats.max_in_window), (11, 10));
    // Competitor calls are counted but are not ours.
    assert_eq!(shared.ledger().arrivals.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_competitor_that_stops_leaves_the_whole_budget() {
    let shared = shared(10, |c| {
        c.competitor = 5;
        c.competitor_stops_after = Some(ms(500));
    });
    // It calls at 0, 200 and 400 ms, then stops; its last call holds a slot
    // for one window.
    sleep(ms(1399)).await;
    assert_eq!(shared.stats().competitor_calls, 3);
    assert_eq!(burst(&shared, 10), 9);
    // A window later ours have left too, and the whole budget is ours.
    sleep(ms(1000)).await;
    assert_eq!(burst(&shared, 10), 10);
    assert_eq!(shared.stats().competitor_calls, 3);
}

/// Fills a 5/1s window, then calls every 50 ms for 1.5 s: well past the
/// window. Returns how many of the later calls were admitted.
async fn hammer(shared: &Shared) -> usize {
    assert_eq!(burst(shared, 5), 5);
    let mut admitted = 0;
    for _ in 0..30 {
        sleep(ms(50)).await;
        admitted += burst(shared, 1);
    }
    admitted
}

#[tokio::test(start_paused = true)]
async fn counting_rejected_calls_keeps_a_hammering_client_out() {
    let lenient = shared(5, |_| {});
    let strict = shared(5, |c| c.count_rejected = true);
    // The first five leave at 1 s; the calls at 1.0, 1.05, … 1.2 s fill it again.
    assert_eq!(hammer(&lenient).await, 5);
    assert_eq!(lenient.ledger().arrivals.len(), 10);
    // Every refused call holds a slot, so the window never empties.
    assert_eq!(hammer(&strict).await, 0);
    assert_eq!(strict.ledger().arrivals.len(), 35);
}
