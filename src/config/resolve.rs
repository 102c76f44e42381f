//! From the merged settings to [`Settings`]: the defaults, and the checks
//! that span several settings (each value's form was checked as it was
//! read). A `--sandbox` run's sandbox is started by the run, from the
//! [`SandboxPlan`] found here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use lettre::message::Mailbox;

use super::RunArgs;
use super::{
    usage, BudgetStore, Connection, Delivery, DryRun, EmailSettings, Mode, SandboxPlan, Settings,
    StatePath, UsageError, DEFAULT_TENANT_KEY_PATH,
};
use crate::api::{ApiSettings, TenantKeySource, KEY_LIFETIME};
use crate::daytime::Daytime;
use crate::email::Sender;
use crate::limiter::{LimiterSettings, Rate, DEFAULT_ARRIVAL_MARGIN};
use crate::redirect::{LinkSecrets, Links, Mint, RedirectLinks};
use crate::retry::RetryPolicy;
use crate::tenant::Tenant;

/// Sender of sandbox runs that name none.
const SANDBOX_SENDER: &str = "lsq-dispatch sandbox <sandbox@lsq-dispatch.invalid>";
/// Where `--preview` writes when no `--outbox` is given.
const PREVIEW_OUTBOX: &str = "preview";
/// Outbox of sandbox runs that name neither an SMTP server nor an outbox.
const SANDBOX_OUTBOX: &str = "outbox";
/// How long a redirect link opens unless `--link-ttl` says otherwise.
const DEFAULT_LINK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// A shell line that makes a link secret: 32 random bytes, base64url.
const NEW_SECRET_COMMAND: &str = "head -c 32 /dev/urandom | base64";

/// Text given and not blank.
fn words(text: &Option<String>) -> Option<String> {
    text.clone().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// The settings of a run, from its merged flags, environment and file
    /// (`config::merge`): the defaults, and the checks that span several
    /// settings, such as that a live run has everything it needs.
    pub fn resolve(args: &RunArgs) -> anyhow::Result<Settings> {
        let rate = args.rate.unwrap_or(Rate::DEFAULT);
        let max_attempts = args.max_attempts.unwrap_or(5);
        let email = match args.email || args.test_email.is_some() {
            true => Some(email_settings(args, max_attempts)?),
            false => None,
        };
        if args.dry_run && args.test_email.is_some() {
            return Err(usage(
                "--test-email sends one real message and --dry-run sends nothing: drop \
                 --dry-run to send the test message (--sandbox tries it on the built-in \
                 sandbox), or use --dry-run --email --preview N to write messages to read",
            )
            .into());
        }
        let key_lifetime = args.key_lifetime.unwrap_or(KEY_LIFETIME);
        let redirect = redirect_links(args)?;
        let at_click = redirect.as_ref().is_some_and(|r| r.mint == Mint::AtClick);
        let mode = if args.dry_run {
            Mode::DryRun(dry_run(args))
        } else if at_click {
            // No call, so no key, host or portal page is needed; a sandbox
            // would never be called.
            Mode::Unminted
        } else if args.sandbox {
            Mode::Sandbox(Box::new(SandboxPlan {
                budget: rate,
                portal_id: args.portal_id.clone(),
                connect_timeout: connect_timeout(args),
                timeout: timeout(args),
                mint_path: mint_path(args),
                mint_method: mint_method(args),
            }))
        } else {
            Mode::Live(Box::new(live_connection(args, key_lifetime)?))
        };
        // A sandbox run (or its plan) given no portal uses the sandbox's first.
        let portal_id = match &args.portal_id {
            None if args.sandbox => lsq_sandbox::SandboxConfig::default()
                .portal_ids
                .first()
                .cloned(),
            given => given.clone(),
        };
        let tenant = match &mode {
            Mode::Live(c) => Some(Tenant::new(&c.api.host, &c.api.access_key)),
            Mode::Sandbox(_) => None,
            Mode::DryRun(_) | Mode::Unminted => planned_tenant(args),
        };
        let state = state_path(args)?;
        Ok(Settings {
            input: args.input.clone(),
            portal_id,
            limiter: LimiterSettings {
                rate,
                arrival_margin: args.arrival_margin.unwrap_or(DEFAULT_ARRIVAL_MARGIN),
                burst: args.burst.unwrap_or(rate.calls).min(rate.calls),
            },
            report: args
                .report
                .clone()
                .unwrap_or_else(|| super::default_report_path(&args.input, args.dry_run)),
            summary_json: args.summary_json.clone(),
            lead_column: words(&args.lead_column),
            encoding: args.encoding,
            delimiter: args.delimiter,
            limit: args.limit,
            link_ids: args.link_ids,
            concurrency: args
                .concurrency
                .unwrap_or_else(|| (rate.calls as usize * 2).clamp(4, 256)),
            retry: RetryPolicy {
                max_attempts,
                ..RetryPolicy::default()
            },
            quiet: args.quiet,
            log_format: args.log_format,
            metrics_file: args.metrics_file.clone(),
            ping_url: args.ping_url.clone(),
            campaign: words(&args.campaign)
                .unwrap_or_else(|| crate::campaign::default_campaign(&args.input, state.path())),
            state,
            tenant,
            budget_store: budget_store(args),
            resend_in_doubt: args.resend_in_doubt,
            resend: args.resend,
            daytime: Daytime {
                zone: args.timezone,
                hours: args.working_hours.unwrap_or(Daytime::default().hours),
            },
            refuse_night_links: args.refuse_night_links,
            email,
            key_lifetime,
            min_link_life: args.min_link_life,
            redirect,
            mode,
        })
    }
}

