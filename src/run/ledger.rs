//! The campaign state as the pipeline reaches it: one writer thread owns the
//! store, and every read and commit runs there, never on an async worker. A
//! commit fsyncs the log (`synchronous=FULL`), and a worker stuck in it would
//! hold up every API call and SMTP conversation that worker drives.
//!
//! The writer takes whatever steps are waiting and commits them together:
//! many leads' changes for one fsync, so a slow disk costs the run one wait
//! per batch rather than one per step. The ledger's promises stand: a caller
//! is answered only once its step is committed, so `sending` is on disk
//! before the message starts and `sent` is written only after the server
//! took it. A step once queued is carried out even if its caller is dropped
//! (a stage aborted on a second signal), and dropping the ledger waits for
//! the writer to commit what is queued: no step is cut short.
//!
//! Looking a lead up, as each row is decided in input order, goes to a
//! second connection on the blocking pool: in WAL mode it reads what is
//! committed without waiting for the writer's batch, so rows already done
//! are skipped at the pace of a read, not of a commit.

use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::state::{LeadKey, StateError, StateStore};

/// The most steps one commit takes: enough to share an fsync among every
/// row in flight, few enough that no caller waits behind a long batch.
const MOST_PER_COMMIT: usize = 256;

/// A queued step: runs against the store and leaves the answer to send once
/// the batch's commit is known.
type Step = Box<dyn FnOnce(&StateStore) -> Answer + Send>;

/// Sends a step's result, or the commit's failure, to its caller.
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// The run's claimed campaign state, shared by every row's task.
pub(super) struct Ledger {
    queue: Option<mpsc::Sender<Step>>,
    writer: Option<JoinHandle<()>>,
    /// A second connection for lookups; without one they queue for the
    /// writer.
    reader: Option<Arc<Mutex<StateStore>>>,
    path: PathBuf,
    campaign: Arc<str>,
    /// The tenant's fingerprint; empty for a dry run with no tenant.
    tenant: Arc<str>,
}

impl Ledger {
    /// Hands the store of a run for `campaign` and `tenant` (a fingerprint)
    /// to its writer thread; `reader`, the same file opened again, serves
    /// [`Ledger::look_up`].
    pub(super) fn new(
        store: StateStore,
        reader: Option<StateStore>,
        campaign: &str,
        tenant: &str,
    ) -> Ledger {
        let path = store.path().to_owned();
        let (queue, steps) = mpsc::channel::<Step>();
        let writer = std::thread::Builder::new()
            .name("state writer".into())
            .spawn(move || write(&store, &steps))
            .expect("a thread for the state writer");
        Ledger {
            queue: Some(queue),
            writer: Some(writer),
            reader: reader.map(|reader| Arc::new(Mutex::new(reader))),
            path,
            campaign: campaign.into(),
            tenant: tenant.into(),
        }
    }

    /// Runs `work` with the store on the writer thread, and answers once it
    /// is committed.
    pub(super) async fn with<T, F>(&self, work: F) -> Result<T, StateError>
    where
        F: FnOnce(&StateStore) -> Result<T, StateError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let path = self.path.clone();
        let step: Step = Box::new(move |store| {
            let result = store.atomically(|| work(store));
            Box::new(move |failed_commit| {
                let result = match (failed_commit, result) {
                    (Some(why), Ok(_)) => Err(not_committed(path, why)),
                    // A step that failed on its own says why.
                    (_, result) => result,
                };
                // A caller that is gone needs no answer.
                let _ = reply.send(result);
            })
        });
        let gone = || not_committed(self.path.clone(), "the state writer has stopped");
        self.queue
            .as_ref()
            .expect("the queue lives as long as the ledger")
            .send(step)
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
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

impl Ledger {
    /// What the campaign holds for one lead, as committed: read on the
    /// blocking pool through the reader connection.
    pub(super) async fn look_up(
        &self,
        lead_id: &str,
        portal_id: &str,
    ) -> Result<Option<crate::state::LeadEntry>, StateError> {
        let Some(reader) = &self.reader else {
            return self
                .with_lead(lead_id, portal_id, |store, key| store.get(key))
                .await;
        };
        let reader = Arc::clone(reader);
        let (campaign, tenant) = (Arc::clone(&self.campaign), Arc::clone(&self.tenant));
        let (lead_id, portal_id) = (lead_id.to_owned(), portal_id.to_owned());
        let read = tokio::task::spawn_blocking(move || {
            let key = LeadKey {
                campaign: &campaign,
                tenant: &tenant,
                lead_id: &lead_id,
                portal_id: &portal_id,
            };
            // A failed read leaves the connection whole.
            let store = reader.lock().unwrap_or_else(PoisonError::into_inner);
            store.get(&key)
        });
        match read.await {
            Ok(entry) => entry,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(not_committed(self.path.clone(), "the run is shutting down")),
            },
        }
    }
}

