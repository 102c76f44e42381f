//! The built-in LeadSquared simulator: serves the five API calls lsq-dispatch
//! drives, on loopback, with the documented shapes and status codes, a strict
//! sliding-window budget counted at arrival, keys that need percent-encoding,
//! a portal page that tells which lead a key logs in, and switchable faults
//! (jitter, service time, 500s, dropped connections, a competing consumer of
//! the budget). It is how a new user sees the whole job work without an
//! account, and what the end-to-end tests run against.
//!
//! Where the real service's behaviour is undocumented the sandbox is strict,
//! so a client that passes here also works against the real service.
//! The README's sandbox section lists the routes, settings and what is not simulated.

#![warn(unreachable_pub, missing_docs)]

mod args;
mod budget;
#[cfg(test)]
mod budget_tests;
mod conn;
mod faults;
mod guid;
mod keys;
mod otp;
mod request;
mod routes;
mod window;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use args::SandboxArgs;
pub use budget::Budget;
pub use otp::OtpRecord;

/// The portal the sandbox knows when none is configured.
pub const DEFAULT_PORTAL_ID: &str = "9b2c4f6e-1d3a-4c5b-8e7f-a0b1c2d3e4f5";
/// A second default portal, so a sample CSV can show a per-row PortalId.
pub const SECOND_PORTAL_ID: &str = "4abda5bf-44b0-4a59-bf4a-d074a73d165e";
/// Default access key. Holds `$ + / =` so an unencoded query fails with 401.
pub const DEFAULT_ACCESS_KEY: &str = "sandbox$access+key/1=";
/// Default secret key. Holds `& = / +` so an unencoded query fails with 401.
pub const DEFAULT_SECRET_KEY: &str = "sandbox&secret=key/2+";
/// Default tenant auth key; it never expires.
pub const DEFAULT_TENANT_AUTH_KEY: &str = "sandbox+tenant/key==";
/// Default public auth key for the OTP calls.
pub const DEFAULT_PUBLIC_AUTH_KEY: &str = "sandbox-public-key";
/// The built-in demo lead's LeadId.
pub const DEMO_LEAD_ID: &str = "4c5e1a3d-2b7f-4e9a-8d61-0c9a7b3e5f12";
/// The built-in demo lead's phone: the example from LeadSquared's OTP docs.
pub const DEMO_LEAD_PHONE: &str = "+14-157415569";
/// The built-in demo lead's email.
pub const DEMO_LEAD_EMAIL: &str = "demo.lead@example.com";
/// Where to mint a tenant key (`POST`, with `accessKey` and `secretKey` in the
/// query). The real path is not in LeadSquared's public docs.
pub const TENANT_KEY_PATH: &str = "/api/Authentication/TenantAuthKey";
/// The portal page's path; any path under `/portal/` works.
pub(crate) const PORTAL_PATH: &str = "/portal/login";

/// Everything the sandbox can be told. Start from [`SandboxConfig::default`] or
/// [`SandboxConfig::from_env`] and change what a test needs.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Loopback port to listen on; 0 picks a free one.
    pub port: u16,
    /// Known portal GUIDs; a Generate for any other portal gets 400.
    pub portal_ids: Vec<String>,
    /// The admin access key expected in the query.
    pub access_key: String,
    /// The admin secret key expected in the query.
    pub secret_key: String,
    /// A tenant key that is always accepted and never expires.
    pub tenant_auth_key: String,
    /// The public key the OTP calls expect in `Authorization`.
    pub public_auth_key: String,
    /// At most `calls` counted API calls in any sliding `window`.
    pub budget: Budget,
    /// Lifetime of issued lead keys and minted tenant keys.
    pub key_ttl: Duration,
    /// Inbound delay range, applied before the arrival is counted, as network
    /// jitter would.
    pub jitter: (Duration, Duration),
    /// Delay range between counting an accepted call and answering it.
    pub service_time: (Duration, Duration),
    /// This fraction of accepted calls takes a time in this range instead
    /// of `service_time`: a long tail, e.g. 5 % at 2-3 s.
    pub slow_calls: (f64, (Duration, Duration)),
    /// Fraction of accepted API calls answered 500.
    pub error_rate: f64,
    /// Fraction of accepted API calls whose connection is cut with no answer.
    pub drop_rate: f64,
    /// A competing integration takes this many of the budget's calls in every
    /// window, spread evenly, and is always counted.
    pub competitor: u32,
    /// The competing integration stops this long after the sandbox started
    /// (never when unset).
    pub competitor_stops_after: Option<Duration>,
    /// Whether calls answered 429 still occupy a slot in the window.
    pub count_rejected: bool,
    /// Seed for the fault RNG, so faults can be replayed.
    pub seed: Option<u64>,
    /// LeadIds that answer 400 "Lead does not exist"; every other GUID is a lead.
    pub unknown_leads: Vec<String>,
    /// Leads that can sign in by OTP, besides the built-in demo lead.
    pub leads: Vec<SandboxLead>,
    /// When set, 429 answers carry `Retry-After` in whole seconds.
    pub retry_after: Option<Duration>,
    /// This fraction of new connections has its first call reach the
    /// server this much later, as when a SYN is lost and sent again.
    pub late_connections: (f64, Duration),
    /// A listener whose accept backlog is this small and which accepts one
    /// connection per this long: the kernel drops the SYNs of a burst that
    /// find the backlog full, and the client sends them again a second
    /// later (then three), as against a busy server. Its client sees the
    /// wait in the time its connection took to open.
    pub slow_accept: Option<(u32, Duration)>,
    /// A connection with no request under way and no bytes in either
    /// direction for this long is closed, so idle clients cannot use up the
    /// sandbox's file descriptors.
    pub idle_timeout: Duration,
}

