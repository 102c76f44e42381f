//! The SMTP URL: which host, port, encryption and login it names, and how it
//! is shown without its password.

use anyhow::{anyhow, bail};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::Tls;

use super::trust::tls_parameters;
use percent_encoding::percent_decode_str;
use url::{Host, Url};

use super::transport::SmtpSettings;
use crate::secret::Secret;

/// The SMTP URL's host, as lettre wants it (an IPv6 address without brackets).
pub(super) fn url_host(url: &Url, shown: &str) -> anyhow::Result<String> {
    Ok(match url.host() {
        Some(Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => ip.to_string(),
        _ => bail!("SMTP URL {shown} has no host"),
    })
}

/// The encryption the URL asks for, and the port that goes with it. Plain
/// `smtp://` is refused unless the server is on this machine.
pub(super) fn encryption(
    url: &Url,
    host: &str,
    shown: &str,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<(Tls, u16)> {
    let require_tls = requires_tls(url, shown)?;
    Ok(match url.scheme() {
        "smtps" => (Tls::Wrapper(tls_parameters(host, ca_file)?), 465),
        "smtp" if require_tls => (Tls::Required(tls_parameters(host, ca_file)?), 587),
        "smtp" if url.host_str().is_some_and(crate::portal_url::is_loopback) => (Tls::None, 25),
        "smtp" => {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            bail!(
                "refusing to send mail in plaintext to {host}{port}: the messages carry \
                 login links. Use smtps://{host}:465 (implicit TLS) or \
                 smtp://{host}:587?tls=required (STARTTLS); plain smtp:// is only \
                 allowed to a server on this machine (localhost, 127.0.0.1, ::1)"
            )
        }
        other => bail!(
            "SMTP URL {shown}: unknown scheme {other:?}; use smtps:// or smtp://…?tls=required"
        ),
    })
}

/// Whether the URL's query says `tls=required`; any other option is refused,
/// so a misspelt one does not silently fall back to no encryption.
fn requires_tls(url: &Url, shown: &str) -> anyhow::Result<bool> {
    let mut require_tls = false;
    for (key, value) in url.query_pairs() {
        match (&*key, &*value) {
            ("tls", "required") => require_tls = true,
            ("tls", other) => bail!(
                "SMTP URL {shown}: tls={other} is not supported; use ?tls=required \
                 (STARTTLS that must succeed) or an smtps:// URL"
            ),
            (other, _) => {
                bail!("SMTP URL {shown}: unknown option {other:?}; the only option is tls=required")
            }
        }
    }
    Ok(require_tls)
}

/// The login, from the URL's `user:password@`, else from the settings; and
/// the password alone, kept to scrub it from server replies. A user without a
/// password, or the reverse, is refused rather than tried.
pub(super) fn login(
    url: &Url,
    settings: &SmtpSettings,
    shown: &str,
) -> anyhow::Result<(Option<Credentials>, Option<Secret>)> {
    let url_user = decode(url.username(), "user name", shown)?;
    let url_password = match url.password() {
        Some(p) => Some(Secret::new(decode(p, "password", shown)?)),
        None => None,
    };
    let user = Some(url_user)
        .filter(|u| !u.is_empty())
        .or_else(|| settings.user.clone().filter(|u| !u.is_empty()));
    let password = url_password
        .or_else(|| settings.password.clone())
        .filter(|p| !p.is_empty());
    let credentials = match (user, &password) {
        (Some(user), Some(password)) => Some(Credentials::new(user, password.expose().to_owned())),
        (Some(user), None) => {
            bail!("SMTP user {user:?} has no password: set LSQ_SMTP_PASSWORD")
        }
        (None, Some(_)) => bail!(
            "an SMTP password is set but no user: set LSQ_SMTP_USER or put the user in \
             --smtp-url"
        ),
        (None, None) => None,
    };
    Ok((credentials, password))
}

fn decode(s: &str, what: &str, shown: &str) -> anyhow::Result<String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| anyhow!("SMTP URL {shown}: the {what} is not valid percent-encoded UTF-8"))
}

/// The URL with any `user:password@` replaced, for messages. Works on the raw
/// text, so even a URL that does not parse never shows its password.
pub(super) fn redact_url(url: &str) -> String {
    let url = url.trim();
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..start], &url[start + at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_in_urls() {
        assert_eq!(
            redact_url("smtps://me:p%40ss@mail.example.com:465"),
            "smtps://***@mail.example.com:465"
        );
        assert_eq!(
            redact_url("smtp://mail.example.com:587?tls=required"),
            "smtp://mail.example.com:587?tls=required"
        );
        assert_eq!(redact_url("not a url :pw@x"), "***@x");
    }
}
