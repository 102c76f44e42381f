//! The tenant's API budget as the server sees it: a sliding log of counted
//! arrivals, so "N calls in any window W" is enforced exactly (no fixed buckets
//! that a bunched client could straddle), plus the competing integration that
//! eats into the same budget.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::Budget;

/// What the window decided for one client call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Admission {
    /// The call fits in the budget and will be served.
    pub accepted: bool,
    /// The call now occupies a slot (always when accepted; when rejected only
    /// with `count_rejected`).
    pub counted: bool,
}

/// Counted arrivals in the last `W`, oldest first.
#[derive(Debug)]
pub(crate) struct Window {
    budget: Budget,
    count_rejected: bool,
    recent: VecDeque<Instant>,
    max_in_window: u32,
}

impl Window {
    pub(super) fn new(budget: Budget, count_rejected: bool) -> Self {
        Window {
            budget,
            count_rejected,
            recent: VecDeque::with_capacity(budget.calls as usize + 1),
            max_in_window: 0,
        }
    }

    /// Decides a client call arriving at `now`. The window is `(now - W, now]`:
    /// an arrival exactly `W` old has left it.
    pub(super) fn admit(&mut self, now: Instant) -> Admission {
        self.evict(now);
        if self.recent.len() < self.budget.calls as usize {
            self.push(now);
            Admission {
                accepted: true,
                counted: true,
            }
        } else {
            if self.count_rejected {
                self.push(now);
            }
            Admission {
                accepted: false,
                counted: self.count_rejected,
            }
        }
    }

    /// A competitor call: it always takes a slot, even when the window is
    /// already full, because the competing integration is not ours to refuse.
    pub(super) fn take(&mut self, now: Instant) {
        self.evict(now);
        self.push(now);
    }

    /// The most counted arrivals seen together in any window since the last reset.
    pub(super) fn max_in_window(&self) -> u32 {
        self.max_in_window
    }

    /// Forgets the high-water mark but not the arrivals themselves: the budget
    /// already spent stays spent, as it would on the real service.
    pub(super) fn reset_max(&mut self) {
        self.max_in_window = 0;
    }

    fn evict(&mut self, now: Instant) {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= self.budget.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    fn push(&mut self, now: Instant) {
        self.recent.push_back(now);
        self.max_in_window = self.max_in_window.max(self.recent.len() as u32);
    }
}

/// The 429 message LeadSquared sends, with this budget's numbers. The window is
/// printed in whole seconds, rounded up so a sub-second window never reads "0".
pub(crate) fn limit_message(budget: Budget) -> String {
    let secs = budget.window.as_secs_f64().ceil().max(1.0) as u64;
    format!(
        "API calls exceeded the limit of {} in {} second(s)",
        budget.calls, secs
    )
}

/// The competitor's spacing: `K` calls spread evenly over each window.
pub(crate) fn competitor_period(budget: Budget, competitor: u32) -> Option<Duration> {
    (competitor > 0).then(|| budget.window / competitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(calls: u32, ms: u64) -> Budget {
        Budget {
            calls,
            window: Duration::from_millis(ms),
        }
    }

    #[test]
    fn admits_n_then_rejects_until_the_oldest_leaves() {
        let t0 = Instant::now();
        let mut w = Window::new(budget(3, 1000), false);
        for i in 0..3 {
            assert!(w.admit(t0 + Duration::from_millis(i * 10)).accepted);
        }
        assert!(!w.admit(t0 + Duration::from_millis(500)).accepted);
        // Exactly W after the first arrival, that arrival is out of (now - W, now].
        assert!(w.admit(t0 + Duration::from_millis(1000)).accepted);
        assert!(!w.admit(t0 + Duration::from_millis(1005)).accepted);
        assert_eq!(w.max_in_window(), 3);
    }

    #[test]
    fn counted_rejections_keep_the_window_full() {
        let t0 = Instant::now();
        let mut w = Window::new(budget(2, 1000), true);
        w.admit(t0);
        w.admit(t0);
        let r = w.admit(t0 + Duration::from_millis(600));
        assert_eq!(
            r,
            Admission {
                accepted: false,
                counted: true
            }
        );
        // The first two have left, but the counted rejection at 600 ms has not.
        assert!(w.admit(t0 + Duration::from_millis(1100)).accepted);
        assert!(!w.admit(t0 + Duration::from_millis(1200)).accepted);
    }

    #[test]
    fn competitor_always_counts() {
        let t0 = Instant::now();
        let mut w = Window::new(budget(2, 1000), false);
        w.admit(t0);
        w.admit(t0);
        w.take(t0);
        assert_eq!(w.max_in_window(), 3);
    }

    #[test]
    fn message_uses_the_budget() {
        assert_eq!(
            limit_message(Budget::DEFAULT),
            "API calls exceeded the limit of 25 in 5 second(s)"
        );
        assert_eq!(
            limit_message(budget(10, 500)),
            "API calls exceeded the limit of 10 in 1 second(s)"
        );
    }
}
