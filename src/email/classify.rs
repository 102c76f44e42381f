//! Sorting SMTP failures into the kinds the pipeline acts on differently
//! ([`SendError`]), each with a message that says what failed and what to
//! do: a refused login, a TLS mismatch, a certificate the run does not
//! trust, a refused EHLO name, no connection, or a message the server may
//! already have.

use super::transport::{SendError, SmtpRelay};
use super::trust::certificate_problem;
use crate::secret::Scrubber;

/// What a TLS failure's message says to check.
const TLS_ADVICE: &str = "smtps:// expects implicit TLS (usually port 465), \
    smtp://…?tls=required expects STARTTLS (usually port 587)";

impl SmtpRelay {
    /// For a refusal met while checking the server: when it is the server
    /// refusing this machine's EHLO name, a fatal error that says so.
    pub(super) fn refused_helo(&self, e: &lettre::transport::smtp::Error) -> Option<SendError> {
        let code: u16 = e.status()?.to_string().parse().ok()?;
        let text = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let lower = text.to_ascii_lowercase();
        let about_helo = lower.contains("helo") || lower.contains("ehlo");
        if !(500..600).contains(&code) || !(about_helo || code == 501 || code == 504) {
            return None;
        }
        Some(self.scrub(SendError::Fatal(format!(
            "the SMTP server {} refused the EHLO name {} ({code} {}): set --helo-name \
             (or LSQ_HELO_NAME, or helo_name in the config file) to this machine's fully \
             qualified domain name, one the server accepts, e.g. mail.example.com",
            self.endpoint,
            self.helo,
            text.trim_end()
        ))))
    }

    pub(super) fn classify(&self, e: &lettre::transport::smtp::Error) -> SendError {
        let endpoint = &self.endpoint;
        let reply = || {
            let text = std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            match e.status() {
                Some(code) => format!("{code} {text}").trim_end().to_owned(),
                None => e.to_string(),
            }
        };
        let error = if let Some(problem) = certificate_problem(e) {
            self.certificate_refused(&problem)
        } else if let Some(failure) = connect_failure(e) {
            self.connect_failed(failure)
        } else if e.is_tls() {
            SendError::Fatal(format!(
                "TLS failure with the SMTP server {endpoint}: {e}. {TLS_ADVICE}"
            ))
        } else if let Some(code) = e.status() {
            let code: u16 = code.to_string().parse().unwrap_or(0);
            match code {
                // 530 authentication required, 534 mechanism too weak, 535 bad
                // credentials, 538 encryption required for the mechanism; 454 is
                // a temporary authentication failure, but retrying a login per
                // message would hammer the server, so it stops the run too.
                530 | 534 | 535 | 538 | 454 => SendError::Fatal(format!(
                    "SMTP authentication failed at {endpoint}: {}. Check LSQ_SMTP_USER / \
                     LSQ_SMTP_PASSWORD (or the user:password in --smtp-url)",
                    reply()
                )),
                400..=499 => SendError::Transient(reply()),
                _ => SendError::Permanent(reply()),
            }
        } else if e.is_client() {
            let text = e.to_string();
            if text.contains("STARTTLS") {
                SendError::Fatal(format!(
                    "SMTP server {endpoint}: {text}: the URL asks for STARTTLS \
                     (?tls=required), which the server does not offer on this port; check \
                     the port in --smtp-url, or use smtps:// if the server speaks implicit \
                     TLS (usually port 465)"
                ))
            } else if text.contains("authentication mechanism") {
                SendError::Fatal(format!(
                    "SMTP server {endpoint}: {text}; check --smtp-url and LSQ_SMTP_USER / \
                     LSQ_SMTP_PASSWORD"
                ))
            } else {
                SendError::Permanent(text)
            }
        } else if e.is_transport_shutdown() {
            SendError::Fatal(format!("SMTP transport to {endpoint} was shut down"))
        } else {
            SendError::Transient(format!("{endpoint}: {e}"))
        };
        self.scrub(error)
    }

    /// A certificate the run does not trust: fatal, as every message
    /// would meet it.
    fn certificate_refused(&self, problem: &str) -> SendError {
        SendError::Fatal(format!(
            "TLS failure with the SMTP server {}: {problem}",
            self.endpoint
        ))
    }

