//! Our share of the tenant's budget, learnt from 429s.

use std::time::Duration;

use tokio::time::Instant;

/// Our share of the budget, learnt from 429s: additive-increase,
/// multiplicative-decrease style. A 429 when the server counted only `k < N`
/// of our calls in its window (our window, less the calls it refused) means
/// it counted others' calls too: the share drops to `k`.
/// Each window without a 429 climbs back by 1, then 4, then 8…, so a
/// competitor that stops frees the whole budget again within three windows
/// of the next probe. A probe (the first call more) that draws a 429 again
/// waits twice as long before the next one, up to 8 windows: a competitor
/// that stays costs us one 429 every 8 windows, not every other one.
#[derive(Debug)]
pub(super) struct Share {
    budget: usize,
    pub(super) allowed: usize,
    clean_windows: u32,
    /// Probes in a row that drew a 429.
    pub(super) failed_probes: u32,
    /// When the share last climbed, while that climb is unproven.
    climbed: Option<Instant>,
    since: Instant,
}

/// The longest wait before a probe, in windows, as a power of two.
const MOST_PROBE_BACKOFF: u32 = 3;

impl Share {
    pub(super) fn new(budget: u32, now: Instant) -> Share {
        Share {
            budget: budget as usize,
            allowed: budget as usize,
            clean_windows: 0,
            failed_probes: 0,
            climbed: None,
            since: now,
        }
    }

    /// The share a store remembered: `allowed` calls learnt `age` ago after
    /// `failed_probes` probes in a row drew a 429. It climbs back over the
    /// time that passed since: one call (the probe) after the probe's wait,
    /// then one every longest probe wait (8 windows).
    pub(super) fn resume(
        &mut self,
        allowed: u32,
        failed_probes: u32,
        age: Duration,
        window: Duration,
        now: Instant,
    ) {
        self.allowed = (allowed as usize).clamp(1, self.budget);
        self.failed_probes = failed_probes.min(MOST_PROBE_BACKOFF);
        self.clean_windows = 0;
        self.climbed = None;
        // Nobody probed meanwhile, so the share climbs by one call every
        // longest probe wait, not by 1, 4, 8… nor a call a window: a
        // competitor that was there a minute ago most likely still is, and a
        // share climbed while nobody looked costs a 429 a call at the next
        // run's start; one gone for an hour no longer counts.
        let mut left = age;
        let mut wait = self.next_wait(window);
        while self.allowed < self.budget && left >= wait {
            left -= wait;
            self.allowed += 1;
            wait = window * (1 << MOST_PROBE_BACKOFF);
        }
        self.since = now.checked_sub(left).unwrap_or(now);
        if self.allowed == self.budget {
            self.failed_probes = 0;
            self.since = now;
        } else if self.allowed > allowed as usize {
            // A climb nobody proved, probed now: a 429 in the first window
            // is a failed probe, and the next one waits twice as long.
            self.climbed = Some(now);
            self.since = now;
        }
    }

    /// A 429 when the server counted `ours` of our calls in its window.
    pub(super) fn shrink(&mut self, ours: usize, now: Instant, window: Duration) {
        if self.climbed.is_some_and(|at| now < at + window) {
            self.failed_probes = (self.failed_probes + 1).min(MOST_PROBE_BACKOFF);
        }
        self.allowed = self.allowed.min(ours).max(1);
        self.clean_windows = 0;
        self.climbed = None;
        self.since = now;
    }

    /// When the share next climbs, if it is below the budget.
    pub(super) fn next_climb(&self, window: Duration) -> Option<Instant> {
        (self.allowed < self.budget).then_some(self.since + self.next_wait(window))
    }

    /// Climbs back once per window that passed without a 429 (the first
    /// time after the probe's wait).
    pub(super) fn climb(&mut self, now: Instant, window: Duration) {
        while self.allowed < self.budget && now >= self.since + self.next_wait(window) {
            self.since += self.next_wait(window);
            self.step();
            self.climbed = Some(self.since);
        }
        if self.allowed == self.budget {
            self.failed_probes = 0;
            self.since = now;
        }
    }

    /// How long the share stays as it is before it climbs.
    fn next_wait(&self, window: Duration) -> Duration {
        match self.clean_windows {
            0 => window * (1 << self.failed_probes.min(MOST_PROBE_BACKOFF)),
            _ => window,
        }
    }

    /// One call more to probe the first window; then 4, 8, 16…
    fn step(&mut self) {
        self.clean_windows += 1;
        let step = match self.clean_windows {
            1 => 1,
            n => 1usize << n.min(6),
        };
        self.allowed = (self.allowed + step).min(self.budget);
        if self.clean_windows > 1 {
            // The probe's window went by without a 429.
            self.failed_probes = 0;
        }
    }
}
