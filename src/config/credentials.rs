//! The settings `run` and `otp` share: the API host, the portal, and the
//! secrets, which come from the environment or the config file and never from
//! a flag.

use url::Url;

use super::value::Invalid;
use super::RunArgs;
use super::{usage, UsageError};
use crate::portal_url::is_loopback;
use crate::secret::Secret;

/// The tenant's secrets, each from its variable or else the config file.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `LSQ_ACCESS_KEY`.
    pub access_key: Option<Secret>,
    /// `LSQ_SECRET_KEY`.
    pub secret_key: Option<Secret>,
    /// `LSQ_TENANT_AUTH_KEY`.
    pub tenant_auth_key: Option<Secret>,
    /// `LSQ_PUBLIC_AUTH_KEY`.
    pub public_auth_key: Option<Secret>,
}

impl Credentials {
    /// Reads every secret: the environment first, then the file, if any.
    pub fn load(file: Option<&RunArgs>) -> Credentials {
        let from_file = |pick: fn(&RunArgs) -> &Option<Secret>| file.and_then(|f| pick(f).clone());
        Credentials {
            access_key: env_secret("LSQ_ACCESS_KEY").or_else(|| from_file(|f| &f.access_key)),
            secret_key: env_secret("LSQ_SECRET_KEY").or_else(|| from_file(|f| &f.secret_key)),
            tenant_auth_key: env_secret("LSQ_TENANT_AUTH_KEY")
                .or_else(|| from_file(|f| &f.tenant_auth_key)),
            public_auth_key: env_secret("LSQ_PUBLIC_AUTH_KEY")
                .or_else(|| from_file(|f| &f.public_auth_key)),
        }
    }
}

/// Reads a secret from the environment, ignoring empty values.
pub fn env_secret(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(Secret::new)
}

/// Parses `--host`: a URL, or a bare host meaning https. Plain http is only
/// allowed to loopback, since the secret key travels in the query.
pub fn parse_host(value: &str) -> Result<Url, UsageError> {
    host(value).map_err(|e| usage(e.named("--host")))
}

/// A host setting's value, checked as [`parse_host`] says.
pub(super) fn host(value: &str) -> Result<Url, Invalid> {
    let value = value.trim();
    let invalid = |text: String| Invalid::new(|name| text.replace("{name}", name));
    if let Some(meant) = crate::portal_url::mistyped_scheme(value) {
        return Err(invalid(format!(
            "{{name}} {value:?} is not a host or URL: its scheme needs \"://\"; write it as {meant}"
        )));
    }
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("https://{value}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| invalid(format!("{{name}} {value:?} is not a host or URL: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| invalid(format!("{{name}} {value:?} has no host name")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(invalid(format!(
                "{{name}} {value:?}: plain http would send the secret key unencrypted; use https:// (http is only allowed to loopback)"
            )))
        }
        other => return Err(invalid(format!("{{name}} {value:?}: unsupported scheme {other:?}, use https://"))),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!(
            "{{name}} {value:?} must not carry a query or fragment"
        )));
    }
    Ok(url)
}

/// Parses `--portal-id`: a GUID in any common spelling, normalised.
pub fn portal_id_setting(value: &str) -> Result<String, UsageError> {
    super::value::portal_id(value).map_err(|e| usage(e.named("--portal-id")))
}