/// `--links redirect`'s settings, checked: a link base, and the secrets to
/// seal links with (a dry run may go without them, but checks any given);
/// `None` for direct links, which take none of the redirect settings.
fn redirect_links(args: &RunArgs) -> Result<Option<RedirectLinks>, UsageError> {
    let secrets = args
        .link_secret
        .as_ref()
        .map(LinkSecrets::parse)
        .transpose()
        .map_err(usage)?;
    if args.links.unwrap_or_default() == Links::Direct {
        if args.mint.is_some() {
            return Err(usage(
                "--mint goes with --links redirect: a direct link carries the key minted by \
                 the run; add --links redirect --link-base URL, or drop --mint",
            ));
        }
        return Ok(None);
    }
    let base = args.link_base.as_ref().ok_or_else(|| {
        usage(
            "--links redirect needs --link-base URL: the public address of the link service \
             (lsq-dispatch serve), e.g. https://go.example.com",
        )
    })?;
    if secrets.is_none() && !args.dry_run {
        return Err(usage(format!(
            "--links redirect needs LSQ_LINK_SECRET (in the environment or link_secret in the \
             --config file) to sign the links, the same secret the link service opens them \
             with; make one with: {NEW_SECRET_COMMAND}"
        )));
    }
    Ok(Some(RedirectLinks::new(
        base,
        args.link_ttl.unwrap_or(DEFAULT_LINK_TTL),
        args.mint.unwrap_or_default(),
        secrets,
    )))
}

fn state_path(args: &RunArgs) -> anyhow::Result<StatePath> {
    match args.state.clone() {
        Some(path) => Ok(StatePath::kept(path, "--state")),
        // A sandbox's keys die with it: its runs keep their state apart, for
        // this run only, and never touch a real campaign.
        None if args.sandbox => StatePath::scratch().with_context(|| {
            format!(
                "cannot make a directory for the sandbox's state in {}: set TMPDIR to a \
                 writable directory, or give --state",
                std::env::temp_dir().display()
            )
        }),
        None => Ok(StatePath::kept(
            crate::state::StateStore::default_path(),
            crate::state::default_path_setting(),
        )),
    }
}

/// Where the run shares the tenant's budget: `--budget-store`, else the
/// budget file beside the campaign state; nowhere for a `--sandbox` run,
/// whose sandbox is its own.
fn budget_store(args: &RunArgs) -> BudgetStore {
    match (&args.budget_store, &args.state) {
        _ if args.sandbox => BudgetStore::Own,
        (Some(url), _) => BudgetStore::Redis(url.clone()),
        (None, Some(state)) => BudgetStore::beside(state),
        (None, None) => BudgetStore::beside(&crate::state::StateStore::default_path()),
    }
}

fn dry_run(args: &RunArgs) -> DryRun {
    DryRun {
        portal_url: args.portal_url.clone(),
        tenant_key_given: args.sandbox || args.tenant_auth_key.is_some(),
        preview: args.preview.filter(|n| *n > 0).map(|n| {
            let outbox = args.outbox.clone();
            (n, outbox.unwrap_or_else(|| PathBuf::from(PREVIEW_OUTBOX)))
        }),
        send_before: args.send_before,
    }
}

/// The tenant a dry run plans for: the host and access key a real run with
/// the same settings would use, when both are given.
fn planned_tenant(args: &RunArgs) -> Option<Tenant> {
    let host = args.host.as_ref()?;
    args.access_key.as_ref().map(|key| Tenant::new(host, key))
}

