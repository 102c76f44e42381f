//! Merging flags, environment, file and defaults into [`Settings`], once.
//! A `--sandbox` run starts its sandbox here, so the settings it returns
//! already point at it and nothing patches them later.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lettre::message::Mailbox;

use super::{
    portal_id_setting, usage, BudgetStore, Connection, Credentials, Delivery, DryRun,
    EmailSettings, FileConfig, Mode, SandboxHandle, Settings, StatePath, UsageError,
    DEFAULT_TENANT_KEY_PATH,
};
use crate::api::{ApiSettings, TenantKeySource, KEY_LIFETIME};
use crate::cli::RunArgs;
use crate::daytime::{parse_zone, Daytime};
use crate::email::{ListUnsubscribe, Sender};
use crate::limiter::{parse_duration, LimiterSettings, Rate, DEFAULT_ARRIVAL_MARGIN};
use crate::ping::PingUrl;
use crate::retry::RetryPolicy;
use crate::secret::Secret;
use crate::tenant::Tenant;

/// Sender of sandbox runs that name none.
const SANDBOX_SENDER: &str = "lsq-dispatch sandbox <sandbox@lsq-dispatch.invalid>";
/// Where `--preview` writes when no `--outbox` is given.
const PREVIEW_OUTBOX: &str = "preview";
/// Outbox of sandbox runs that name neither an SMTP server nor an outbox.
const SANDBOX_OUTBOX: &str = "outbox";

/// The flag's value, else the file's; blank counts as unset.
pub(super) fn pick(flag: &Option<String>, file: &Option<String>) -> Option<String> {
    flag.clone()
        .or_else(|| file.clone())
        .filter(|v| !v.trim().is_empty())
}

/// The flag's value, else the file's, as given: a tab is blank, yet a
/// separator.
fn pick_raw(flag: &Option<String>, file: &Option<String>) -> Option<String> {
    flag.clone()
        .or_else(|| file.clone())
        .filter(|v| !v.is_empty())
}

/// `--delimiter`: one character other than a quote or a line break; `tab`
/// and `\t` name a tab.
fn delimiter_setting(value: &str) -> Result<u8, UsageError> {
    let byte = match value {
        "tab" | "TAB" | "\\t" | "\t" => Some(b'\t'),
        v if v.len() == 1 => v.bytes().next().filter(|b| !b"\"\r\n".contains(b)),
        _ => None,
    };
    byte.ok_or_else(|| {
        usage(format!(
            "--delimiter {value:?}: give one ASCII character other than a quote, such as , ; | \
             or tab"
        ))
    })
}

