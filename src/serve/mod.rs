//! `lsq-dispatch serve`: the link service behind redirect links
//! (`BASE/l/TOKEN`). A GET shows a page and spends nothing (mail scanners
//! fetch every link); the page's POST sends the person on to the portal with
//! a live key: the one in the token, one from the cache, or one minted then
//! through the same limiter and shared budget as every batch run.
//!
//! It listens on loopback by default, for a TLS reverse proxy in front; each
//! connection's request head is bounded in size and in the time it may take
//! to arrive. SIGTERM or Ctrl-C stops taking connections and lets the clicks
//! in flight finish; a second one quits at once.

mod cache;
mod clients;
mod metrics;
mod pages;
mod routes;
mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower_service::Service as _;

use crate::api::{ApiClient, Caller, TenantKey};
use crate::config::{BudgetStore, UsageError};
use crate::exit::Exit;
use crate::redirect::LinkSecrets;
use crate::retry::RetryPolicy;
use crate::signal::{Stop, StopSignal};

pub use settings::{links, LinksCommand, ServeArgs};

use cache::KeyCache;
use clients::ClientCap;
use metrics::Metrics;
use pages::Pages;
use settings::ServeSettings;

/// How long a client may take to send a request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the routes share.
pub(crate) struct Service {
    settings: ServeSettings,
    secrets: Arc<LinkSecrets>,
    caller: Caller,
    cache: KeyCache,
    pages: Pages,
    metrics: Metrics,
    clients: ClientCap,
    /// The pages' Content-Security-Policy, made once for every answer.
    csp: Option<axum::http::HeaderValue>,
}

/// The socket peer of a connection, put on each of its requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl ServeArgs {
    /// The logging flags of `serve`.
    pub fn log_settings(&self) -> crate::logging::LogSettings {
        crate::logging::LogSettings {
            format: self.log_format,
            ..crate::logging::LogSettings::default()
        }
    }
}

/// Runs the service until SIGTERM, SIGHUP or Ctrl-C, then lets the clicks
/// in flight finish.
pub async fn execute(args: ServeArgs) -> anyhow::Result<Exit> {
    let settings = ServeSettings::resolve(&args)?;
    // Watched from here on, so that a signal while the budget store
    // connects stops the service as cleanly as one while it serves.
    let stop = StopSignal::new();
    let signals = crate::signal::watch_signals(&stop);
    let Some(service) = stop.unless_stopping(Service::open(settings)).await else {
        tracing::info!("stopped before serving");
        return Ok(Exit::Success);
    };
    let service = Arc::new(service?);
    let listen = service.settings.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}: is another service using it?"))?;
    let local = listener.local_addr()?;
    // A log line per click, written off the workers; flushed below, and
    // nothing past this point returns an error for `main` to log.
    crate::console::write_in_background();
    tracing::info!(
        "serving links on http://{local}/l/TOKEN (health: /healthz, /readyz; metrics: /metrics)"
    );
    let router = routes::router(Arc::clone(&service));
    let (shutdown, shutting_down) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = crate::signal::reached(signals.clone(), Stop::Finish) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait, rather than spin.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request| {
            request.extensions_mut().insert(Peer(peer));
            router.clone().call(request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(routes::MAX_HEAD)
            .serve_connection(TokioIo::new(stream), service);
        let mut shutting_down = shutting_down.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { let _ = shutting_down.wait_for(|down| *down).await; } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = shutdown.send(true);
    let in_flight = connections.len();
    if in_flight > 0 {
        tracing::info!("stopping: {in_flight} connection(s) finish what they are answering");
    }
    let deadline = service.settings.request_timeout + HEAD_TIMEOUT;
    tokio::select! {
        () = async { while connections.join_next().await.is_some() {} } => {}
        () = tokio::time::sleep(deadline) => {
            tracing::warn!("stopping: connections still open after {}s are closed", deadline.as_secs());
        }
        () = crate::signal::reached(signals, Stop::Quit) => {}
    }
    tracing::info!("stopped");
    crate::console::flush();
    Ok(Exit::Success)
}

impl Service {
    /// Takes the tenant's shared budget, connects the key cache, loads the
    /// pages; no API call yet.
    async fn open(settings: ServeSettings) -> anyhow::Result<Service> {
        let secrets = Arc::clone(&settings.secrets);
        let limiter = crate::budget::limiter(
            settings.limiter,
            &settings.budget_store,
            &settings.tenant,
            settings.api.timeout,
        )
        .await?;
        let caller = Caller::new(
            ApiClient::new(settings.api.clone())?,
            limiter,
            RetryPolicy::default(),
            TenantKey::new(settings.tenant_key.clone()),
        );
        let cache = match &settings.budget_store {
            BudgetStore::Redis(url) => {
                KeyCache::shared(url, &settings.tenant, Arc::clone(&secrets)).await?
            }
            _ => KeyCache::local(),
        };
        let origin = settings.portal_url.origin().ascii_serialization();
        let pages = Pages::load(settings.pages.as_deref(), &settings.contact, &origin)
            .map_err(|e| UsageError(format!("--pages: {e:#}")))?;
        Ok(Service {
            csp: axum::http::HeaderValue::from_str(pages.csp()).ok(),
            clients: ClientCap::new(settings.client_rate),
            secrets,
            caller,
            cache,
            pages,
            metrics: Metrics::default(),
            settings,
        })
    }
}
