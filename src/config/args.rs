//! The `run` subcommand's settings: one struct that clap fills from the
//! flags (and their environment variables) and serde from the `--config`
//! file; `merge` folds the file in under the flags, once.

use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveTime;
use chrono_tz::Tz;
use clap::Args;
use lettre::message::Mailbox;
use serde::Deserialize;
use url::Url;

use super::value;
use super::RedisUrl;
use crate::daytime::WorkingHours;
use crate::email::ListUnsubscribe;
use crate::input::TextEncoding;
use crate::limiter::Rate;
use crate::ping::PingUrl;
use crate::secret::Secret;

/// What `run --help` ends with, before the exit codes: where the secrets
/// come from (they have no flags), and examples.
const RUN_HELP: &str = "\
Credentials (from the environment or the --config file, never a flag; set each in single
quotes, as keys hold $, & and the like):
  LSQ_ACCESS_KEY, LSQ_SECRET_KEY   the tenant's API access key and secret key
  LSQ_TENANT_AUTH_KEY              the tenant auth key (minted with the two keys when unset)
  LSQ_PUBLIC_AUTH_KEY              the public auth key, for `otp`
  LSQ_SMTP_USER, LSQ_SMTP_PASSWORD the SMTP login, for --email
  LSQ_LINK_SECRET                  the signing secret of --links redirect
  LSQ_PING_URL                     the cron monitor's URL (it holds a token)

Examples:
  lsq-dispatch run leads.csv --sandbox
  lsq-dispatch run leads.csv --dry-run --config /etc/lsq-dispatch/lsq-dispatch.toml
  lsq-dispatch run leads.csv --config lsq.toml --email --campaign spring --report report.csv
  lsq-dispatch run leads.csv --email --test-email me@example.com --config lsq.toml";