/// A duration setting: a timeout (above zero, at most 24h) or the arrival
/// margin (zero allowed, at most a minute: it stands for network delay).
fn duration_setting(
    name: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, UsageError> {
    let margin = name == "--arrival-margin";
    let (longest, shown) = match margin {
        true => (Duration::from_secs(60), "1m"),
        false => (crate::limiter::MAX_DURATION, "24h"),
    };
    match value {
        None => Ok(default),
        Some(v) => parse_duration(v)
            .filter(|d| (!d.is_zero() || margin) && *d <= longest)
            .ok_or_else(|| {
                usage(format!(
                    "{name}: invalid duration {v:?} (use e.g. 250ms, 30s, 2m; at most {shown})"
                ))
            }),
    }
}

/// A budget from its flag, else from the file (named in the message).
fn rate_setting(
    flag: Option<Rate>,
    file: &Option<String>,
    key: &str,
    config: &Path,
) -> Result<Option<Rate>, UsageError> {
    match (flag, file) {
        (Some(rate), _) => Ok(Some(rate)),
        (None, Some(text)) => text
            .parse::<Rate>()
            .map(Some)
            .map_err(|e| usage(format!("{key} in {}: {e}", config.display()))),
        (None, None) => Ok(None),
    }
}

/// A count that must be at least 1.
fn positive<T: PartialEq + From<u8>>(name: &str, value: T) -> Result<T, UsageError> {
    if value == T::from(0) {
        return Err(usage(format!("{name} must be at least 1")));
    }
    Ok(value)
}

impl Settings {
    /// Merges flags (clap already folded in the environment for flags that
    /// have a variable), the config file, secrets from the environment or the
    /// file, and defaults; checks every value's form and that a live run has
    /// everything it needs; starts the sandbox of a `--sandbox` run.
    pub async fn resolve(args: &RunArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let config = args.config.clone().unwrap_or_default();
        let rate = rate_setting(args.rate, &file.rate, "rate", &config)?.unwrap_or(Rate::DEFAULT);
        let portal_id = pick(&args.portal_id, &file.portal_id)
            .map(|p| portal_id_setting(&p))
            .transpose()?;
        let max_attempts = positive(
            "--max-attempts",
            args.max_attempts.or(file.max_attempts).unwrap_or(5),
        )?;
        let email = match args.email || file.email.unwrap_or(false) || args.test_email.is_some() {
            true => Some(email_settings(args, &file, &config, max_attempts)?),
            false => None,
        };
        // Every check that needs no network comes before the sandbox starts.
        let limiter = limiter_settings(args, &file, rate)?;
        let budget_store = budget_store(args, &file)?;
        let concurrency = positive(
            "--concurrency",
            args.concurrency
                .or(file.concurrency)
                .unwrap_or_else(|| (rate.calls as usize * 2).clamp(4, 256)),
        )?;
        if args.dry_run && args.test_email.is_some() {
            return Err(usage(
                "--test-email sends one real message and --dry-run sends nothing: drop \
                 --dry-run to send the test message (--sandbox tries it on the built-in \
                 sandbox), or use --dry-run --email --preview N to write messages to read",
            )
            .into());
        }
        let mode = if args.dry_run {
            Mode::DryRun(dry_run(args, &file)?)
        } else if args.sandbox {
            Mode::Live(Box::new(
                sandbox_connection(args, &file, rate, &portal_id).await?,
            ))
        } else {
            Mode::Live(Box::new(live_connection(args, &file)?))
        };
        // A sandbox run (or its plan) given no portal uses the sandbox's first.
        let portal_id = match portal_id {
            None if args.sandbox => lsq_sandbox::SandboxConfig::default()
                .portal_ids
                .first()
                .cloned(),
            given => given,
        };
        let tenant = match &mode {
            Mode::Live(c) => Some(Tenant::new(&c.api.host, &c.api.access_key)),
            Mode::DryRun(_) => planned_tenant(args, &file)?,
        };
        let state = state_path(args, &file)?;
        let daytime = daytime(args, &file, &config)?;
        Ok(Settings {
            input: args.input.clone(),
            portal_id,
            limiter,
            report: args
                .report
                .clone()
                .or(file.report.clone())
                .unwrap_or_else(|| super::default_report_path(&args.input, args.dry_run)),
            summary_json: args.summary_json.clone().or(file.summary_json.clone()),
            lead_column: pick(&args.lead_column, &file.lead_column),
            encoding: pick(&args.encoding, &file.encoding)
                .map(|e| e.parse().map_err(|e| usage(format!("--encoding: {e}"))))
                .transpose()?,
            delimiter: pick_raw(&args.delimiter, &file.delimiter)
                .map(|d| delimiter_setting(&d))
                .transpose()?,
            limit: args
                .limit
                .or(file.limit)
                .map(|n| positive("--limit", n))
                .transpose()?,
            link_ids: args.link_ids || file.link_ids.unwrap_or(false),
            concurrency,
            retry: RetryPolicy {
                max_attempts,
                ..RetryPolicy::default()
            },
            quiet: args.quiet,
            log_format: args.log_format,
            metrics_file: args.metrics_file.clone().or(file.metrics_file.clone()),
            ping_url: ping_url(args, &file)?,
            campaign: pick(&args.campaign, &file.campaign)
                .unwrap_or_else(|| crate::campaign::default_campaign(&args.input, state.path())),
            state,
            tenant,
            budget_store,
            resend_in_doubt: args.resend_in_doubt,
            resend: args.resend,
            daytime,
            email,
            mode,
        })
    }
}

/// `--timezone` and `--working-hours`, each named by its flag or its file
/// setting when malformed.
fn daytime(args: &RunArgs, file: &FileConfig, config: &Path) -> Result<Daytime, UsageError> {
    let mut daytime = Daytime::default();
    if let Some(zone) = pick(&args.timezone, &file.timezone) {
        let name = setting_name("--timezone", "timezone", args.timezone.is_some(), config);
        daytime.zone = Some(parse_zone(&zone).map_err(|e| usage(format!("{name}: {e}")))?);
    }
    if let Some(hours) = pick(&args.working_hours, &file.working_hours) {
        let name = setting_name(
            "--working-hours",
            "working_hours",
            args.working_hours.is_some(),
            config,
        );
        daytime.hours = hours.parse().map_err(|e| usage(format!("{name} {e}")))?;
    }
    Ok(daytime)
}

/// How a message names a setting: by its flag when the flag gave it, else
/// as the file's key.
fn setting_name(flag: &str, key: &str, from_flag: bool, config: &Path) -> String {
    match from_flag {
        true => flag.to_owned(),
        false => format!("{key} in {}", config.display()),
    }
}

/// `--ping-url`, `LSQ_PING_URL` or the file's `ping_url`, checked.
fn ping_url(args: &RunArgs, file: &FileConfig) -> Result<Option<PingUrl>, UsageError> {
    let file = file.ping_url.as_ref().map(|url| url.expose().to_owned());
    pick(&args.ping_url, &file)
        .map(|url| PingUrl::parse(&url).map_err(usage))
        .transpose()
}

fn limiter_settings(
    args: &RunArgs,
    file: &FileConfig,
    rate: Rate,
) -> Result<LimiterSettings, UsageError> {
    let burst = positive("--burst", args.burst.or(file.burst).unwrap_or(rate.calls))?;
    Ok(LimiterSettings {
        rate,
        arrival_margin: duration_setting(
            "--arrival-margin",
            pick(&args.arrival_margin, &file.arrival_margin).as_deref(),
            DEFAULT_ARRIVAL_MARGIN,
        )?,
        burst: burst.min(rate.calls),
    })
}

fn state_path(args: &RunArgs, file: &FileConfig) -> anyhow::Result<StatePath> {
    match args.state.clone().or(file.state.clone()) {
        Some(path) => Ok(StatePath::kept(path)),
        // A sandbox's keys die with it: its runs keep their state apart, for
        // this run only, and never touch a real campaign.
        None if args.sandbox => StatePath::scratch().with_context(|| {
            format!(
                "cannot make a directory for the sandbox's state in {}: set TMPDIR to a \
                 writable directory, or give --state",
                std::env::temp_dir().display()
            )
        }),
        None => Ok(StatePath::kept(crate::state::StateStore::default_path())),
    }
}

/// Where the run shares the tenant's budget: `--budget-store`, else the
/// budget file beside the campaign state; nowhere for a `--sandbox` run,
/// whose sandbox is its own.
fn budget_store(args: &RunArgs, file: &FileConfig) -> Result<BudgetStore, UsageError> {
    let state = args
        .state
        .clone()
        .or(file.state.clone())
        .unwrap_or_else(crate::state::StateStore::default_path);
    let url = pick(&args.budget_store, &file.budget_store);
    let store = BudgetStore::from_setting(url.as_deref(), &state)?;
    Ok(if args.sandbox {
        BudgetStore::Own
    } else {
        store
    })
}

fn dry_run(args: &RunArgs, file: &FileConfig) -> Result<DryRun, UsageError> {
    let portal_url = pick(&args.portal_url, &file.portal_url)
        .map(|u| portal_url_setting(&u))
        .transpose()?;
    let outbox = args.outbox.clone().or(file.outbox.clone());
    Ok(DryRun {
        portal_url,
        tenant_key_given: args.sandbox || Credentials::load(Some(file)).tenant_auth_key.is_some(),
        preview: args
            .preview
            .filter(|n| *n > 0)
            .map(|n| (n, outbox.unwrap_or_else(|| PathBuf::from(PREVIEW_OUTBOX)))),
        send_before: args
            .send_before
            .as_deref()
            .map(|t| {
                chrono::NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| {
                    usage(format!(
                        "--send-before {t:?}: use a 24-hour local time such as 06:30"
                    ))
                })
            })
            .transpose()?,
    })
}

