//! Delivering messages: over SMTP (lettre's pooled async transport on tokio) or
//! into an outbox folder of `.eml` files, and sorting SMTP failures into the
//! four kinds the pipeline acts on differently.
//!
//! The SMTP URL decides the encryption: `smtps://` is implicit TLS,
//! `smtp://…?tls=required` is STARTTLS that must succeed, and plain `smtp://` is
//! refused unless the server is on this machine, because the messages carry
//! login links and the login carries the SMTP password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use url::Url;

use super::classify::may_have_been_delivered;
use super::smtp_url::{encryption, login, redact_url, url_host};

use crate::retry::{with_backoff, RetryPolicy};
use crate::secret::Secret;
use crate::signal::StopSignal;

/// Idle connections the pool keeps for reuse. The pool opens as many
/// connections as there are concurrent sends; this only caps how many stay open
/// between messages.
const POOL_IDLE_MAX: u32 = 16;

/// The first retry waits up to this long; each further retry doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// No retry waits longer than this.
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// How to reach the SMTP server.
#[derive(Clone)]
pub struct SmtpSettings {
    /// `smtps://host:465`, `smtp://host:587?tls=required`, or `smtp://host:port`
    /// for a server on a loopback address. May hold `user:password@`.
    pub url: String,
    /// Login name when the URL has none (`LSQ_SMTP_USER`).
    pub user: Option<String>,
    /// Password when the URL has none (`LSQ_SMTP_PASSWORD`).
    pub password: Option<Secret>,
    /// The longest one attempt (connect, log in, send) may take.
    pub timeout: Duration,
    /// The EHLO name (`--helo-name`); when `None`, the machine's fully
    /// qualified name, else the sender's domain (see `helo`).
    pub helo_name: Option<String>,
    /// The sender address's domain, the EHLO name's fallback.
    pub sender_domain: Option<String>,
    /// CA certificates (PEM) to trust besides the built-in and the
    /// system's (`--smtp-ca-file`).
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &redact_url(&self.url))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("timeout", &self.timeout)
            .field("helo_name", &self.helo_name)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Where messages go.
pub enum Transport {
    /// A real SMTP server.
    Smtp(SmtpRelay),
    /// A folder that receives one `.eml` file per message, for review.
    Outbox(PathBuf),
}

/// A pooled SMTP client for one server. Build it with [`Transport::smtp`] inside
/// a tokio runtime, and drop it there too: the pool runs a cleanup task.
pub struct SmtpRelay {
    /// The pool in use; a clone shares it.
    mailer: std::sync::Mutex<AsyncSmtpTransport<Tokio1Executor>>,
    /// Builds a fresh pool when one must be given up (see [`SmtpRelay::send`]).
    builder: Box<AsyncSmtpTransportBuilder>,
    /// `host:port`, for messages.
    pub(super) endpoint: String,
    /// For an `smtps://` URL, the STARTTLS URL to suggest when the server
    /// answers in plain text: `None` for a URL that already uses STARTTLS.
    pub(super) starttls: Option<String>,
    timeout: Duration,
    /// The name given in EHLO, for messages.
    pub(super) helo: String,
    /// Kept only to scrub it from any text a server or library hands back.
    pub(super) password: Option<Secret>,
}

/// Why a message was not delivered, or may not have been.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth another attempt: the server answered 4xx, so it does not have
    /// the message.
    #[error("temporary SMTP failure: {0}")]
    Transient(String),
    /// No connection could be made (refused, no route, no such host, no
    /// answer to connecting), so the server does not have the message.
    /// Retried like [`SendError::Transient`]; says what to check.
    #[error("{0}")]
    Unconnected(String),
    /// The message may or may not have been delivered: the connection failed
    /// or the server went silent at a point that could be after it had the
    /// whole message. Never retried, as a retry could deliver it twice.
    #[error("{0}")]
    InDoubt(String),
    /// The server refused this message for good (5xx); holds its reply.
    #[error("{0}")]
    Permanent(String),
    /// Nothing more can be sent in this run: authentication or TLS failed.
    #[error("{0}")]
    Fatal(String),
}

impl SendError {
    /// True for [`SendError::Fatal`]: the run must stop.
    pub fn is_fatal(&self) -> bool {
        matches!(self, SendError::Fatal(_))
    }
}

