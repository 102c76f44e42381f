//! Redirect links (`--links redirect`): instead of the portal URL with a key
//! that dies in hours, the mail carries `BASE/l/TOKEN`, a link to the link
//! service (`lsq-dispatch serve`) that sends the person on to the portal with
//! a live key when they click.

mod token;

pub(crate) use token::{new_secret, LinkClaims, LinkSecrets, TokenError};
