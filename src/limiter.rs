//! The API budget: `N` calls in any sliding window of `W`, shared by every task.
//!
//! LeadSquared counts calls as they *arrive*, in a sliding window. A token bucket
//! (GCRA) with a burst of `N` lets almost `2N` calls into one window, and pacing at
//! exactly `W/N` trips a strict server as soon as network jitter bunches two
//! calls. So the guarantee here is a window log of `N` slots:
//!
//! * a call takes a free slot before it is sent, and holds it while in flight;
//! * when it completes, the slot stays blocked for `W` after the latest moment the
//!   call can have reached the server. That is timed from the moment the
//!   request was written on an established connection: its send time over a
//!   connection an earlier call used, its send time plus the measured set-up
//!   time over one opened for it (a lost SYN sent again shows there), plus
//!   the arrival margin. A slow answer says nothing about when the request
//!   arrived, so it never blocks a slot for longer. Only evidence that the
//!   request may have waited unseen does: a set-up far slower than the
//!   quickest seen (the listener was dropping SYNs, so its full accept queue
//!   may have held this request too), a new connection whose set-up was not
//!   timed, and a slot's first call when the client did not say which
//!   connection it used. A late set-up also shows that the listener's
//!   accept queue was full: the calls sent within a window of it over
//!   connections that opened at once may have waited in that queue. Such a
//!   request reached the server no later than its answer less the quickest
//!   answer seen (from a request's writing, of calls with no such
//!   evidence), plus the margin; one answered quicker than any, or before
//!   any answer, is blocked from its answer.
//!
//! Hence any `W`-long window at the server holds at most `N` of our arrivals, as
//! long as a request written on an established connection reaches the server
//! within the margin, and the server answers no request much quicker than the
//! quickest answer seen before it. A rare one that does not (a data packet lost and sent
//! again) may draw a 429, which the learnt share absorbs like any other. A 429 while the server counted
//! fewer than `N` of our calls means others spend the budget too: our share
//! shrinks to what the server counted and climbs back window by window (see
//! [`Share`]). `governor` paces the sends inside that envelope: with the
//! default burst of `N` it never binds, a smaller `--burst` smooths bursts for
//! servers that dislike them.

mod arrival;
mod connection;
mod permit;
mod share;
mod shared;

use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub use crate::units::Rate;
use arrival::Suspect;
pub use connection::{note_connection, note_setup, observing, watch_opening, Connection};
pub use permit::Permit;
use share::Share;
pub use shared::{
    BudgetError, LearntShare, Memory, SharedBudget, Taken, ACCEPTED_FOR, SHARE_REMEMBERED,
};

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

/// Default arrival margin: covers 100 ms of network jitter with 20 ms to spare,
/// as much as a plain client that waits 5.12 s after its 25th-last call keeps.
pub const DEFAULT_ARRIVAL_MARGIN: Duration = Duration::from_millis(120);

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
    /// What the budget is seen to leave us: how many slots may be in flight
    /// or blocked at once (at most the budget's calls).
    share: Share,
    /// The quickest set-up of a new connection seen, to tell one that
    /// waited for a SYN sent again.
    quickest_setup: Option<Duration>,
    /// The quickest answer seen, from a request's writing to its answer,
    /// of the calls with no evidence of a wait on their way: no call can
    /// have reached the server later than its answer less about this.
    quickest_answer: Option<Duration>,
    /// When the calls that opened a connection late were sent: the
    /// listener's accept queue was full then, so a request over a quickly
    /// opened connection may have waited in that queue too.
    backlogged: Vec<Instant>,
    /// Calls over quickly opened connections whose slots were blocked from
    /// their request's writing, blocked from the latest moment their answers
    /// allow instead if a late set-up shows that their listener was
    /// backlogged.
    suspects: Vec<Suspect>,
    /// When the 429s of the last window came: our calls the server did not
    /// count.
    refusals: std::collections::VecDeque<Instant>,
    paused_until: Option<Instant>,
    paused_total: Duration,
    /// The end of the latest pause counted in `paused_total`, ours or one
    /// the shared budget held: a wait is counted once, however many tasks
    /// wait it out.
    counted_until: Option<Instant>,
    rate_limited: u64,
    starts: u64,
    start_log: Option<Vec<Instant>>,
    /// A Retry-After over [`MAX_PAUSE`] was met (and said) already.
    capped: bool,
    /// What the shared budget remembered when the limiter started.
    memory: Memory,
}