/// How long the sandbox keeps an idle connection open by default: longer
/// than a run's pauses between calls, far shorter than forever.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            port: 0,
            portal_ids: vec![DEFAULT_PORTAL_ID.to_owned(), SECOND_PORTAL_ID.to_owned()],
            access_key: DEFAULT_ACCESS_KEY.to_owned(),
            secret_key: DEFAULT_SECRET_KEY.to_owned(),
            tenant_auth_key: DEFAULT_TENANT_AUTH_KEY.to_owned(),
            public_auth_key: DEFAULT_PUBLIC_AUTH_KEY.to_owned(),
            budget: Budget::DEFAULT,
            key_ttl: Duration::from_secs(4 * 3600),
            jitter: (Duration::ZERO, Duration::ZERO),
            service_time: (Duration::ZERO, Duration::ZERO),
            slow_calls: (0.0, (Duration::ZERO, Duration::ZERO)),
            error_rate: 0.0,
            drop_rate: 0.0,
            competitor: 0,
            competitor_stops_after: None,
            count_rejected: false,
            seed: None,
            unknown_leads: Vec::new(),
            leads: Vec::new(),
            retry_after: None,
            late_connections: (0.0, Duration::ZERO),
            slow_accept: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl SandboxConfig {
    /// The defaults, with credentials taken from `LSQ_ACCESS_KEY`,
    /// `LSQ_SECRET_KEY`, `LSQ_TENANT_AUTH_KEY` and `LSQ_PUBLIC_AUTH_KEY` where
    /// set and non-empty, so one environment drives both the sandbox and a run.
    pub fn from_env() -> Self {
        let mut config = SandboxConfig::default();
        let take = |var: &str, field: &mut String| {
            if let Ok(value) = std::env::var(var) {
                if !value.is_empty() {
                    *field = value;
                }
            }
        };
        take("LSQ_ACCESS_KEY", &mut config.access_key);
        take("LSQ_SECRET_KEY", &mut config.secret_key);
        take("LSQ_TENANT_AUTH_KEY", &mut config.tenant_auth_key);
        take("LSQ_PUBLIC_AUTH_KEY", &mut config.public_auth_key);
        config
    }
}

/// A lead that can sign in by OTP.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SandboxLead {
    /// The lead's GUID.
    #[serde(rename = "LeadId")]
    pub lead_id: String,
    /// Phone as LeadSquared stores it, e.g. `+14-157415569`; matched exactly.
    #[serde(rename = "Phone")]
    pub phone: String,
    /// Email address; matched without regard to case.
    #[serde(rename = "Email")]
    pub email: String,
}

/// Counters since start (or the last reset): what `GET /admin/stats` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests answered or dropped, except admin and portal page requests
    /// (so `calls` = sum of `by_status` + `dropped`). Competitor calls are not
    /// included.
    pub calls: u64,
    /// Answers by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Lead keys issued (Generate and OTP sign-in), per LeadId.
    pub keys_issued: BTreeMap<String, u64>,
    /// Most counted arrivals (clients and competitor) seen in any window.
    pub max_in_window: u32,
    /// Connections cut without an answer.
    pub dropped: u64,
    /// Calls made by the competing integration.
    pub competitor_calls: u64,
}

