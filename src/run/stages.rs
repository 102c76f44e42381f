//! How rows flow from the reader to the sink. A real run joins the link
//! stage and the email stage with bounded channels, each stage with its own
//! concurrency; a dry run, which waits on nothing, takes rows one after
//! another with nothing between them.
//!
//! On the first signal the link stage takes no more rows, and a row still
//! waiting for its API call gives up and is left out of the report (a re-run
//! does it); rows already linked still pass the email stage, which starts no
//! new message and reports them `linked`.

use std::sync::Arc;

use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::api::ApiError;
use crate::input::{InputRow, LeadReader};
use crate::signal::Stop;

use super::defer::Sending;
use super::link::Step;
use super::prepare::Job;
use super::Finished;

/// Rows the email stage takes on per SMTP conversation allowed.
const ROWS_PER_CONVERSATION: usize = 4;

/// The outcomes of the run, in the order they finish. Dropping the stream
/// stops every stage.
pub(super) fn outcomes(
    reader: LeadReader,
    job: Arc<Job>,
    stop: watch::Receiver<Stop>,
) -> BoxStream<'static, anyhow::Result<Finished>> {
    if job.settings.is_dry_run() {
        planned(reader, job, stop)
    } else {
        staged(reader, job, crate::signal::reached(stop, Stop::Finish))
    }
}

/// Link stage → email stage → the sink, joined by bounded channels: a slow
/// SMTP server does not hold back key generation beyond one small buffer, so
/// links are minted shortly before their email goes out.
fn staged(
    reader: LeadReader,
    job: Arc<Job>,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> BoxStream<'static, anyhow::Result<Finished>> {
    let buffer = job.settings.limiter.rate.calls as usize;
    let (linked_tx, linked_rx) = mpsc::channel(buffer);
    let link_stage = tokio::spawn({
        let job = Arc::clone(&job);
        let concurrency = job.settings.concurrency;
        let steps = read_in_background(reader)
            .take_until(stopped)
            .then(move |item| {
                let job = Arc::clone(&job);
                // Decided here, in input order, before the row's task
                // starts (see `Job::decide_read`).
                async move {
                    let decided = job.decide_read(item).await;
                    (job, decided)
                }
            })
            .map(|(job, decided)| async move {
                let (row, decided) = decided?;
                job.process(row, decided).await
            })
            .buffer_unordered(concurrency)
            .filter(|step| futures::future::ready(!not_started(step)));
        forward(steps, linked_tx)
    });
    let (done_tx, done_rx) = mpsc::channel(buffer);
    let email_stage = tokio::spawn({
        // Rows wait for their commits without holding a conversation (see
        // `Mail::conversations`): several rows per conversation keep every
        // connection busy while earlier rows' `sent` are being committed.
        let concurrency = job
            .mail
            .as_ref()
            .map_or(buffer, |m| m.concurrency * ROWS_PER_CONVERSATION);
        let first_tries = receive(linked_rx)
            .map({
                let job = Arc::clone(&job);
                move |step: anyhow::Result<Step>| {
                    let job = Arc::clone(&job);
                    async move { job.finish(step?).await }
                }
            })
            .buffer_unordered(concurrency);
        with_deferred(first_tries, job, done_tx)
    });
    until_stages_end(done_rx, Stages(vec![link_stage, email_stage]))
}

/// The items of `rx`, then an error if a stage ended in a panic: rows it
/// held are missing, so the run must not end as if it had done them all.
fn until_stages_end<T: Send + 'static>(
    rx: mpsc::Receiver<anyhow::Result<T>>,
    stages: Stages,
) -> BoxStream<'static, anyhow::Result<T>> {
    receive(rx)
        .chain(stream::once(stages.join()).filter_map(futures::future::ready))
        .boxed()
}

/// A row given up before its API call because the run is stopping: not
/// started, so neither recorded in the state nor reported.
fn not_started(step: &anyhow::Result<Step>) -> bool {
    matches!(step, Err(e) if matches!(e.downcast_ref::<ApiError>(), Some(ApiError::NotStarted)))
}

/// A dry run's outcomes, taken one after another on this thread. A million
/// rows plan in about a second.
fn planned(
    reader: LeadReader,
    job: Arc<Job>,
    stop: watch::Receiver<Stop>,
) -> BoxStream<'static, anyhow::Result<Finished>> {
    let mut taken = 0u32;
    read_in_background(reader)
        .then(move |item| {
            let job = Arc::clone(&job);
            taken = taken.wrapping_add(1);
            // Every 1024 rows: let the signal handler run, then see whether
            // it asked to stop (checking each row would cost more than the row).
            let check = (taken % 1024 == 0).then(|| stop.clone());
            async move {
                if let Some(stop) = check {
                    tokio::task::yield_now().await;
                    if *stop.borrow() != Stop::Running {
                        return None;
                    }
                }
                let (row, decided) = match job.decide_read(item).await {
                    Ok(decided) => decided,
                    Err(e) => return Some(Err(e)),
                };
                // A dry run sends nothing, so nothing is deferred.
                let sending = async { job.finish(job.process(row, decided).await?).await }.await;
                Some(sending.map(|sending| match sending {
                    Sending::Done(finished) => finished,
                    Sending::Deferred(deferral) => deferral.give_up("this is a dry run"),
                }))
            }
        })
        .take_while(|outcome| futures::future::ready(outcome.is_some()))
        .filter_map(futures::future::ready)
        .boxed()
}

