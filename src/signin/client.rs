//! The OTP client: the flags and credentials checked into a client, the
//! public key fetched when none is given, and every failure explained with
//! what to do next and with no secret in it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use url::Url;

use crate::api::with_retry;
use crate::api::{ApiClient, ApiError, ApiSettings, OtpHeaders};
use crate::config::{parse_host, portal_id_setting, BudgetStore, Credentials, UsageError};
use crate::limiter::{Limiter, LimiterSettings};
use crate::retry::RetryPolicy;
use crate::secret::{Scrubber, Secret};
use crate::tenant::Tenant;

use super::OtpConnection;

/// Whole-request timeout of each call.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The pieces both steps use: client, limiter, headers, and the credentials
/// that turn into the public key.
pub(super) struct Otp {
    pub(super) client: ApiClient,
    pub(super) limiter: Arc<Limiter>,
    pub(super) policy: RetryPolicy,
    pub(super) headers: OtpHeaders,
    pub(super) host: Url,
    pub(super) public_key: Option<Secret>,
    /// Every secret in play, scrubbed from messages in case a server echoes one.
    pub(super) secrets: Vec<Secret>,
    /// The access and secret keys, both given: Generate can be called.
    can_generate: bool,
}

/// Which call failed, for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    PublicKey,
    Request,
    Signin,
}

impl Otp {
    /// Checks the flags and credentials, and takes the tenant's shared
    /// budget (connecting to a Redis store); no API call yet.
    pub(super) async fn connect(c: &OtpConnection) -> anyhow::Result<Otp> {
        let (mut otp, tenant) = Otp::check(c)?;
        let store = budget_store(c)?;
        let settings = otp.limiter.settings();
        otp.limiter = crate::budget::limiter(settings, &store, &tenant, TIMEOUT).await?;
        Ok(otp)
    }

    /// Checks the flags and credentials: the pieces, with a budget of the
    /// process's own, and the tenant; no network yet.
    fn check(c: &OtpConnection) -> Result<(Otp, Tenant), UsageError> {
        let host = c
            .host
            .as_deref()
            .filter(|h| !h.trim().is_empty())
            .ok_or_else(|| {
                UsageError(
                    "missing the API host: --host or LSQ_HOST, e.g. portalapi-in21.leadsquared.com"
                        .into(),
                )
            })?;
        let host = parse_host(host)?;
        let portal_id = c
            .portal_id
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .map(portal_id_setting)
            .transpose()?;
        let register_token = c
            .register_token
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .map(|t| {
                reqwest::header::HeaderValue::from_str(t)
                    .map(|_| Secret::new(t))
                    .map_err(|_| {
                        UsageError(
                            "--register-token has characters an HTTP header cannot carry".into(),
                        )
                    })
            })
            .transpose()?;
        let Credentials {
            public_auth_key: public_key,
            access_key,
            secret_key,
            ..
        } = Credentials::load(None);
        if public_key.is_none() && (access_key.is_none() || secret_key.is_none()) {
            return Err(UsageError(
                "missing credentials: set LSQ_PUBLIC_AUTH_KEY, or LSQ_ACCESS_KEY and \
                 LSQ_SECRET_KEY to fetch it"
                    .into(),
            ));
        }
        let can_generate = access_key.is_some() && secret_key.is_some();
        let secrets = [&public_key, &access_key, &secret_key, &register_token]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        // The tenant is named by its access key, as `run` names it, so that
        // both share one budget; given only the public key, by that key.
        let tenant = match (&access_key, &public_key) {
            (Some(key), _) | (None, Some(key)) => Tenant::new(&host, key),
            (None, None) => unreachable!("one of the keys is given, as checked above"),
        };
        let client = ApiClient::new(ApiSettings {
            host: host.clone(),
            access_key: access_key.unwrap_or_default(),
            secret_key: secret_key.unwrap_or_default(),
            connect_timeout: Duration::from_secs(10),
            timeout: TIMEOUT,
        })
        .map_err(|e| UsageError(format!("cannot build the HTTP client: {e}")))?;
        let otp = Otp {
            client,
            limiter: Limiter::new(LimiterSettings::new(c.rate)),
            policy: RetryPolicy::default(),
            headers: OtpHeaders {
                portal_id,
                register_token,
            },
            host,
            public_key,
            secrets,
            can_generate,
        };
        Ok((otp, tenant))
    }

