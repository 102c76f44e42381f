//! The API budget: `N` calls in any sliding window of `W`, shared by every task.
//!
//! LeadSquared counts calls as they *arrive*, in a sliding window. A token bucket
//! (GCRA) with a burst of `N` lets almost `2N` calls into one window, and pacing at
//! exactly `W/N` trips a strict server as soon as network jitter bunches two
//! calls. So the guarantee here is a window log of `N` slots:
//!
//! * a call takes a free slot before it is sent, and holds it while in flight;
//! * when it completes, the slot stays blocked for `W` after the latest moment the
//!   call can have reached the server: its response time, or, once a connection is
//!   warm, its send time plus the arrival margin if that is earlier;
//! * a slot's very first call (a new run's first burst, which also pays for new
//!   connections and their TLS handshakes) gets a further allowance for that,
//!   unless its response came back sooner.
//!
//! Hence any `W`-long window at the server holds at most `N` of our arrivals, as long
//! as a warm call reaches the server within the margin of being sent. A 429 pauses
//! every task at once. `governor` paces the sends inside that envelope: with the
//! default burst of `N` it never binds, a smaller `--burst` smooths bursts for
//! servers that dislike them.

mod rate;

use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub use rate::{parse_duration, Rate, MAX_DURATION};

/// How the limiter paces calls.
#[derive(Clone, Copy, Debug)]
pub struct LimiterSettings {
    /// The tenant's budget.
    pub rate: Rate,
    /// Longest time a call on a warm connection may take to reach the server
    /// after it is sent.
    pub arrival_margin: Duration,
    /// Largest burst `governor` lets through at once (defaults to `rate.calls`).
    pub burst: u32,
}

impl LimiterSettings {
    /// The budget with the default margin and a burst of the whole budget.
    pub fn new(rate: Rate) -> Self {
        LimiterSettings {
            rate,
            arrival_margin: DEFAULT_ARRIVAL_MARGIN,
            burst: rate.calls,
        }
    }
}

/// Extra time a slot's first call may take to arrive, for opening a new
/// connection (TCP and TLS handshakes, about two round trips).
pub const COLD_CONNECTION_ALLOWANCE: Duration = Duration::from_millis(300);

/// Default arrival margin: covers ~100 ms of network jitter with room to spare.
pub const DEFAULT_ARRIVAL_MARGIN: Duration = Duration::from_millis(150);

/// The longest pause a 429 can ask for: a server that asks for more (a
/// Retry-After of hours, or one no clock can hold) gets this, with a warning.
pub const MAX_PAUSE: Duration = Duration::from_secs(5 * 60);

/// A `governor` clock that reads tokio's clock, so that pacing follows
/// `tokio::time::pause` in tests like every other timer here.
#[derive(Clone, Debug)]
struct TokioClock {
    origin: Instant,
}

impl governor::clock::Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

type Pacer = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    TokioClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Free from this instant on; `warm` once it has carried a call.
    Free {
        at: Instant,
        warm: bool,
    },
    Busy,
}

#[derive(Debug)]
struct State {
    slots: Vec<Slot>,
    paused_until: Option<Instant>,
    paused_total: Duration,
    rate_limited: u64,
    starts: u64,
    start_log: Option<Vec<Instant>>,
    /// A Retry-After over [`MAX_PAUSE`] was met (and said) already.
    capped: bool,
}

/// The shared limiter: every attempt of every task, retries included, waits here.
pub struct Limiter {
    settings: LimiterSettings,
    state: Mutex<State>,
    changed: Notify,
    pacer: Pacer,
    clock: TokioClock,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The right to send one call. Report how it ended with [`Permit::completed`];
/// dropping it unreported (a timeout, a cancelled task) blocks its slot for a
/// full window from the drop, the safe assumption.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    slot: usize,
    warm: bool,
    sent_at: Instant,
    done: bool,
}

impl Permit {
    /// When the call was let through.
    pub fn sent_at(&self) -> Instant {
        self.sent_at
    }

    /// The call got an answer (any answer, 429 included) at `now`.
    pub fn completed(mut self) {
        let now = Instant::now();
        let mut margin = self.limiter.settings.arrival_margin;
        if !self.warm {
            margin += COLD_CONNECTION_ALLOWANCE;
        }
        let anchor = now.min(self.sent_at + margin);
        self.limiter.free(self.slot, anchor);
        self.done = true;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.free(self.slot, Instant::now());
        }
    }
}