/// A running sandbox. Dropping it stops the server; [`Sandbox::shutdown`]
/// stops it gracefully.
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    competitor: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Binds `127.0.0.1:port`, starts serving on the current tokio runtime and
    /// returns once the socket is listening.
    pub async fn start(config: SandboxConfig) -> anyhow::Result<Sandbox> {
        Sandbox::start_with(config, false).await
    }

    /// [`Sandbox::start`] that also tells of notable events (429s, injected
    /// faults, refused credentials) on stderr, for the `sandbox` subcommand.
    pub async fn start_logging(config: SandboxConfig) -> anyhow::Result<Sandbox> {
        Sandbox::start_with(config, true).await
    }

    /// `log` sends notable events to stderr; OTPs are always logged.
    async fn start_with(config: SandboxConfig, log: bool) -> anyhow::Result<Sandbox> {
        let shared = Arc::new(Shared::new(config, log)?);
        let port = shared.config.port;
        let cannot = || {
            format!(
                "cannot listen on 127.0.0.1:{port}: pick another with --port (0 = any free port)"
            )
        };
        let (listener, accept_every) = match shared.config.slow_accept {
            None => (
                tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                    .await
                    .with_context(cannot)?,
                Duration::ZERO,
            ),
            Some((backlog, every)) => {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.set_reuseaddr(true)?;
                socket
                    .bind((Ipv4Addr::LOCALHOST, port).into())
                    .with_context(cannot)?;
                (socket.listen(backlog).with_context(cannot)?, every)
            }
        };
        let listener = conn::CuttableListener::new(listener, shared.config.idle_timeout)
            .accepting_every(accept_every);
        let addr = conn::bound_addr(&listener)?;

        let (stop, stopped) = oneshot::channel::<()>();
        let app =
            routes::router(shared.clone()).into_make_service_with_connect_info::<conn::Conn>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        let competitor = window::competitor_period(shared.config.budget, shared.config.competitor)
            .map(|period| tokio::spawn(compete(shared.clone(), period)));

        Ok(Sandbox {
            addr,
            shared,
            stop: Some(stop),
            server: Some(server),
            competitor,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, to use as the API host.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The portal page URL to build links on.
    pub fn portal_url(&self) -> String {
        format!("{}{}", self.base_url(), PORTAL_PATH)
    }

    /// The configuration in use (portal ids normalised).
    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
    }

    /// The counters, as `GET /admin/stats` reports them.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// When each client API call counted toward the budget arrived, measured
    /// from start, in arrival order. Competitor calls are left out.
    pub fn arrivals(&self) -> Vec<Duration> {
        self.shared.ledger().arrivals.clone()
    }

    /// The OTP request behind `code`, as `GET /admin/otp?code=` reports it.
    pub fn otp(&self, code: &str) -> Option<OtpRecord> {
        self.shared.otps().get(code)
    }

    /// Stops accepting, lets calls in flight finish (for at most a couple of
    /// seconds, since a test may have left a slow call hanging) and returns.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.competitor.take() {
            task.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(Duration::from_secs(2), &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(task) = self.competitor.take() {
            task.abort();
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// The competing integration: one call every `period`, until it stops.
async fn compete(shared: Arc<Shared>, period: Duration) {
    let stops_at = shared
        .config
        .competitor_stops_after
        .map(|after| Instant::now() + after);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let at = tick.tick().await;
        if stops_at.is_some_and(|stop| at >= stop) {
            return;
        }
        let mut ledger = shared.ledger();
        ledger.window.take(Instant::now());
        ledger.competitor_calls += 1;
    }
}

/// State shared by every connection.
pub(crate) struct Shared {
    config: SandboxConfig,
    started: Instant,
    log: bool,
    portals: HashSet<String>,
    unknown_leads: HashSet<String>,
    leads_by_phone: HashMap<String, SandboxLead>,
    leads_by_email: HashMap<String, SandboxLead>,
    ledger: Mutex<Ledger>,
    keys: Mutex<keys::KeyStore>,
    otps: Mutex<otp::OtpStore>,
    faults: Mutex<faults::Faults>,
}

/// The budget window and the counters, under one lock so stats are a
/// consistent snapshot.
pub(crate) struct Ledger {
    window: window::Window,
    arrivals: Vec<Duration>,
    calls: u64,
    by_status: BTreeMap<u16, u64>,
    keys_issued: BTreeMap<String, u64>,
    dropped: u64,
    competitor_calls: u64,
}

impl Shared {
    fn new(mut config: SandboxConfig, log: bool) -> anyhow::Result<Shared> {
        check_fraction("error rate", config.error_rate)?;
        check_fraction("drop rate", config.drop_rate)?;
        if config.error_rate + config.drop_rate > 1.0 {
            bail!("error rate + drop rate must not exceed 1");
        }
        for (name, (lo, hi)) in [
            ("jitter", config.jitter),
            ("service time", config.service_time),
        ] {
            if lo > hi {
                bail!("{name} range is backwards: {lo:?} > {hi:?}");
            }
        }
        if config.idle_timeout.is_zero() {
            bail!("the idle timeout must be above zero");
        }
        config
            .budget
            .checked()
            .map_err(|why| anyhow!("budget: {why}"))?;
        if config.portal_ids.is_empty() {
            bail!("the sandbox needs at least one portal id");
        }
        for id in &mut config.portal_ids {
            *id = guid::parse(id).with_context(|| format!("portal id {id:?} is not a GUID"))?;
        }
        let portals = config.portal_ids.iter().cloned().collect();
        let unknown_leads = config
            .unknown_leads
            .iter()
            .map(|id| guid::parse(id).with_context(|| format!("unknown lead {id:?} is not a GUID")))
            .collect::<anyhow::Result<_>>()?;

        let demo = SandboxLead {
            lead_id: DEMO_LEAD_ID.to_owned(),
            phone: DEMO_LEAD_PHONE.to_owned(),
            email: DEMO_LEAD_EMAIL.to_owned(),
        };
        let mut leads_by_phone = HashMap::new();
        let mut leads_by_email = HashMap::new();
        for lead in std::iter::once(demo).chain(config.leads.iter().cloned()) {
            let lead_id = guid::parse(&lead.lead_id)
                .with_context(|| format!("lead id {:?} is not a GUID", lead.lead_id))?;
            let lead = SandboxLead { lead_id, ..lead };
            if !lead.phone.is_empty() {
                leads_by_phone.insert(request::phone_digits(&lead.phone), lead.clone());
            }
            if !lead.email.is_empty() {
                leads_by_email.insert(lead.email.to_lowercase(), lead);
            }
        }

        let faults = faults::Faults::new(
            config.seed,
            config.jitter,
            config.service_time,
            config.error_rate,
            config.drop_rate,
        )
        .with_late_connections(config.late_connections)
        .with_slow_calls(config.slow_calls);
        Ok(Shared {
            started: Instant::now(),
            log,
            portals,
            unknown_leads,
            leads_by_phone,
            leads_by_email,
            ledger: Mutex::new(Ledger {
                window: window::Window::new(config.budget, config.count_rejected),
                arrivals: Vec::new(),
                calls: 0,
                by_status: BTreeMap::new(),
                keys_issued: BTreeMap::new(),
                dropped: 0,
                competitor_calls: 0,
            }),
            keys: Mutex::default(),
            otps: Mutex::default(),
            faults: Mutex::new(faults),
            config,
        })
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    fn keys(&self) -> MutexGuard<'_, keys::KeyStore> {
        lock(&self.keys)
    }

    fn otps(&self) -> MutexGuard<'_, otp::OtpStore> {
        lock(&self.otps)
    }

    fn faults(&self) -> MutexGuard<'_, faults::Faults> {
        lock(&self.faults)
    }

    fn stats(&self) -> Stats {
        let ledger = self.ledger();
        Stats {
            calls: ledger.calls,
            by_status: ledger.by_status.clone(),
            keys_issued: ledger.keys_issued.clone(),
            max_in_window: ledger.window.max_in_window(),
            dropped: ledger.dropped,
            competitor_calls: ledger.competitor_calls,
        }
    }

    fn reset(&self) {
        let mut ledger = self.ledger();
        ledger.window.reset_max();
        ledger.arrivals.clear();
        ledger.calls = 0;
        ledger.by_status.clear();
        ledger.keys_issued.clear();
        ledger.dropped = 0;
        ledger.competitor_calls = 0;
    }

    fn log(&self, message: std::fmt::Arguments<'_>) {
        if self.log {
            eprintln!("sandbox: {message}");
        }
    }
}

/// A poisoned lock only means a handler panicked mid-update of counters; the
/// sandbox keeps serving rather than failing every later call.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn check_fraction(name: &str, value: f64) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&value) {
        bail!("{name} must be between 0 and 1, got {value}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused() {
        let bad = [
            SandboxConfig {
                error_rate: 1.5,
                ..SandboxConfig::default()
            },
            SandboxConfig {
                error_rate: 0.6,
                drop_rate: 0.6,
                ..SandboxConfig::default()
            },
            SandboxConfig {
                portal_ids: vec!["portal".into()],
                ..SandboxConfig::default()
            },
            SandboxConfig {
                jitter: (Duration::from_secs(2), Duration::from_secs(1)),
                ..SandboxConfig::default()
            },
            SandboxConfig {
                idle_timeout: Duration::ZERO,
                ..SandboxConfig::default()
            },
        ];
        for config in bad {
            assert!(Shared::new(config, false).is_err());
        }
    }
}