    /// What to say when no SMTP conversation could start.
    fn connect_failed(&self, failure: ConnectFailure) -> SendError {
        let endpoint = &self.endpoint;
        match (failure, &self.starttls) {
            (ConnectFailure::PlainText, Some(starttls)) => SendError::Fatal(format!(
                "the SMTP server {endpoint} did not answer TLS: an smtps:// URL starts \
                 with TLS (implicit TLS, usually port 465), but the server speaks plain SMTP \
                 on this port. Use {starttls} (STARTTLS), or smtps:// to the port where the \
                 server speaks implicit TLS"
            )),
            (ConnectFailure::PlainText, None) => SendError::Fatal(format!(
                "the SMTP server {endpoint} did not answer TLS after STARTTLS; check \
                 --smtp-url"
            )),
            (ConnectFailure::Tls(cause), _) => SendError::Fatal(format!(
                "TLS failure with the SMTP server {endpoint}: {cause}. {TLS_ADVICE}"
            )),
            (ConnectFailure::Unreached(why), _) => SendError::Unconnected(format!(
                "cannot connect to the SMTP server {endpoint} ({why}): check that \
                 --smtp-url names the right host and port, and that the server is running \
                 and accepts connections from this machine"
            )),
        }
    }

    /// A server may echo what it was sent (an `AUTH PLAIN` line holds the
    /// password in base64); the password must not reach a report.
    pub(super) fn scrub(&self, error: SendError) -> SendError {
        let scrubber = Scrubber::new(&self.password);
        let clean = |s: String| scrubber.scrub(&s);
        match error {
            SendError::Transient(s) => SendError::Transient(clean(s)),
            SendError::Unconnected(s) => SendError::Unconnected(clean(s)),
            SendError::InDoubt(s) => SendError::InDoubt(clean(s)),
            SendError::Permanent(s) => SendError::Permanent(clean(s)),
            SendError::Fatal(s) => SendError::Fatal(clean(s)),
        }
    }
}

/// Why no SMTP conversation could start.
#[derive(Debug, PartialEq)]
enum ConnectFailure {
    /// The TLS handshake met plain text: the server does not speak TLS there.
    PlainText,
    /// Another TLS failure (a certificate, say).
    Tls(String),
    /// No connection: refused, unreachable, no such host, timed out.
    Unreached(String),
}

/// For a failure to connect or to set up TLS (lettre's connection errors,
/// which come before any SMTP command), what it was. lettre has no
/// `is_connection()`, so such errors are told by their text, as in
/// [`may_have_been_delivered`]; the cause is the first I/O error below.
fn connect_failure(e: &lettre::transport::smtp::Error) -> Option<ConnectFailure> {
    use std::io::ErrorKind;
    if !e.to_string().starts_with("Connection error") {
        return None;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            let tls = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
            return Some(match (tls, io.kind()) {
                (
                    Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)),
                    _,
                ) => ConnectFailure::PlainText,
                (Some(tls), _) => ConnectFailure::Tls(tls.to_string()),
                (None, ErrorKind::ConnectionRefused) => {
                    ConnectFailure::Unreached("connection refused".into())
                }
                (None, ErrorKind::TimedOut) => {
                    ConnectFailure::Unreached("no answer to connecting".into())
                }
                (None, _) => ConnectFailure::Unreached(io.to_string()),
            });
        }
        source = cause.source();
    }
    let text = e.to_string();
    let cause = text.trim_start_matches("Connection error: ");
    Some(ConnectFailure::Unreached(cause.to_owned()))
}

/// Whether a failed send may have delivered the message anyway.
///
/// lettre (0.11) gives one error for the whole conversation, from connecting
/// to the reply after the final `.`, and its kind does not say at which step
/// it happened:
/// - a 4xx or 5xx reply ([`status`](lettre::transport::smtp::Error::status)):
///   the server answered, and a negative answer means it did not take the
///   message, whatever the step;
/// - TLS, client (the message or the server's extensions ruled out before
///   MAIL) and shut-down transport errors: nothing of the message was sent;
/// - a connection error (`Kind::Connection`, shown as "Connection error"):
///   made only while resolving, connecting or setting up TLS, before any SMTP
///   command. lettre has no `is_connection()`, so it is told by its text; if a
///   later lettre words it differently, the error falls to the next case;
/// - a network error (a read or write failed) or a response error (the
///   connection closed, or a reply could not be read): these arise at any
///   step, after the payload as well as before MAIL. Which one cannot be told,
///   so they are taken as in doubt, even though many happened earlier.
///
/// The caller's timeout around the whole send cannot be placed either; it is
/// in doubt too.
pub(super) fn may_have_been_delivered(e: &lettre::transport::smtp::Error) -> bool {
    let nothing_sent = e.status().is_some()
        || e.is_tls()
        || e.is_client()
        || e.is_transport_shutdown()
        || e.to_string().starts_with("Connection error");
    !nothing_sent
}
