//! The tenant's API budget shared with other processes, behind the limiter's
//! [`SharedBudget`]: a budget file beside the campaign state for every
//! process on this machine ([`file::FileBudget`]), or a Redis server for
//! every machine that names it ([`redis::RedisBudget`]).
//!
//! Both keep the same window log of the tenant's calls: one entry per call,
//! `(token, expires at)` on the store's own clock. A call takes an entry
//! while fewer than N are live; the entry lasts the call's timeout plus a
//! window while the call is in flight (so a crashed holder's slot frees
//! itself), and the rest of its window once the call completes. A 429 sets a
//! pause that every process waits out.
//!
//! Beside the log each store keeps what the next run should not learn
//! again: the share last learnt from a 429 (with when, so that it climbs
//! back as it would have meanwhile) and the credentials the API last
//! accepted (by a mark, never the keys; proven for [`ACCEPTED_FOR`]).
//!
//! [`ACCEPTED_FOR`]: crate::limiter::ACCEPTED_FOR

mod file;
mod redis;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::BudgetStore;
use crate::limiter::{BudgetError, Limiter, LimiterSettings, SharedBudget, MAX_PAUSE};
use crate::tenant::Tenant;

/// The limiter of a live process's API calls: `settings` within the process,
/// and every call also takes a slot of the tenant's budget in `store`;
/// `hold` is the longest a call can be in flight (its timeout). The limiter
/// starts from what the store remembers of earlier runs (the share learnt
/// from 429s, the credentials accepted lately). A store that cannot be used
/// now stops the process before its first call.
pub(crate) async fn limiter(
    settings: LimiterSettings,
    store: &BudgetStore,
    tenant: &Tenant,
    hold: Duration,
) -> Result<Arc<Limiter>, BudgetError> {
    let shared: Arc<dyn SharedBudget> = match store {
        BudgetStore::Own => return Ok(Limiter::new(settings)),
        BudgetStore::Machine(dir) => {
            Arc::new(file::FileBudget::open(dir, tenant, settings.rate.window)?)
        }
        BudgetStore::Redis(url) => {
            Arc::new(redis::RedisBudget::connect(url, tenant, settings.rate.window).await?)
        }
    };
    let memory = shared.recall().await?;
    let limiter = Limiter::shared(settings, shared, hold);
    limiter.resume(memory);
    Ok(limiter)
}

/// The name of a tenant's log in a store: `budget-` and the first 16 hex
/// digits of its fingerprint.
fn log_name(tenant: &Tenant) -> String {
    format!("budget-{}", &tenant.fingerprint()[..16])
}

/// What a store says of a pause longer than any run stores (`what`): it is
/// implausible, and cut to one `window`.
fn implausible_pause(what: &str, window: Duration) -> String {
    format!(
        "{what}, longer than the {}m any run stores, so implausible (a clock that ran ahead \
         and was set right, or an edit); taken as a pause of one window ({:.1}s): the run \
         waits that long, then goes on",
        MAX_PAUSE.as_secs() / 60,
        window.as_secs_f64()
    )
}

/// What a store says of `count` log entries dated far beyond the longest a
/// slot is held (`longest`): implausible, each capped to that.
fn implausible_entries(count: usize, longest: Duration) -> String {
    format!(
        "{count} entries of its log expire far beyond the longest a call holds a slot, so \
         implausible (a clock that ran ahead and was set right, or an edit); each is taken \
         to expire in {:.1}s (this run's --timeout and a window)",
        longest.as_secs_f64()
    )
}

/// Whole milliseconds, rounded up: a slot is never given back early.
fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The slots this process took and has not yet given back, each with the
/// window it was taken for. The limiter gives slots back in tasks of their
/// own, which a process that is ending may never run: a store settles what
/// is left here when it is dropped, each slot blocked for a window from then
/// (every call has ended by then, so that is the safe assumption), rather
/// than leave it blocked for a whole timeout.
#[derive(Debug, Default)]
struct Held(Mutex<HashMap<u64, Duration>>);

impl Held {
    fn add(&self, token: u64, window: Duration) {
        self.lock().insert(token, window);
    }

    fn remove(&self, token: u64) {
        self.lock().remove(&token);
    }

    fn drain(&self) -> Vec<(u64, Duration)> {
        self.lock().drain().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Duration>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
