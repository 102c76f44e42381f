//! Pings to a cron monitor, in the convention healthchecks.io and its kin
//! use: `POST URL/start` when the run starts, `POST URL` when it succeeded
//! (exit 0), `POST URL/fail` on any other end, the last two with the
//! summary JSON as their body.
//!
//! A ping is a courtesy to the monitor, never a part of the job: one that
//! fails is warned about, and none holds the run up for longer than
//! [`TIMEOUT`]. The start ping goes out while the run works, and the
//! closing one waits for it, so the monitor sees them in order. The URL
//! usually holds the check's secret token, so messages name only its
//! origin (`https://hc-ping.com/…`).

use std::fmt;
use std::time::Duration;

use url::Url;

use crate::exit::Exit;

/// The longest a ping may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a ping may wait for its connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A cron monitor's ping URL: https, or http to loopback. Its `Debug`
/// shows only the host.
#[derive(Clone, PartialEq, Eq)]
pub struct PingUrl(Url);

impl fmt::Debug for PingUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PingUrl({})", self.host())
    }
}

impl PingUrl {
    /// Checks a `--ping-url` value. The complaint never quotes it.
    pub fn parse(value: &str) -> Result<PingUrl, String> {
        let url = Url::parse(value.trim()).map_err(|e| {
            format!("--ping-url (or LSQ_PING_URL) is not a URL ({e}): give the check's ping URL, e.g. https://hc-ping.com/<uuid>")
        })?;
        let host = url.host_str().unwrap_or_default().to_owned();
        match url.scheme() {
            "https" if !host.is_empty() => Ok(PingUrl(url)),
            "http" if crate::portal_url::is_loopback(&host) => Ok(PingUrl(url)),
            "http" => Err(format!(
                "--ping-url (or LSQ_PING_URL) to {host} uses plain http, which would send its \
                 token in clear: use https (plain http only to loopback)"
            )),
            scheme => Err(format!(
                "--ping-url (or LSQ_PING_URL) has scheme {scheme:?}: give an https:// URL"
            )),
        }
    }

    /// The host the pings go to, the part of the URL that may be shown.
    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    /// The URL as a message shows it: its origin, the path and query (where
    /// the token is) left out.
    fn shown(&self) -> String {
        format!("{}/…", self.0.origin().ascii_serialization())
    }

    /// The URL with one more path segment (`start`, `fail`), before any
    /// query.
    fn with_segment(&self, segment: &str) -> Url {
        let mut url = self.0.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push(segment);
        }
        url
    }
}

/// The pings of one run.
pub(crate) struct Pinger {
    url: PingUrl,
    client: reqwest::Client,
    started: Option<tokio::task::JoinHandle<()>>,
}

impl Pinger {
    /// Sends the start ping, in the background.
    pub(crate) fn start(url: PingUrl) -> Pinger {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // The token must not follow a redirect to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lsq-dispatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let request = client.post(url.with_segment("start"));
        let to = url.clone();
        let started = tokio::spawn(async move { send(request, &to, "start").await });
        Pinger {
            url,
            client,
            started: Some(started),
        }
    }

    /// Sends the closing ping for a run that ended with `exit`, with the
    /// summary JSON as its body, once the start ping is done.
    pub(crate) async fn finish(mut self, exit: Exit, summary: Vec<u8>) {
        // A start ping still unanswered when the run ends is given up: the
        // closing ping says all a monitor needs, and one slow monitor must
        // not cost the run two time-outs.
        if let Some(started) = self.started.take() {
            if !started.is_finished() {
                started.abort();
            }
            let _ = started.await;
        }
        let (url, what) = match exit {
            Exit::Success => (self.url.0.clone(), "success"),
            _ => (self.url.with_segment("fail"), "fail"),
        };
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(summary);
        send(request, &self.url, what).await;
    }
}

/// Whether `error` is a time-out, however deep in its causes.
fn timed_out(error: &reqwest::Error) -> bool {
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        let io = e.downcast_ref::<std::io::Error>();
        if io.is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        cause = e.source();
    }
    error.is_timeout()
}

/// Sends one ping; a failure is a warning naming the host (or the URL's
/// origin), never the URL.
async fn send(request: reqwest::RequestBuilder, url: &PingUrl, what: &str) {
    let host = url.host();
    let failure = match request.send().await {
        Ok(answer) if answer.status().is_success() => {
            tracing::debug!(host, "{what} ping to {host} delivered");
            return;
        }
        Ok(answer) => format!("it answered {}", answer.status()),
        Err(e) if timed_out(&e) => {
            let (after, waiting) = match e.is_connect() {
                true => (CONNECT_TIMEOUT, "for a connection"),
                false => (TIMEOUT, "for an answer"),
            };
            tracing::warn!(
                host,
                "the {what} ping to {} timed out after {} s (waiting {waiting}); the run goes \
                 on: check --ping-url (or LSQ_PING_URL) and that the monitor is up",
                url.shown(),
                after.as_secs()
            );
            return;
        }
        Err(e) if e.is_connect() => format!("cannot connect: {}", e.without_url()),
        Err(e) => e.without_url().to_string(),
    };
    tracing::warn!(
        host,
        "the {what} ping to the cron monitor at {host} failed ({failure}); the run goes on: \
         check --ping-url (or LSQ_PING_URL)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_taken_and_the_token_is_never_quoted() {
        let token = "https://hc-ping.com/5f1c2e44-secret-token";
        let url = PingUrl::parse(token).unwrap();
        assert_eq!(url.host(), "hc-ping.com");
        assert_eq!(url.shown(), "https://hc-ping.com/…");
        assert!(!format!("{url:?}").contains("secret"));
        assert!(PingUrl::parse("http://127.0.0.1:8000/ping/abc").is_ok());
        for bad in [
            "http://hc-ping.com/secret-token",
            "ftp://hc-ping.com/secret-token",
            "hc-ping.com/secret-token",
        ] {
            let message = PingUrl::parse(bad).unwrap_err();
            assert!(!message.contains("secret-token"), "{message}");
        }
    }

    #[test]
    fn start_and_fail_are_path_segments_before_the_query() {
        let url = PingUrl::parse("https://hc-ping.com/abc?rid=1").unwrap();
        assert_eq!(
            url.with_segment("start").as_str(),
            "https://hc-ping.com/abc/start?rid=1"
        );
        let url = PingUrl::parse("https://hc-ping.com/abc/").unwrap();
        assert_eq!(
            url.with_segment("fail").as_str(),
            "https://hc-ping.com/abc/fail"
        );
    }
}
