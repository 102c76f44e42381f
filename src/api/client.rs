//! The HTTP client: one connection pool, the URLs with their percent-encoded
//! credentials, and the Generate and tenant-key calls. One call is one
//! attempt.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpInfo;
use serde::{Deserialize, Serialize};
use url::Url;

use super::error::{classify, parse_retry_after, transport_error};
use super::ApiError;
use crate::limiter::{note_connection, note_setup, watch_opening, Connection};
use crate::secret::{Scrubber, Secret};

/// Body of Generate lead-level auth key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateRequest<'a> {
    lead_id: &'a str,
    portal_id: &'a str,
}

/// Answer of Generate lead-level auth key.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GeneratedKey {
    /// The lead's auth key, valid 4 h.
    pub auth_key: String,
    /// The lead it logs in.
    pub lead_id: String,
}

/// How to reach the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Base URL, e.g. `https://portalapi-in21.leadsquared.com`.
    pub host: Url,
    /// Access key.
    pub access_key: Secret,
    /// Secret key.
    pub secret_key: Secret,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// A thin client over one connection pool.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    pub(super) http: reqwest::Client,
    settings: ApiSettings,
    /// Takes the access and secret keys out of what a server says.
    scrubber: Scrubber,
    /// The connections calls have used.
    connections: Arc<Connections>,
}

/// The local addresses of the connections calls have used, to tell the
/// limiter whether a call opened a connection (and so may have reached the
/// server late) or reused one.
#[derive(Debug, Default)]
struct Connections(Mutex<HashSet<SocketAddr>>);

/// Local addresses remembered at most; forgetting them only makes calls
/// count as new connections, the safe side.
const CONNECTIONS_REMEMBERED: usize = 4096;

/// Times how long opening each connection takes (name lookup, TCP and TLS
/// handshakes) and notes it for the call that waits for it: a lost SYN or a
/// slow handshake delays that call's arrival by as much. It also opens
/// connections [`CONNECT_SPACING`] apart: a burst of SYNs at once overflows a
/// listener's small accept backlog, and the dropped ones are sent again only
/// a second later.
#[derive(Debug, Clone, Default)]
struct TimedSetup {
    /// When the next connection may start opening.
    next: Arc<Mutex<Option<tokio::time::Instant>>>,
}

/// The least time between the starts of two connections' opening: a
/// listener that accepts a connection a millisecond never finds its queue
/// full, and the 25 connections of a first burst take 50 ms.
const CONNECT_SPACING: Duration = Duration::from_millis(2);

impl TimedSetup {
    /// This connection's turn to start opening.
    fn turn(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let turn = next.map_or(now, |at| at.max(now));
        *next = Some(turn + CONNECT_SPACING);
        turn
    }
}

impl<S> tower_layer::Layer<S> for TimedSetup {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Timed<S> {
        Timed(inner, self.clone())
    }
}

/// The connector, timed and spaced: see [`TimedSetup`].
#[derive(Debug, Clone)]
struct Timed<S>(S, TimedSetup);

impl<S, R> tower_service::Service<R> for Timed<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let started = tokio::time::Instant::now();
        let turn = self.1.turn();
        let connecting = self.0.call(request);
        Box::pin(watch_opening(async move {
            tokio::time::sleep_until(turn).await;
            let connected = connecting.await;
            note_setup(started.elapsed());
            connected
        }))
    }
}

impl Connections {
    /// Notes the connection `response` came over, for the limiter.
    fn note(&self, response: &reqwest::Response) {
        let Some(info) = response.extensions().get::<HttpInfo>() else {
            return;
        };
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= CONNECTIONS_REMEMBERED {
            seen.clear();
        }
        note_connection(if seen.insert(info.local_addr()) {
            Connection::New { setup: None }
        } else {
            Connection::Reused
        });
    }
}

