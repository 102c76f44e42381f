//! Email: each linked lead is sent its login link.
//!
//! Owns the three steps between a made link and a delivered message:
//! [`Templates`] turn a row into a subject and bodies, [`build_message`] turns those
//! into an RFC 5322 message through lettre's typed builder (so no CSV field can
//! forge a header), and [`Transport`] delivers it over SMTP or into an outbox
//! folder. [`send_with_retry`] separates the failures worth retrying (4xx, no
//! connection) from a message the server may already have (the connection
//! lost or silent once made), which is never sent again, from a row's
//! permanent failure (5xx) and from a run-level fault (authentication or TLS),
//! which must stop the run before anything else is sent. [`mixed_scripts`]
//! finds a recipient domain that mixes scripts, as look-alikes do.

mod classify;
mod defer;
mod helo;
mod message;
mod outbox;
mod script;
mod smtp_url;
mod template;
mod transport;
mod trust;

pub use defer::DeferSchedule;
pub use helo::check_helo_name;
pub use message::{
    build_message, check_address, message_id, resend_message_id, ListUnsubscribe, Sender,
};
pub use script::{mixed_scripts, MixedScripts};
pub use template::{MessageContext, Rendered, Templates, FIXED_VARIABLES};
pub(crate) use transport::send_with_retry_until;
pub use transport::{send_with_retry, SendError, SmtpSettings, Transport};
