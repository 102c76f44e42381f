//! The command line: subcommands and flags. Values left unset here fall back to
//! the environment (through clap), then the `--config` file, then defaults
//! (see `config`).

use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, Subcommand};

use crate::limiter::Rate;

/// Turn a CSV of LeadSquared LeadIds into portal auto-login links, paced to the
/// tenant's API budget, optionally email each lead its link, and write a
/// per-lead report.
#[derive(Debug, Parser)]
#[command(name = "lsq-dispatch", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line, or exits: 0 after `--help` or `--version`,
    /// 2 for a usage error. A secret given as a flag is told where secrets go.
    pub fn parse_or_exit() -> Cli {
        Cli::try_parse().unwrap_or_else(|error| match secret_flag(&error) {
            Some(message) => {
                eprintln!("error: {message}");
                std::process::exit(2)
            }
            None => error.exit(),
        })
    }
}

/// Secrets that have a variable (and a config file key) but no flag, by the
/// flag a user might try.
const SECRET_FLAGS: [(&str, &str, &str); 6] = [
    ("accesskey", "LSQ_ACCESS_KEY", "access_key"),
    ("secretkey", "LSQ_SECRET_KEY", "secret_key"),
    ("tenantauthkey", "LSQ_TENANT_AUTH_KEY", "tenant_auth_key"),
    ("publicauthkey", "LSQ_PUBLIC_AUTH_KEY", "public_auth_key"),
    ("smtpuser", "LSQ_SMTP_USER", "smtp_user"),
    ("smtppassword", "LSQ_SMTP_PASSWORD", "smtp_password"),
];

/// For an unknown flag that names a secret (`--access-key`, `--secret_key`,
/// `--accessKey=…`), where that secret comes from instead. Clap's own advice
/// (pass it after `--`) would make the run read it as a file name. The
/// value is never repeated.
fn secret_flag(error: &clap::Error) -> Option<String> {
    if error.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(given)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = given.split('=').next().unwrap_or_default();
    let name: String = flag
        .trim_start_matches('-')
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    let (_, variable, key) = SECRET_FLAGS.iter().find(|(n, _, _)| *n == name)?;
    Some(format!(
        "{flag}: secrets are never given as flags, which other users see in `ps` and \
         which stay in the shell history; set {variable} in the environment (`run` also \
         reads {key} from its --config file, which should have mode 0600)"
    ))
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a login link for every lead in a CSV (and optionally email it).
    Run(Box<RunArgs>),
    /// Show each campaign's progress from the state file (--json for scripts),
    /// export one as a report, or prune finished ones.
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Sign a lead in to the portal with a one-time password.
    #[command(subcommand)]
    Otp(OtpCommand),
    /// Serve the built-in LeadSquared simulator on loopback.
    Sandbox(Box<crate::sandbox::SandboxArgs>),
    /// Write the man pages or a shell's completions (for packaging).
    #[command(subcommand, hide = true)]
    Generate(crate::generate::Generate),
}

/// `lsq-dispatch run LEADS.csv`.
///
/// Secrets come from the environment (LSQ_ACCESS_KEY, LSQ_SECRET_KEY,
/// LSQ_TENANT_AUTH_KEY, LSQ_SMTP_USER, LSQ_SMTP_PASSWORD) or the config file,
/// never from a flag.
#[derive(Debug, Clone, Default, Args)]
#[command(after_help = crate::exit::HELP)]
pub struct RunArgs {
    /// The input CSV: a header row with a LeadId column (optional PortalId, Email, FirstName, …).
    #[arg(value_name = "LEADS.csv")]
    pub input: PathBuf,

    /// TOML settings file (flags and environment win over it).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// API host, a URL or a bare host (https assumed), e.g. portalapi-in21.leadsquared.com.
    #[arg(long, env = "LSQ_HOST", hide_env_values = true)]
    pub host: Option<String>,

    /// Default PortalId (a PortalId column overrides it per row).
    #[arg(long, env = "LSQ_PORTAL_ID", hide_env_values = true)]
    pub portal_id: Option<String>,

