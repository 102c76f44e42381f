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
    /// The store as a person would name it in a message: "the budget file
    /// PATH", "the shared API budget redis://HOST:PORT".
    fn describe(&self) -> String;

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

    /// What the store remembers of the tenant from earlier runs, as ages on
    /// its own clock; a time ahead of that clock is taken as now.
    fn recall(&self) -> BoxFuture<'_, Result<Memory, BudgetError>>;

    /// Remembers the share learnt from a 429 now: `allowed` calls a
    /// window, after `failed_probes` probes in a row drew a 429.
    fn remember_share(
        &self,
        allowed: u32,
        failed_probes: u32,
    ) -> BoxFuture<'_, Result<(), BudgetError>>;

    /// Remembers that the credentials named by `mark` were accepted now.
    fn remember_accepted(&self, mark: String) -> BoxFuture<'_, Result<(), BudgetError>>;
}

/// What a store remembers of a tenant between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The share learnt from 429s.
    pub share: Option<LearntShare>,
    /// The credentials last accepted (their mark, see
    /// [`SharedBudget::remember_accepted`]), and how long ago.
    pub accepted: Option<(String, Duration)>,
}

/// A share learnt from 429s, as a store remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearntShare {
    /// Calls a window.
    pub allowed: u32,
    /// Probes in a row that drew a 429.
    pub failed_probes: u32,
    /// How long ago it was learnt.
    pub age: Duration,
}

/// How long a store remembers a learnt share: past this it has climbed
/// back to the whole budget anyway.
pub const SHARE_REMEMBERED: Duration = Duration::from_secs(24 * 3600);

/// How long credentials accepted by the API count as proven: a run within
/// this of the last acceptance sends its first burst at once.
pub const ACCEPTED_FOR: Duration = Duration::from_secs(4 * 3600);

/// What [`SharedBudget::take`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// A slot, to release with this token.
    Slot(u64),
    /// Every slot is taken or blocked: ask again after this long.
    Wait(Duration),
    /// A 429 paused every process (see [`SharedBudget::pause`]): the pause
    /// ends in this long.
    Paused(Duration),
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
