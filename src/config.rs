//! Settings: flags beat the environment, which beats the `--config` TOML file,
//! which beats the defaults. Everything is checked here, before any file is
//! written or any call is made, and every complaint names the setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::cli::RunArgs;
use crate::limiter::{parse_duration, LimiterSettings, Rate, DEFAULT_ARRIVAL_MARGIN};
use crate::retry::RetryPolicy;
use crate::secret::Secret;

/// A setting is missing or malformed: a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

/// Default path of the tenant auth key endpoint (the built-in sandbox's; the
/// public docs do not give LeadSquared's).
pub const DEFAULT_TENANT_KEY_PATH: &str = "/api/Authentication/TenantAuthKey";

/// The `--config` TOML file. Unknown keys are an error, so a typo cannot be
/// silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    host: Option<String>,
    portal_id: Option<String>,
    portal_url: Option<String>,
    rate: Option<String>,
    report: Option<PathBuf>,
    summary_json: Option<PathBuf>,
    lead_column: Option<String>,
    link_ids: Option<bool>,
    concurrency: Option<usize>,
    max_attempts: Option<u32>,
    timeout: Option<String>,
    connect_timeout: Option<String>,
    arrival_margin: Option<String>,
    burst: Option<u32>,
    tenant_key_path: Option<String>,
    tenant_key_method: Option<String>,
    access_key: Option<Secret>,
    secret_key: Option<Secret>,
    tenant_auth_key: Option<Secret>,
    public_auth_key: Option<Secret>,
    email: Option<bool>,
    smtp_url: Option<String>,
    smtp_user: Option<String>,
    smtp_password: Option<Secret>,
    smtp_timeout: Option<String>,
    smtp_rate: Option<String>,
    email_concurrency: Option<usize>,
    outbox: Option<PathBuf>,
    templates: Option<PathBuf>,
    from: Option<String>,
    email_column: Option<String>,
    campaign: Option<String>,
    state: Option<PathBuf>,
}

impl FileConfig {
    /// Reads and parses a settings file.
    pub fn load(path: &Path) -> Result<FileConfig, UsageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read config file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| usage(format!("config file {}: {e}", path.display())))
    }
}

/// Everything a run needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The input CSV.
    pub input: PathBuf,
    /// API base URL.
    pub host: Option<Url>,
    /// Default PortalId, normalised.
    pub portal_id: Option<String>,
    /// Portal page URL.
    pub portal_url: Option<Url>,
    /// Budget and pacing.
    pub limiter: LimiterSettings,
    /// Report CSV path.
    pub report: PathBuf,
    /// Summary JSON path.
    pub summary_json: Option<PathBuf>,
    /// No network at all.
    pub dry_run: bool,
    /// Run against the in-process sandbox.
    pub sandbox: bool,
    /// LeadId column name.
    pub lead_column: String,
    /// leadId and portalId in the link.
    pub link_ids: bool,
    /// Calls in flight at most.
    pub concurrency: usize,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Tenant key endpoint path.
    pub tenant_key_path: String,
    /// Tenant key endpoint method.
    pub tenant_key_method: String,
    /// Access key.
    pub access_key: Option<Secret>,
    /// Secret key.
    pub secret_key: Option<Secret>,
    /// Tenant auth key, when given.
    pub tenant_auth_key: Option<Secret>,
    /// Public auth key, when given.
    pub public_auth_key: Option<Secret>,
    /// Quiet output.
    pub quiet: bool,
    /// Campaign name.
    pub campaign: String,
    /// Campaign state file.
    pub state: PathBuf,
    /// The state file is this run's alone (a sandbox run given no `--state`)
    /// and is removed when the run ends.
    pub scratch_state: bool,
    /// Send again to leads in doubt.
    pub resend_in_doubt: bool,
    /// Send every lead again.
    pub resend: bool,
    /// Dry run: messages to preview.
    pub preview: usize,
    /// Dry run: the local time the run should finish by.
    pub send_before: Option<chrono::NaiveTime>,
    /// Email settings, when `--email` or `--test-email` is given.
    pub email: Option<EmailSettings>,
}