/// The stage tasks: aborted when the run stops consuming their outcomes,
/// joined when their outcomes end.
struct Stages(Vec<tokio::task::JoinHandle<()>>);

impl Stages {
    /// Waits for every stage to end; an error for the first that panicked.
    async fn join<T>(mut self) -> Option<anyhow::Result<T>> {
        for task in &mut self.0 {
            if let Err(e) = task.await {
                if e.is_panic() {
                    return Some(Err(panicked(e.into_panic())));
                }
            }
        }
        None
    }
}

impl Drop for Stages {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The error for a task or thread that panicked, with its message.
fn panicked(payload: Box<dyn std::any::Any + Send>) -> anyhow::Error {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    anyhow::anyhow!(
        "an internal error stopped the run (a task panicked: {message}); rows it was working on \
         are missing from the report. Please report this as a bug"
    )
}

/// Sends each row's final record into `tx`, from its first try or, for a
/// message the server deferred, from a later try. Deferred messages wait
/// outside the email stage's pool, so they hold up no other lead; the
/// stage ends once every row is final.
async fn with_deferred(
    first_tries: impl futures::Stream<Item = anyhow::Result<Sending>>,
    job: Arc<Job>,
    tx: mpsc::Sender<anyhow::Result<Finished>>,
) {
    let mut first_tries = std::pin::pin!(first_tries.fuse());
    let mut later = futures::stream::FuturesUnordered::new();
    loop {
        let sending = tokio::select! {
            Some(sending) = first_tries.next() => sending,
            Some(sending) = later.next() => sending,
            else => break,
        };
        let finished = match sending {
            Ok(Sending::Deferred(deferral)) => {
                let job = Arc::clone(&job);
                later.push(async move { job.retry_deferred(*deferral).await });
                continue;
            }
            Ok(Sending::Done(finished)) => Ok(finished),
            Err(e) => Err(e),
        };
        if tx.send(finished).await.is_err() {
            break;
        }
    }
}

/// Sends every item of a stream into a channel until either ends.
async fn forward<T>(items: impl futures::Stream<Item = T>, tx: mpsc::Sender<T>) {
    let mut items = std::pin::pin!(items);
    while let Some(item) = items.next().await {
        if tx.send(item).await.is_err() {
            break;
        }
    }
}

/// A channel's receiving end as a stream.
fn receive<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + Unpin {
    Box::pin(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Streams rows from a reader thread, so file reads never block the runtime.
/// Rows travel in batches: one wake-up per batch, not per row, keeps a
/// million-row dry run fast. A batch is sent early once its rows hold a MiB
/// of cells, so the rows read ahead stay a few MiB however wide they are. A
/// panic while reading ends the rows with an error, never silently.
fn read_in_background(
    reader: LeadReader,
) -> impl futures::Stream<Item = anyhow::Result<InputRow>> + Send + Unpin {
    const BATCH: usize = 256;
    const BATCH_BYTES: usize = 1 << 20;
    let (tx, rx) = mpsc::channel::<Vec<anyhow::Result<InputRow>>>(8);
    std::thread::spawn(move || {
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut batch = Vec::with_capacity(BATCH);
            let mut bytes = 0;
            for item in reader {
                bytes += item.as_ref().map_or(0, InputRow::cell_bytes);
                batch.push(item.map_err(anyhow::Error::from));
                if batch.len() == BATCH || bytes >= BATCH_BYTES {
                    bytes = 0;
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    if tx.blocking_send(full).is_err() {
                        return;
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
        }));
        if let Err(payload) = read {
            let _ = tx.blocking_send(vec![Err(panicked(payload))]);
        }
    });
    receive(rx).flat_map(stream::iter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stage_that_panics_ends_the_outcomes_with_an_error() {
        let (tx, rx) = mpsc::channel(4);
        let stage = tokio::spawn(async move {
            tx.send(Ok(1)).await.unwrap();
            panic!("row 7 broke");
        });
        let outcomes: Vec<anyhow::Result<u32>> =
            until_stages_end(rx, Stages(vec![stage])).collect().await;
        assert_eq!(outcomes.len(), 2);
        assert_eq!(*outcomes[0].as_ref().unwrap(), 1);
        let error = outcomes[1].as_ref().unwrap_err().to_string();
        assert!(error.contains("panicked: row 7 broke"), "{error}");
    }

    #[tokio::test]
    async fn stages_that_end_well_add_nothing() {
        let (tx, rx) = mpsc::channel(4);
        let stage = tokio::spawn(async move {
            tx.send(Ok(1)).await.unwrap();
        });
        let outcomes: Vec<anyhow::Result<u32>> =
            until_stages_end(rx, Stages(vec![stage])).collect().await;
        assert_eq!(outcomes.len(), 1);
    }
}
