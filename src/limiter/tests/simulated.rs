//! Runs on the paused clock against a strict server, with spread in the
//! latencies: no window ever holds more than the budget, and the pace holds.

use super::*;

/// A strict server on the paused clock: it counts arrivals, ours and a
/// competitor's, in a sliding window and refuses ours beyond the budget.
pub(super) struct StrictServer {
    arrivals: Mutex<Vec<Instant>>,
    /// Every arrival of ours, refused ones included.
    ours: Mutex<Vec<Instant>>,
    rate: Rate,
}

impl StrictServer {
    pub(super) fn new(rate: Rate) -> Arc<StrictServer> {
        Arc::new(StrictServer {
            arrivals: Mutex::new(Vec::new()),
            ours: Mutex::new(Vec::new()),
            rate,
        })
    }

    /// One of our calls arrives now: `true` when it is accepted.
    fn arrive(&self) -> bool {
        let now = Instant::now();
        self.ours.lock().unwrap().push(now);
        let mut arrivals = self.arrivals.lock().unwrap();
        let in_window = arrivals
            .iter()
            .filter(|t| now - **t < self.rate.window)
            .count();
        let accepted = in_window < self.rate.calls as usize;
        if accepted {
            arrivals.push(now);
        }
        accepted
    }

    /// A competitor's call, always counted.
    fn competitor(&self) {
        self.arrivals.lock().unwrap().push(Instant::now());
    }

    /// A steady competitor taking 10 of every 25 calls in 5 s: one call
    /// every 500 ms, until the task is aborted.
    pub(super) fn steady_competitor(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let server = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                server.competitor();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }
}

/// What one simulated run made of `leads` calls.
pub(super) struct Simulated {
    pub(super) calls: u64,
    pub(super) refused: u64,
    elapsed: Duration,
}

/// How late calls reach the server, besides 0-100 ms of jitter.
#[derive(Clone, Copy)]
pub(super) struct Lateness {
    /// This much later: a lost SYN is sent again a second later.
    by: Duration,
    /// In percent of the calls that open a connection (a slot's first): a
    /// lost SYN, which the client's timed set-up shows.
    new_connections: u32,
    /// In percent of the calls on a warm connection: a lost data packet,
    /// which the client cannot see.
    warm: u32,
    /// Opening a connection takes this long, as the client times it (a
    /// slow TLS handshake to a far host).
    setup: Duration,
    /// A request over a connection that opened at once waits up to this
    /// long, unseen by the client, in the listener's full accept queue.
    queued: Duration,
    /// A listener with this accept backlog that accepts one connection per
    /// 50 ms: of a burst's new connections, the first this many open at
    /// once, the next as many a second late (a SYN sent again), the rest
    /// three seconds late, and each group's requests wait in its queue
    /// (unseen) to be accepted in turn.
    backlog: Option<usize>,
}

pub(super) const ON_TIME: Lateness = Lateness {
    by: Duration::ZERO,
    new_connections: 0,
    warm: 0,
    setup: Duration::ZERO,
    queued: Duration::ZERO,
    backlog: None,
};

/// How long the server takes to answer: a range, and a tail of slower calls.
#[derive(Clone, Copy)]
pub(super) struct Service {
    /// Milliseconds, drawn evenly.
    range: (u64, u64),
    /// In percent of the calls, drawn from `tail` instead.
    tail_percent: u32,
    tail: (u64, u64),
}

impl Service {
    const fn fixed(ms: u64) -> Service {
        Service::range(ms, ms)
    }

    pub(super) const fn range(lo: u64, hi: u64) -> Service {
        Service {
            range: (lo, hi),
            tail_percent: 0,
            tail: (0, 0),
        }
    }

    fn draw(&self, rng: &mut impl rand::Rng) -> Duration {
        let (lo, hi) = match rng.random_range(0..100) < self.tail_percent {
            true => self.tail,
            false => self.range,
        };
        Duration::from_millis(rng.random_range(lo..=hi))
    }
}

/// Runs `leads` calls through the limiter against `server` with 30 tasks,
/// 0-100 ms of jitter, `service` per call and some calls `late`; a slot's
/// first call opens a connection, the others reuse one.
async fn simulate(
    server: Arc<StrictServer>,
    leads: usize,
    service: Service,
    late: Lateness,
) -> Simulated {
    let limiter = Limiter::new(LimiterSettings::new(server.rate));
    simulate_with(limiter, server, leads, service, late).await
}