/// How to email each lead its link.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// Folder with subject.txt, body.txt, optional body.html.
    pub templates: PathBuf,
    /// Sender, as given (parsed when the run starts; a sandbox run has a default).
    pub from: Option<String>,
    /// Recipient column.
    pub column: String,
    /// SMTP server, unless writing to an outbox.
    pub smtp: Option<crate::email::SmtpSettings>,
    /// Outbox folder.
    pub outbox: Option<PathBuf>,
    /// Optional SMTP budget.
    pub smtp_rate: Option<Rate>,
    /// Messages in flight.
    pub concurrency: usize,
    /// Attempts per message for transient failures.
    pub max_attempts: u32,
    /// `--test-email`: the one recipient.
    pub test_address: Option<lettre::Address>,
}

/// Reads a secret from the environment, ignoring empty values.
pub fn env_secret(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(Secret::new)
}

fn duration_setting(
    name: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, UsageError> {
    match value {
        None => Ok(default),
        Some(v) => parse_duration(v)
            .filter(|d| !d.is_zero() || name == "--arrival-margin")
            .ok_or_else(|| {
                usage(format!(
                    "{name}: invalid duration {v:?} (use e.g. 250ms, 30s, 2m)"
                ))
            }),
    }
}

/// Parses `--host`: a URL, or a bare host meaning https. Plain http is only
/// allowed to loopback, since the secret key travels in the query.
pub fn parse_host(value: &str) -> Result<Url, UsageError> {
    let value = value.trim();
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("https://{value}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| usage(format!("--host {value:?} is not a host or URL: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| usage(format!("--host {value:?} has no host name")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(usage(format!(
                "--host {value:?}: plain http would send the secret key unencrypted; use https:// (http is only allowed to loopback)"
            )))
        }
        other => return Err(usage(format!("--host {value:?}: unsupported scheme {other:?}, use https://"))),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(usage(format!(
            "--host {value:?} must not carry a query or fragment"
        )));
    }
    Ok(url)
}

/// True for `localhost` and loopback addresses.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

impl Settings {
    /// Merges flags (clap already folded in the environment for flags that
    /// have a variable), the config file, secrets from the environment or the
    /// file, and defaults; then checks every value's form.
    pub fn resolve(args: &RunArgs) -> Result<Settings, UsageError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let rate = match (&args.rate, &file.rate) {
            (Some(rate), _) => *rate,
            (None, Some(text)) => text
                .parse::<Rate>()
                .map_err(|e| usage(format!("rate in {}: {e}", file_name(args))))?,
            (None, None) => Rate::DEFAULT,
        };
        let pick = |flag: &Option<String>, file: &Option<String>| {
            flag.clone()
                .or_else(|| file.clone())
                .filter(|v| !v.trim().is_empty())
        };
        let host = pick(&args.host, &file.host)
            .map(|h| parse_host(&h))
            .transpose()?;
        let portal_id = pick(&args.portal_id, &file.portal_id)
            .map(|p| {
                crate::input::normalize_guid(&p)
                    .ok_or_else(|| usage(format!("--portal-id {p:?} is not a GUID")))
            })
            .transpose()?;
        let portal_url = pick(&args.portal_url, &file.portal_url)
            .map(|u| {
                crate::link::parse_portal_url(&u).map_err(|e| usage(format!("--portal-url: {e}")))
            })
            .transpose()?;
        let arrival_margin = duration_setting(
            "--arrival-margin",
            pick(&args.arrival_margin, &file.arrival_margin).as_deref(),
            DEFAULT_ARRIVAL_MARGIN,
        )?;
        let burst = args.burst.or(file.burst).unwrap_or(rate.calls);
        if burst == 0 {
            return Err(usage("--burst must be at least 1"));
        }
        let concurrency = args
            .concurrency
            .or(file.concurrency)
            .unwrap_or_else(|| (rate.calls as usize * 2).clamp(4, 256));
        if concurrency == 0 {
            return Err(usage("--concurrency must be at least 1"));
        }
        let max_attempts = args.max_attempts.or(file.max_attempts).unwrap_or(5);
        if max_attempts == 0 {
            return Err(usage("--max-attempts must be at least 1"));
        }
        let email = if args.email || file.email.unwrap_or(false) || args.test_email.is_some() {
            let templates = args.templates.clone().or(file.templates.clone()).ok_or_else(|| {
                usage("--email needs --templates DIR (a folder with subject.txt, body.txt and optional body.html; see samples/templates)")
            })?;
            let smtp_url = pick(&args.smtp_url, &file.smtp_url);
            let outbox = args.outbox.clone().or(file.outbox.clone());
            let smtp = match (&outbox, smtp_url) {
                (None, Some(url)) => Some(crate::email::SmtpSettings {
                    url,
                    user: std::env::var("LSQ_SMTP_USER")
                        .ok()
                        .filter(|v| !v.trim().is_empty())
                        .or(file.smtp_user.clone()),
                    password: env_secret("LSQ_SMTP_PASSWORD").or(file.smtp_password.clone()),
                    timeout: duration_setting(
                        "smtp_timeout",
                        file.smtp_timeout.as_deref(),
                        Duration::from_secs(30),
                    )?,
                }),
                (None, None) if !args.sandbox => {
                    return Err(usage(
                        "--email needs --smtp-url (or LSQ_SMTP_URL) to send, or --outbox DIR to write .eml files",
                    ))
                }
                _ => None,
            };
            let smtp_rate = match (&args.smtp_rate, &file.smtp_rate) {
                (Some(rate), _) => Some(*rate),
                (None, Some(text)) => Some(
                    text.parse::<Rate>()
                        .map_err(|e| usage(format!("smtp_rate in {}: {e}", file_name(args))))?,
                ),
                (None, None) => None,
            };
            let test_address = args
                .test_email
                .as_deref()
                .map(|a| {
                    crate::email::check_address(a)
                        .map_err(|e| usage(format!("--test-email {a:?}: {e}")))
                })
                .transpose()?;
            let from = pick(&args.from, &file.from);
            if from.is_none() && !args.sandbox {
                return Err(usage("--email needs a sender: --from or LSQ_MAIL_FROM, e.g. \"Acme <invites@acme.example>\""));
            }
            Some(EmailSettings {
                templates,
                from,
                column: pick(&args.email_column, &file.email_column)
                    .unwrap_or_else(|| "Email".into()),
                smtp,
                outbox,
                smtp_rate,
                concurrency: args
                    .email_concurrency
                    .or(file.email_concurrency)
                    .unwrap_or(8)
                    .max(1),
                max_attempts,
                test_address,
            })
        } else {
            None
        };
        let campaign = pick(&args.campaign, &file.campaign)
            .unwrap_or_else(|| crate::campaign::default_campaign(&args.input));
        let report = args
            .report
            .clone()
            .or(file.report)
            .unwrap_or_else(|| default_report_path(&args.input));
        Ok(Settings {
            input: args.input.clone(),
            host,
            portal_id,
            portal_url,
            limiter: LimiterSettings {
                rate,
                arrival_margin,
                burst: burst.min(rate.calls),
            },
            report,
            summary_json: args.summary_json.clone().or(file.summary_json),
            dry_run: args.dry_run,
            sandbox: args.sandbox,
            lead_column: pick(&args.lead_column, &file.lead_column)
                .unwrap_or_else(|| "LeadId".into()),
            link_ids: args.link_ids || file.link_ids.unwrap_or(false),
            concurrency,
            retry: RetryPolicy {
                max_attempts,
                ..RetryPolicy::default()
            },
            timeout: duration_setting(
                "--timeout",
                pick(&args.timeout, &file.timeout).as_deref(),
                Duration::from_secs(30),
            )?,
            connect_timeout: duration_setting(
                "connect_timeout",
                file.connect_timeout.as_deref(),
                Duration::from_secs(10),
            )?,
            tenant_key_path: pick(&args.tenant_key_path, &file.tenant_key_path)
                .unwrap_or_else(|| DEFAULT_TENANT_KEY_PATH.into()),
            tenant_key_method: file
                .tenant_key_method
                .unwrap_or_else(|| "POST".into())
                .to_ascii_uppercase(),
            access_key: env_secret("LSQ_ACCESS_KEY").or(file.access_key),
            secret_key: env_secret("LSQ_SECRET_KEY").or(file.secret_key),
            tenant_auth_key: env_secret("LSQ_TENANT_AUTH_KEY").or(file.tenant_auth_key),
            public_auth_key: env_secret("LSQ_PUBLIC_AUTH_KEY").or(file.public_auth_key),
            quiet: args.quiet,
            campaign,
            scratch_state: args.sandbox && args.state.is_none() && file.state.is_none(),
            state: match args.state.clone().or(file.state) {
                Some(path) => path,
                // A sandbox's keys die with it: its runs keep their state
                // apart, for this run only, and never touch a real campaign.
                None if args.sandbox => std::env::temp_dir().join(format!(
                    "lsq-dispatch-sandbox-{}.sqlite",
                    std::process::id()
                )),
                None => crate::state::StateStore::default_path(),
            },
            resend_in_doubt: args.resend_in_doubt,
            resend: args.resend,
            preview: args.preview.unwrap_or(0),
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
            email,
        })
    }

    /// Checks that everything a real (networked) run needs is there.
    pub fn require_for_network(&self) -> Result<(), UsageError> {
        let mut missing = Vec::new();
        if self.host.is_none() {
            missing.push("the API host (--host or LSQ_HOST, e.g. portalapi-in21.leadsquared.com)");
        }
        if self.access_key.is_none() {
            missing.push("the access key (LSQ_ACCESS_KEY)");
        }
        if self.secret_key.is_none() {
            missing.push("the secret key (LSQ_SECRET_KEY)");
        }
        if self.portal_url.is_none() {
            missing.push("the portal page URL (--portal-url or LSQ_PORTAL_URL)");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(usage(format!(
                "missing settings: {}; or try --sandbox to run against the built-in simulator",
                missing.join(", ")
            )))
        }
    }
}

