//! Email: each linked lead is sent its login link.
//!
//! Owns the steps between a made link and a delivered message:
//! [`Templates`] turn a row into a subject and bodies, [`build_message`] turns those
//! into an RFC 5322 message through lettre's typed builder (so no CSV field can
//! forge a header).

mod message;
mod template;

pub use message::{build_message, check_address, message_id};
pub use template::{MessageContext, Rendered, Templates, FIXED_VARIABLES};