/// The tenant a dry run plans for: the host and access key a real run with
/// the same settings would use, when both are given.
fn planned_tenant(args: &RunArgs, file: &FileConfig) -> Result<Option<Tenant>, UsageError> {
    let Some(host) = pick(&args.host, &file.host) else {
        return Ok(None);
    };
    let host = super::parse_host(&host)?;
    Ok(Credentials::load(Some(file))
        .access_key
        .map(|key| Tenant::new(&host, &key)))
}

fn portal_url_setting(value: &str) -> Result<url::Url, UsageError> {
    crate::link::parse_portal_url(value).map_err(|e| usage(format!("--portal-url: {e}")))
}

fn api_settings(
    args: &RunArgs,
    file: &FileConfig,
    host: url::Url,
    access_key: Secret,
    secret_key: Secret,
) -> Result<ApiSettings, UsageError> {
    Ok(ApiSettings {
        host,
        access_key,
        secret_key,
        connect_timeout: duration_setting(
            "connect_timeout",
            file.connect_timeout.as_deref(),
            Duration::from_secs(10),
        )?,
        timeout: duration_setting(
            "--timeout",
            pick(&args.timeout, &file.timeout).as_deref(),
            Duration::from_secs(30),
        )?,
    })
}

fn tenant_source(args: &RunArgs, file: &FileConfig, given: Option<Secret>) -> TenantKeySource {
    TenantKeySource {
        given,
        mint_path: pick(&args.tenant_key_path, &file.tenant_key_path)
            .unwrap_or_else(|| DEFAULT_TENANT_KEY_PATH.into()),
        mint_method: file
            .tenant_key_method
            .clone()
            .unwrap_or_else(|| "POST".into())
            .to_ascii_uppercase(),
        lifetime: KEY_LIFETIME,
    }
}