/// [`simulate`] through `limiter`.
pub(super) async fn simulate_with(
    limiter: Arc<Limiter>,
    server: Arc<StrictServer>,
    leads: usize,
    service: Service,
    late: Lateness,
) -> Simulated {
    use rand::{Rng, SeedableRng};
    let next = Arc::new(Mutex::new(0usize));
    let opened = Arc::new(Mutex::new(0usize));
    let (calls, refused) = (Arc::new(Mutex::new(0u64)), Arc::new(Mutex::new(0u64)));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..30u64 {
        let (limiter, server, next) = (limiter.clone(), server.clone(), next.clone());
        let (calls, refused, opened) = (calls.clone(), refused.clone(), opened.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(worker);
            loop {
                {
                    let mut next = next.lock().unwrap();
                    if *next == leads {
                        return;
                    }
                    *next += 1;
                }
                loop {
                    let permit = limiter.acquire().await.unwrap();
                    let late_by = |percent: u32, rng: &mut rand::rngs::StdRng| match rng
                        .random_range(0..100)
                        < percent
                    {
                        true => late.by,
                        false => Duration::ZERO,
                    };
                    let (connection, setup) = match permit.warm {
                        false if late.backlog.is_some() => {
                            let backlog = late.backlog.unwrap_or(1);
                            let k = {
                                let mut opened = opened.lock().unwrap();
                                *opened += 1;
                                *opened - 1
                            };
                            // Each group waits in the queue in turn.
                            let queued = Duration::from_millis(50 * (k % backlog) as u64);
                            let setup = match k / backlog {
                                0 => Duration::ZERO,
                                1 => Duration::from_secs(1),
                                _ => Duration::from_secs(3),
                            };
                            (Connection::New { setup: Some(setup) }, setup + queued)
                        }
                        false => {
                            let lost = late_by(late.new_connections, &mut rng);
                            let setup = late.setup + lost;
                            let queued = match lost.is_zero() && !late.queued.is_zero() {
                                true => rng.random_range(Duration::ZERO..=late.queued),
                                false => Duration::ZERO,
                            };
                            (Connection::New { setup: Some(setup) }, setup + queued)
                        }
                        true => (Connection::Reused, late_by(late.warm, &mut rng)),
                    };
                    let jitter = Duration::from_millis(rng.random_range(0..=100));
                    tokio::time::sleep(setup + jitter).await;
                    let accepted = server.arrive();
                    tokio::time::sleep(service.draw(&mut rng)).await;
                    permit.completed_on(connection);
                    *calls.lock().unwrap() += 1;
                    if accepted {
                        break;
                    }
                    *refused.lock().unwrap() += 1;
                    limiter.pause(None);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (calls, refused) = (*calls.lock().unwrap(), *refused.lock().unwrap());
    Simulated {
        calls,
        refused,
        elapsed: t0.elapsed(),
    }
}

/// The shortest time `calls` can take with `per_window` of them a window.
fn bound(calls: usize, per_window: usize, window: Duration) -> Duration {
    window * ((calls - 1) / per_window) as u32
}

fn ratio(got: &Simulated, leads: usize, per_window: usize) -> f64 {
    bound(leads, per_window, Rate::DEFAULT.window).as_secs_f64() / got.elapsed.as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn late_first_arrivals_on_new_connections_trip_no_429() {
    let server = StrictServer::new(Rate::DEFAULT);
    let late = Lateness {
        by: Duration::from_secs(1),
        new_connections: 70,
        ..ON_TIME
    };
    let got = simulate(server, 300, Service::fixed(1000), late).await;
    assert_eq!(
        got.refused, 0,
        "a call that arrived late blocked its slot for longer"
    );
    // The first window's calls, all on new connections, block their slots
    // from their answers; the later ones reuse the connections.
    let ratio = ratio(&got, 300, 25);
    assert!(ratio >= 0.9, "{ratio}");
}

/// A request late on a warm connection (a lost packet sent again) cannot
/// be seen: it may draw a 429, which the learnt share absorbs, and it must
/// not slow the run.
#[tokio::test(start_paused = true)]
async fn warm_calls_slowed_on_their_way_in_cost_few_429s_and_no_pace() {
    let server = StrictServer::new(Rate::DEFAULT);
    let late = Lateness {
        by: Duration::from_secs(1),
        warm: 2,
        ..ON_TIME
    };
    let got = simulate(server, 300, Service::fixed(500), late).await;
    assert!(
        got.refused as f64 <= got.calls as f64 * 0.03,
        "{} of {} refused",
        got.refused,
        got.calls
    );
    let ratio = ratio(&got, 300, 25);
    assert!(ratio >= 0.85, "{ratio}");
}

/// Guards the calls whose requests waited unseen in a listener's full
/// accept queue, 0-250 ms each, with every group of the burst: the ones over
/// connections that opened at once, and the ones whose SYNs were sent again
/// one and three seconds later. Each is timed from its answer less the
/// quickest answer seen once a late set-up shows.
#[tokio::test(start_paused = true)]
async fn a_burst_against_a_backlogged_listener_trips_no_429() {
    let server = StrictServer::new(Rate::DEFAULT);
    let late = Lateness {
        backlog: Some(6),
        ..ON_TIME
    };
    let got = simulate(server.clone(), 300, Service::range(900, 1100), late).await;
    let ours = server.ours.lock().unwrap().clone();
    assert!(busiest_window(&ours, Rate::DEFAULT.window) <= 25);
    assert_eq!(got.refused, 0);
    // Connections three seconds late hold their slots that much longer.
    let ratio = ratio(&got, 300, 25);
    assert!(ratio >= 0.88, "{ratio}");
}

#[tokio::test(start_paused = true)]
async fn slow_connection_set_ups_trip_no_429() {
    let server = StrictServer::new(Rate::DEFAULT);
    let late = Lateness {
        setup: Duration::from_millis(700),
        ..ON_TIME
    };
    let got = simulate(server, 300, Service::fixed(200), late).await;
    assert_eq!(got.refused, 0, "a slow set-up blocked its slot for longer");
}

#[tokio::test(start_paused = true)]
async fn calls_on_time_use_the_window_fully_even_when_slow() {
    for (service, at_least) in [(200, 0.95), (1000, 0.93)] {
        let server = StrictServer::new(Rate::DEFAULT);
        let got = simulate(server, 300, Service::fixed(service), ON_TIME).await;
        assert_eq!(got.refused, 0, "{service} ms");
        let ratio = ratio(&got, 300, 25);
        assert!(ratio >= at_least, "{service} ms: {ratio}");
    }
}

/// Guards the rule that tells spread from lateness: answers that take
/// 50-300 ms, 900-1,100 ms, or 2-3 s for one call in twenty, behind 0-100 ms
/// of jitter and SYNs lost and sent again a second later, never put more
/// than the budget into a window at the server, and a slow answer costs no
/// pace.
#[tokio::test(start_paused = true)]
async fn no_window_holds_more_than_the_budget_with_spread_tails_and_late_set_ups() {
    let tail = Service {
        tail_percent: 5,
        tail: (2000, 3000),
        ..Service::range(50, 300)
    };
    // A listener with a small backlog: some SYNs are dropped and sent again
    // a second later, and the requests over the connections it queued
    // wait up to 300 ms to be read.
    let lost_syns = Lateness {
        by: Duration::from_secs(1),
        new_connections: 40,
        queued: Duration::from_millis(300),
        ..ON_TIME
    };
    for (name, service, late, at_least) in [
        // 0.97 at a 120 ms margin; the default 150 ms gives up ~0.6 %.
        ("50-300 ms", Service::range(50, 300), ON_TIME, 0.96),
        ("900-1,100 ms", Service::range(900, 1100), ON_TIME, 0.95),
        // The run ends with its slowest last answer: up to 3 s of 58.
        ("5 % at 2-3 s", tail, ON_TIME, 0.92),
        (
            "900-1,100 ms, lost SYNs",
            Service::range(900, 1100),
            lost_syns,
            0.92,
        ),
        (
            "50-300 ms, lost SYNs",
            Service::range(50, 300),
            lost_syns,
            0.94,
        ),
        ("5 % at 2-3 s, lost SYNs", tail, lost_syns, 0.9),
    ] {
        let server = StrictServer::new(Rate::DEFAULT);
        let got = simulate(server.clone(), 300, service, late).await;
        let ours = server.ours.lock().unwrap().clone();
        assert!(
            busiest_window(&ours, Rate::DEFAULT.window) <= 25,
            "{name}: a window held more than the budget"
        );
        assert_eq!(got.refused, 0, "{name}");
        let ratio = ratio(&got, 300, 25);
        assert!(ratio >= at_least, "{name}: {ratio}");
    }
}

#[tokio::test(start_paused = true)]
async fn with_a_competitor_taking_10_of_25_few_calls_are_refused_and_the_rest_is_used() {
    let server = StrictServer::new(Rate::DEFAULT);
    let competitor = server.steady_competitor();
    let got = simulate(server, 300, Service::fixed(200), ON_TIME).await;
    competitor.abort();
    let refused = got.refused as f64 / got.calls as f64;
    assert!(
        refused <= 0.10,
        "{} of {} calls refused",
        got.refused,
        got.calls
    );
    let ratio = ratio(&got, 300, 15);
    assert!(ratio >= 0.9, "used {ratio} of what the competitor left");
}