    /// The portal page URL the links open, e.g. https://apply.example.lsqportal.com/
    /// (plain http only to this machine).
    #[arg(long, env = "LSQ_PORTAL_URL", hide_env_values = true)]
    pub portal_url: Option<String>,

    /// The tenant's API budget, CALLS/WINDOW: at most 10000 calls, a window
    /// from 1ms to 1h [default: 25/5s].
    #[arg(long, value_name = "N/W")]
    pub rate: Option<Rate>,

    /// Per-lead report CSV [default: <input name>-report.csv in the current directory;
    /// with --dry-run, <input name>-plan.csv beside the input].
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Also write a machine-readable summary as JSON.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,

    /// Plan and report without any network call.
    #[arg(long)]
    pub dry_run: bool,

    /// Run against the built-in sandbox, started in-process (no account needed).
    #[arg(long)]
    pub sandbox: bool,

    /// Name of the LeadId column [default: the one column named LeadId,
    /// ProspectID or Lead ID, in any case, with or without spaces].
    #[arg(long, value_name = "NAME")]
    pub lead_column: Option<String>,

    /// The input's encoding when it has no byte-order mark: utf-8, latin1,
    /// windows-1252 or utf-16 [default: UTF-8, or UTF-16 shown by a mark or
    /// NUL bytes].
    #[arg(long, value_name = "NAME")]
    pub encoding: Option<String>,

    /// The input's cell separator, one character (`tab` or `\t` for a tab)
    /// [default: whichever of , ; tab | the header line uses most].
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<String>,

    /// Process only the first N valid rows this campaign has not done; the
    /// rest are reported skipped and a later run continues with them.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,

    /// Put leadId and portalId in the link before authKey, as newer docs show.
    #[arg(long)]
    pub link_ids: bool,

    /// Calls in flight at most [default: twice the budget's calls, 4 to 256].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,

    /// Attempts per lead for 5xx, timeouts and connection failures [default: 5].
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,

    /// Whole-request timeout, at most 24h [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Longest time a call may take to reach the server once sent; the limiter
    /// keeps this much clear of every window; at most 1m [default: 150ms].
    #[arg(long, value_name = "DURATION")]
    pub arrival_margin: Option<String>,

    /// Largest burst of calls sent at once [default: the budget's calls].
    #[arg(long, value_name = "N")]
    pub burst: Option<u32>,

    /// Path of the tenant auth key endpoint, used when LSQ_TENANT_AUTH_KEY is not set
    /// [default: /api/Authentication/TenantAuthKey].
    #[arg(long, value_name = "PATH")]
    pub tenant_key_path: Option<String>,

    /// Send each linked lead its link by email.
    #[arg(long)]
    pub email: bool,

    /// SMTP server: smtps://host:465, smtp://host:587?tls=required, or plain smtp:// to loopback only.
    #[arg(long, env = "LSQ_SMTP_URL", hide_env_values = true, value_name = "URL")]
    pub smtp_url: Option<String>,

    /// Write each email as an .eml file in DIR instead of sending it.
    #[arg(long, value_name = "DIR")]
    pub outbox: Option<PathBuf>,

    /// Email templates: a folder with subject.txt, body.txt and optional body.html.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,

