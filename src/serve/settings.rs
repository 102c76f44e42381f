//! The `serve` subcommand's flags, typed as clap parses them, and what is
//! resolved from them and the environment before the service listens: the
//! API connection, the link secrets, the shared budget, the page templates.
//! Every complaint is a [`UsageError`] (exit 2) naming the setting.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Deserialize;
use url::Url;

use crate::api::{ApiSettings, TenantKeySource};
use crate::config::value;
use crate::config::{BudgetStore, RedisUrl, RunArgs, UsageError, DEFAULT_TENANT_KEY_PATH};
use crate::limiter::{LimiterSettings, Rate};
use crate::redirect::LinkSecrets;
use crate::tenant::Tenant;

const SERVE_HELP: &str = "Secrets come from the environment or the --config file (access_key, \
secret_key, tenant_auth_key, link_secret): LSQ_ACCESS_KEY, LSQ_SECRET_KEY, \
optional LSQ_TENANT_AUTH_KEY, and LSQ_LINK_SECRET (one or more secrets, comma-separated; the \
first signs, every one verifies; make one with `lsq-dispatch links new-secret`).

Routes: GET/HEAD/POST /l/TOKEN (the link), /healthz, /readyz, /metrics (keep /metrics off the \
internet: proxy only /l/*).

Examples:
  lsq-dispatch serve --host portalapi-in21.leadsquared.com \\
      --portal-url https://apply.example.lsqportal.com/ --listen 127.0.0.1:8080
  lsq-dispatch serve ... --budget-store redis://10.0.0.5:6379/0 --trusted-proxy 127.0.0.1

Exit codes: 0 stopped by SIGTERM, SIGHUP or Ctrl-C after the clicks in flight were answered; 1 could \
not start (the message says why); 2 usage error.";

/// Where the service listens unless told.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
/// The tenant's budget unless told: LeadSquared's default plan.
const DEFAULT_RATE: Rate = Rate {
    calls: 25,
    window: Duration::from_secs(5),
};
/// POSTs one client may make unless told.
const DEFAULT_CLIENT_RATE: Rate = Rate {
    calls: 20,
    window: Duration::from_secs(60),
};

/// `lsq-dispatch serve`: the link service behind `BASE/l/TOKEN` links.
///
/// The settings it shares with `run` come from the same flags, variables and
/// `--config` keys; its own are in the file too, under their names in snake
/// case, so one file can hold both.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[command(after_help = SERVE_HELP)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML settings file: `run`'s keys and these flags' (flags and
    /// environment win over it).
    #[arg(long, value_name = "PATH")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on; loopback unless told otherwise (put a TLS
    /// reverse proxy in front) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    pub listen: Option<SocketAddr>,

    /// API host, a URL or a bare host (https assumed), e.g. portalapi-in21.leadsquared.com.
    #[arg(long, env = "LSQ_HOST", hide_env_values = true, value_parser = value::host)]
    #[serde(skip)]
    pub host: Option<Url>,

    /// The portal page URL the person is sent on to, with the key.
    #[arg(
        long,
        env = "LSQ_PORTAL_URL",
        hide_env_values = true,
        value_name = "URL",
        value_parser = value::portal_url
    )]
    #[serde(skip)]
    pub portal_url: Option<Url>,

    /// Put leadId and portalId in the portal URL before authKey, as newer docs show.
    #[arg(long)]
    #[serde(skip)]
    pub link_ids: bool,

    /// The tenant's API budget, CALLS/WINDOW, shared with every batch run
    /// [default: 25/5s].
    #[arg(long, value_name = "N/W")]
    #[serde(skip)]
    pub rate: Option<Rate>,

    /// Share the tenant's API budget (and the key cache) with other
    /// processes and machines through this Redis server: redis://HOST:PORT[/DB]
    /// or rediss://… [default: the budget file beside --state, shared on this machine].
    #[arg(
        long,
        env = "LSQ_BUDGET_STORE",
        hide_env_values = true,
        value_name = "URL",
        value_parser = value::budget_store
    )]
    #[serde(skip)]
    pub budget_store: Option<RedisUrl>,

    /// The campaign state file whose directory holds the machine's budget
    /// file [default: $XDG_STATE_HOME/lsq-dispatch/state.sqlite].
    #[arg(long, value_name = "PATH")]
    #[serde(skip)]
    pub state: Option<PathBuf>,

    /// How long a lead key lives (the tenant's; an account manager can
    /// change it) [default: 4h].
    #[arg(
        long,
        env = "LSQ_KEY_LIFETIME",
        hide_env_values = true,
        value_name = "DURATION",
        value_parser = value::key_lifetime
    )]
    #[serde(skip)]
    pub key_lifetime: Option<Duration>,

    /// How long a click waits for a slot of the budget before the person
    /// gets a page that tries again by itself [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = value::timeout)]
    #[serde(default, deserialize_with = "value::file::timeout")]
    pub budget_wait: Option<Duration>,

    /// Whole time limit of one API call [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = value::timeout)]
    #[serde(default, deserialize_with = "value::file::timeout")]
    pub api_timeout: Option<Duration>,

    /// Time limit of one request to the service, answered with a page past
    /// it [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = value::timeout)]
    #[serde(default, deserialize_with = "value::file::timeout")]
    pub request_timeout: Option<Duration>,

    /// POSTs one client address may make, N/WINDOW; past it the client gets
    /// a page asking it to wait, and no key is minted [default: 20/1m].
    #[arg(long, value_name = "N/W")]
    #[serde(default, deserialize_with = "value::file::rate")]
    pub client_rate: Option<Rate>,

    /// A reverse proxy whose X-Forwarded-For is believed (repeatable); any
    /// other peer is itself the client.
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    pub trusted_proxy: Vec<IpAddr>,

    /// Page templates: a folder with any of open.html, expired.html,
    /// invalid.html, busy.html, failed.html, limited.html (minijinja blocks
    /// title, text and button) [default: built-in pages].
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub pages: Option<PathBuf>,

    /// Whom the expired-link page tells the person to ask for a new link
    /// [default: the sender of the message that held the link].
    #[arg(long, value_name = "TEXT")]
    #[serde(default, deserialize_with = "value::file::words")]
    pub contact: Option<String>,

    /// Path of the tenant auth key endpoint, used when LSQ_TENANT_AUTH_KEY is not set
    /// [default: /api/Authentication/TenantAuthKey].
    #[arg(long, value_name = "PATH")]
    #[serde(skip)]
    pub tenant_key_path: Option<String>,

    /// Log lines as one JSON object per line (one per click), or as text.
    #[arg(long, value_name = "FORMAT", default_value = "json")]
    #[serde(skip)]
    pub log_format: crate::logging::LogFormat,
}

impl ServeArgs {
    /// The settings `serve` shares with `run`, as `run`'s flags would give
    /// them, so they merge with the file as `run`'s do.
    fn run_flags(&self) -> RunArgs {
        RunArgs {
            host: self.host.clone(),
            portal_url: self.portal_url.clone(),
            link_ids: self.link_ids,
            rate: self.rate,
            budget_store: self.budget_store.clone(),
            state: self.state.clone(),
            key_lifetime: self.key_lifetime,
            tenant_key_path: self.tenant_key_path.clone(),
            ..RunArgs::default()
        }
    }

    /// These flags over the file's settings of `serve`'s own.
    fn over(self, file: ServeArgs) -> ServeArgs {
        ServeArgs {
            listen: self.listen.or(file.listen),
            budget_wait: self.budget_wait.or(file.budget_wait),
            api_timeout: self.api_timeout.or(file.api_timeout),
            request_timeout: self.request_timeout.or(file.request_timeout),
            client_rate: self.client_rate.or(file.client_rate),
            trusted_proxy: if self.trusted_proxy.is_empty() {
                file.trusted_proxy
            } else {
                self.trusted_proxy
            },
            pages: self.pages.or(file.pages),
            contact: self.contact.or(file.contact),
            ..self
        }
    }
}

/// `lsq-dispatch links …`.
#[derive(Debug, Clone, Subcommand)]
pub enum LinksCommand {
    /// Print a new random link secret for LSQ_LINK_SECRET. To rotate, put the
    /// new one first and keep the old one after a comma while its links live.
    NewSecret,
}

/// Runs a `links` subcommand.
pub fn links(command: LinksCommand) -> crate::exit::Exit {
    match command {
        LinksCommand::NewSecret => println!("{}", crate::redirect::new_secret()),
    }
    crate::exit::Exit::Success
}

/// Everything the service needs, checked.
pub(crate) struct ServeSettings {
    pub(crate) listen: SocketAddr,
    pub(crate) api: ApiSettings,
    pub(crate) tenant_key: TenantKeySource,
    pub(crate) tenant: Tenant,
    pub(crate) portal_url: Url,
    pub(crate) link_ids: bool,
    pub(crate) limiter: LimiterSettings,
    pub(crate) budget_store: BudgetStore,
    pub(crate) secrets: std::sync::Arc<LinkSecrets>,
    pub(crate) key_lifetime: Duration,
    pub(crate) budget_wait: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) client_rate: Rate,
    pub(crate) trusted_proxies: Vec<IpAddr>,
    pub(crate) pages: Option<PathBuf>,
    pub(crate) contact: String,
}

impl ServeSettings {
    /// Merges the flags, the environment and the `--config` file, as `run`
    /// does, and checks them.
    pub(crate) fn resolve(args: &ServeArgs) -> Result<ServeSettings, UsageError> {
        let (file, own) = match &args.config {
            Some(path) => crate::config::load_with::<ServeArgs>(path)?,
            None => (RunArgs::default(), ServeArgs::default()),
        };
        let shared = crate::config::merge_file(args.run_flags(), file);
        let args = args.clone().over(own);
        let usage = |m: String| UsageError(m);
        let host = shared.host.ok_or_else(|| {
            usage(
                "missing the API host: --host or LSQ_HOST, e.g. portalapi-in21.leadsquared.com"
                    .into(),
            )
        })?;
        let portal_url = shared.portal_url.ok_or_else(|| {
            usage("missing the portal page URL: --portal-url or LSQ_PORTAL_URL".into())
        })?;
        let (Some(access_key), Some(secret_key)) = (shared.access_key, shared.secret_key) else {
            return Err(usage(
                "missing credentials: set LSQ_ACCESS_KEY and LSQ_SECRET_KEY in the environment \
                 (or access_key and secret_key in the --config file)"
                    .into(),
            ));
        };
        let secret = shared.link_secret.ok_or_else(|| {
            usage(
                "missing LSQ_LINK_SECRET (or link_secret in the --config file), the secret the \
                 links were signed with; make one with `lsq-dispatch links new-secret`"
                    .into(),
            )
        })?;
        let secrets = LinkSecrets::parse(&secret).map_err(usage)?;
        let key_lifetime = shared.key_lifetime.unwrap_or(crate::api::KEY_LIFETIME);
        if key_lifetime < Duration::from_secs(1) {
            return Err(usage("--key-lifetime must be at least 1s".into()));
        }
        let budget_wait = args.budget_wait.unwrap_or(Duration::from_secs(10));
        let api_timeout = args.api_timeout.unwrap_or(Duration::from_secs(10));
        let request_timeout = args.request_timeout.unwrap_or(Duration::from_secs(30));
        if request_timeout <= budget_wait + api_timeout / 2 {
            return Err(usage(format!(
                "--request-timeout {} leaves no time for a click that waits --budget-wait {} and \
                 then calls the API: make it longer",
                humantime::format_duration(request_timeout),
                humantime::format_duration(budget_wait)
            )));
        }
        let budget_store = match shared.budget_store {
            Some(url) => BudgetStore::Redis(url),
            None => BudgetStore::beside(
                &shared
                    .state
                    .unwrap_or_else(crate::state::StateStore::default_path),
            ),
        };
        let tenant = Tenant::new(&host, &access_key);
        Ok(ServeSettings {
            listen: args.listen.unwrap_or(DEFAULT_LISTEN),
            api: ApiSettings {
                host,
                access_key,
                secret_key,
                connect_timeout: shared
                    .connect_timeout
                    .unwrap_or(Duration::from_secs(10))
                    .min(api_timeout),
                timeout: api_timeout,
            },
            tenant_key: TenantKeySource {
                given: shared.tenant_auth_key,
                mint_path: shared
                    .tenant_key_path
                    .unwrap_or_else(|| DEFAULT_TENANT_KEY_PATH.into()),
                mint_method: shared.tenant_key_method.unwrap_or_else(|| "POST".into()),
                // The tenant key is renewed 15 minutes before its end: a
                // lifetime shorter than twice that (a sandbox's) would renew
                // it before every call, so such a key is used until the API
                // refuses it, and then minted again once.
                lifetime: if key_lifetime >= Duration::from_secs(30 * 60) {
                    key_lifetime
                } else {
                    crate::api::KEY_LIFETIME
                },
            },
            tenant,
            portal_url,
            link_ids: shared.link_ids,
            limiter: LimiterSettings::new(shared.rate.unwrap_or(DEFAULT_RATE)),
            budget_store,
            secrets: std::sync::Arc::new(secrets),
            key_lifetime,
            budget_wait,
            request_timeout,
            client_rate: args.client_rate.unwrap_or(DEFAULT_CLIENT_RATE),
            trusted_proxies: args.trusted_proxy,
            pages: args.pages,
            contact: args
                .contact
                .unwrap_or_else(|| "the sender of the message that held the link".into()),
        })
    }

    /// How long before its end a key is no longer handed out: five minutes,
    /// or an eighth of a short lifetime, so the person reaches the portal
    /// with the key still alive.
    pub(crate) fn key_margin(&self) -> Duration {
        (self.key_lifetime / 8).min(Duration::from_secs(5 * 60))
    }
}
