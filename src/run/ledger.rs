//! The campaign state as the pipeline reaches it: every read and commit runs
//! on tokio's blocking pool, never on an async worker. A commit fsyncs the
//! log (`synchronous=FULL`), and a worker stuck in it would hold up every
//! API call and SMTP conversation that worker drives.
//!
//! The ledger's promises stand as they did: a caller awaits its write, so
//! `sending` is on disk before the message starts and `sent` is written only
//! after the server took it. A write, once begun, runs to its end even if its
//! caller is dropped (a stage aborted on a second signal), and the runtime
//! waits for it before it shuts down: no commit is cut short.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::state::{LeadKey, StateError, StateStore};

/// The run's claimed campaign state, shared by every row's task.
pub(super) struct Ledger {
    /// One SQLite connection serves one thread at a time.
    store: Arc<Mutex<StateStore>>,
    path: PathBuf,
    campaign: Arc<str>,
    /// The tenant's fingerprint; empty for a dry run with no tenant.
    tenant: Arc<str>,
}

impl Ledger {
    /// The store of a run for `campaign` and `tenant` (a fingerprint).
    pub(super) fn new(store: StateStore, campaign: &str, tenant: &str) -> Ledger {
        Ledger {
            path: store.path().to_owned(),
            store: Arc::new(Mutex::new(store)),
            campaign: campaign.into(),
            tenant: tenant.into(),
        }
    }

    /// Runs `work` with the store on the blocking pool and waits for it.
    pub(super) async fn with<T, F>(&self, work: F) -> Result<T, StateError>
    where
        F: FnOnce(&StateStore) -> Result<T, StateError> + Send + 'static,
        T: Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let done = tokio::task::spawn_blocking(move || {
            // Nothing panics while the lock is held but a failed write, which
            // leaves the connection whole (its transaction rolls back).
            work(&store.lock().unwrap_or_else(PoisonError::into_inner))
        })
        .await;
        match done {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StateError::Io {
                path: self.path.clone(),
                source: std::io::Error::other("the run shut down before the write began"),
            }),
        }
    }

    /// [`Ledger::with`] for one lead of this run's campaign and tenant.
    pub(super) async fn with_lead<T, F>(
        &self,
        lead_id: &str,
        portal_id: &str,
        work: F,
    ) -> Result<T, StateError>
    where
        F: FnOnce(&StateStore, &LeadKey) -> Result<T, StateError> + Send + 'static,
        T: Send + 'static,
    {
        let campaign = Arc::clone(&self.campaign);
        let tenant = Arc::clone(&self.tenant);
        let (lead_id, portal_id) = (lead_id.to_owned(), portal_id.to_owned());
        self.with(move |store| {
            let key = LeadKey {
                campaign: &campaign,
                tenant: &tenant,
                lead_id: &lead_id,
                portal_id: &portal_id,
            };
            work(store, &key)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LeadState;

    /// A write awaited on a single-threaded runtime: the only worker is free
    /// while the commit runs elsewhere, and the entry is there once awaited.
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_is_on_record_when_awaited() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("s.sqlite")).unwrap();
        store.claim("c").unwrap();
        let ledger = Ledger::new(store, "c", "t");
        let worker = std::thread::current().id();
        let ran_on = ledger
            .with_lead("lead", "portal", move |store, key| {
                store.mark_failed(key, 2, "no", 1)?;
                Ok(std::thread::current().id())
            })
            .await
            .unwrap();
        assert_ne!(ran_on, worker, "the commit ran on the async worker");
        let entry = ledger
            .with_lead("lead", "portal", |store, key| store.get(key))
            .await
            .unwrap()
            .expect("recorded");
        assert!(matches!(entry.state, LeadState::Failed { .. }), "{entry:?}");
    }
}