fn file_name(args: &RunArgs) -> String {
    args.config
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// `leads.csv` → `leads-report.csv` in the current directory.
pub fn default_report_path(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "leads".into());
    PathBuf::from(format!("{stem}-report.csv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        assert_eq!(
            parse_host("portalapi-in21.leadsquared.com")
                .unwrap()
                .as_str(),
            "https://portalapi-in21.leadsquared.com/"
        );
        assert!(parse_host("http://127.0.0.1:8080").is_ok());
        assert!(parse_host("http://localhost:8080").is_ok());
        let err = parse_host("http://portalapi.leadsquared.com").unwrap_err();
        assert!(err.0.contains("unencrypted"), "{err}");
        assert!(parse_host("ftp://x").is_err());
        assert!(parse_host("https://").is_err());
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "host = \"portalapi-us11.leadsquared.com\"\nrate = \"10/5s\"\nconcurrency = 7\n",
        )
        .unwrap();
        let mut args = RunArgs {
            input: "leads.csv".into(),
            config: Some(file.clone()),
            ..RunArgs::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(
            s.host.unwrap().host_str(),
            Some("portalapi-us11.leadsquared.com")
        );
        assert_eq!(s.limiter.rate.calls, 10);
        assert_eq!(s.concurrency, 7);
        assert_eq!(s.report, PathBuf::from("leads-report.csv"));
        args.host = Some("portalapi-in21.leadsquared.com".into());
        args.concurrency = Some(3);
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(
            s.host.unwrap().host_str(),
            Some("portalapi-in21.leadsquared.com")
        );
        assert_eq!(s.concurrency, 3);
    }

    #[test]
    fn unknown_keys_in_the_file_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "hots = \"x\"\n").unwrap();
        let err = FileConfig::load(&file).unwrap_err();
        assert!(err.0.contains("hots") && err.0.contains("c.toml"), "{err}");
    }

    #[test]
    fn the_sample_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/lsq-dispatch.toml");
        FileConfig::load(&path).unwrap();
    }
}