fn connect_timeout(args: &RunArgs) -> Duration {
    args.connect_timeout.unwrap_or(Duration::from_secs(10))
}

fn timeout(args: &RunArgs) -> Duration {
    args.timeout.unwrap_or(Duration::from_secs(30))
}

fn mint_path(args: &RunArgs) -> String {
    words(&args.tenant_key_path).unwrap_or_else(|| DEFAULT_TENANT_KEY_PATH.into())
}

fn mint_method(args: &RunArgs) -> String {
    words(&args.tenant_key_method)
        .unwrap_or_else(|| "POST".into())
        .to_ascii_uppercase()
}

/// A run against LeadSquared: host, keys and portal page must all be given.
fn live_connection(args: &RunArgs, key_lifetime: Duration) -> Result<Connection, UsageError> {
    match (
        args.host.clone(),
        args.access_key.clone(),
        args.secret_key.clone(),
        args.portal_url.clone(),
    ) {
        (Some(host), Some(access_key), Some(secret_key), Some(portal_url)) => Ok(Connection {
            api: ApiSettings {
                host,
                access_key,
                secret_key,
                connect_timeout: connect_timeout(args),
                timeout: timeout(args),
            },
            tenant: TenantKeySource {
                given: args.tenant_auth_key.clone(),
                mint_path: mint_path(args),
                mint_method: mint_method(args),
                lifetime: key_lifetime,
            },
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

/// Messages in flight when `--email-concurrency` is not given. A run that
/// mints at click waits on nothing but the SMTP server, whose every message
/// costs its connection a few round trips and often a delayed ACK (about
/// 40 ms on Linux): more conversations keep it busy. A run that mints at
/// send gets a window's links at once: as many conversations as the
/// budget's calls (8 to 32) send them together, so the last window's
/// messages do not queue behind each other at the end of the run.
fn default_email_concurrency(args: &RunArgs) -> usize {
    match args.mint {
        Some(crate::redirect::Mint::AtClick) => 32,
        _ => (args.rate.unwrap_or(Rate::DEFAULT).calls as usize).clamp(8, 32),
    }
}

fn email_settings(args: &RunArgs, max_attempts: u32) -> Result<EmailSettings, UsageError> {
    let templates = args.templates.clone().ok_or_else(|| {
        usage("--email needs --templates DIR (a folder with subject.txt, body.txt and optional body.html; see samples/templates)")
    })?;
    Ok(EmailSettings {
        templates,
        sender: Sender {
            from: from_address(args)?,
            reply_to: args.reply_to.clone(),
            list_unsubscribe: args.list_unsubscribe.clone(),
        },
        column: words(&args.email_column).unwrap_or_else(|| "Email".into()),
        delivery: delivery(args)?,
        smtp_rate: args.smtp_rate,
        concurrency: args
            .email_concurrency
            .unwrap_or(default_email_concurrency(args))
            .max(1),
        max_attempts,
        defer: args.smtp_defer.clone().unwrap_or_default(),
        test_address: args.test_email.clone(),
    })
}

fn from_address(args: &RunArgs) -> Result<Mailbox, UsageError> {
    match &args.from {
        Some(from) => Ok(from.clone()),
        None if args.sandbox => Ok(SANDBOX_SENDER.parse().expect("a valid address")),
        None => Err(usage(
            "--email needs a sender: --from or LSQ_MAIL_FROM, e.g. \"Acme <invites@acme.example>\"",
        )),
    }
}

/// Where messages go. A dry run needs neither an SMTP server nor an outbox
/// (its `--preview` goes to `./preview` by default), but checks what it is
/// given.
fn delivery(args: &RunArgs) -> Result<Option<Delivery>, UsageError> {
    if let Some(dir) = args.outbox.clone() {
        return Ok(Some(Delivery::Outbox(dir)));
    }
    match words(&args.smtp_url) {
        Some(url) => Ok(Some(Delivery::Smtp(crate::email::SmtpSettings {
            url,
            user: args.smtp_user.clone(),
            password: args.smtp_password.clone(),
            timeout: args.smtp_timeout.unwrap_or(Duration::from_secs(30)),
            helo_name: args.helo_name.clone(),
            sender_domain: args.from.as_ref().map(|f| f.email.domain().to_owned()),
            ca_file: args.smtp_ca_file.clone(),
        }))),
        None if args.dry_run => Ok(None),
        None if args.sandbox => Ok(Some(Delivery::Outbox(PathBuf::from(SANDBOX_OUTBOX)))),
        None => Err(usage(
            "--email needs --smtp-url (or LSQ_SMTP_URL) to send, or --outbox DIR to write .eml files",
        )),
    }
}
