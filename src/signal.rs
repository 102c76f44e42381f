//! Ctrl-C and SIGTERM: the first asks the run to stop taking rows and finish
//! what is in flight; the second asks it to quit at once. Either way the run
//! returns through `main`, so every output is flushed and every destructor
//! runs.
//!
//! "In flight" is narrow on purpose: an API call or an SMTP transaction that
//! has begun. Work still waiting for its turn (at the limiter, in a retry's
//! backoff, behind the SMTP budget) asks [`StopSignal`] first and gives up, so
//! nothing new starts after the first signal.

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

/// Watches for Ctrl-C and SIGTERM for the rest of the run, raising `signal`;
/// returns a receiver of what they asked.
pub(crate) fn watch_signals(signal: &StopSignal) -> watch::Receiver<Stop> {
    let raised = signal.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: no new API call or email is started; those in flight are finished and recorded (press Ctrl-C again to quit at once)");
        raised.raise(Stop::Finish);
        wait_for_signal().await;
        tracing::info!("quitting at once; the report holds every row finished so far");
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

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
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