impl Limiter {
    /// A limiter with every slot free now.
    pub fn new(settings: LimiterSettings) -> Arc<Limiter> {
        let now = Instant::now();
        let calls = settings.rate.calls.max(1);
        let burst = settings.burst.clamp(1, calls);
        let period = settings.rate.window / calls;
        let quota = governor::Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("period is above zero")
            .allow_burst(NonZeroU32::new(burst).expect("burst is above zero"));
        let clock = TokioClock { origin: now };
        Arc::new(Limiter {
            settings,
            state: Mutex::new(State {
                slots: vec![
                    Slot::Free {
                        at: now,
                        warm: false
                    };
                    calls as usize
                ],
                paused_until: None,
                paused_total: Duration::ZERO,
                rate_limited: 0,
                starts: 0,
                start_log: None,
                capped: false,
            }),
            changed: Notify::new(),
            pacer: governor::RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> LimiterSettings {
        self.settings
    }

    /// Keep every start instant, for tests and benchmarks that check the window.
    pub fn record_starts(&self) {
        self.lock().start_log.get_or_insert_with(Vec::new);
    }

    /// The start instants kept since [`Limiter::record_starts`].
    pub fn starts(&self) -> Vec<Instant> {
        self.lock().start_log.clone().unwrap_or_default()
    }

    /// Calls let through so far.
    pub fn calls(&self) -> u64 {
        self.lock().starts
    }

    /// 429s reported through [`Limiter::pause`].
    pub fn rate_limited(&self) -> u64 {
        self.lock().rate_limited
    }

    /// Total time every task stood paused after 429s.
    pub fn paused_total(&self) -> Duration {
        self.lock().paused_total
    }

    /// Waits for a free slot, for any pause to end and for the pacer, then
    /// lets one call through.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            // Registered before looking, so a slot freed meanwhile still wakes us.
            let changed = self.changed.notified();
            let wake_at = {
                let mut state = self.lock();
                let now = Instant::now();
                match state.paused_until {
                    Some(until) if until > now => Some(until),
                    _ => {
                        let ready = state.slots.iter().position(|s| match s {
                            Slot::Free { at, .. } => *at <= now,
                            Slot::Busy => false,
                        });
                        match ready {
                            Some(i) => match self.pacer.check() {
                                Ok(()) => {
                                    let Slot::Free { warm, .. } = state.slots[i] else {
                                        unreachable!("a ready slot is free")
                                    };
                                    state.slots[i] = Slot::Busy;
                                    state.starts += 1;
                                    if let Some(log) = state.start_log.as_mut() {
                                        log.push(now);
                                    }
                                    return Permit {
                                        limiter: Arc::clone(self),
                                        slot: i,
                                        warm,
                                        sent_at: now,
                                        done: false,
                                    };
                                }
                                Err(not_until) => {
                                    Some(now + not_until.wait_time_from(self.clock_now()))
                                }
                            },
                            // Every slot is in flight or blocked: wake at the
                            // earliest unblocking, or when a call completes.
                            None => state
                                .slots
                                .iter()
                                .filter_map(|s| match s {
                                    Slot::Free { at, .. } => Some(*at),
                                    Slot::Busy => None,
                                })
                                .min(),
                        }
                    }
                }
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// A 429 arrived: hold every task for `retry_after` when the server gave
    /// one, otherwise for a whole window plus the margin so that the server's
    /// window is clear of every call we made. No pause is longer than
    /// [`MAX_PAUSE`]; the first longer request is warned about.
    pub fn pause(&self, retry_after: Option<Duration>) {
        let asked = retry_after.unwrap_or(self.settings.rate.window + self.settings.arrival_margin);
        let wait = asked.min(MAX_PAUSE);
        let now = Instant::now();
        let until = now + wait;
        let mut state = self.lock();
        state.rate_limited += 1;
        if asked > MAX_PAUSE && !std::mem::replace(&mut state.capped, true) {
            eprintln!("{}", capped_warning(asked));
        }
        let from = match state.paused_until {
            Some(old) if old > now => {
                if until <= old {
                    return;
                }
                old
            }
            _ => now,
        };
        state.paused_total += until - from;
        state.paused_until = Some(until);
        drop(state);
        self.changed.notify_waiters();
    }

    fn free(&self, slot: usize, anchor: Instant) {
        let mut state = self.lock();
        state.slots[slot] = Slot::Free {
            // One more millisecond keeps a call that lands exactly on the
            // window's edge out of the older call's window.
            at: anchor + self.settings.rate.window + Duration::from_millis(1),
            warm: true,
        };
        drop(state);
        self.changed.notify_waiters();
    }

    fn clock_now(&self) -> Duration {
        governor::clock::Clock::now(&self.clock)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the run says when a server asks for a pause longer than [`MAX_PAUSE`].
fn capped_warning(asked: Duration) -> String {
    let asked = match asked {
        Duration::MAX => "longer than any clock holds".to_owned(),
        asked => format!("{}s", asked.as_secs()),
    };
    format!(
        "warning: the API asked every call to wait {asked} (Retry-After); waiting {} instead, \
         the longest pause a run takes (Ctrl-C or SIGTERM stops the run meanwhile)",
        format_args!("{}m", MAX_PAUSE.as_secs() / 60)
    )
}

#[cfg(test)]
mod tests {
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
            limiter.acquire().await.completed();
        }
        assert_eq!(Instant::now(), t0, "the first 25 calls need no wait");
        let permit = limiter.acquire().await;
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
                        let permit = limiter.acquire().await;
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
        assert!(limiter.paused_total() > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_task_and_retry_after_sets_its_length() {
        let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
        let t0 = Instant::now();
        limiter.acquire().await.completed();
        limiter.pause(Some(Duration::from_secs(2)));
        let permit = limiter.acquire().await;
        assert_eq!(permit.sent_at() - t0, Duration::from_secs(2));
        limiter.pause(None);
        let later = limiter.acquire().await;
        assert!(later.sent_at() - permit.sent_at() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn no_pause_is_longer_than_the_cap() {
        let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
        let t0 = Instant::now();
        limiter.pause(Some(Duration::from_secs(100_000)));
        limiter.pause(Some(Duration::MAX));
        let permit = limiter.acquire().await;
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
            limiter.acquire().await.completed();
        }
        assert_eq!(Instant::now() - t0, Duration::from_millis(200));
    }
}
