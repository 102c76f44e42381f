//! Our share of the tenant's budget, learnt from 429s.

use std::time::Duration;

use tokio::time::Instant;

/// Our share of the budget, learnt from 429s: additive-increase,
/// multiplicative-decrease style. A 429 when the server counted only `k < N`
/// of our calls in its window (our window, less the calls it refused) means
/// it counted others' calls too: the share drops to `k`.
/// Each window without a 429 climbs back by 1, then 4, then 8…, so a
/// competitor that stops frees the whole budget again within three windows,
/// while one that stays sees us probe with one call about once every two
/// windows.
#[derive(Debug)]
pub(super) struct Share {
    budget: usize,
    pub(super) allowed: usize,
    clean_windows: u32,
    since: Instant,
}

impl Share {
    pub(super) fn new(budget: u32, now: Instant) -> Share {
        Share {
            budget: budget as usize,
            allowed: budget as usize,
            clean_windows: 0,
            since: now,
        }
    }

    /// A 429 when the server counted `ours` of our calls in its window.
    pub(super) fn shrink(&mut self, ours: usize, now: Instant) {
        self.allowed = self.allowed.min(ours).max(1);
        self.clean_windows = 0;
        self.since = now;
    }

    /// When the share next climbs, if it is below the budget.
    pub(super) fn next_climb(&self, window: Duration) -> Option<Instant> {
        (self.allowed < self.budget).then_some(self.since + window)
    }

    /// Climbs back once per window that passed without a 429.
    pub(super) fn climb(&mut self, now: Instant, window: Duration) {
        while self.allowed < self.budget && now >= self.since + window {
            self.clean_windows += 1;
            // One call more to probe the first window; then 4, 8, 16…
            let step = match self.clean_windows {
                1 => 1,
                n => 1usize << n.min(6),
            };
            self.allowed = (self.allowed + step).min(self.budget);
            self.since += window;
        }
        if self.allowed == self.budget {
            self.since = now;
        }
    }
}