impl ApiClient {
    /// Builds the client (no network yet).
    pub(crate) fn new(settings: ApiSettings) -> anyhow::Result<ApiClient> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            // A redirect would take the keys in the query and body to
            // another host, and a Referer would name them.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .user_agent(concat!("lsq-dispatch/", env!("CARGO_PKG_VERSION")))
            .connector_layer(TimedSetup::default())
            .build()?;
        let scrubber = Scrubber::new([&settings.access_key, &settings.secret_key]);
        Ok(ApiClient {
            http,
            settings,
            scrubber,
            connections: Arc::default(),
        })
    }

    /// The host's origin, e.g. `https://portalapi.leadsquared.com`: safe to
    /// print, it holds no key.
    pub(crate) fn origin(&self) -> String {
        self.settings.host.origin().ascii_serialization()
    }

    /// A URL on the host with the given path and query pairs, each value
    /// percent-encoded (keys hold `$ + / = &`).
    pub(super) fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.settings.host.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{}", path.trim_start_matches('/')));
        if query.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(query);
        }
        url
    }

    /// The access and secret keys as query pairs.
    pub(super) fn credentials(&self) -> [(&str, &str); 2] {
        [
            ("accessKey", self.settings.access_key.expose()),
            ("secretKey", self.settings.secret_key.expose()),
        ]
    }

    /// Generate lead-level auth key: one attempt.
    pub(crate) async fn generate(
        &self,
        tenant_key: &Secret,
        lead_id: &str,
        portal_id: &str,
    ) -> Result<GeneratedKey, ApiError> {
        let [a, s] = self.credentials();
        let url = self.url(
            "/api/AutoLogin/Generate",
            &[a, s, ("authkey", tenant_key.expose())],
        );
        let request = self
            .http
            .post(url)
            .json(&GenerateRequest { lead_id, portal_id });
        let key: GeneratedKey = self.send_json(request, &[tenant_key]).await?;
        if key.auth_key.is_empty() {
            return Err(ApiError::Protocol("the answer holds no AuthKey".into()));
        }
        Ok(key)
    }

    /// Mints a tenant auth key through the configured endpoint (the path is not
    /// in the public docs); the answer is a bare JSON string.
    pub(crate) async fn mint_tenant_key(
        &self,
        path: &str,
        method: &str,
    ) -> Result<Secret, ApiError> {
        let url = self.url(path, &self.credentials());
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| ApiError::Protocol(format!("invalid tenant key method {method:?}")))?;
        let request = self.http.request(method, url);
        let key: String = self.send_json(request, &[]).await?;
        if key.is_empty() {
            return Err(ApiError::Protocol("the tenant key answer is empty".into()));
        }
        Ok(Secret::new(key))
    }

    /// Sends a request and decodes a 2xx JSON answer, classifying everything
    /// else. Every text in the answer or the error is scrubbed of the access
    /// and secret keys and of `secrets`, the other keys the request carries:
    /// a server may echo them.
    pub(crate) async fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        secrets: &[&Secret],
    ) -> Result<T, ApiError> {
        let scrubber = self.scrubber.with(secrets.iter().copied());
        self.exchange(request, &scrubber)
            .await
            .map_err(|e| e.scrubbed(&scrubber))
    }

    async fn exchange<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        scrubber: &Scrubber,
    ) -> Result<T, ApiError> {
        let response = request.send().await.map_err(transport_error)?;
        self.connections.note(&response);
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            return Err(ApiError::Redirected {
                status,
                to: redirect_target(&response),
            });
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_capped(response).await?;
        classify(status, retry_after, &scrubber.scrub_bytes(&body))
    }
}

/// The most of an answer the client reads. LeadSquared's answers are a few
/// hundred bytes; a larger one is refused unread beyond this, so fifty calls
/// in flight cost a few MiB however much a server sends.
const MAX_ANSWER: usize = 256 * 1024;