/// A set-up this much slower than the quickest seen is evidence that the
/// server's listener was dropping SYNs (a SYN is sent again after a second
/// at the earliest), and so that the request may have waited too.
pub const LATE_SETUP: Duration = Duration::from_millis(500);

impl State {
    /// Counts a pause from `now` to `until` in the total, less what an
    /// earlier pause counted already.
    fn count_pause(&mut self, now: Instant, until: Instant) {
        let from = self.counted_until.map_or(now, |end| end.max(now));
        if until > from {
            self.paused_total += until - from;
            self.counted_until = Some(until);
        }
    }

    /// Our calls the server may count in a window ending now: in flight, or
    /// blocked for the rest of their window.
    fn in_window(&self, now: Instant) -> usize {
        self.slots
            .iter()
            .filter(|s| match s {
                Slot::Busy => true,
                Slot::Free { at, .. } => *at > now,
            })
            .count()
    }
}

/// The shared limiter: every attempt of every task, retries included, waits here.
pub struct Limiter {
    settings: LimiterSettings,
    shared: Option<(Arc<dyn SharedBudget>, Duration)>,
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

impl Limiter {
    /// A limiter with every slot free now.
    pub fn new(settings: LimiterSettings) -> Arc<Limiter> {
        Limiter::build(settings, None)
    }

    /// A limiter whose calls also take a slot of a budget shared with other
    /// processes; `hold` is the longest a call can be in flight (its
    /// timeout), after which a crashed holder's slot frees itself.
    pub fn shared(
        settings: LimiterSettings,
        shared: Arc<dyn SharedBudget>,
        hold: Duration,
    ) -> Arc<Limiter> {
        Limiter::build(settings, Some((shared, hold)))
    }