impl Transport {
    /// Builds a pooled SMTP transport from `settings.url`. Must be called inside a
    /// tokio runtime. Refuses plaintext to anything but a loopback address.
    /// Credentials come from the URL's `user:password@`, else from
    /// `settings.user` / `settings.password`.
    pub fn smtp(settings: &SmtpSettings) -> anyhow::Result<Transport> {
        let shown = redact_url(&settings.url);
        let url = Url::parse(settings.url.trim())
            .map_err(|e| anyhow!("invalid SMTP URL {shown}: {e}"))?;
        let host = url_host(&url, &shown)?;
        let (tls, default_port) = encryption(&url, &host, &shown, settings.ca_file.as_deref())?;
        let port = url.port().unwrap_or(default_port);
        let (credentials, password) = login(&url, settings, &shown)?;

        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(settings.timeout))
            .pool_config(PoolConfig::new().max_size(POOL_IDLE_MAX));
        // A name in the URL's path (smtp://host/NAME) still wins, as before
        // the setting existed.
        let in_url = Some(url.path().trim_matches('/')).filter(|p| !p.is_empty());
        let helo = super::helo::helo_name(
            in_url.or(settings.helo_name.as_deref()),
            settings.sender_domain.as_deref(),
        );
        builder = builder.hello_name(ClientId::Domain(helo.clone()));
        if let Some(credentials) = credentials {
            builder = builder.credentials(credentials);
        }

        // The pool spawns its cleanup task when built.
        if tokio::runtime::Handle::try_current().is_err() {
            bail!("the SMTP transport must be built inside a tokio runtime");
        }
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        // STARTTLS is usually on 587; a server speaking plain text on
        // another port offers it there.
        let starttls_port = if port == 465 { 587 } else { port };
        Ok(Transport::Smtp(SmtpRelay {
            mailer: std::sync::Mutex::new(builder.clone().build()),
            builder: Box::new(builder),
            endpoint: format!("{host}:{port}"),
            starttls: (url.scheme() == "smtps")
                .then(|| format!("smtp://{host}:{starttls_port}?tls=required")),
            timeout: settings.timeout,
            helo,
            password,
        }))
    }

    /// A transport that writes each message to `dir` as `<message id>.eml`
    /// (mode 0600 on Unix: the files hold login links). Creates the folder and
    /// checks it is writable now, before any API call.
    pub fn outbox(dir: &Path) -> anyhow::Result<Transport> {
        super::outbox::open(dir).map(Transport::Outbox)
    }

    /// Connects and logs in once, so wrong credentials, a TLS mismatch or an
    /// unreachable server stop the run before any key is minted or message sent.
    /// The pipeline should abort on any error here; [`SendError::Fatal`] means the
    /// settings are wrong rather than the server briefly unavailable.
    pub async fn check(&self) -> Result<(), SendError> {
        match self {
            Transport::Outbox(_) => Ok(()),
            Transport::Smtp(relay) => {
                let mailer = relay.pool().clone();
                let test = tokio::time::timeout(relay.timeout, mailer.test_connection());
                match test.await {
                    Err(_) => Err(relay.timed_out()),
                    Ok(Err(e)) => Err(relay.refused_helo(&e).unwrap_or_else(|| relay.classify(&e))),
                    Ok(Ok(true)) => Ok(()),
                    Ok(Ok(false)) => Err(SendError::Transient(format!(
                        "{}: connected, but the server did not answer NOOP",
                        relay.endpoint
                    ))),
                }
            }
        }
    }

    /// Makes one attempt to deliver `message`.
    pub async fn send(&self, message: &Message) -> Result<(), SendError> {
        match self {
            Transport::Outbox(dir) => super::outbox::write(dir, message)
                .await
                .map_err(|e| SendError::Fatal(format!("outbox {}: {e:#}", dir.display()))),
            Transport::Smtp(relay) => relay.send(message).await,
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Smtp(relay) => f.debug_tuple("Smtp").field(relay).finish(),
            Transport::Outbox(dir) => f.debug_tuple("Outbox").field(dir).finish(),
        }
    }
}

impl fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpRelay")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("password", &self.password)
            .finish_non_exhaustive()
    }
}