/// `lsq-dispatch run LEADS.csv`.
///
/// Secrets come from the environment (LSQ_ACCESS_KEY, LSQ_SECRET_KEY,
/// LSQ_TENANT_AUTH_KEY, LSQ_SMTP_USER, LSQ_SMTP_PASSWORD) or the config file,
/// never from a flag.
// The same struct holds the `--config` file (the flags' settings under
// their names in snake case, and the file-only ones at the end, with no
// flag); `config::merge` folds the file in under the flags, once.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[command(after_help = format!("{RUN_HELP}\n\n{}", crate::exit::HELP))]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    /// The input CSV: a header row with a LeadId column (optional PortalId, Email, FirstName, …).
    #[arg(value_name = "LEADS.csv")]
    #[serde(skip)]
    pub input: PathBuf,

    /// TOML settings file (flags and environment win over it).
    #[arg(long, value_name = "PATH", help_heading = "Input")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// API host, a URL or a bare host (https assumed), e.g. portalapi-in21.leadsquared.com.
    #[arg(long, env = "LSQ_HOST", hide_env_values = true, value_parser = value::host, help_heading = "LeadSquared API")]
    #[serde(default, deserialize_with = "value::file::host")]
    pub host: Option<Url>,

    /// Default PortalId (a PortalId column overrides it per row).
    #[arg(long, env = "LSQ_PORTAL_ID", hide_env_values = true, value_parser = value::portal_id, help_heading = "LeadSquared API")]
    #[serde(default, deserialize_with = "value::file::portal_id")]
    pub portal_id: Option<String>,

    /// The portal page URL the links open, e.g. https://apply.example.lsqportal.com/
    /// (plain http only to this machine).
    #[arg(long, env = "LSQ_PORTAL_URL", hide_env_values = true, value_parser = value::portal_url, help_heading = "LeadSquared API")]
    #[serde(default, deserialize_with = "value::file::portal_url")]
    pub portal_url: Option<Url>,

    /// The tenant's API budget, CALLS/WINDOW: at most 10000 calls, a window
    /// from 1ms to 1h [default: 25/5s].
    #[arg(long, value_name = "N/W", help_heading = "LeadSquared API")]
    #[serde(default, deserialize_with = "value::file::rate")]
    pub rate: Option<Rate>,

    /// Per-lead report CSV [default: <input name>-report.csv in the current directory;
    /// with --dry-run, <input name>-plan.csv beside the input].
    #[arg(long, value_name = "PATH", help_heading = "Report and monitoring")]
    #[serde(default)]
    pub report: Option<PathBuf>,

    /// Also write a machine-readable summary as JSON.
    #[arg(long, value_name = "PATH", help_heading = "Report and monitoring")]
    #[serde(default)]
    pub summary_json: Option<PathBuf>,

    /// Plan and report without any network call.
    #[arg(long, help_heading = "Input")]
    #[serde(skip)]
    pub dry_run: bool,

    /// Run against the built-in sandbox, started in-process (no account needed).
    #[arg(long, help_heading = "Input")]
    #[serde(skip)]
    pub sandbox: bool,

    /// Name of the LeadId column [default: the one column named LeadId,
    /// ProspectID or Lead ID, in any case, with or without spaces].
    #[arg(long, value_name = "NAME", help_heading = "Input")]
    #[serde(default, deserialize_with = "value::file::words")]
    pub lead_column: Option<String>,

    /// The input's encoding when it has no byte-order mark: utf-8, latin1,
    /// windows-1252 or utf-16 [default: UTF-8, or UTF-16 shown by a mark or
    /// NUL bytes].
    #[arg(long, value_name = "NAME", value_parser = value::encoding, help_heading = "Input")]
    #[serde(default, deserialize_with = "value::file::encoding")]
    pub encoding: Option<TextEncoding>,

    /// The input's cell separator, one character (`tab` or `\t` for a tab)
    /// [default: whichever of , ; tab | the header line uses most].
    #[arg(long, value_name = "CHAR", value_parser = value::delimiter, help_heading = "Input")]
    #[serde(default, deserialize_with = "value::file::delimiter")]
    pub delimiter: Option<u8>,

    /// Process only the first N valid rows this campaign has not done; the
    /// rest are reported skipped and a later run continues with them.
    #[arg(long, value_name = "N", value_parser = value::at_least_one::<u64>, help_heading = "Input")]
    #[serde(default, deserialize_with = "value::file::at_least_one")]
    pub limit: Option<u64>,

    /// Put leadId and portalId in the link before authKey, as newer docs show.
    #[arg(long, help_heading = "Links")]
    #[serde(default)]
    pub link_ids: bool,

    /// Calls in flight at most [default: twice the budget's calls, 4 to 256].
    #[arg(long, value_name = "N", value_parser = value::at_least_one::<usize>, help_heading = "LeadSquared API")]
    #[serde(default, deserialize_with = "value::file::at_least_one")]
    pub concurrency: Option<usize>,

    /// Attempts per lead for 5xx, timeouts and connection failures [default: 5].
    #[arg(long, value_name = "N", value_parser = value::at_least_one::<u32>, help_heading = "LeadSquared API")]
    #[serde(default, deserialize_with = "value::file::at_least_one")]
    pub max_attempts: Option<u32>,

    /// Whole-request timeout, at most 24h [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = value::timeout, help_heading = "LeadSquared API")]
    #[serde(default, deserialize_with = "value::file::timeout")]
    pub timeout: Option<Duration>,

    /// Longest time a call may take to reach the server once sent; the limiter
    /// keeps this much clear of every window; at most 1m [default: 120ms].
    #[arg(long, value_name = "DURATION", value_parser = value::margin, help_heading = "LeadSquared API")]
    #[serde(default, deserialize_with = "value::file::margin")]
    pub arrival_margin: Option<Duration>,

    /// Largest burst of calls sent at once [default: the budget's calls].
    #[arg(long, value_name = "N", value_parser = value::at_least_one::<u32>, help_heading = "LeadSquared API")]
    #[serde(default, deserialize_with = "value::file::at_least_one")]
    pub burst: Option<u32>,

    /// Path of the tenant auth key endpoint, used when LSQ_TENANT_AUTH_KEY is not set
    /// [default: /api/Authentication/TenantAuthKey].
    #[arg(long, value_name = "PATH", help_heading = "LeadSquared API")]
    #[serde(default, deserialize_with = "value::file::words")]
    pub tenant_key_path: Option<String>,

    /// Send each linked lead its link by email.
    #[arg(long, help_heading = "Email")]
    #[serde(default)]
    pub email: bool,

    /// SMTP server: smtps://host:465, smtp://host:587?tls=required, or plain smtp:// to loopback only.
    #[arg(
        long,
        env = "LSQ_SMTP_URL",
        hide_env_values = true,
        value_name = "URL",
        help_heading = "Email"
    )]
    #[serde(default, deserialize_with = "value::file::words")]
    pub smtp_url: Option<String>,

    /// Write each email as an .eml file in DIR instead of sending it.
    #[arg(long, value_name = "DIR", help_heading = "Email")]
    #[serde(default)]
    pub outbox: Option<PathBuf>,

    /// Email templates: a folder with subject.txt, body.txt and optional body.html.
    #[arg(long, value_name = "DIR", help_heading = "Email")]
    #[serde(default)]
    pub templates: Option<PathBuf>,

    /// Sender address, e.g. "Acme <invites@acme.example>".
    #[arg(
        help_heading = "Email",
        value_parser = value::from,
        long,
        env = "LSQ_MAIL_FROM",
        hide_env_values = true,
        value_name = "ADDRESS"
    )]
    #[serde(default, deserialize_with = "value::file::from")]
    pub from: Option<Mailbox>,

    /// Reply-To address of every message, e.g. "Acme Support <support@acme.example>".
    #[arg(long, value_name = "ADDRESS", value_parser = value::reply_to, help_heading = "Email")]
    #[serde(default, deserialize_with = "value::file::reply_to")]
    pub reply_to: Option<Mailbox>,

    /// List-Unsubscribe header: mailto:ADDRESS, an https:// URL (also sent as
    /// RFC 8058 one-click; {email} in it stands for the recipient), or one of
    /// each separated by a comma.
    #[arg(long, value_name = "URI", value_parser = value::list_unsubscribe, help_heading = "Email")]
    #[serde(default, deserialize_with = "value::file::list_unsubscribe")]
    pub list_unsubscribe: Option<ListUnsubscribe>,

    /// Column holding each lead's email address [default: Email].
    #[arg(long, value_name = "NAME", help_heading = "Email")]
    #[serde(default, deserialize_with = "value::file::words")]
    pub email_column: Option<String>,

    /// SMTP budget, MESSAGES/WINDOW, e.g. 10/1s (limits as --rate) [default: none].
    #[arg(long, value_name = "N/W", help_heading = "Email")]
    #[serde(default, deserialize_with = "value::file::rate")]
    pub smtp_rate: Option<Rate>,

    /// Name given in EHLO [default: this machine's fully qualified name, else the --from domain].
    #[arg(
        help_heading = "Email",
        long,
        env = "LSQ_HELO_NAME",
        value_name = "NAME",
        value_parser = value::helo_name
    )]
    #[serde(default, deserialize_with = "value::file::helo_name")]
    pub helo_name: Option<String>,

    /// Waits before each later try of a message the server deferred (4xx, greylisting) [default: 1m,2m,4m,8m; none: fail at once].
    #[arg(long, value_name = "WAITS", value_parser = value::smtp_defer, help_heading = "Email")]
    #[serde(default, deserialize_with = "value::file::smtp_defer")]
    pub smtp_defer: Option<crate::email::DeferSchedule>,

    /// CA certificates (PEM) to trust for the SMTP server, besides the built-in and the system's.
    #[arg(
        long,
        env = "LSQ_SMTP_CA_FILE",
        value_name = "PATH",
        help_heading = "Email"
    )]
    #[serde(default)]
    pub smtp_ca_file: Option<PathBuf>,

    /// Messages in flight at most [default: the budget's calls, 8 to 32
    /// (25); 32 with --mint at-click].
    #[arg(long, value_name = "N", help_heading = "Email")]
    #[serde(default)]
    pub email_concurrency: Option<usize>,

    /// Render the first valid row's message with a real link and send it only to
    /// ADDRESS; no other row is touched and no report is written.
    #[arg(long, value_name = "ADDRESS", value_parser = value::address, help_heading = "Email")]
    #[serde(skip)]
    pub test_email: Option<lettre::Address>,

    /// Campaign name, used in Message-IDs and campaign state [default: the input's file name without extension and a fingerprint of its full path; for a retry file, its campaign].
    #[arg(long, value_name = "NAME", help_heading = "Campaign state")]
    #[serde(default, deserialize_with = "value::file::words")]
    pub campaign: Option<String>,

    /// With --dry-run --email: write the first N messages as .eml files to the
    /// outbox (--outbox, or ./preview) for a person to read.
    #[arg(long, value_name = "N", help_heading = "Input")]
    #[serde(skip)]
    pub preview: Option<usize>,

    /// The recipients' time zone, an IANA name such as Europe/Berlin: email
    /// templates show expires_at_readable in it, and the night check uses it
    /// [default: readable times in UTC; the night check in this machine's zone].
    #[arg(long, value_name = "ZONE", value_parser = value::timezone, help_heading = "The recipients' day")]
    #[serde(default, deserialize_with = "value::file::timezone")]
    pub timezone: Option<Tz>,

    /// The recipients' working hours, local time: an email run (and its dry
    /// run) warns when its links would expire outside them [default: 08:00-20:00].
    #[arg(long, value_name = "HH:MM-HH:MM", value_parser = value::working_hours, help_heading = "The recipients' day")]
    #[serde(default, deserialize_with = "value::file::working_hours")]
    pub working_hours: Option<WorkingHours>,

    /// Refuse to start an email run whose links would expire outside the
    /// working hours, instead of warning and sending them (exit 1).
    #[arg(long, help_heading = "The recipients' day")]
    #[serde(default)]
    pub refuse_night_links: bool,

    /// Warn when the planned run would finish after this time of day (HH:MM),
    /// in --timezone's zone when given, else this machine's.
    #[arg(long, value_name = "HH:MM", value_parser = value::time_of_day, help_heading = "Input")]
    #[serde(skip)]
    pub send_before: Option<NaiveTime>,

    /// Campaign state file [default: $XDG_STATE_HOME/lsq-dispatch/state.sqlite].
    #[arg(long, value_name = "PATH", help_heading = "Campaign state")]
    #[serde(default)]
    pub state: Option<PathBuf>,

    /// Share the tenant's API budget with runs on other machines through this
    /// Redis server: redis://HOST:PORT[/DB], or rediss://… for TLS [default:
    /// the budget file beside the campaign state, shared on this machine].
    #[arg(
        help_heading = "LeadSquared API",
        value_parser = value::budget_store,
        long,
        env = "LSQ_BUDGET_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    #[serde(default, deserialize_with = "value::file::budget_store")]
    pub budget_store: Option<RedisUrl>,

    /// Send again to leads whose email may or may not have gone out before a crash.
    #[arg(long, help_heading = "Campaign state")]
    #[serde(skip)]
    pub resend_in_doubt: bool,

    /// Deliberately send every lead its email again, even those already sent,
    /// each under a new Message-ID.
    #[arg(long, help_heading = "Campaign state")]
    #[serde(skip)]
    pub resend: bool,

    /// Print nothing but errors: no progress, no notices, no closing line.
    #[arg(
        long,
        short,
        conflicts_with = "verbose",
        help_heading = "Report and monitoring"
    )]
    #[serde(skip)]
    pub quiet: bool,

    /// Say more: a line for each row's outcome, each API attempt tried again
    /// and each ping delivered.
    #[arg(long, short, action = clap::ArgAction::Count, help_heading = "Report and monitoring")]
    #[serde(skip)]
    pub verbose: u8,

    /// Log lines as text (timestamped when stderr is not a terminal) or as
    /// one JSON object per line, for log shippers.
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = "text",
        help_heading = "Report and monitoring"
    )]
    #[serde(skip)]
    pub log_format: crate::logging::LogFormat,

    /// Write Prometheus metrics to PATH for node_exporter's textfile
    /// collector: at the start, every 15 s, and at the end.
    #[arg(long, value_name = "PATH", help_heading = "Report and monitoring")]
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,

    /// Tell a cron monitor (healthchecks.io style) how the run goes: POST
    /// URL/start at the start, URL on success, URL/fail otherwise; https
    /// only (http to loopback).
    #[arg(long, env = "LSQ_PING_URL", hide_env_values = true, value_name = "URL", value_parser = value::ping_url, help_heading = "Report and monitoring")]
    #[serde(default, deserialize_with = "value::file::ping_url")]
    pub ping_url: Option<PingUrl>,

    /// How long LeadSquared keeps a lead's key valid for this tenant (its
    /// account manager can change it): expiry times, the reuse of stored
    /// keys and the night warnings follow it [default: 4h].
    #[arg(long, env = "LSQ_KEY_LIFETIME", hide_env_values = true, value_name = "DURATION", value_parser = value::key_lifetime, help_heading = "LeadSquared API")]
    #[serde(default, deserialize_with = "value::file::key_lifetime")]
    pub key_lifetime: Option<Duration>,

    /// The least life a stored key must have left to be used again for a
    /// link; with less, a fresh key is minted, so an emailed link does not
    /// die before the lead reads it [default: 3/4 of --key-lifetime for an
    /// email run (3h of 4h), else 1h (half the lifetime when under 2h)].
    #[arg(long, value_name = "DURATION", value_parser = value::key_lifetime, help_heading = "LeadSquared API")]
    #[serde(default, deserialize_with = "value::file::key_lifetime")]
    pub min_link_life: Option<Duration>,

    /// What the report and the mail carry: the portal URL with the lead's
    /// key (direct), or a signed link BASE/l/TOKEN to `lsq-dispatch serve`
    /// (redirect; needs --link-base and LSQ_LINK_SECRET) [default: direct].
    #[arg(long, value_name = "MODE", help_heading = "Links")]
    #[serde(default)]
    pub links: Option<crate::redirect::Links>,

    /// With --links redirect: the link service's public address, e.g.
    /// https://go.example.com (plain http only to this machine).
    #[arg(long, value_name = "URL", value_parser = value::link_base, help_heading = "Links")]
    #[serde(default, deserialize_with = "value::file::link_base")]
    pub link_base: Option<Url>,

    /// With --links redirect: how long a link opens, at most 366d [default: 30d].
    #[arg(long, value_name = "DURATION", value_parser = value::link_ttl, help_heading = "Links")]
    #[serde(default, deserialize_with = "value::file::link_ttl")]
    pub link_ttl: Option<Duration>,

    /// With --links redirect: mint each lead's key now and seal it in the
    /// link (at-send), or let the link service mint it when the person
    /// clicks, so the run makes no API call (at-click) [default: at-send].
    #[arg(long, value_name = "WHEN", help_heading = "Links")]
    #[serde(default)]
    pub mint: Option<crate::redirect::Mint>,

    /// Connect timeout of API calls [default: 10s].
    #[arg(skip)]
    #[serde(default, deserialize_with = "value::file::timeout")]
    pub connect_timeout: Option<Duration>,

    /// HTTP method of the tenant key endpoint [default: POST].
    #[arg(skip)]
    #[serde(default, deserialize_with = "value::file::words")]
    pub tenant_key_method: Option<String>,

    /// `LSQ_ACCESS_KEY`, else the file's.
    #[arg(skip)]
    #[serde(default)]
    pub access_key: Option<Secret>,

    /// `LSQ_SECRET_KEY`, else the file's.
    #[arg(skip)]
    #[serde(default)]
    pub secret_key: Option<Secret>,

    /// `LSQ_TENANT_AUTH_KEY`, else the file's.
    #[arg(skip)]
    #[serde(default)]
    pub tenant_auth_key: Option<Secret>,

    /// `LSQ_PUBLIC_AUTH_KEY`, else the file's.
    #[arg(skip)]
    #[serde(default)]
    pub public_auth_key: Option<Secret>,

    /// The secrets redirect links are sealed with: `LSQ_LINK_SECRET`, else
    /// the file's.
    #[arg(skip)]
    #[serde(default)]
    pub link_secret: Option<Secret>,

    /// SMTP login when the URL has none: `LSQ_SMTP_USER`, else the file's.
    #[arg(skip)]
    #[serde(default, deserialize_with = "value::file::words")]
    pub smtp_user: Option<String>,

    /// SMTP password when the URL has none: `LSQ_SMTP_PASSWORD`, else the
    /// file's.
    #[arg(skip)]
    #[serde(default)]
    pub smtp_password: Option<Secret>,

    /// Longest time one SMTP attempt may take [default: 30s].
    #[arg(skip)]
    #[serde(default, deserialize_with = "value::file::timeout")]
    pub smtp_timeout: Option<Duration>,
}