/// A run against LeadSquared: host, keys and portal page must all be given.
fn live_connection(args: &RunArgs, file: &FileConfig) -> Result<Connection, UsageError> {
    let host = pick(&args.host, &file.host)
        .map(|h| super::parse_host(&h))
        .transpose()?;
    let portal_url = pick(&args.portal_url, &file.portal_url)
        .map(|u| portal_url_setting(&u))
        .transpose()?;
    let credentials = Credentials::load(Some(file));
    match (
        host,
        credentials.access_key,
        credentials.secret_key,
        portal_url,
    ) {
        (Some(host), Some(access_key), Some(secret_key), Some(portal_url)) => Ok(Connection {
            api: api_settings(args, file, host, access_key, secret_key)?,
            tenant: tenant_source(args, file, credentials.tenant_auth_key),
            portal_url,
            sandbox: None,
        }),
        (host, access_key, secret_key, portal_url) => {
            let missing = [
                (
                    host.is_none(),
                    "the API host (--host or LSQ_HOST, e.g. portalapi-in21.leadsquared.com)",
                ),
                (access_key.is_none(), "the access key (LSQ_ACCESS_KEY)"),
                (secret_key.is_none(), "the secret key (LSQ_SECRET_KEY)"),
                (
                    portal_url.is_none(),
                    "the portal page URL (--portal-url or LSQ_PORTAL_URL)",
                ),
            ];
            let missing: Vec<_> = missing
                .iter()
                .filter(|(m, _)| *m)
                .map(|(_, s)| *s)
                .collect();
            Err(usage(format!(
                "missing settings: {}; or try --sandbox to run against the built-in simulator",
                missing.join(", ")
            )))
        }
    }
}

/// Starts the built-in sandbox in-process and points the run at it.
async fn sandbox_connection(
    args: &RunArgs,
    file: &FileConfig,
    rate: Rate,
    portal_id: &Option<String>,
) -> anyhow::Result<Connection> {
    let mut config = lsq_sandbox::SandboxConfig::from_env();
    config.budget = lsq_sandbox::Budget {
        calls: rate.calls,
        window: rate.window,
    };
    if let Some(portal) = portal_id {
        if !config.portal_ids.contains(portal) {
            config.portal_ids.push(portal.clone());
        }
    }
    let sandbox = lsq_sandbox::Sandbox::start(config)
        .await
        .context("cannot start the built-in sandbox")?;
    let config = sandbox.config().clone();
    let host = super::parse_host(&sandbox.base_url())?;
    let portal_url = url::Url::parse(&sandbox.portal_url())?;
    tracing::info!(
        "SANDBOX RUN: no LeadSquared account is used; calls go to the built-in simulator at {} and links open its portal page",
        sandbox.base_url()
    );
    Ok(Connection {
        api: api_settings(
            args,
            file,
            host,
            Secret::new(config.access_key),
            Secret::new(config.secret_key),
        )?,
        tenant: tenant_source(args, file, Some(Secret::new(config.tenant_auth_key))),
        portal_url,
        sandbox: Some(SandboxHandle(Arc::new(sandbox))),
    })
}

