//! Ctrl-C and SIGTERM: the first asks the run to stop taking rows and finish
//! what is in flight; the second asks it to quit at once. Either way the run
//! returns through `main`, so every output is flushed and every destructor
//! runs.

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

/// Watches for Ctrl-C and SIGTERM for the rest of the run.
pub(crate) fn watch_signals() -> watch::Receiver<Stop> {
    let (tx, rx) = watch::channel(Stop::Running);
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("stopping: no new rows are taken; calls in flight are finished and recorded (press Ctrl-C again to quit at once)");
        let _ = tx.send(Stop::Finish);
        wait_for_signal().await;
        eprintln!("quitting at once; the report holds every row finished so far");
        let _ = tx.send(Stop::Quit);
    });
    rx
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
