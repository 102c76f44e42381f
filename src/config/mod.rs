//! Settings: flags beat the environment, which beats the `--config` TOML file,
//! which beats the defaults. Each value is parsed into its type as it is read
//! ([`value`]), the sources are merged once ([`merge`]), and the result is
//! resolved, before any file is written or any call is made, into one
//! immutable [`Settings`] whose [`Mode`] says what the run is; every
//! complaint names the setting and is a [`UsageError`] (exit 2).

mod args;
mod budget_store;
mod credentials;
mod file;
mod resolve;
pub(crate) mod value;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use url::Url;

use crate::api::{ApiSettings, TenantKeySource};
use crate::limiter::{LimiterSettings, Rate};
use crate::plan::PlanSettings;
use crate::retry::RetryPolicy;
use crate::secret::Secret;

pub use args::RunArgs;
pub use budget_store::{BudgetStore, RedisUrl};
pub use credentials::{env_secret, parse_host, portal_id_setting, Credentials};
pub use file::{load, load_with, merge, merge_file};

pub use crate::input::TextEncoding;
pub use crate::usage::UsageError;

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

/// Default path of the tenant auth key endpoint (the built-in sandbox's; the
/// public docs do not give LeadSquared's).
pub const DEFAULT_TENANT_KEY_PATH: &str = "/api/Authentication/TenantAuthKey";

/// Everything a run needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The input CSV.
    pub input: PathBuf,
    /// Default PortalId, normalised.
    pub portal_id: Option<String>,
    /// Budget and pacing.
    pub limiter: LimiterSettings,
    /// Report CSV path.
    pub report: PathBuf,
    /// Summary JSON path.
    pub summary_json: Option<PathBuf>,
    /// LeadId column name; `None` finds it by the names it goes by.
    pub lead_column: Option<String>,
    /// The input's encoding when it has no byte-order mark; `None` for
    /// UTF-8 (or UTF-16 its NUL bytes show).
    pub encoding: Option<TextEncoding>,
    /// The input's cell separator; `None` finds it from the header line.
    pub delimiter: Option<u8>,
    /// Rows this run works on at most (`--limit`).
    pub limit: Option<u64>,
    /// leadId and portalId in the link.
    pub link_ids: bool,
    /// Calls in flight at most.
    pub concurrency: usize,
    /// Retry policy of API calls.
    pub retry: RetryPolicy,
    /// Quiet output: errors only.
    pub quiet: bool,
    /// How log lines are written.
    pub log_format: crate::logging::LogFormat,
    /// Prometheus textfile metrics.
    pub metrics_file: Option<PathBuf>,
    /// The cron monitor's ping URL.
    pub ping_url: Option<crate::ping::PingUrl>,
    /// Campaign name.
    pub campaign: String,
    /// Campaign state file.
    pub state: StatePath,
    /// The tenant the run works for: always known to a live run; a dry run
    /// knows it when the host and access key are given, and plans for it.
    pub tenant: Option<crate::tenant::Tenant>,
    /// Where a live run shares the tenant's API budget with other processes.
    pub budget_store: BudgetStore,
    /// Send again to leads in doubt.
    pub resend_in_doubt: bool,
    /// Send every lead again.
    pub resend: bool,
    /// The recipients' time zone and working hours.
    pub daytime: crate::daytime::Daytime,
    /// Stop, rather than warn, when emailed links would expire at night.
    pub refuse_night_links: bool,
    /// Email settings, when `--email` or `--test-email` is given.
    pub email: Option<EmailSettings>,
    /// How long a lead's (and the tenant's) key lives (`--key-lifetime`).
    pub key_lifetime: std::time::Duration,
    /// `--min-link-life`, when given.
    pub min_link_life: Option<std::time::Duration>,
    /// `--links redirect`'s settings; `None` for direct links.
    pub redirect: Option<crate::redirect::RedirectLinks>,
    /// What kind of run this is.
    pub mode: Mode,
}

