//! The `serve` subcommand's flags, typed as clap parses them, and what is
//! resolved from them and the environment before the service listens: the
//! API connection, the link secrets, the shared budget, the page templates.
//! Every complaint is a [`UsageError`] (exit 2) naming the setting.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use url::Url;

use crate::api::{ApiSettings, TenantKeySource};
use crate::config::{
    env_secret, parse_host, BudgetStore, Credentials, UsageError, DEFAULT_TENANT_KEY_PATH,
};
use crate::limiter::{LimiterSettings, Rate};
use crate::redirect::LinkSecrets;
use crate::tenant::Tenant;

const SERVE_HELP: &str = "Secrets come from the environment: LSQ_ACCESS_KEY, LSQ_SECRET_KEY, \
optional LSQ_TENANT_AUTH_KEY, and LSQ_LINK_SECRET (one or more secrets, comma-separated; the \
first signs, every one verifies; make one with `lsq-dispatch links new-secret`).

Routes: GET/HEAD/POST /l/TOKEN (the link), /healthz, /readyz, /metrics (keep /metrics off the \
internet: proxy only /l/*).

Examples:
  lsq-dispatch serve --host portalapi-in21.leadsquared.com \\
      --portal-url https://apply.example.lsqportal.com/ --listen 127.0.0.1:8080
  lsq-dispatch serve ... --budget-store redis://10.0.0.5:6379/0 --trusted-proxy 127.0.0.1

Exit codes: 0 stopped by SIGTERM or Ctrl-C after the clicks in flight were answered; 1 could \
not start (the message says why); 2 usage error.";

/// `lsq-dispatch serve`: the link service behind `BASE/l/TOKEN` links.
#[derive(Debug, Clone, Args)]
#[command(after_help = SERVE_HELP)]
pub struct ServeArgs {
    /// Address to listen on; loopback unless told otherwise (put a TLS
    /// reverse proxy in front).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// API host, a URL or a bare host (https assumed), e.g. portalapi-in21.leadsquared.com.
    #[arg(long, env = "LSQ_HOST", hide_env_values = true)]
    pub host: Option<String>,

    /// The portal page URL the person is sent on to, with the key.
    #[arg(
        long,
        env = "LSQ_PORTAL_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub portal_url: Option<String>,

    /// Put leadId and portalId in the portal URL before authKey, as newer docs show.
    #[arg(long)]
    pub link_ids: bool,

    /// The tenant's API budget, CALLS/WINDOW, shared with every batch run.
    #[arg(long, value_name = "N/W", default_value = "25/5s")]
    pub rate: Rate,

    /// Share the tenant's API budget (and the key cache) with other
    /// processes and machines through this Redis server: redis://HOST:PORT[/DB]
    /// or rediss://… [default: the budget file beside --state, shared on this machine].
    #[arg(
        long,
        env = "LSQ_BUDGET_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub budget_store: Option<String>,

    /// The campaign state file whose directory holds the machine's budget
    /// file [default: $XDG_STATE_HOME/lsq-dispatch/state.sqlite].
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// How long a lead key lives (the tenant's; an account manager can change it).
    #[arg(
        long,
        env = "LSQ_KEY_LIFETIME",
        value_name = "DURATION",
        default_value = "4h",
        value_parser = humantime::parse_duration
    )]
    pub key_lifetime: Duration,

    /// How long a click waits for a slot of the budget before the person
    /// gets a page that tries again by itself.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub budget_wait: Duration,

    /// Whole time limit of one API call.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub api_timeout: Duration,

    /// Time limit of one request to the service, answered with a page past it.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// POSTs one client address may make, N/WINDOW; past it the client gets
    /// a page asking it to wait, and no key is minted.
    #[arg(long, value_name = "N/W", default_value = "20/1m")]
    pub client_rate: Rate,

    /// A reverse proxy whose X-Forwarded-For is believed (repeatable); any
    /// other peer is itself the client.
    #[arg(long, value_name = "ADDR")]
    pub trusted_proxy: Vec<IpAddr>,

    /// Page templates: a folder with any of open.html, expired.html,
    /// invalid.html, busy.html, failed.html, limited.html (minijinja blocks
    /// title, text and button) [default: built-in pages].
    #[arg(long, value_name = "DIR")]
    pub pages: Option<PathBuf>,

    /// Whom the expired-link page tells the person to ask for a new link.
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "the sender of the message that held the link"
    )]
    pub contact: String,

    /// Path of the tenant auth key endpoint, used when LSQ_TENANT_AUTH_KEY is not set.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_TENANT_KEY_PATH)]
    pub tenant_key_path: String,

    /// Log lines as one JSON object per line (one per click), or as text.
    #[arg(long, value_name = "FORMAT", default_value = "json")]
    pub log_format: crate::logging::LogFormat,
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
    /// Checks the flags and reads the secrets from the environment.
    pub(crate) fn resolve(args: &ServeArgs) -> Result<ServeSettings, UsageError> {
        let usage = |m: String| UsageError(m);
        let host = args
            .host
            .as_deref()
            .filter(|h| !h.trim().is_empty())
            .ok_or_else(|| {
                usage(
                    "missing the API host: --host or LSQ_HOST, e.g. portalapi-in21.leadsquared.com"
                        .into(),
                )
            })?;
        let host = parse_host(host)?;
        let portal_url = args
            .portal_url
            .as_deref()
            .ok_or_else(|| {
                usage("missing the portal page URL: --portal-url or LSQ_PORTAL_URL".into())
            })
            .and_then(|u| {
                crate::portal_url::parse_portal_url(u)
                    .map_err(|e| usage(format!("--portal-url: {e}")))
            })?;
        let credentials = Credentials::load(None);
        let (Some(access_key), Some(secret_key)) = (credentials.access_key, credentials.secret_key)
        else {
            return Err(usage(
                "missing credentials: set LSQ_ACCESS_KEY and LSQ_SECRET_KEY in the environment"
                    .into(),
            ));
        };
        let secret = env_secret("LSQ_LINK_SECRET").ok_or_else(|| {
            usage(
                "missing LSQ_LINK_SECRET, the secret the links were signed with; make one with \
                 `lsq-dispatch links new-secret`"
                    .into(),
            )
        })?;
        let secrets = LinkSecrets::parse(&secret).map_err(usage)?;
        if args.key_lifetime < Duration::from_secs(1) {
            return Err(usage("--key-lifetime must be at least 1s".into()));
        }
        if args.request_timeout <= args.budget_wait + args.api_timeout / 2 {
            return Err(usage(format!(
                "--request-timeout {} leaves no time for a click that waits --budget-wait {} and \
                 then calls the API: make it longer",
                humantime::format_duration(args.request_timeout),
                humantime::format_duration(args.budget_wait)
            )));
        }
        let state = args
            .state
            .clone()
            .unwrap_or_else(crate::state::StateStore::default_path);
        let budget_store = BudgetStore::from_setting(args.budget_store.as_deref(), &state)?;
        let tenant = Tenant::new(&host, &access_key);
        Ok(ServeSettings {
            listen: args.listen,
            api: ApiSettings {
                host,
                access_key,
                secret_key,
                connect_timeout: args.api_timeout.min(Duration::from_secs(10)),
                timeout: args.api_timeout,
            },
            tenant_key: TenantKeySource {
                given: credentials.tenant_auth_key,
                mint_path: args.tenant_key_path.clone(),
                mint_method: "POST".into(),
                // The tenant key is renewed 15 minutes before its end: a
                // lifetime shorter than twice that (a sandbox's) would renew
                // it before every call, so such a key is used until the API
                // refuses it, and then minted again once.
                lifetime: if args.key_lifetime >= Duration::from_secs(30 * 60) {
                    args.key_lifetime
                } else {
                    crate::api::KEY_LIFETIME
                },
            },
            tenant,
            portal_url,
            link_ids: args.link_ids,
            limiter: LimiterSettings::new(args.rate),
            budget_store,
            secrets: std::sync::Arc::new(secrets),
            key_lifetime: args.key_lifetime,
            budget_wait: args.budget_wait,
            request_timeout: args.request_timeout,
            client_rate: args.client_rate,
            trusted_proxies: args.trusted_proxy.clone(),
            pages: args.pages.clone(),
            contact: args.contact.clone(),
        })
    }

    /// How long before its end a key is no longer handed out: five minutes,
    /// or an eighth of a short lifetime, so the person reaches the portal
    /// with the key still alive.
    pub(crate) fn key_margin(&self) -> Duration {
        (self.key_lifetime / 8).min(Duration::from_secs(5 * 60))
    }
}
