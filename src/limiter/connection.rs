//! How a call reached the server: over a connection an earlier call used, or
//! over one opened for it. The HTTP client notes it while the call runs, and
//! the limiter reads it to tell when the call can have arrived.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

/// How a call reached the server, as the HTTP client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Over a connection an earlier call used.
    Reused,
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
}

/// Runs `call` and says which connection it used, as the client noted with
/// [`note_connection`] and [`note_setup`] while it ran.
pub async fn observing<F: Future>(call: F) -> (F::Output, Connection) {
    let nothing = Seen {
        connection: Connection::Unknown,
        setup: None,
    };
    SEEN.scope(Cell::new(nothing), async {
        let output = call.await;
        let seen = SEEN.with(Cell::get);
        let connection = match seen.connection {
            Connection::New { .. } => Connection::New { setup: seen.setup },
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