impl SmtpRelay {
    /// The pool in use: cloned to send, replaced to give it up.
    fn pool(&self) -> std::sync::MutexGuard<'_, AsyncSmtpTransport<Tokio1Executor>> {
        // Nothing panics while the lock is held; a poisoned one still holds a
        // whole pool.
        self.mailer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One attempt. A timeout or a failure that lettre cannot place before the
    /// message was handed over is [`SendError::InDoubt`].
    async fn send(&self, message: &Message) -> Result<(), SendError> {
        let formatted = message.formatted();
        let mailer = self.pool().clone();
        let send = mailer.send_raw(message.envelope(), &formatted);
        match tokio::time::timeout(self.timeout, send).await {
            Err(_) => {
                // Dropping the send hands its connection back to the pool
                // mid-conversation, and the pool would give it to the next
                // message, which would then wait on it too, or read the late
                // reply as the answer to its own commands. A new pool starts
                // clean; the old one closes as its other sends end.
                *self.pool() = self.builder.as_ref().clone().build();
                Err(SendError::InDoubt(format!(
                    "{}: no answer within {:?}; the server may have the message",
                    self.endpoint, self.timeout
                )))
            }
            Ok(Err(e)) if may_have_been_delivered(&e) => {
                Err(self.scrub(SendError::InDoubt(format!(
                    "{}: the connection to the SMTP server was lost after the message was \
                     sent ({e}); the server may have the message",
                    self.endpoint
                ))))
            }
            Ok(Err(e)) => Err(self.classify(&e)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    fn timed_out(&self) -> SendError {
        SendError::Transient(format!(
            "{}: no answer within {:?}",
            self.endpoint, self.timeout
        ))
    }
}

/// Sends `message`, retrying transient failures up to `max_attempts` attempts in
/// all, with the shared [`RetryPolicy`] backoff at SMTP's own pace (see
/// [`smtp_policy`]). Permanent, fatal and in-doubt failures return at once: a
/// message the server may already have is never sent again. Returns the
/// outcome and the number of attempts made.
pub async fn send_with_retry(
    transport: &Transport,
    message: &Message,
    max_attempts: u32,
) -> (Result<(), SendError>, u32) {
    send_with_retry_until(transport, message, max_attempts, &StopSignal::new()).await
}

/// [`send_with_retry`] for a run that may be stopped: once `stop` is raised
/// no retry starts a new transaction, and the last failure stands.
pub(crate) async fn send_with_retry_until(
    transport: &Transport,
    message: &Message,
    max_attempts: u32,
    stop: &StopSignal,
) -> (Result<(), SendError>, u32) {
    with_backoff(
        &smtp_policy(max_attempts),
        |e| matches!(e, SendError::Transient(_) | SendError::Unconnected(_)),
        stop,
        || transport.send(message),
    )
    .await
}

/// How SMTP sends retry: shorter waits than the API's, as a mail server's
/// hiccup (a 4xx, a dropped connection) usually clears within seconds.
fn smtp_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: max_attempts.max(1),
        // An SMTP server sets no rate budget: there are no 429s to count.
        max_rate_limited: 0,
        base: BACKOFF_BASE,
        cap: BACKOFF_CAP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> SmtpSettings {
        SmtpSettings {
            url: url.to_owned(),
            user: None,
            password: None,
            timeout: Duration::from_secs(5),
            helo_name: None,
            sender_domain: None,
            ca_file: None,
        }
    }

    #[test]
    fn plaintext_to_remote_host_is_refused() {
        let err = Transport::smtp(&settings("smtp://u:hunter2@mail.example.com:25"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("smtps://") && err.contains("tls=required"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn bad_urls_are_explained_without_the_password() {
        for url in [
            "http://u:hunter2@mail.example.com",
            "smtp://u:hunter2@mail.example.com?tls=opportunistic",
            "smtp://u:hunter2@mail.example.com?tsl=required",
            "smtp://u:hunter2@",
        ] {
            let err = Transport::smtp(&settings(url)).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[tokio::test]
    async fn loopback_plaintext_is_allowed_and_debug_hides_the_password() {
        for url in [
            "smtp://localhost:2525",
            "smtp://127.0.0.1:2525",
            "smtp://[::1]:2525",
        ] {
            Transport::smtp(&settings(url)).unwrap();
        }
        let t = Transport::smtp(&SmtpSettings {
            password: Some(Secret::new("hunter2")),
            user: Some("me".into()),
            ..settings("smtps://mail.example.com")
        })
        .unwrap();
        let shown = format!("{t:?}");
        assert!(
            shown.contains("mail.example.com:465") && !shown.contains("hunter2"),
            "{shown}"
        );
        let t =
            Transport::smtp(&settings("smtp://me:hunter2@mail.example.com?tls=required")).unwrap();
        let shown = format!("{t:?}");
        assert!(
            shown.contains(":587") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn user_without_password_is_refused() {
        let err = Transport::smtp(&SmtpSettings {
            user: Some("me".into()),
            ..settings("smtps://mail.example.com")
        })
        .unwrap_err();
        assert!(err.to_string().contains("LSQ_SMTP_PASSWORD"), "{err}");
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let policy = smtp_policy(40);
        for attempt in 1..40 {
            let cap = BACKOFF_BASE
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(BACKOFF_CAP);
            assert!(policy.backoff(attempt) <= cap);
        }
    }
}
