//! How a call reached the server: over a connection an earlier call used, or
//! over one opened for it. The HTTP client notes it while the call runs, and
//! the limiter reads it to tell when the call can have arrived.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

/// How a call reached the server, as the HTTP client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Over a connection an earlier call used, idle when the call started.
    Reused,
    /// Over a connection an earlier call used, which the call took when it
    /// fell idle while a connection of its own was still opening (the
    /// client takes whichever comes first): the request was written
    /// `waited` after the call started, when the client could tell.
    Pooled {
        /// How long after the call's start the connection was handed over.
        waited: Option<Duration>,
    },
    /// Over a connection opened for it, which took `setup` to open (name
    /// lookup, TCP and TLS handshakes) when the client timed it.
    New {
        /// How long opening the connection took.
        setup: Option<Duration>,
    },
    /// Not known: a slot's first call is taken to have opened a connection.
    Unknown,
}

/// What the client noted while a call ran.
#[derive(Debug, Clone, Copy)]
struct Seen {
    connection: Connection,
    setup: Option<Duration>,
}

tokio::task_local! {
    static SEEN: Cell<Seen>;
    static OPENING: Opening;
}

/// The connections a call started to open, and when the first of them left
/// the call for the client's background (see [`Opening::watch`]).
#[derive(Debug, Clone, Default)]
struct Opening(Arc<Mutex<OpeningState>>);

#[derive(Debug, Default)]
struct OpeningState {
    started: bool,
    handed_over: Option<Instant>,
}

impl Opening {
    fn state(&self) -> std::sync::MutexGuard<'_, OpeningState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `call` and says which connection it used, as the client noted with
/// [`note_connection`], [`note_setup`] and [`watch_opening`] while it ran.
pub async fn observing<F: Future>(call: F) -> (F::Output, Connection) {
    let nothing = Seen {
        connection: Connection::Unknown,
        setup: None,
    };
    let started = Instant::now();
    let opening = Opening::default();
    let call = OPENING.scope(opening.clone(), call);
    SEEN.scope(Cell::new(nothing), async {
        let output = call.await;
        let seen = SEEN.with(Cell::get);
        let opening = opening.state();
        let connection = match seen.connection {
            Connection::New { .. } => Connection::New { setup: seen.setup },
            // It started opening a connection, which did not open in time
            // for it: it took one that fell idle meanwhile.
            Connection::Reused if opening.started && seen.setup.is_none() => Connection::Pooled {
                waited: opening
                    .handed_over
                    .map(|at| at.saturating_duration_since(started)),
            },
            other => other,
        };
        (output, connection)
    })
    .await
}

/// The HTTP client notes which connection the call under way used; outside
/// [`observing`] this does nothing.
pub fn note_connection(connection: Connection) {
    let _ = SEEN.try_with(|seen| {
        seen.set(Seen {
            connection,
            ..seen.get()
        })
    });
}

/// The HTTP client notes how long opening a connection for the call under
/// way took; outside [`observing`] this does nothing.
pub fn note_setup(setup: Duration) {
    let _ = SEEN.try_with(|seen| {
        seen.set(Seen {
            setup: Some(setup),
            ..seen.get()
        })
    });
}

/// Watches the opening of a connection that the call under way started.
/// The HTTP client opens one for a call with no idle connection, and hands
/// the call the first connection that falls idle if that comes first,
/// finishing the opening in its background: the moment the opening is first
/// run outside the call is when the call got its connection, and so when
/// its request was written. Outside [`observing`] the future is returned as
/// it is.
pub fn watch_opening<F: Future>(opening: F) -> WatchedOpening<F> {
    let watch = OPENING.try_with(Opening::clone).ok();
    if let Some(watch) = &watch {
        watch.state().started = true;
    }
    WatchedOpening {
        inner: Box::pin(opening),
        watch,
    }
}

/// A connection's opening, watched (see [`watch_opening`]).
pub struct WatchedOpening<F> {
    inner: Pin<Box<F>>,
    watch: Option<Opening>,
}

impl<F: Future> Future for WatchedOpening<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if let Some(watch) = &self.watch {
            if OPENING.try_with(|_| ()).is_err() {
                let mut state = watch.state();
                state.handed_over.get_or_insert_with(Instant::now);
                drop(state);
                self.watch = None;
            }
        }
        self.inner.as_mut().poll(cx)
    }
}