fn email_settings(
    args: &RunArgs,
    file: &FileConfig,
    config: &Path,
    max_attempts: u32,
) -> Result<EmailSettings, UsageError> {
    let templates = args.templates.clone().or(file.templates.clone()).ok_or_else(|| {
        usage("--email needs --templates DIR (a folder with subject.txt, body.txt and optional body.html; see samples/templates)")
    })?;
    let test_address = args
        .test_email
        .as_deref()
        .map(|a| {
            crate::email::check_address(a).map_err(|e| usage(format!("--test-email {a:?}: {e}")))
        })
        .transpose()?;
    Ok(EmailSettings {
        templates,
        sender: sender(args, file, config)?,
        column: pick(&args.email_column, &file.email_column).unwrap_or_else(|| "Email".into()),
        delivery: delivery(args, file)?,
        smtp_rate: rate_setting(args.smtp_rate, &file.smtp_rate, "smtp_rate", config)?,
        concurrency: args
            .email_concurrency
            .or(file.email_concurrency)
            .unwrap_or(8)
            .max(1),
        max_attempts,
        test_address,
    })
}

/// The From address, with the Reply-To and List-Unsubscribe headers when
/// they are set; a malformed one is named by its flag or its file setting.
fn sender(args: &RunArgs, file: &FileConfig, config: &Path) -> Result<Sender, UsageError> {
    let reply_to = pick(&args.reply_to, &file.reply_to)
        .map(|value| {
            let name = setting_name("--reply-to", "reply_to", args.reply_to.is_some(), config);
            value.parse::<Mailbox>().map_err(|e| {
                usage(format!(
                    "{name} {value:?} is not a valid address: {e}; give one such as \
                     \"Acme Support <support@acme.example>\""
                ))
            })
        })
        .transpose()?;
    let list_unsubscribe = pick(&args.list_unsubscribe, &file.list_unsubscribe)
        .map(|value| {
            let name = setting_name(
                "--list-unsubscribe",
                "list_unsubscribe",
                args.list_unsubscribe.is_some(),
                config,
            );
            value
                .parse::<ListUnsubscribe>()
                .map_err(|e| usage(format!("{name}: {e}")))
        })
        .transpose()?;
    Ok(Sender {
        from: from_address(args, file)?,
        reply_to,
        list_unsubscribe,
    })
}

fn from_address(args: &RunArgs, file: &FileConfig) -> Result<Mailbox, UsageError> {
    let from = match pick(&args.from, &file.from) {
        Some(from) => from,
        None if args.sandbox => SANDBOX_SENDER.to_owned(),
        None => return Err(usage(
            "--email needs a sender: --from or LSQ_MAIL_FROM, e.g. \"Acme <invites@acme.example>\"",
        )),
    };
    from.parse().map_err(|e| {
        usage(format!(
            "--from {from:?} is not a valid sender address: {e}"
        ))
    })
}

/// Where messages go. A dry run needs neither an SMTP server nor an outbox
/// (its `--preview` goes to `./preview` by default), but checks what it is
/// given.
fn delivery(args: &RunArgs, file: &FileConfig) -> Result<Option<Delivery>, UsageError> {
    if let Some(dir) = args.outbox.clone().or(file.outbox.clone()) {
        return Ok(Some(Delivery::Outbox(dir)));
    }
    match pick(&args.smtp_url, &file.smtp_url) {
        Some(url) => Ok(Some(Delivery::Smtp(crate::email::SmtpSettings {
            url,
            user: std::env::var("LSQ_SMTP_USER")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .or(file.smtp_user.clone()),
            password: super::env_secret("LSQ_SMTP_PASSWORD").or(file.smtp_password.clone()),
            timeout: duration_setting(
                "smtp_timeout",
                file.smtp_timeout.as_deref(),
                Duration::from_secs(30),
            )?,
        }))),
        None if args.dry_run => Ok(None),
        None if args.sandbox => Ok(Some(Delivery::Outbox(PathBuf::from(SANDBOX_OUTBOX)))),
        None => Err(usage(
            "--email needs --smtp-url (or LSQ_SMTP_URL) to send, or --outbox DIR to write .eml files",
        )),
    }
}
