//! [`Permit`]: the right to send one call, and how its slot is blocked
//! once the call ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Connection, Limiter, Suspect};

/// The right to send one call. Report how it ended with [`Permit::completed`];
/// dropping it unreported (a timeout, a cancelled task) blocks its slot for a
/// full window from the drop, the safe assumption.
#[derive(Debug)]
pub struct Permit {
    pub(super) limiter: Arc<Limiter>,
    pub(super) slot: usize,
    /// The slot taken in the shared budget, if there is one.
    pub(super) token: Option<u64>,
    pub(super) warm: bool,
    pub(super) sent_at: Instant,
    pub(super) done: bool,
}

impl Permit {
    /// When the call was let through.
    pub fn sent_at(&self) -> Instant {
        self.sent_at
    }

    /// The call got an answer (any answer, 429 included) now, over a
    /// connection the client did not say: a slot's first call is taken to
    /// have opened one.
    pub fn completed(self) {
        self.completed_on(Connection::Unknown);
    }

    /// The call got an answer (any answer, 429 included) now, over
    /// `connection`.
    ///
    /// Its slot stays blocked for a window from the latest moment it can
    /// have reached the server: the arrival margin after its request was
    /// written (at once on a reused connection; after the timed set-up on a
    /// new one), however long the answer took. Only evidence of a request
    /// that may have waited unseen on its way blocks it for longer: a call
    /// that waited for an idle connection when the client could not tell
    /// how long, a set-up [`LATE_SETUP`] slower than the quickest seen (and
    /// then the calls of its burst over connections that opened at once,
    /// which may have waited in the listener's full accept queue), a new
    /// connection whose set-up was not timed, or a slot's first call over a
    /// connection the client did not name. Such a call can have arrived no
    /// later than its answer less the quickest answer seen (plus the
    /// margin), and its slot is blocked from then.
    pub fn completed_on(mut self, connection: Connection) {
        let now = Instant::now();
        let sent = self.sent_at;
        // When the request was written, after the call's start, when the
        // client can tell; and whether it may have waited unseen after that.
        let (written, may_have_waited) = match connection {
            Connection::Reused => (Some(Duration::ZERO), false),
            // Written when the idle connection was handed over.
            Connection::Pooled { waited } => (waited, waited.is_none()),
            Connection::New { setup: Some(setup) } => {
                let late = self.limiter.late_setup(setup, sent, now);
                // Its request may have waited in a full accept queue.
                (Some(setup), late || self.limiter.backlogged_near(sent))
            }
            Connection::New { setup: None } => (None, true),
            Connection::Unknown if self.warm => (Some(Duration::ZERO), false),
            Connection::Unknown => (None, true),
        };
        // At the earliest, the call's start.
        let written = sent + written.unwrap_or(Duration::ZERO);
        let anchor = match may_have_waited {
            true => self.limiter.arrived_by(written, now),
            false => {
                self.limiter
                    .answered_after(now.saturating_duration_since(written));
                now.min(written + self.limiter.settings.arrival_margin)
            }
        };
        let at = self.limiter.free(self.slot, self.token, anchor);
        if !may_have_waited && matches!(connection, Connection::New { .. }) {
            self.limiter.suspect(Suspect {
                slot: self.slot,
                token: self.token,
                sent,
                written,
                answered: now,
                until: at,
            });
        }
        self.done = true;
    }
}

impl Permit {
    /// The call never reached the server: no connection could be made (a
    /// name that does not resolve, a refused connection, a failed TLS
    /// handshake). Its slot is free again at once.
    pub fn not_sent(mut self) {
        self.limiter.give_back(self.slot, self.token, self.warm);
        self.done = true;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.free(self.slot, self.token, Instant::now());
        }
    }
}
