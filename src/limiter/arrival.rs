//! Evidence of a late request: a connection that took far longer to open
//! than the quickest, and the calls of its burst that may have waited in
//! the same full accept queue. And how late such a request can have been:
//! no later than its answer less the quickest answer the server gave.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Limiter, Slot, State, LATE_SETUP};

/// A call over a quickly opened connection, blocked from its request's
/// writing (see `State::suspects`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Suspect {
    pub(super) slot: usize,
    pub(super) token: Option<u64>,
    pub(super) sent: Instant,
    pub(super) written: Instant,
    pub(super) answered: Instant,
    pub(super) until: Instant,
}

impl State {
    /// The latest moment a request written at `written` and answered at
    /// `answered` can have reached the server, when it may have waited
    /// unseen on its way (in a full accept queue): its answer less the
    /// quickest answer seen, plus the arrival margin for the jitter in that
    /// quickest one. An answer quicker than any seen before says the server
    /// can answer quicker still, so such a call is taken to have arrived at
    /// its answer, as is every call before any answer is seen.
    pub(super) fn arrived_by(
        &self,
        written: Instant,
        answered: Instant,
        margin: Duration,
    ) -> Instant {
        match self.quickest_answer {
            Some(quickest) if answered.saturating_duration_since(written) >= quickest => {
                answered.min(answered - quickest + margin)
            }
            _ => answered,
        }
    }

    /// Notes an answer `took` after its request was written. Only calls
    /// with no evidence of a wait count: a wait would make the quickest
    /// answer look slower than the server can be.
    fn answered_after(&mut self, took: Duration) {
        self.quickest_answer = Some(self.quickest_answer.map_or(took, |q| q.min(took)));
    }
}

impl Limiter {
    /// The latest moment a call written at `written` and answered now, which
    /// may have waited unseen, can have reached the server (see
    /// [`State::arrived_by`]).
    pub(super) fn arrived_by(&self, written: Instant, now: Instant) -> Instant {
        self.lock()
            .arrived_by(written, now, self.settings.arrival_margin)
    }

    /// Notes that a call was answered `took` after its request was written,
    /// with no evidence that it waited on its way.
    pub(super) fn answered_after(&self, took: Duration) {
        self.lock().answered_after(took);
    }

    /// Notes a new connection's set-up time and says whether it is evidence
    /// of a late request: [`LATE_SETUP`] slower than the quickest seen (this
    /// one included, so a far host's slow handshakes are all on time). A
    /// late one also shows that the listener's accept queue was full when
    /// the call was `sent`: the calls of the same burst whose connections
    /// opened at once may have waited in that queue, so their slots are
    /// blocked from the latest moment their answers allow instead (see
    /// [`State::arrived_by`]), if they are still blocked.
    pub(super) fn late_setup(&self, setup: Duration, sent: Instant, now: Instant) -> bool {
        let window = self.settings.rate.window;
        let mut state = self.lock();
        let quickest = state.quickest_setup.map_or(setup, |q| q.min(setup));
        state.quickest_setup = Some(quickest);
        let late = setup > quickest + LATE_SETUP;
        state
            .backlogged
            .retain(|t| now.saturating_duration_since(*t) < window * 2);
        state
            .suspects
            .retain(|s| now.saturating_duration_since(s.sent) < window * 2);
        if !late {
            return false;
        }
        state.backlogged.push(sent);
        let near = |s: &Suspect| s.sent.max(sent) - s.sent.min(sent) <= window;
        let (moved, kept): (Vec<Suspect>, Vec<Suspect>) = state.suspects.drain(..).partition(near);
        state.suspects = kept;
        let mut reblocked = Vec::new();
        for suspect in moved {
            let arrived_by = state.arrived_by(
                suspect.written,
                suspect.answered,
                self.settings.arrival_margin,
            );
            let later = arrived_by + window + Duration::from_millis(1);
            // Only while the slot still holds this call's block.
            if let Slot::Free { at, warm } = state.slots[suspect.slot] {
                if at == suspect.until && later > at {
                    state.slots[suspect.slot] = Slot::Free { at: later, warm };
                    reblocked.push((suspect.token, later));
                }
            }
        }
        drop(state);
        if let Some((shared, _)) = &self.shared {
            for (token, later) in reblocked {
                if let Some(token) = token {
                    let shared = Arc::clone(shared);
                    let blocked_for = later.saturating_duration_since(now);
                    tokio::spawn(async move { shared.release(token, blocked_for).await });
                }
            }
        }
        true
    }

    /// Whether a call opened a connection late within a window of `sent`.
    pub(super) fn backlogged_near(&self, sent: Instant) -> bool {
        let window = self.settings.rate.window;
        self.lock()
            .backlogged
            .iter()
            .any(|t| t.max(&sent).saturating_duration_since(*t.min(&sent)) <= window)
    }

    /// Keeps a call over a quickly opened connection, in case a late set-up
    /// of its burst shows later.
    pub(super) fn suspect(&self, suspect: Suspect) {
        self.lock().suspects.push(suspect);
    }
}
