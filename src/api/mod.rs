//! The LeadSquared API client: typed requests and answers, and the
//! classification of every failure into an [`ApiError`] the caller can branch on.
//!
//! One call here is one attempt. Pacing and retrying live in `limiter` and
//! `retry`; the tenant key's lifetime lives in [`TenantKey`].

mod caller;
mod client;
mod error;
mod otp;
mod tenant;

use std::time::Duration;

pub(crate) use caller::{noting_retries, with_retry, Attempted, Caller};
pub(crate) use client::{ApiClient, ApiSettings, GeneratedKey};
pub(crate) use error::ApiError;
pub(crate) use otp::OtpHeaders;
pub(crate) use tenant::{TenantKey, TenantKeyLease, TenantKeySource};

/// How long LeadSquared keeps lead and tenant auth keys valid.
pub(crate) const KEY_LIFETIME: Duration = Duration::from_secs(4 * 3600);
