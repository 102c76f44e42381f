//! The budget shared with other processes, as the limiter sees it: the store
//! behind it (a file, Redis) lives in `crate::budget`.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;

/// A budget shared with other processes: a file on this machine, or Redis
/// across machines. Every call takes one of its slots after the local limiter
/// let it through, and gives it back (blocked for the rest of its window)
/// when it completes. Times are the store's own clock, as durations from its
/// now, so processes never compare clocks.
pub trait SharedBudget: Send + Sync + fmt::Debug {
    /// Takes one of `allowed` slots of a sliding `window` for a call about to
    /// be sent, held for at most `hold` plus a window unless released first:
    /// a token, or how long to wait before asking again.
    fn take(
        &self,
        allowed: u32,
        window: Duration,
        hold: Duration,
    ) -> BoxFuture<'_, Result<Taken, BudgetError>>;

    /// The call holding `token` completed: its slot stays blocked for
    /// `blocked_for` from now.
    fn release(&self, token: u64, blocked_for: Duration) -> BoxFuture<'_, Result<(), BudgetError>>;

    /// A 429 arrived: every process holds its calls for `wait` from now.
    fn pause(&self, wait: Duration) -> BoxFuture<'_, Result<(), BudgetError>>;
}

/// What [`SharedBudget::take`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// A slot, to release with this token.
    Slot(u64),
    /// Every slot is taken or blocked: ask again after this long.
    Wait(Duration),
}

/// The shared budget cannot be used: the run stops taking new calls.
#[derive(Debug, thiserror::Error)]
#[error("the shared API budget {store} cannot be used: {reason}")]
pub struct BudgetError {
    /// Which store, as a person would name it (a file path, a Redis URL
    /// without its password).
    pub store: String,
    /// What went wrong.
    pub reason: String,
}