    /// The lead's portal key from Generate, the only key LeadSquared
    /// documents for `?authKey=` links (the sign-in AuthKey is a session
    /// key); `None` when the access, secret and tenant keys or the portal
    /// are not all given.
    pub(super) async fn portal_key(&mut self, lead_id: &str) -> anyhow::Result<Option<Secret>> {
        let tenant = Credentials::load(None).tenant_auth_key;
        let (Some(tenant), Some(portal_id), true) =
            (tenant, self.headers.portal_id.clone(), self.can_generate)
        else {
            return Ok(None);
        };
        self.secrets.push(tenant.clone());
        let generated = with_retry(&self.limiter, &self.policy, || {
            self.client.generate(&tenant, lead_id, &portal_id)
        })
        .await;
        match generated.result {
            Ok(key) if key.lead_id.eq_ignore_ascii_case(lead_id) => {
                let key = Secret::new(key.auth_key);
                self.secrets.push(key.clone());
                Ok(Some(key))
            }
            Ok(_) => Err(anyhow!(
                "the lead signed in, but Generate answered for another lead: no login link"
            )),
            Err(error) => Err(anyhow!(
                "the lead signed in, but Generate, for its login link, failed after {} \
                 attempt(s): {error}",
                generated.attempts
            )),
        }
    }

    /// LSQ_PUBLIC_AUTH_KEY, or one fetched with the access and secret keys.
    pub(super) async fn public_key(&mut self) -> anyhow::Result<Secret> {
        if let Some(key) = &self.public_key {
            return Ok(key.clone());
        }
        let fetched = with_retry(&self.limiter, &self.policy, || self.client.public_token()).await;
        let key = fetched
            .result
            .map_err(|error| self.failure(Step::PublicKey, &error, fetched.attempts, false))?;
        self.secrets.push(key.clone());
        self.public_key = Some(key.clone());
        Ok(key)
    }

    /// The message for a failed call: what the server said and what to do.
    pub(super) fn failure(
        &self,
        step: Step,
        error: &ApiError,
        attempts: u32,
        lost: bool,
    ) -> anyhow::Error {
        let text = describe_failure(step, error, attempts, lost);
        anyhow!(Scrubber::new(&self.secrets).scrub(&text))
    }
}

/// `--budget-store`, else the budget file beside the default campaign state.
fn budget_store(c: &OtpConnection) -> Result<BudgetStore, UsageError> {
    let state = crate::state::StateStore::default_path();
    BudgetStore::from_setting(c.budget_store.as_deref(), &state)
}

/// What went wrong and what to do next, by step and kind of failure.
pub(super) fn describe_failure(step: Step, error: &ApiError, attempts: u32, lost: bool) -> String {
    let what = match step {
        Step::PublicKey => "fetching the public auth key",
        Step::Request => "requesting the OTP",
        Step::Signin => "signing in",
    };
    match error {
        ApiError::Unauthorized { message } if step == Step::PublicKey => format!(
            "{what}: 401 from the API ({message}): check LSQ_ACCESS_KEY / LSQ_SECRET_KEY and \
             that --host is your region's portal API host, or set LSQ_PUBLIC_AUTH_KEY"
        ),
        ApiError::Unauthorized { message } => format!(
            "{what}: 401 from the API ({message}): check LSQ_PUBLIC_AUTH_KEY (or LSQ_ACCESS_KEY / \
             LSQ_SECRET_KEY, which fetch it) and that --host is your region's portal API host"
        ),
        ApiError::Rejected { message, .. } if step == Step::Request => format!(
            "OTP request refused: {message}: check --phone (exactly as stored on the lead, \
             e.g. +14-157415569), --field (Phone or EmailAddress) and --portal-id"
        ),
        ApiError::Rejected { message, .. } if step == Step::Signin => {
            let hint = if needs_new_code(message) {
                let mut hint = "run `lsq-dispatch otp request` again for a new code".to_owned();
                if lost && message.to_ascii_lowercase().contains("used") {
                    hint.push_str(
                        " (an earlier attempt's answer was lost on the way back: it may have \
                         signed in, but its key cannot be recovered)",
                    );
                }
                hint
            } else {
                "check --otp (the digits the lead received), --code (from `otp request`) and \
                 --phone (the one the OTP was sent to); repeated wrong OTPs may burn the code"
                    .to_owned()
            };
            format!("sign-in refused: {message}: {hint}")
        }
        ApiError::NotFound { .. } | ApiError::Redirected { .. } => format!("{what}: {error}"),
        e if e.is_retryable() => format!(
            "{what} failed after {attempts} attempt{}: {error}: the API may be down or \
             unreachable; try again later",
            if attempts == 1 { "" } else { "s" }
        ),
        _ => format!("{what}: {error}: is --host your region's LeadSquared portal API host?"),
    }
}

/// Whether a refused sign-in can only go on with a fresh OTP, as opposed to a
/// mistyped one.
pub(super) fn needs_new_code(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["expired", "already", "used", "too many", "request a new"]
        .iter()
        .any(|word| message.contains(word))
}
