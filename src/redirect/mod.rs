//! Redirect links (`--links redirect`): instead of the portal URL with a key
//! that dies in hours, the mail carries `BASE/l/TOKEN`, a link to the link
//! service (`lsq-dispatch serve`) that sends the person on to the portal with
//! a live key when they click.
//!
//! Public so that the tests can seal links the service then opens.

mod token;

pub use token::{new_secret, LinkClaims, LinkSecrets, TokenError};