/// What kind of run: a plan with no network, or calls to an API.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `--dry-run`: no call, no state written.
    DryRun(DryRun),
    /// Calls LeadSquared's API, or the built-in sandbox's.
    Live(Box<Connection>),
    /// `--sandbox`: calls the built-in sandbox, which the run starts and
    /// then calls through [`Settings::calling`].
    Sandbox(Box<SandboxPlan>),
    /// `--links redirect --mint at-click`: a real run that makes no API
    /// call; each key is minted by the link service when the lead clicks.
    Unminted,
}

/// What a `--sandbox` run needs of its sandbox, before it runs.
#[derive(Debug, Clone)]
pub struct SandboxPlan {
    /// The sandbox enforces the run's budget.
    pub budget: Rate,
    /// A PortalId the sandbox must know besides its own.
    pub portal_id: Option<String>,
    /// Timeouts of calls to it.
    pub connect_timeout: std::time::Duration,
    /// Whole-request timeout of calls to it.
    pub timeout: std::time::Duration,
    /// Its tenant key endpoint's path and method.
    pub mint_path: String,
    /// See `mint_path`.
    pub mint_method: String,
}

impl SandboxPlan {
    /// `config` (the sandbox's settings from the environment) with the run's
    /// budget and portal.
    pub fn config(&self, mut config: lsq_sandbox::SandboxConfig) -> lsq_sandbox::SandboxConfig {
        config.budget = lsq_sandbox::Budget {
            calls: self.budget.calls,
            window: self.budget.window,
        };
        if let Some(portal) = &self.portal_id {
            if !config.portal_ids.contains(portal) {
                config.portal_ids.push(portal.clone());
            }
        }
        config
    }
}

/// The settings only a dry run has.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// The portal page, when given: planned links use it.
    pub portal_url: Option<Url>,
    /// A tenant key is given (or the sandbox has one), so none is minted.
    pub tenant_key_given: bool,
    /// `--preview N`: messages to write for a person to read, and where.
    pub preview: Option<(usize, PathBuf)>,
    /// The local time the run should finish by.
    pub send_before: Option<chrono::NaiveTime>,
}

/// Everything a run that calls the API needs, none of it optional.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Host, keys and timeouts.
    pub api: ApiSettings,
    /// Where the tenant key comes from.
    pub tenant: TenantKeySource,
    /// The portal page the links open.
    pub portal_url: Url,
    /// The in-process sandbox the run calls, kept alive as long as the settings.
    pub sandbox: Option<SandboxHandle>,
}

/// The built-in sandbox a `--sandbox` run started; it stops when the last
/// copy of the settings goes.
#[derive(Clone)]
pub struct SandboxHandle(pub Arc<lsq_sandbox::Sandbox>);

impl fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SandboxHandle({})", self.0.base_url())
    }
}

/// How to email each lead its link.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// Folder with subject.txt, body.txt, optional body.html.
    pub templates: PathBuf,
    /// Sender, Reply-To and List-Unsubscribe.
    pub sender: crate::email::Sender,
    /// Recipient column.
    pub column: String,
    /// Where messages go; `None` only in a dry run given neither an SMTP
    /// server nor an outbox, as a plan sends nothing.
    pub delivery: Option<Delivery>,
    /// Optional SMTP budget.
    pub smtp_rate: Option<Rate>,
    /// Messages in flight.
    pub concurrency: usize,
    /// Attempts per message for transient failures.
    pub max_attempts: u32,
    /// Waits before the later tries of a message still deferred after
    /// its quick retries.
    pub defer: crate::email::DeferSchedule,
    /// `--test-email`: the one recipient.
    pub test_address: Option<lettre::Address>,
}

/// Where messages go.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// An SMTP server.
    Smtp(crate::email::SmtpSettings),
    /// `.eml` files in a folder.
    Outbox(PathBuf),
}

/// The campaign state file, and whether it is this run's alone (a sandbox
/// run given no `--state`), to be removed when the last copy of the settings
/// goes: a sandbox's keys die with it.
#[derive(Debug, Clone)]
pub struct StatePath {
    path: PathBuf,
    /// The setting that chose the path, for messages.
    setting: &'static str,
    _scratch: Option<Arc<tempfile::TempDir>>,
}

impl StatePath {
    /// Whether the state outlives the run (not a sandbox run's own).
    pub fn is_kept(&self) -> bool {
        self._scratch.is_none()
    }