    /// Sender address, e.g. "Acme <invites@acme.example>".
    #[arg(
        long,
        env = "LSQ_MAIL_FROM",
        hide_env_values = true,
        value_name = "ADDRESS"
    )]
    pub from: Option<String>,

    /// Reply-To address of every message, e.g. "Acme Support <support@acme.example>".
    #[arg(long, value_name = "ADDRESS")]
    pub reply_to: Option<String>,

    /// List-Unsubscribe header: mailto:ADDRESS, an https:// URL (also sent as
    /// RFC 8058 one-click; {email} in it stands for the recipient), or one of
    /// each separated by a comma.
    #[arg(long, value_name = "URI")]
    pub list_unsubscribe: Option<String>,

    /// Column holding each lead's email address [default: Email].
    #[arg(long, value_name = "NAME")]
    pub email_column: Option<String>,

    /// SMTP budget, MESSAGES/WINDOW, e.g. 10/1s (limits as --rate) [default: none].
    #[arg(long, value_name = "N/W")]
    pub smtp_rate: Option<Rate>,

    /// Messages in flight at most [default: 8].
    #[arg(long, value_name = "N")]
    pub email_concurrency: Option<usize>,

    /// Render the first valid row's message with a real link and send it only to
    /// ADDRESS; no other row is touched and no report is written.
    #[arg(long, value_name = "ADDRESS")]
    pub test_email: Option<String>,

    /// Campaign name, used in Message-IDs and campaign state [default: the input's file name without extension and a fingerprint of its full path; for a retry file, its campaign].
    #[arg(long, value_name = "NAME")]
    pub campaign: Option<String>,

    /// With --dry-run --email: write the first N messages as .eml files to the
    /// outbox (--outbox, or ./preview) for a person to read.
    #[arg(long, value_name = "N")]
    pub preview: Option<usize>,

    /// The recipients' time zone, an IANA name such as Europe/Berlin: email
    /// templates show expires_at_readable in it, and the night check uses it
    /// [default: readable times in UTC; the night check in this machine's zone].
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,

    /// The recipients' working hours, local time: an email run (and its dry
    /// run) warns when its links would expire outside them [default: 08:00-20:00].
    #[arg(long, value_name = "HH:MM-HH:MM")]
    pub working_hours: Option<String>,

    /// Warn when the planned run would finish after this local time (HH:MM).
    #[arg(long, value_name = "HH:MM")]
    pub send_before: Option<String>,

    /// Campaign state file [default: $XDG_STATE_HOME/lsq-dispatch/state.sqlite].
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// Share the tenant's API budget with runs on other machines through this
    /// Redis server: redis://HOST:PORT[/DB], or rediss://… for TLS [default:
    /// the budget file beside the campaign state, shared on this machine].
    #[arg(
        long,
        env = "LSQ_BUDGET_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub budget_store: Option<String>,

    /// Send again to leads whose email may or may not have gone out before a crash.
    #[arg(long)]
    pub resend_in_doubt: bool,

    /// Deliberately send every lead its email again, even those already sent,
    /// each under a new Message-ID.
    #[arg(long)]
    pub resend: bool,

    /// Print nothing but errors: no progress, no notices, no closing line.
    #[arg(long, short, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Say more: a line for each row's outcome, each API attempt tried again
    /// and each ping delivered.
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log lines as text (timestamped when stderr is not a terminal) or as
    /// one JSON object per line, for log shippers.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: crate::logging::LogFormat,

    /// Write Prometheus metrics to PATH for node_exporter's textfile
    /// collector: at the start, every 15 s, and at the end.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// Tell a cron monitor (healthchecks.io style) how the run goes: POST
    /// URL/start at the start, URL on success, URL/fail otherwise; https
    /// only (http to loopback).
    #[arg(long, env = "LSQ_PING_URL", hide_env_values = true, value_name = "URL")]
    pub ping_url: Option<String>,
}

impl Cli {
    /// The logging flags: a run's, the defaults for other commands.
    pub fn log_settings(&self) -> crate::logging::LogSettings {
        match &self.command {
            Command::Run(args) => crate::logging::LogSettings {
                format: args.log_format,
                verbose: args.verbose,
                quiet: args.quiet,
            },
            _ => crate::logging::LogSettings::default(),
        }
    }
}

/// `lsq-dispatch status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The campaign [default: every campaign in the state file].
    #[arg(long, value_name = "NAME")]
    pub campaign: Option<String>,

    /// Campaign state file [default: $XDG_STATE_HOME/lsq-dispatch/state.sqlite].
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// Write the campaign's leads as a report CSV (needs --campaign).
    #[arg(long, value_name = "PATH", conflicts_with = "prune")]
    pub export: Option<PathBuf>,

    /// Print one JSON object on stdout: counts per campaign, or what
    /// --prune removed.
    #[arg(long)]
    pub json: bool,

    /// Remove the leads of finished campaigns (or of --campaign) whose last
    /// activity is older than --older-than; a campaign a run holds, or with
    /// leads in `sending`, is kept.
    #[arg(long, requires = "older_than")]
    pub prune: bool,

    /// With --prune: how long ago a campaign last ran, e.g. 90d or 12h.
    #[arg(long, value_name = "AGE", requires = "prune")]
    pub older_than: Option<String>,
}