impl Drop for Ledger {
    /// Closes the queue and waits for the writer to commit what is in it.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: takes every step waiting (up to [`MOST_PER_COMMIT`]),
/// runs them in one transaction, commits, then answers each caller. Ends
/// when the queue is closed and empty.
fn write(store: &StateStore, steps: &mpsc::Receiver<Step>) {
    while let Ok(first) = steps.recv() {
        let mut batch = vec![first];
        while batch.len() < MOST_PER_COMMIT {
            match steps.try_recv() {
                Ok(step) => batch.push(step),
                Err(_) => break,
            }
        }
        let (answers, committed) = store.batch(|| {
            batch
                .into_iter()
                .map(|step| step(store))
                .collect::<Vec<_>>()
        });
        // Nothing of a batch whose commit failed is on disk: every step in
        // it fails with the commit.
        let failed = committed.err().map(|e| e.to_string());
        for answer in answers {
            answer(failed.as_deref());
        }
    }
}

fn not_committed(path: PathBuf, why: &str) -> StateError {
    StateError::Io {
        path,
        error: std::io::Error::other(why.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LeadState;

    fn ledger(dir: &std::path::Path) -> Ledger {
        let store = StateStore::open(&dir.join("s.sqlite")).unwrap();
        store.claim("c").unwrap();
        let reader = StateStore::open_to_read(&dir.join("s.sqlite")).unwrap();
        Ledger::new(store, Some(reader), "c", "t")
    }

    /// A write awaited on a single-threaded runtime: the only worker is free
    /// while the commit runs elsewhere, and the entry is there once awaited.
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_is_on_record_when_awaited() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger(dir.path());
        let worker = std::thread::current().id();
        let ran_on = ledger
            .with_lead("lead", "portal", move |store, key| {
                store.mark_failed(key, 2, "no", 1)?;
                Ok(std::thread::current().id())
            })
            .await
            .unwrap();
        assert_ne!(ran_on, worker, "the commit ran on the async worker");
        drop(ledger);
        let store = StateStore::open(&dir.path().join("s.sqlite")).unwrap();
        let key = LeadKey {
            campaign: "c",
            tenant: "t",
            lead_id: "lead",
            portal_id: "portal",
        };
        let entry = store.get(&key).unwrap().expect("recorded");
        assert!(matches!(entry.state, LeadState::Failed { .. }), "{entry:?}");
    }

    /// Steps committed together: one that fails is undone alone and says
    /// why, and the others stand.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_step_spoils_no_other_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(ledger(dir.path()));
        let writes = (0..50).map(|i| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move {
                let lead = format!("lead-{i}");
                ledger
                    .with_lead(&lead, "portal", move |store, key| match i % 5 {
                        // Not in `sending`: refused, and nothing written.
                        0 => store.mark_sent(key, "<id@x>"),
                        _ => store.mark_failed(key, i, "no", 1),
                    })
                    .await
            })
        });
        let results = futures::future::join_all(writes).await;
        for (i, result) in results.into_iter().enumerate() {
            let result = result.unwrap();
            match i % 5 {
                0 => assert!(
                    matches!(result, Err(StateError::NotSending { .. })),
                    "{result:?}"
                ),
                _ => assert!(result.is_ok(), "{result:?}"),
            }
        }
        let counts = ledger.with(|store| store.counts("c")).await.unwrap();
        assert_eq!(counts["failed"], 40);
        assert_eq!(counts.values().sum::<u64>(), 40, "{counts:?}");
        let entry = ledger.look_up("lead-1", "portal").await.unwrap();
        assert!(
            matches!(entry.map(|e| e.state), Some(LeadState::Failed { .. })),
            "the reader sees what the writer committed"
        );
    }
}