    /// A state file that outlives the run, chosen by `setting` (`--state`,
    /// or what chose the default: `XDG_STATE_HOME`, `HOME`).
    pub fn kept(path: PathBuf, setting: &'static str) -> StatePath {
        StatePath {
            path,
            setting,
            _scratch: None,
        }
    }

    /// A state file in a new directory of the system's temporary directory,
    /// made for this run with a random name and mode 0700 (so no other user
    /// can plant a file or link in it), and removed with everything in it
    /// when the run ends, however it ends.
    fn scratch() -> std::io::Result<StatePath> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("lsq-dispatch-sandbox-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        Ok(StatePath {
            path: dir.path().join("state.sqlite"),
            setting: "TMPDIR",
            _scratch: Some(Arc::new(dir)),
        })
    }

    /// Where the state file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The setting that chose the state file: `--state`, `XDG_STATE_HOME`,
    /// `HOME` or, for a sandbox run's own, `TMPDIR`.
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl Settings {
    /// The settings of a `--sandbox` run once `sandbox` runs: the run calls
    /// it, with its keys, and links open its portal page. Other settings are
    /// returned as they are.
    pub fn calling(self, sandbox: lsq_sandbox::Sandbox) -> anyhow::Result<Settings> {
        let Mode::Sandbox(plan) = &self.mode else {
            return Ok(self);
        };
        let config = sandbox.config().clone();
        let connection = Connection {
            api: ApiSettings {
                host: parse_host(&sandbox.base_url())?,
                access_key: Secret::new(config.access_key),
                secret_key: Secret::new(config.secret_key),
                connect_timeout: plan.connect_timeout,
                timeout: plan.timeout,
            },
            tenant: TenantKeySource {
                given: Some(Secret::new(config.tenant_auth_key)),
                mint_path: plan.mint_path.clone(),
                mint_method: plan.mint_method.clone(),
                lifetime: self.key_lifetime,
            },
            portal_url: Url::parse(&sandbox.portal_url())?,
            sandbox: Some(SandboxHandle(Arc::new(sandbox))),
        };
        Ok(Settings {
            tenant: Some(crate::tenant::Tenant::new(
                &connection.api.host,
                &connection.api.access_key,
            )),
            mode: Mode::Live(Box::new(connection)),
            ..self
        })
    }

    /// True for `--dry-run`.
    pub fn is_dry_run(&self) -> bool {
        matches!(self.mode, Mode::DryRun(_))
    }

    /// The API connection of a run that calls one.
    pub fn connection(&self) -> Option<&Connection> {
        match &self.mode {
            Mode::Live(connection) => Some(connection),
            Mode::DryRun(_) | Mode::Sandbox(_) | Mode::Unminted => None,
        }
    }

    /// `--test-email`'s address.
    pub fn test_address(&self) -> Option<&lettre::Address> {
        self.email.as_ref().and_then(|e| e.test_address.as_ref())
    }

    /// Messages a dry run previews.
    pub fn preview(&self) -> usize {
        match &self.mode {
            Mode::DryRun(dry) => dry.preview.as_ref().map_or(0, |(n, _)| *n),
            Mode::Live(_) | Mode::Sandbox(_) | Mode::Unminted => 0,
        }
    }

    /// Where a dry run's previews go.
    pub fn preview_outbox(&self) -> Option<&Path> {
        match &self.mode {
            Mode::DryRun(dry) => dry.preview.as_ref().map(|(_, dir)| dir.as_path()),
            Mode::Live(_) | Mode::Sandbox(_) | Mode::Unminted => None,
        }
    }

    /// What the plan needs besides the rows.
    pub fn plan_settings(&self) -> PlanSettings {
        let (tenant_key_given, send_before) = match &self.mode {
            Mode::DryRun(dry) => (dry.tenant_key_given, dry.send_before),
            Mode::Live(connection) => (connection.tenant.given.is_some(), None),
            Mode::Sandbox(_) | Mode::Unminted => (true, None),
        };
        PlanSettings {
            rate: self.limiter.rate,
            tenant_key_given,
            send_before,
            emails: self.email.is_some(),
            daytime: self.daytime,
            key_lifetime: self.key_lifetime,
            links: self.link_mode(),
        }
    }

    /// How this run's links are made.
    pub fn link_mode(&self) -> crate::redirect::LinkMode {
        self.redirect
            .as_ref()
            .map_or(crate::redirect::LinkMode::Direct, |r| r.mode())
    }

    /// True when the run mints no key at all (`--mint at-click`).
    pub fn mints_at_click(&self) -> bool {
        self.link_mode() == crate::redirect::LinkMode::AtClick
    }

    /// For a real email run about to start at `now`: a warning when the links
    /// it makes would expire during the recipients' night. A redirect link
    /// outlives its key (the link service mints another), so it has none.
    pub fn night_warning(&self, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
        // An outbox is a review: the links are mailed by a later run.
        let mails = self.email.as_ref().is_some_and(|email| {
            email.test_address.is_none() && matches!(email.delivery, Some(Delivery::Smtp(_)))
        });
        if self.is_dry_run() || !mails || self.redirect.is_some() {
            return None;
        }
        let expires = now + self.key_lifetime;
        self.daytime
            .night_warning(expires, expires, self.key_lifetime)
    }

    /// The portal page links open; a dry run given none plans with a stand-in.
    fn page(&self) -> &Url {
        match &self.mode {
            Mode::Live(connection) => &connection.portal_url,
            Mode::DryRun(dry) => dry.portal_url.as_ref().unwrap_or(&*STAND_IN_PAGE),
            Mode::Sandbox(_) | Mode::Unminted => &STAND_IN_PAGE,
        }
    }

    /// A lead's login link, built from the current portal page.
    pub fn login_link(&self, auth_key: &str, lead_id: &str, portal_id: &str) -> String {
        let ids = self.link_ids.then_some((lead_id, portal_id));
        crate::portal_url::login_link(self.page(), auth_key, ids).into()
    }

    /// The link a lead is given, made at `now` from its key (and the key's
    /// expiry), which only `--mint at-click` goes without; and when the link
    /// expires: the key's expiry for a direct link, `--link-ttl` from now for
    /// a redirect link.
    pub fn give_link(
        &self,
        lead_id: &str,
        portal_id: &str,
        key: Option<(&Secret, chrono::DateTime<chrono::Utc>)>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> (String, chrono::DateTime<chrono::Utc>) {
        match (&self.redirect, key) {
            (Some(redirect), key) => redirect.link(lead_id, portal_id, &self.campaign, key, now),
            (None, Some((key, expires_at))) => (
                self.login_link(key.expose(), lead_id, portal_id),
                expires_at,
            ),
            (None, None) => unreachable!("a direct link is always made from a key"),
        }
    }

    /// The link a dry run puts in a planned message.
    pub fn planned_link(&self) -> String {
        match &self.redirect {
            Some(redirect) => redirect.planned_link(),
            None => crate::portal_url::login_link(self.page(), "PLANNED-KEY", None).into(),
        }
    }
}

/// The page a dry run's planned messages link to when no portal URL is given.
static STAND_IN_PAGE: std::sync::LazyLock<Url> = std::sync::LazyLock::new(|| {
    Url::parse("https://portal.example.invalid/").expect("a valid URL")
});

/// `leads.csv` → `leads-report.csv` in the current directory; a dry run's
/// plan is `leads-plan.csv` beside the input, so planning never overwrites
/// the report of a real run (or in the current directory, for an input that
/// is no regular file, such as `/dev/stdin`). The names keep the input
/// name's bytes, UTF-8 or not.
pub fn default_report_path(input: &Path, dry_run: bool) -> PathBuf {
    let stem = input.file_stem().unwrap_or("leads".as_ref());
    let device = std::fs::metadata(input).is_ok_and(|meta| !meta.is_file());
    let plan = crate::paths::named_after(stem, "-plan.csv");
    if dry_run && device {
        PathBuf::from(plan)
    } else if dry_run {
        input.with_file_name(plan)
    } else {
        PathBuf::from(crate::paths::named_after(stem, "-report.csv"))
    }
}

#[cfg(test)]
mod tests;