/// The answer's body, read piece by piece up to [`MAX_ANSWER`]; a longer one
/// (announced, or found while reading) is a row failure.
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, ApiError> {
    let status = response.status().as_u16();
    let too_large = || {
        ApiError::Protocol(format!(
            "HTTP {status} with an answer over {} KiB, refused unread; is --host your region's \
             LeadSquared portal API host?",
            MAX_ANSWER / 1024
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(piece) = response.chunk().await.map_err(transport_error)? {
        if body.len() + piece.len() > MAX_ANSWER {
            return Err(too_large());
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

/// Where a redirect points, as scheme, host and port: never its path or
/// query, which may echo the keys.
fn redirect_target(response: &reqwest::Response) -> String {
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok());
    match location.map(|l| response.url().join(l)) {
        Some(Ok(url)) => url.origin().ascii_serialization(),
        Some(Err(_)) => "a Location that is no URL".into(),
        None => "nowhere (no Location)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        let client = ApiClient::new(ApiSettings {
            host: Url::parse("https://portalapi.leadsquared.com/").unwrap(),
            access_key: Secret::new("a$b"),
            secret_key: Secret::new("s+/=&x"),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        let [a, s] = client.credentials();
        let url = client.url("/api/AutoLogin/Generate", &[a, s, ("authkey", "k +=")]);
        assert_eq!(
            url.as_str(),
            "https://portalapi.leadsquared.com/api/AutoLogin/Generate?accessKey=a%24b&secretKey=s%2B%2F%3D%26x&authkey=k+%2B%3D"
        );
        let pairs: Vec<_> = url.query_pairs().map(|(_, v)| v.into_owned()).collect();
        assert_eq!(pairs, ["a$b", "s+/=&x", "k +="]);
    }

    /// A client of `sandbox`, and what a key generation sends it.
    fn client_of(sandbox: &lsq_sandbox::Sandbox) -> (ApiClient, Secret, String) {
        let config = sandbox.config().clone();
        let client = ApiClient::new(ApiSettings {
            host: Url::parse(&sandbox.base_url()).unwrap(),
            access_key: Secret::new(config.access_key.clone()),
            secret_key: Secret::new(config.secret_key.clone()),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        })
        .unwrap();
        let tenant = Secret::new(config.tenant_auth_key.clone());
        (client, tenant, config.portal_ids[0].clone())
    }

    const LEAD: &str = "0a1b2c3d-0000-4000-8000-000000000001";

    /// Generates `calls` keys from `sandbox` at once, and says for each
    /// which connection it used and how long it took.
    async fn at_once(sandbox: &lsq_sandbox::Sandbox, calls: usize) -> Vec<(Connection, Duration)> {
        use crate::limiter::observing;
        let (client, tenant, portal) = client_of(sandbox);
        let calls: Vec<_> = (0..calls)
            .map(|_| {
                let (client, tenant, portal) = (client.clone(), tenant.clone(), portal.clone());
                tokio::spawn(async move {
                    let started = tokio::time::Instant::now();
                    let (answer, connection) =
                        observing(client.generate(&tenant, LEAD, &portal)).await;
                    answer.unwrap();
                    (connection, started.elapsed())
                })
            })
            .collect();
        let mut seen = Vec::new();
        for call in calls {
            seen.push(call.await.unwrap());
        }
        seen
    }

    /// The limiter blocks a slot longer after a call that opened a
    /// connection: the client must tell it which calls did, on a real
    /// server.
    #[tokio::test]
    async fn says_which_calls_opened_a_connection() {
        use crate::limiter::observing;
        use lsq_sandbox::{Sandbox, SandboxConfig};
        // The sandbox closes a connection idle for this long.
        let idle = Duration::from_millis(300);
        let sandbox = Sandbox::start(SandboxConfig {
            idle_timeout: idle,
            ..SandboxConfig::default()
        })
        .await
        .unwrap();
        let (client, tenant, portal) = client_of(&sandbox);
        let mut seen = Vec::new();
        for pause in [Duration::ZERO, Duration::ZERO, idle * 3, Duration::ZERO] {
            tokio::time::sleep(pause).await;
            let (answer, connection) = observing(client.generate(&tenant, LEAD, &portal)).await;
            answer.unwrap();
            seen.push(connection);
        }
        let kinds: Vec<&str> = seen
            .iter()
            .map(|c| match c {
                Connection::New { setup: Some(_) } => "new, timed",
                Connection::New { setup: None } => "new",
                Connection::Reused => "reused",
                Connection::Pooled { .. } => "pooled",
                Connection::Unknown => "unknown",
            })
            .collect();
        // The server closed the idle connection before the third call: the
        // client opened another, and timed its set-up both times.
        assert_eq!(kinds, ["new, timed", "reused", "new, timed", "reused"]);
        sandbox.shutdown().await;
    }

    /// A burst of calls at once against a listener with an accept backlog
    /// of 10 that accepts a connection a millisecond: opened at once, more
    /// than half the SYNs would find the queue full and be sent again a
    /// second later. Spaced, every connection opens at once (the backlog
    /// leaves room for a loaded machine's late accepts).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opens_a_bursts_connections_apart_so_a_small_backlog_drops_no_syn() {
        use lsq_sandbox::{Sandbox, SandboxConfig};
        let sandbox = Sandbox::start(SandboxConfig {
            slow_accept: Some((10, Duration::from_millis(1))),
            // Every call still under way when the last connection opens.
            service_time: (Duration::from_millis(300), Duration::from_millis(300)),
            ..SandboxConfig::default()
        })
        .await
        .unwrap();
        let mut setups = Vec::new();
        for (connection, _) in at_once(&sandbox, 25).await {
            if let Connection::New { setup: Some(setup) } = connection {
                setups.push(setup);
            }
        }
        // A call whose SYN was dropped takes a connection that falls idle
        // before its own opens.
        assert!(
            setups.len() >= 20,
            "{} of 25 calls opened their own connection: {setups:?}",
            setups.len()
        );
        let late = setups.iter().filter(|s| **s >= Duration::from_millis(900));
        assert_eq!(late.count(), 0, "SYNs sent again: {setups:?}");
        sandbox.shutdown().await;
    }

    /// A call whose own connection is slow to open (its SYN dropped by a
    /// full accept queue and sent again a second later) takes a connection
    /// that falls idle meanwhile: its request is written then, not when the
    /// call started, and the client says so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn says_when_a_call_got_a_connection_that_fell_idle_while_its_own_was_opening() {
        use lsq_sandbox::{Sandbox, SandboxConfig};
        let service = Duration::from_millis(300);
        // An accept backlog of 1 and one accept every 200 ms: of 8 calls at
        // once, a few connect, the others' SYNs are dropped.
        let sandbox = Sandbox::start(SandboxConfig {
            slow_accept: Some((1, Duration::from_millis(200))),
            service_time: (service, service),
            ..SandboxConfig::default()
        })
        .await
        .unwrap();
        let slack = Duration::from_millis(150);
        let mut pooled = 0;
        for (connection, took) in at_once(&sandbox, 8).await {
            // How long before its answer the request was written: about the
            // service time, never much more.
            let written_before_answer = match connection {
                Connection::Reused => took,
                Connection::Pooled {
                    waited: Some(waited),
                } => {
                    pooled += 1;
                    took.saturating_sub(waited)
                }
                Connection::Pooled { waited: None } => {
                    pooled += 1;
                    continue;
                }
                // May have waited in the accept queue: another rule's case.
                Connection::New { setup: Some(_) } => continue,
                // One opened in the background for another call: timed
                // from its answer less the quickest answer seen.
                Connection::New { setup: None } => {
                    pooled += 1;
                    continue;
                }
                other => panic!("{other:?}"),
            };
            assert!(
                written_before_answer < service + slack,
                "{connection:?} answered {took:?} after the call started"
            );
        }
        assert!(pooled > 0, "no call took a connection it did not open");
        sandbox.shutdown().await;
    }
}
