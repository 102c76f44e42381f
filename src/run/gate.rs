//! The run's first call: it goes ahead of the others for a moment, so that
//! bad credentials are refused after one call rather than a burst.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How long the other calls wait for the first call's answer. The API
/// checks the keys before it does any work, so a refusal comes back quickly;
/// an answer slower than this is taken as a sign of a slow API, not of bad
/// keys, and the burst goes. Every slot of the first window but one waits
/// this long, and so does the end of the run: each 100 ms is about 0.25 % of
/// a 40 s run's pace, and waiting for a 1 s answer would cost 2.5 %.
pub(super) const ALONE_FOR: Duration = Duration::from_millis(100);

/// Whether the run's credentials and host have been proven by a first call.
/// Credentials the API accepted within the last hours (as the tenant's budget
/// store remembers) start proven.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Unproven,
    /// The first call is under way since then.
    Probing(Instant),
    Proven,
    Refused,
}

/// What a call may do, as [`Gate::pass`] says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Pass {
    /// This is the run's first call: report its outcome with [`Gate::decide`].
    First,
    /// Go ahead.
    Go,
    /// An earlier call's credentials were refused: do not call.
    Refused,
}

/// The gate every key generation passes (see [`State`]).
#[derive(Debug)]
pub(super) struct Gate {
    state: watch::Sender<State>,
    /// An attempt of the first call reached no HTTP server (no connection,
    /// a reset, a timeout) and is tried again: the host is not proven, so
    /// the others wait for the first call's end, however long. A 5xx or a
    /// 429 came from a server, and lets the burst go as a slow answer does.
    retrying: Arc<AtomicBool>,
}

impl Gate {
    pub(super) fn new(proven: bool) -> Gate {
        Gate {
            state: watch::Sender::new(if proven {
                State::Proven
            } else {
                State::Unproven
            }),
            retrying: Arc::default(),
        }
    }

    /// Set when an attempt of the first call reaches no server and is tried
    /// again.
    pub(super) fn retrying(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.retrying)
    }

    /// Waits until this call may go: at once for the first call and once the
    /// credentials are proven; otherwise until the first call is answered or
    /// has been under way for [`ALONE_FOR`] without an attempt that failed.
    pub(super) async fn pass(&self) -> Pass {
        let mut first = false;
        self.state.send_if_modified(|state| {
            first = *state == State::Unproven;
            if first {
                *state = State::Probing(Instant::now());
            }
            first
        });
        if first {
            return Pass::First;
        }
        let mut seen = self.state.subscribe();
        let since = match *seen.borrow_and_update() {
            State::Probing(since) => since,
            State::Refused => return Pass::Refused,
            State::Unproven | State::Proven => return Pass::Go,
        };
        let decided = |seen: watch::Receiver<State>| async move {
            let mut seen = seen;
            let answered = seen.wait_for(|s| matches!(s, State::Proven | State::Refused));
            match answered.await.is_ok_and(|state| *state == State::Refused) {
                true => Pass::Refused,
                false => Pass::Go,
            }
        };
        match tokio::time::timeout_at(since + ALONE_FOR, decided(seen.clone())).await {
            Ok(pass) => pass,
            Err(_) if self.retrying.load(Ordering::Relaxed) => decided(seen).await,
            Err(_) => Pass::Go,
        }
    }

    /// The first call's outcome: the credentials were `refused`, or not.
    pub(super) fn decide(&self, refused: bool) {
        self.state.send_replace(if refused {
            State::Refused
        } else {
            State::Proven
        });
    }

    /// Whether a call was refused for the run's credentials.
    #[cfg(test)]
    fn refused(&self) -> bool {
        *self.state.borrow() == State::Refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts `n` passes at once and says when each got through, and how.
    async fn passes(gate: &Arc<Gate>, n: usize) -> Vec<tokio::task::JoinHandle<(Pass, Instant)>> {
        (0..n)
            .map(|_| {
                let gate = Arc::clone(gate);
                tokio::spawn(async move { (gate.pass().await, Instant::now()) })
            })
            .collect()
    }

    /// Every call of `handles` got `pass`, `after` the start `t0`.
    async fn all_got(
        handles: Vec<tokio::task::JoinHandle<(Pass, Instant)>>,
        pass: Pass,
        t0: Instant,
        after: Duration,
    ) {
        for handle in handles {
            assert_eq!(handle.await.unwrap(), (pass, t0 + after));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn proven_credentials_let_every_call_go_at_once() {
        let gate = Arc::new(Gate::new(true));
        let t0 = Instant::now();
        all_got(passes(&gate, 5).await, Pass::Go, t0, Duration::ZERO).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_refusal_stops_the_burst_after_one_call() {
        let gate = Arc::new(Gate::new(false));
        assert_eq!(gate.pass().await, Pass::First);
        let waiting = passes(&gate, 24).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        gate.decide(true);
        for handle in waiting {
            assert_eq!(handle.await.unwrap().0, Pass::Refused);
        }
        assert_eq!(gate.pass().await, Pass::Refused);
        assert!(gate.refused());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_acceptance_lets_the_burst_go_at_its_answer() {
        let gate = Arc::new(Gate::new(false));
        let t0 = Instant::now();
        assert_eq!(gate.pass().await, Pass::First);
        let waiting = passes(&gate, 24).await;
        tokio::time::sleep(Duration::from_millis(70)).await;
        gate.decide(false);
        all_got(waiting, Pass::Go, t0, Duration::from_millis(70)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_first_answer_holds_the_burst_back_no_longer_than_alone_for() {
        let gate = Arc::new(Gate::new(false));
        let t0 = Instant::now();
        assert_eq!(gate.pass().await, Pass::First);
        let early = passes(&gate, 10).await;
        // Calls that come later wait only for what is left of the moment.
        tokio::time::sleep(Duration::from_millis(80)).await;
        let late = passes(&gate, 14).await;
        let burst = early.into_iter().chain(late).collect();
        all_got(burst, Pass::Go, t0, ALONE_FOR).await;
        // A refusal after the burst went still stops the calls after it.
        gate.decide(true);
        assert_eq!(gate.pass().await, Pass::Refused);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_call_that_is_tried_again_holds_the_burst_back_until_it_ends() {
        let gate = Arc::new(Gate::new(false));
        let t0 = Instant::now();
        assert_eq!(gate.pass().await, Pass::First);
        let waiting = passes(&gate, 24).await;
        // Its first attempt could not connect; the retry waits a second.
        tokio::time::sleep(Duration::from_millis(10)).await;
        gate.retrying().store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        gate.decide(true);
        all_got(waiting, Pass::Refused, t0, Duration::from_millis(2_010)).await;
    }
}
