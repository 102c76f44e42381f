//! Ctrl-C, SIGTERM and SIGHUP (the SSH session a run was started from
//! closing): the first asks the run to stop taking rows and finish what is
//! in flight; the second asks it to quit at once. Either way the run returns
//! through `main`, so every output is flushed and every destructor runs, and
//! it exits 130.
//!
//! "In flight" is narrow on purpose: an API call or an SMTP transaction that
//! has begun. Every wait (at the limiter, on a pause another run stored, in a
//! retry's backoff, behind the SMTP budget, for the SMTP login check at the
//! start) asks [`StopSignal`] first and gives up, so nothing new starts after
//! the first signal.

use std::future::Future;

use tokio::sync::watch;

/// What the signals have asked for so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stop {
    /// No signal yet.
    Running,
    /// One signal: take no new rows; finish and record the calls in flight.
    Finish,
    /// Two signals: stop waiting for calls in flight.
    Quit,
}

/// What the signals have asked of one run, shared by every task in it: each
/// asks before it starts an API call or an SMTP transaction. Until
/// [`watch_signals`] is given it, it never stops anything.
#[derive(Debug, Clone)]
pub(crate) struct StopSignal(watch::Sender<Stop>);

impl StopSignal {
    /// A signal nothing has raised.
    pub(crate) fn new() -> StopSignal {
        StopSignal(watch::Sender::new(Stop::Running))
    }

    /// Records what a signal asked for.
    pub(crate) fn raise(&self, to: Stop) {
        self.0.send_replace(to);
    }

    /// True once the first signal came: nothing new may start.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.0.borrow() != Stop::Running
    }

    /// Waits for `work` unless the run starts stopping first; `None` then,
    /// and `work` is dropped unfinished. For waits only (a limiter, a
    /// backoff), never for a call that has begun.
    pub(crate) async fn unless_stopping<F: Future>(&self, work: F) -> Option<F::Output> {
        let mut stop = self.0.subscribe();
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s != Stop::Running) => None,
            done = work => Some(done),
        }
    }
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal::new()
    }
}

/// A command stopped by a signal before it had done anything worth a
/// report: it exits 130 all the same.
#[derive(Debug, thiserror::Error)]
#[error("interrupted before the first API call; nothing was done: re-run the same command")]
pub(crate) struct Interrupted;

/// Watches for Ctrl-C, SIGTERM and SIGHUP for the rest of the run, raising
/// `signal`; returns a receiver of what they asked. The handlers are in
/// place when this returns.
pub(crate) fn watch_signals(signal: &StopSignal) -> watch::Receiver<Stop> {
    let raised = signal.clone();
    let mut signals = Signals::install();
    tokio::spawn(async move {
        let name = signals.next().await;
        tracing::info!("stopping: {name} received; no new API call or email is started, every wait ends, and those in flight are finished and recorded (press Ctrl-C again to quit at once)");
        raised.raise(Stop::Finish);
        let name = signals.next().await;
        tracing::info!(
            "quitting at once ({name} again); the report holds every row finished so far"
        );
        raised.raise(Stop::Quit);
    });
    signal.0.subscribe()
}

/// Resolves once `stop` has reached `at_least`.
pub(crate) async fn reached(mut stop: watch::Receiver<Stop>, at_least: Stop) {
    // An error means the watcher is gone, and then no signal will come.
    if stop.wait_for(|s| *s >= at_least).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The signals that stop a command, caught from the moment they are
/// installed: a signal that comes before anyone waits for it is kept.
struct Signals {
    caught: Vec<(tokio::signal::unix::Signal, &'static str)>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let kinds = [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
        ];
        let caught = kinds
            .into_iter()
            // A handler that cannot be installed leaves that signal's
            // default: it still ends the process.
            .filter_map(|(kind, name)| signal(kind).ok().map(|s| (s, name)))
            .collect();
        Signals { caught }
    }

    /// The name of the next signal caught.
    async fn next(&mut self) -> &'static str {
        if self.caught.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.caught.iter_mut().map(|(signal, name)| {
            let name = *name;
            Box::pin(async move {
                signal.recv().await;
                name
            })
        });
        futures::future::select_all(waits).await.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_gives_up_when_the_run_starts_stopping() {
        let signal = StopSignal::new();
        let sleep = || tokio::time::sleep(std::time::Duration::from_secs(60));
        assert_eq!(signal.unless_stopping(async { 7 }).await, Some(7));
        let raise = async {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            signal.raise(Stop::Finish);
        };
        let (waited, ()) = tokio::join!(signal.unless_stopping(sleep()), raise);
        assert_eq!(waited, None);
        assert!(signal.is_stopping());
        // Once stopping, a wait does not even begin.
        assert_eq!(signal.unless_stopping(async { 7 }).await, None);
    }
}
