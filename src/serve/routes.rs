//! The routes: the link (`GET`/`HEAD` show a page, `POST` sends the person on
//! to the portal with a live key), the probes and the metrics, and the guard
//! every request passes: size and time limits, and the headers every answer
//! carries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::metrics::Outcome;
use super::pages::Page;
use super::{Peer, Service};
use crate::api::ApiError;
use crate::config::BudgetStore;
use crate::redirect::{LinkClaims, TokenError};
use crate::secret::Secret;
use crate::signal::{Stop, StopSignal};

/// The largest request head (request line and headers) taken.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// The largest request body taken: the link's form posts none.
const MAX_BODY: u64 = 8 * 1024;

/// The router of the service.
pub(crate) fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/l/{token}", get(show).post(click))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&service),
            guard,
        ))
        .with_state(service)
}

/// Refuses oversized requests, bounds each request's time, and puts the
/// security headers on every answer.
async fn guard(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    let head: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + request.uri().to_string().len();
    let body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut response = if head > MAX_HEAD {
        service.page_with(
            Page::Invalid,
            "",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        )
    } else if body > MAX_BODY {
        service.page_with(Page::Invalid, "", StatusCode::PAYLOAD_TOO_LARGE)
    } else {
        match tokio::time::timeout(service.settings.request_timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => service.page_with(Page::Busy, "", StatusCode::SERVICE_UNAVAILABLE),
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Some(csp) = &service.csp {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    }
    response
}

/// `GET`/`HEAD /l/TOKEN`: the page whose button POSTs back. No key, no call.
async fn show(
    State(service): State<Arc<Service>>,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    service.metrics.view();
    let Ok(Path(token)) = token else {
        return service.page(Page::Invalid, "");
    };
    match service.secrets.open(&token, unix_now()) {
        Ok(claims) => service.page(Page::Open, &claims.campaign),
        Err(TokenError::Expired) => service.page(Page::Expired, ""),
        Err(TokenError::Invalid) => service.page(Page::Invalid, ""),
    }
}

/// `POST /l/TOKEN`: a 303 to the portal with a live key, or the page that
/// says why not. One log line per click, with neither key nor token.
async fn click(
    State(service): State<Arc<Service>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let started = Instant::now();
    let client = super::clients::client_of(peer.ip(), &headers, &service.settings.trusted_proxies);
    let (outcome, claims, response) = if !service.clients.admit(client, started) {
        (Outcome::Limited, None, service.page(Page::Limited, ""))
    } else {
        match token.map(|Path(t)| service.secrets.open(&t, unix_now())) {
            Ok(Ok(claims)) => {
                let (outcome, response) = service.answer(&claims, started).await;
                (outcome, Some(claims), response)
            }
            Ok(Err(TokenError::Expired)) => {
                (Outcome::Expired, None, service.page(Page::Expired, ""))
            }
            Ok(Err(TokenError::Invalid)) | Err(_) => {
                (Outcome::Invalid, None, service.page(Page::Invalid, ""))
            }
        }
    };
    service.metrics.click(outcome);
    let (campaign, lead) = claims
        .as_ref()
        .map_or(("", ""), |c| (c.campaign.as_str(), c.lead_id.as_str()));
    tracing::info!(
        campaign,
        lead,
        outcome = outcome.name(),
        latency_ms = started.elapsed().as_millis() as u64,
        "click"
    );
    response
}

impl Service {
    /// The answer to a click on a valid link: the key in the token while it
    /// lives, else the cache's, else one minted now, within the budget wait.
    async fn answer(&self, claims: &LinkClaims, started: Instant) -> (Outcome, Response) {
        let margin = self.settings.key_margin().as_secs_f64().ceil() as u64;
        let usable_after = unix_now() + margin;
        if let Some((key, expires)) = &claims.key {
            if *expires > usable_after {
                return (Outcome::TokenKey, self.redirect(claims, key));
            }
        }
        let lead = (claims.lead_id.clone(), claims.portal_id.clone());
        if let Some((key, _)) = self.cache.get(&lead, usable_after).await {
            return (Outcome::Cached, self.redirect(claims, &key));
        }
        let wait = self.settings.budget_wait;
        let Ok(_flight) = tokio::time::timeout(wait, self.cache.one_at_a_time(&lead)).await else {
            return (Outcome::Busy, self.page(Page::Busy, &claims.campaign));
        };
        // Another click may have minted it meanwhile.
        let usable_after = unix_now() + margin;
        if let Some((key, _)) = self.cache.get(&lead, usable_after).await {
            return (Outcome::Cached, self.redirect(claims, &key));
        }
        // Past the budget wait no attempt starts; one under way finishes.
        let stop = StopSignal::new();
        let timer = {
            let stop = stop.clone();
            let left = wait.saturating_sub(started.elapsed());
            tokio::spawn(async move {
                tokio::time::sleep(left).await;
                stop.raise(Stop::Finish);
            })
        };
        let minting = Instant::now();
        let minted_at = unix_now();
        let done = self.caller.generate(&lead.0, &lead.1, &stop).await;
        timer.abort();
        self.metrics.minting(minting.elapsed(), done.rate_limited);
        match done.result {
            Ok(generated) => {
                let key = Secret::new(generated.auth_key);
                let expires = minted_at + self.settings.key_lifetime.as_secs();
                self.cache.put(&lead, &key, expires, minted_at).await;
                (Outcome::Minted, self.redirect(claims, &key))
            }
            Err(ApiError::NotStarted) => (Outcome::Busy, self.page(Page::Busy, &claims.campaign)),
            Err(error) => {
                tracing::warn!(
                    campaign = claims.campaign,
                    lead = claims.lead_id,
                    "minting a key failed: {}",
                    failure(&error)
                );
                (Outcome::Failed, self.page(Page::Failed, &claims.campaign))
            }
        }
    }

    /// `303 See Other` to the portal page with `key`: the only place a key
    /// is ever written.
    fn redirect(&self, claims: &LinkClaims, key: &Secret) -> Response {
        let ids = self
            .settings
            .link_ids
            .then_some((claims.lead_id.as_str(), claims.portal_id.as_str()));
        let link = crate::portal_url::login_link(&self.settings.portal_url, key.expose(), ids);
        match HeaderValue::from_str(link.as_str()) {
            Ok(location) => {
                let mut response = StatusCode::SEE_OTHER.into_response();
                response.headers_mut().insert(header::LOCATION, location);
                response
            }
            Err(_) => self.page(Page::Failed, &claims.campaign),
        }
    }

    fn page(&self, page: Page, campaign: &str) -> Response {
        self.page_with(page, campaign, page.status())
    }

    fn page_with(&self, page: Page, campaign: &str, status: StatusCode) -> Response {
        let mut response = (status, self.pages.render(page, campaign)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        if matches!(page, Page::Busy | Page::Limited) {
            let seconds = super::pages::RETRY_SECONDS.to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// What went wrong, in words of our own: the API's message is never repeated.
fn failure(error: &ApiError) -> String {
    match error {
        ApiError::Unauthorized { .. } => "401 from the API: check LSQ_ACCESS_KEY / LSQ_SECRET_KEY \
            (and LSQ_TENANT_AUTH_KEY) and that --host is your region's portal API host"
            .into(),
        ApiError::NotFound { .. } => "404 from the API: check --host".into(),
        ApiError::RateLimited { .. } => "the API kept answering 429".into(),
        ApiError::Rejected { status, .. } => {
            format!("the API refused the lead ({status}); is the lead or portal still there?")
        }
        ApiError::Server { status, .. } => format!("the API answered {status}"),
        ApiError::Timeout(_) => "the API did not answer in time".into(),
        ApiError::Transport(_) | ApiError::Unconnected(_) | ApiError::Unreachable { .. } => {
            "the API host could not be reached".into()
        }
        ApiError::Budget(_) => "the shared budget store could not be used".into(),
        _ => "the API gave an answer that could not be read".into(),
    }
}

/// `/readyz`: 200 when the API host takes a connection and the budget
/// store can be used.
async fn readyz(State(service): State<Arc<Service>>) -> Response {
    let api = api_reachable(&service.settings.api.host).await;
    let store = match &service.settings.budget_store {
        BudgetStore::Machine(dir) => writable(dir),
        BudgetStore::Redis(_) => service.cache.ready().await,
        BudgetStore::Own => true,
    };
    let text = format!(
        "api host: {}\nbudget store: {}\n",
        if api { "reachable" } else { "unreachable" },
        if store { "usable" } else { "unusable" }
    );
    let status = match api && store {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, text).into_response()
}

async fn api_reachable(host: &url::Url) -> bool {
    let (Some(name), Some(port)) = (host.host_str(), host.port_or_known_default()) else {
        return false;
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let connect = tokio::net::TcpStream::connect((name, port));
    matches!(
        tokio::time::timeout(Duration::from_secs(3), connect).await,
        Ok(Ok(_))
    )
}

fn writable(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access reads a NUL-terminated path and has no other precondition.
    dir.is_dir() && unsafe { libc::access(path.as_ptr(), libc::W_OK) } == 0
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    let mut response = service.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn not_found(State(service): State<Arc<Service>>) -> Response {
    service.page(Page::Invalid, "")
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
