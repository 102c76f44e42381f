//! A switch that holds an SMTP test server's final replies until a test
//! releases it, so the test can act while messages are under way.

use std::sync::Arc;

/// Holds the final replies of a server's messages until released.
#[derive(Clone, Debug)]
pub struct Hold(Arc<tokio::sync::watch::Sender<bool>>);

impl Hold {
    /// A hold not yet released.
    pub fn new() -> Hold {
        Hold(Arc::new(tokio::sync::watch::Sender::new(false)))
    }

    /// Lets every held message, and every later one, have its reply.
    pub fn release(&self) {
        self.0.send_replace(true);
    }

    /// Returns once the hold is released.
    pub(super) async fn released(&self) {
        let mut released = self.0.subscribe();
        // The sender lives in `self`, so the wait ends only by a release.
        let _ = released.wait_for(|open| *open).await;
    }
}