    fn build(
        settings: LimiterSettings,
        shared: Option<(Arc<dyn SharedBudget>, Duration)>,
    ) -> Arc<Limiter> {
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
            shared,
            state: Mutex::new(State {
                slots: vec![
                    Slot::Free {
                        at: now,
                        warm: false
                    };
                    calls as usize
                ],
                share: Share::new(calls, now),
                quickest_setup: None,
                quickest_answer: None,
                backlogged: Vec::new(),
                suspects: Vec::new(),
                refusals: std::collections::VecDeque::new(),
                paused_until: None,
                paused_total: Duration::ZERO,
                counted_until: None,
                rate_limited: 0,
                starts: 0,
                start_log: None,
                capped: false,
                memory: Memory::default(),
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

    /// Total time every task stood paused after 429s, this process's or
    /// those of others sharing the budget.
    pub fn paused_total(&self) -> Duration {
        self.lock().paused_total
    }

    /// Waits for a free slot, for any pause to end, for the pacer and for a
    /// slot of the shared budget, then lets one call through. Only a shared
    /// budget that cannot be used is an error.
    pub async fn acquire(self: &Arc<Self>) -> Result<Permit, BudgetError> {
        let mut permit = self.acquire_local().await;
        let Some((shared, hold)) = &self.shared else {
            self.started(permit.sent_at);
            return Ok(permit);
        };
        let window = self.settings.rate.window;
        loop {
            // The share learnt from 429s is the tenant's: our calls of every
            // process together, this one's and those of the runs before it
            // still in the window, keep under it.
            let allowed = self.lock().share.allowed as u32;
            match shared.take(allowed, window, *hold).await? {
                Taken::Slot(token) => {
                    permit.token = Some(token);
                    // Sent now, after the wait for the shared slot.
                    permit.sent_at = Instant::now();
                    self.started(permit.sent_at);
                    return Ok(permit);
                }
                Taken::Wait(wait) => {
                    tokio::time::sleep(wait.clamp(Duration::from_millis(1), window)).await;
                }
                Taken::Paused(left) => {
                    self.shared_pause(left, shared.as_ref());
                    tokio::time::sleep(left.clamp(Duration::from_millis(1), window)).await;
                }
            }
        }
    }

    /// A call let through at `at`, its shared slot taken: counted as
    /// started. One given up while it waited for the shared slot (the run
    /// stopping) never reached the server and is not.
    fn started(&self, at: Instant) {
        let mut state = self.lock();
        state.starts += 1;
        if let Some(log) = state.start_log.as_mut() {
            log.push(at);
        }
    }

    /// [`Limiter::acquire`] within this process only.
    async fn acquire_local(self: &Arc<Self>) -> Permit {
        loop {
            // Registered before looking, so a slot freed meanwhile still wakes us.
            let changed = self.changed.notified();
            let wake_at = {
                let mut state = self.lock();
                let now = Instant::now();
                match state.paused_until {
                    Some(until) if until > now => Some(until),
                    _ => {
                        state.share.climb(now, self.settings.rate.window);
                        let ready = if state.in_window(now) < state.share.allowed {
                            state.slots.iter().position(|s| match s {
                                Slot::Free { at, .. } => *at <= now,
                                Slot::Busy => false,
                            })
                        } else {
                            None
                        };
                        match ready {
                            Some(i) => match self.pacer.check() {
                                Ok(()) => {
                                    let Slot::Free { warm, .. } = state.slots[i] else {
                                        unreachable!("a ready slot is free")
                                    };
                                    state.slots[i] = Slot::Busy;
                                    return Permit {
                                        limiter: Arc::clone(self),
                                        slot: i,
                                        token: None,
                                        warm,
                                        sent_at: now,
                                        done: false,
                                    };
                                }
                                Err(not_until) => {
                                    Some(now + not_until.wait_time_from(self.clock_now()))
                                }
                            },
                            // Every slot is in flight or blocked, or our
                            // share is used up: wake at the earliest
                            // unblocking or the next climb of the share, or
                            // when a call completes.
                            None => state
                                .slots
                                .iter()
                                .filter_map(|s| match s {
                                    Slot::Free { at, .. } if *at > now => Some(*at),
                                    _ => None,
                                })
                                .chain(state.share.next_climb(self.settings.rate.window))
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

    /// A 429 arrived: the server counted only some of our calls in its
    /// window (our window, less the calls it refused), so someone else
    /// spends the rest, or a call of ours arrived later than we knew. Our
    /// share shrinks to what the server counted, which holds every task until
    /// our window log has room under it: no longer than needed. A
    /// Retry-After is honoured on top, up to [`MAX_PAUSE`]; the first longer
    /// request is warned about.
    pub fn pause(&self, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut state = self.lock();
        state.rate_limited += 1;
        // Our calls the server counted: those in our window, less the ones
        // it refused.
        let window = self.settings.rate.window;
        state.refusals.push_back(now);
        while state.refusals.front().is_some_and(|t| now - *t >= window) {
            state.refusals.pop_front();
        }
        let counted = state.in_window(now).saturating_sub(state.refusals.len());
        state.share.shrink(counted, now, window);
        if let Some((shared, _)) = &self.shared {
            let (shared, allowed) = (Arc::clone(shared), state.share.allowed as u32);
            let failed_probes = state.share.failed_probes;
            // Best effort: the next run then learns it again.
            tokio::spawn(async move { shared.remember_share(allowed, failed_probes).await });
        }
        let Some(asked) = retry_after else {
            return;
        };
        let wait = asked.min(MAX_PAUSE);
        if asked > MAX_PAUSE && !std::mem::replace(&mut state.capped, true) {
            tracing::warn!("{}", capped_warning(asked));
        }
        let until = now + wait;
        if state.paused_until.is_some_and(|old| until <= old) {
            return;
        }
        state.count_pause(now, until);
        state.paused_until = Some(until);
        drop(state);
        self.changed.notify_waiters();
        if let Some((shared, _)) = &self.shared {
            let shared = Arc::clone(shared);
            // Best effort: a store that fails here fails the next take.
            tokio::spawn(async move { shared.pause(wait).await });
        }
    }

    /// The shared budget is paused for `left` more (a 429 met by this
    /// process or another sharing it): every task here holds too, and the
    /// wait counts in [`Limiter::paused_total`] once. A pause this process
    /// did not know of is said, with the store and why.
    fn shared_pause(&self, left: Duration, shared: &dyn SharedBudget) {
        let now = Instant::now();
        let until = now + left;
        let mut state = self.lock();
        // Our own pause comes back from the store a little later than we
        // set it: a pause ending within a moment of one we know is that.
        let known = state
            .counted_until
            .is_some_and(|end| until <= end + Duration::from_millis(500));
        state.count_pause(now, until);
        if state.paused_until.is_none_or(|old| old < until) {
            state.paused_until = Some(until);
        }
        drop(state);
        if !known {
            tracing::info!(
                "{} is paused for {:.1}s more, as a run sharing it met a 429 (rate-limited): \
                 this run waits until then (Ctrl-C, SIGTERM or SIGHUP stops it meanwhile)",
                shared.describe(),
                left.as_secs_f64()
            );
        }
    }

    /// The call holding `slot` reached the server at the latest at
    /// `anchor`: the slot is blocked for a window from then.
    fn free(&self, slot: usize, token: Option<u64>, anchor: Instant) -> Instant {
        // One more millisecond keeps a call that lands exactly on the
        // window's edge out of the older call's window.
        let at = anchor + self.settings.rate.window + Duration::from_millis(1);
        self.free_from(slot, token, at, true);
        at
    }

    /// The call holding `slot` never reached the server: the slot is free
    /// at once, as warm as it was.
    fn give_back(&self, slot: usize, token: Option<u64>, warm: bool) {
        self.free_from(slot, token, Instant::now(), warm);
    }

    /// `slot` is free from `at` on, here and in the shared budget.
    fn free_from(&self, slot: usize, token: Option<u64>, at: Instant, warm: bool) {
        self.lock().slots[slot] = Slot::Free { at, warm };
        self.changed.notify_waiters();
        if let (Some((shared, _)), Some(token)) = (&self.shared, token) {
            let shared = Arc::clone(shared);
            let blocked_for = at.saturating_duration_since(Instant::now());
            // Best effort: an entry never released expires by itself.
            tokio::spawn(async move { shared.release(token, blocked_for).await });
        }
    }

    /// Starts from what the shared budget remembered of earlier runs: the
    /// share learnt from 429s, climbed back as it would have since, and
    /// which credentials were accepted when.
    pub fn resume(&self, memory: Memory) {
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(learnt) = memory.share {
            let window = self.settings.rate.window;
            state.share.resume(
                learnt.allowed,
                learnt.failed_probes,
                learnt.age,
                window,
                now,
            );
        }
        state.memory = memory;
    }

    /// Whether the credentials named by `mark` were accepted by the API
    /// within [`ACCEPTED_FOR`], as the shared budget remembered at the start.
    pub fn accepted_recently(&self, mark: &str) -> bool {
        let state = self.lock();
        state
            .memory
            .accepted
            .as_ref()
            .is_some_and(|(m, age)| m == mark && *age < ACCEPTED_FOR)
    }

    /// The API accepted the credentials named by `mark` now: the shared
    /// budget remembers it for the next runs. Best effort.
    pub fn note_accepted(&self, mark: String) {
        if let Some((shared, _)) = &self.shared {
            let shared = Arc::clone(shared);
            tokio::spawn(async move { shared.remember_accepted(mark).await });
        }
    }

    /// Calls this limiter allows in a window now (the budget, less what
    /// others are seen to spend).
    pub fn allowed(&self) -> u32 {
        self.lock().share.allowed as u32
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
        "the API asked every call to wait {asked} (Retry-After); waiting {} instead, \
         the longest pause a run takes (Ctrl-C, SIGTERM or SIGHUP stops the run meanwhile)",
        format_args!("{}m", MAX_PAUSE.as_secs() / 60)
    )
}

#[cfg(test)]
mod tests;