const STATUS_HELP: &str = "Exit codes: 0 done; 1 the state file is missing or cannot be read; \
2 usage error, such as a --campaign the state file does not hold (the message lists those it \
does).";

const CREDENTIALS_HELP: &str = "Credentials come from the environment: LSQ_PUBLIC_AUTH_KEY, or \
LSQ_ACCESS_KEY and LSQ_SECRET_KEY to fetch it. Exit codes: 0 done; 1 the API refused or could \
not be reached (the message says why and what to do); 2 usage error.";

/// `lsq-dispatch otp …`. The arguments are boxed so the enum of every
/// subcommand stays small.
#[derive(Debug, Clone, Subcommand)]
pub enum OtpCommand {
    /// Have LeadSquared send a lead a one-time password; prints the Code that
    /// `otp signin` needs.
    #[command(after_help = CREDENTIALS_HELP)]
    Request(Box<RequestArgs>),
    /// Sign a lead in with the one-time password it received; prints its
    /// LeadId, the key's expiry and, with --portal-url, its login link.
    #[command(after_help = CREDENTIALS_HELP)]
    Signin(Box<SigninArgs>),
}

/// Flags both `otp` steps share.
#[derive(Debug, Clone, Args)]
pub struct OtpConnection {
    /// API host, a URL or a bare host (https assumed), e.g. portalapi-in21.leadsquared.com.
    #[arg(long, env = "LSQ_HOST", hide_env_values = true)]
    pub host: Option<String>,

    /// Portal GUID, sent as the x-lsq-portalid header.
    #[arg(
        long,
        env = "LSQ_PORTAL_ID",
        hide_env_values = true,
        value_name = "GUID"
    )]
    pub portal_id: Option<String>,

    /// The portal's register token, sent as the x-lsq-registertoken header.
    #[arg(
        long,
        env = "LSQ_REGISTER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub register_token: Option<String>,

    /// The tenant's API budget, CALLS/WINDOW.
    #[arg(long, value_name = "N/W", default_value = "25/5s")]
    pub rate: Rate,

    /// Share the tenant's API budget with runs on other machines through this
    /// Redis server: redis://HOST:PORT[/DB], or rediss://… for TLS [default:
    /// the budget file beside the default campaign state, shared on this machine].
    #[arg(
        long,
        env = "LSQ_BUDGET_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub budget_store: Option<String>,

    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `lsq-dispatch otp request`.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// The lead's phone exactly as stored on the lead, e.g. +14-157415569
    /// (with --field EmailAddress, its email address).
    #[arg(long, value_name = "PHONE")]
    pub phone: String,

    /// The lead field the phone is looked up in.
    #[arg(long, value_name = "NAME", default_value = "Phone")]
    pub field: String,

    /// Write the Code to this file (mode 0600) instead of printing it.
    #[arg(long, value_name = "PATH")]
    pub code_file: Option<PathBuf>,

    /// Host, headers, budget and output form.
    #[command(flatten)]
    pub connection: OtpConnection,
}

/// `lsq-dispatch otp signin`.
#[derive(Debug, Clone, Args)]
pub struct SigninArgs {
    /// The phone the OTP was requested for, as given to `otp request`.
    #[arg(long, value_name = "PHONE")]
    pub phone: String,

    /// The Code `otp request` printed.
    #[arg(
        long,
        value_name = "CODE",
        required_unless_present = "code_file",
        conflicts_with = "code_file"
    )]
    pub code: Option<String>,

    /// Read the Code from the file `otp request --code-file` wrote.
    #[arg(long, value_name = "PATH")]
    pub code_file: Option<PathBuf>,

    /// The one-time password the lead received (LSQ_OTP keeps it out of the
    /// shell history).
    #[arg(long, env = "LSQ_OTP", hide_env_values = true, value_name = "OTP")]
    pub otp: String,

    /// The portal page URL, to print the lead's login link.
    #[arg(
        long,
        env = "LSQ_PORTAL_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub portal_url: Option<String>,

    /// Host, headers, budget and output form.
    #[command(flatten)]
    pub connection: OtpConnection,
}
