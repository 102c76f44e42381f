//! The batch job: rows stream from the CSV through a bounded pool of calls,
//! then through the email stage, to ONE consumer that owns the report, the
//! summary, `failed.csv`, the plan and the progress. The campaign state decides
//! per lead what is left to do, and records each step.
//!
//! ```text
//! CSV ─▶ rows ─▶ state ─▶ limiter ─▶ Generate (retry) ─▶ link ─▶ [email] ─▶ report
//!         └─ invalid / duplicate / already done ───────────────────────────▲
//! ```
//!
//! A dry run takes the same path without the network: rows go one after
//! another, with nothing to wait for.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::{stream, StreamExt};
use lettre::message::Mailbox;
use lettre::Address;
use tokio::sync::{mpsc, watch, Mutex};

use crate::api::{
    ApiClient, ApiError, ApiSettings, GeneratedKey, TenantKey, TenantKeySource, KEY_LIFETIME,
};
use crate::config::{EmailSettings, Settings, UsageError};
use crate::email::{MessageContext, Templates, Transport};
use crate::input::{InputError, InputOptions, InputRow, LeadReader, RowKind};
use crate::limiter::Limiter;
use crate::plan::{Plan, PlanSettings};
use crate::progress::Progress;
use crate::report::{FailedRows, Record, ReportWriter, Status, Summary};
use crate::retry::{Attempted, Caller};
use crate::secret::Secret;
use crate::state::{LeadKey, LeadState, StateError, StateStore};

/// How a finished (or interrupted) run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Counts and figures.
    pub summary: Summary,
    /// Stopped by Ctrl-C or SIGTERM before every row was done.
    pub interrupted: bool,
    /// Where the report is.
    pub report: PathBuf,
    /// The failed and invalid input rows, when there were any.
    pub failed_csv: Option<PathBuf>,
}

impl RunOutcome {
    /// The exit code DESIGN.md promises: 130 interrupted, 3 when a row failed,
    /// was invalid or is in doubt, else 0.
    pub fn exit_code(&self) -> u8 {
        let attention = self
            .summary
            .counts
            .iter()
            .any(|(status, n)| status.needs_attention() && *n > 0);
        match (self.interrupted, attention) {
            (true, _) => 130,
            (false, true) => 3,
            (false, false) => 0,
        }
    }
}

impl RunOutcome {
    /// One line for the log: counts by status, time, calls, 429s and where the
    /// report is.
    pub fn describe(&self) -> String {
        let plan = match &self.summary.plan {
            Some(plan) => format!("{}\n", plan.render()),
            None => String::new(),
        };
        plan + &self.describe_counts()
    }

    fn describe_counts(&self) -> String {
        let counts: Vec<String> = self
            .summary
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(status, n)| format!("{n} {status}"))
            .collect();
        format!(
            "{}{} in {:.1}s, {} API calls, {} rate-limited; report: {}",
            if self.interrupted {
                "interrupted: "
            } else {
                "done: "
            },
            if counts.is_empty() {
                "no rows".to_string()
            } else {
                counts.join(", ")
            },
            self.summary.elapsed_secs,
            self.summary.api_calls,
            self.summary.rate_limited,
            self.report.display()
        ) + &match &self.failed_csv {
            Some(path) => format!("; failed and invalid rows to re-run: {}", path.display()),
            None => String::new(),
        }
    }
}

/// Whether the run's credentials and host have been proven by a first call.
/// Until then one call goes alone, so that a bad key costs one call, not a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Gate {
    Unproven,
    Proven,
    Refused,
}

/// The email side of a run.
struct Mail {
    templates: Templates,
    from: Mailbox,
    column: String,
    transport: Transport,
    limiter: Option<Arc<Limiter>>,
    max_attempts: u32,
    concurrency: usize,
    /// Where a dry run's `--preview` messages go.
    preview: Option<Transport>,
}

/// A row's final record, with its input cells for `failed.csv`.
struct Finished {
    record: Record,
    fields: Vec<String>,
}

/// A row after the link stage.
enum Step {
    /// Nothing more to do.
    Done(Finished),
    /// Linked; its email is next.
    Email {
        record: Record,
        row: InputRow,
        to: Address,
    },
}

/// What every row's task shares.
struct Job {
    settings: Settings,
    headers: Vec<String>,
    caller: Option<Caller>,
    mail: Option<Mail>,
    /// The campaign state; a dry run without a state file opens (and so
    /// creates) none.
    state: Option<std::sync::Mutex<StateStore>>,
    /// Messages previewed so far in a dry run.
    previews: std::sync::atomic::AtomicUsize,
    gate: Mutex<Gate>,
}

impl Drop for Job {
    /// A sandbox run's own state file (see `Settings::scratch_state`) goes
    /// with the run, however it ended.
    fn drop(&mut self) {
        let settings = &self.settings;
        if settings.scratch_state {
            for suffix in ["", "-wal", "-shm", ".lock"] {
                let mut path = settings.state.clone().into_os_string();
                path.push(suffix);
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// A stored link is used again only while it has at least this long to live,
/// so the lead has time to open it.
const REUSE_MARGIN: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// What the campaign state says to do with a valid row.
enum Resume {
    /// Nothing stored that saves work: mint a key.
    Mint,
    /// Finished earlier: report it, touch nothing.
    Report(Status, String, String),
    /// A stored link is still good: use it instead of minting.
    Reuse(String, DateTime<Utc>),
}

impl Job {
    /// The link stage: one row to a report record (or to its email step), or
    /// `Err` for a run-level fault.
    async fn process(&self, mut row: InputRow) -> anyhow::Result<Step> {
        let (record, to) = self.link(&mut row).await?;
        Ok(match to {
            Some(to) if record.status == Status::Linked => Step::Email { record, row, to },
            _ => Step::Done(Finished {
                record,
                fields: row.fields,
            }),
        })
    }

    /// Decides and does one row's link: its record, and the address to email
    /// next when the row is linked in an email run.
    /// The row's ids move into the record (a million-row plan notices every
    /// copy); the row keeps its cells for the email and `failed.csv`.
    async fn link(&self, row: &mut InputRow) -> anyhow::Result<(Record, Option<Address>)> {
        let has_portal = row.portal_id.is_some();
        let mut record = Record {
            row: row.line,
            lead_id: std::mem::take(&mut row.lead_id),
            portal_id: row.portal_id.take().unwrap_or_default(),
            status: Status::Invalid,
            portal_url: String::new(),
            expires_at: None,
            attempts: 0,
            email: String::new(),
            message_id: String::new(),
            error: String::new(),
        };
        match &row.kind {
            RowKind::Invalid(reason) => {
                record.error = reason.clone();
                return Ok((record, None));
            }
            RowKind::Duplicate { first_line } => {
                record.status = Status::Duplicate;
                record.error = format!("duplicate of row {first_line}");
                return Ok((record, None));
            }
            RowKind::Valid => {}
        }
        if !has_portal {
            record.error =
                "no PortalId: set --portal-id (or LSQ_PORTAL_ID) or fill the PortalId column"
                    .into();
            return Ok((record, None));
        };
        let to = match &self.mail {
            None => None,
            Some(mail) => {
                let cell = row.field(&self.headers, &mail.column).unwrap_or_default();
                record.email = cell.to_owned();
                match crate::email::check_address(cell) {
                    Ok(address) => Some(address),
                    Err(reason) => {
                        record.error =
                            format!("{} {cell:?} is not a valid address: {reason}", mail.column);
                        return Ok((record, None));
                    }
                }
            }
        };
        let key = LeadKey {
            campaign: &self.settings.campaign,
            lead_id: &record.lead_id,
            portal_id: &record.portal_id,
        };
        match self.resume(&key)? {
            Resume::Report(status, message_id, error) => {
                record.status = status;
                record.message_id = message_id;
                record.error = error;
                return Ok((record, None));
            }
            Resume::Reuse(link, expires_at) => {
                record.status = Status::Linked;
                record.portal_url = link;
                record.expires_at = Some(expires_at);
                return Ok((record, to));
            }
            Resume::Mint => {}
        }
        let Some(caller) = &self.caller else {
            record.status = Status::Planned;
            if let (Some(mail), Some(to)) = (&self.mail, &to) {
                Box::pin(self.plan_email(mail, &mut record, row, to)).await?;
            }
            return Ok((record, None));
        };
        // Boxed: the call's state is large, and unboxed it would be copied
        // into every row's future, dry runs included.
        let done = Box::pin(self.generate(caller, key.lead_id, key.portal_id)).await;
        record.attempts = done.attempts;
        match done.result {
            Ok(generated) if !same_lead(&generated, key.lead_id) => {
                record.status = Status::Failed;
                record.error = format!("the API answered for another lead ({})", generated.lead_id);
                self.store()
                    .mark_failed(&key, row.line, &record.error, record.attempts)?;
            }
            Ok(generated) => {
                let portal_url = self
                    .settings
                    .portal_url
                    .as_ref()
                    .expect("checked before the run");
                let ids = self
                    .settings
                    .link_ids
                    .then_some((key.lead_id, key.portal_id));
                let expires_at = Utc::now() + KEY_LIFETIME;
                let link = crate::link::login_link(portal_url, &generated.auth_key, ids);
                self.store().mark_linked(
                    &key,
                    row.line,
                    &Secret::new(generated.auth_key),
                    link.as_str(),
                    expires_at,
                    record.attempts,
                )?;
                record.status = Status::Linked;
                record.portal_url = link.into();
                record.expires_at = Some(expires_at);
                return Ok((record, to));
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                record.status = Status::Failed;
                record.error = e.to_string();
                self.store()
                    .mark_failed(&key, row.line, &record.error, record.attempts)?;
            }
        }
        Ok((record, None))
    }

    /// Dry run: builds the row's message with a stand-in link, so a template
    /// that cannot render for this row shows up now; the first `--preview N`
    /// messages go to the outbox for a person to read.
    async fn plan_email(
        &self,
        mail: &Mail,
        record: &mut Record,
        row: &InputRow,
        to: &Address,
    ) -> anyhow::Result<()> {
        let page = self.settings.portal_url.clone().unwrap_or_else(|| {
            url::Url::parse("https://portal.example.invalid/").expect("a valid URL")
        });
        let planned = Record {
            portal_url: crate::link::login_link(&page, "PLANNED-KEY", None).into(),
            expires_at: Some(Utc::now() + KEY_LIFETIME),
            ..record.clone()
        };
        let message_id = crate::email::message_id(
            &self.settings.campaign,
            &record.lead_id,
            mail.from.email.domain(),
        );
        match self.message(mail, &planned, row, to, &message_id) {
            Ok(message) => {
                let previewed = self
                    .previews
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if previewed < self.settings.preview {
                    if let Some(outbox) = &mail.preview {
                        outbox
                            .send(&message)
                            .await
                            .map_err(|e| anyhow::anyhow!("cannot write the preview: {e}"))?;
                    }
                }
            }
            Err(e) => {
                record.status = Status::Invalid;
                record.error = format!("the email cannot be built for this row: {e:#}");
            }
        }
        Ok(())
    }

    /// Connects and logs in to the SMTP server once, so that bad credentials
    /// stop the run before any key is minted or message sent.
    async fn check_mail(&self) -> anyhow::Result<()> {
        match &self.mail {
            Some(mail) if !self.settings.dry_run => mail.transport.check().await.map_err(|e| {
                anyhow::anyhow!(
                    "SMTP server not usable: {e}; check --smtp-url and LSQ_SMTP_USER / LSQ_SMTP_PASSWORD"
                )
            }),
            _ => Ok(()),
        }
    }

    /// The state store; only a dry run may have none, and a dry run writes
    /// nothing to it.
    fn store(&self) -> std::sync::MutexGuard<'_, StateStore> {
        self.state
            .as_ref()
            .expect("every real run opens the campaign state")
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The campaign's memory of this lead decides: skip it (sent, or in doubt
    /// unless asked to resend), reuse a link that is still good, or mint.
    fn resume(&self, key: &LeadKey) -> Result<Resume, StateError> {
        if self.state.is_none() {
            return Ok(Resume::Mint);
        }
        let Some(entry) = self.store().get(key)? else {
            return Ok(Resume::Mint);
        };
        let settings = &self.settings;
        Ok(match entry.state {
            LeadState::Sent { message_id, sent_at } if !settings.resend => Resume::Report(
                Status::Skipped,
                message_id,
                format!("already sent in campaign {} at {}", settings.campaign, sent_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            ),
            LeadState::InDoubt { message_id } | LeadState::Sending { message_id }
                if !settings.resend && !settings.resend_in_doubt =>
            {
                Resume::Report(
                    Status::InDoubt,
                    message_id,
                    "a run stopped while this email was being sent: it may or may not have been delivered; check the mailbox, then re-run with --resend-in-doubt to send it again".into(),
                )
            }
            LeadState::Linked { auth_key: Some(_), expires_at }
                if expires_at > Utc::now() + REUSE_MARGIN && !settings.dry_run =>
            {
                match entry.link {
                    Some(link) => Resume::Reuse(link, expires_at),
                    None => Resume::Mint,
                }
            }
            _ => Resume::Mint,
        })
    }

    /// Takes a row from the link stage to its final record: sends its email
    /// when it has one to send.
    async fn finish(&self, step: Step) -> anyhow::Result<Finished> {
        match step {
            Step::Done(finished) => Ok(finished),
            Step::Email { record, row, to } => self.email(record, row, to).await,
        }
    }

    /// The email stage: renders and sends one lead's message. Only an SMTP
    /// fault that stops every message (authentication, TLS) is an `Err`.
    async fn email(&self, record: Record, row: InputRow, to: Address) -> anyhow::Result<Finished> {
        let record = Box::pin(self.send_email(record, &row, &to)).await?;
        Ok(Finished {
            record,
            fields: row.fields,
        })
    }

    async fn send_email(
        &self,
        mut record: Record,
        row: &InputRow,
        to: &Address,
    ) -> anyhow::Result<Record> {
        let mail = self
            .mail
            .as_ref()
            .expect("only linked rows of an email run get here");
        let message_id = crate::email::message_id(
            &self.settings.campaign,
            &record.lead_id,
            mail.from.email.domain(),
        );
        let message = self.message(mail, &record, row, to, &message_id);
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                record.status = Status::Failed;
                record.error = format!("email not built: {e:#}");
                let key = LeadKey {
                    campaign: &self.settings.campaign,
                    lead_id: &record.lead_id,
                    portal_id: &record.portal_id,
                };
                self.store()
                    .mark_failed(&key, record.row, &record.error, record.attempts)?;
                return Ok(record);
            }
        };
        let key = LeadKey {
            campaign: &self.settings.campaign,
            lead_id: &record.lead_id,
            portal_id: &record.portal_id,
        };
        // On disk before the SMTP step: a crash from here on leaves the lead
        // in doubt, never silently unsent or sent twice.
        self.store()
            .mark_sending(&key, record.row, to.as_ref(), &message_id)?;
        let permit = match &mail.limiter {
            Some(limiter) => Some(limiter.acquire().await),
            None => None,
        };
        let (result, _attempts) =
            crate::email::send_with_retry(&mail.transport, &message, mail.max_attempts).await;
        if let Some(permit) = permit {
            permit.completed();
        }
        match result {
            Ok(()) => {
                self.store().mark_sent(&key, &message_id)?;
                record.status = Status::Sent;
                record.message_id = message_id;
            }
            Err(e) if e.is_fatal() => {
                return Err(anyhow::anyhow!(
                    "SMTP: {e}; check --smtp-url and LSQ_SMTP_USER / LSQ_SMTP_PASSWORD"
                ))
            }
            Err(e) => {
                record.status = Status::Failed;
                record.error = format!("email: {e}");
                self.store()
                    .mark_failed(&key, record.row, &record.error, record.attempts)?;
            }
        }
        Ok(record)
    }

    fn message(
        &self,
        mail: &Mail,
        record: &Record,
        row: &InputRow,
        to: &Address,
        message_id: &str,
    ) -> anyhow::Result<lettre::Message> {
        let rendered = mail.templates.render(&MessageContext {
            columns: &self.headers,
            fields: &row.fields,
            link: &record.portal_url,
            lead_id: &record.lead_id,
            portal_id: &record.portal_id,
            expires_at: record.expires_at.unwrap_or_else(Utc::now),
        })?;
        crate::email::build_message(&mail.from, to, &rendered, message_id)
    }

    /// Generates one key; the run's first call goes alone (see [`Gate`]).
    async fn generate(
        &self,
        caller: &Caller,
        lead_id: &str,
        portal_id: &str,
    ) -> Attempted<GeneratedKey> {
        let mut gate = self.gate.lock().await;
        match *gate {
            Gate::Proven => drop(gate),
            Gate::Refused => {
                return Attempted {
                    result: Err(ApiError::Unauthorized {
                        message: "an earlier call was refused".into(),
                    }),
                    attempts: 0,
                    rate_limited: 0,
                }
            }
            Gate::Unproven => {
                let done = caller.generate(lead_id, portal_id).await;
                *gate = match &done.result {
                    Err(e) if e.is_fatal() => Gate::Refused,
                    _ => Gate::Proven,
                };
                return done;
            }
        }
        caller.generate(lead_id, portal_id).await
    }
}

fn same_lead(key: &GeneratedKey, lead_id: &str) -> bool {
    key.lead_id.is_empty() || crate::input::normalize_guid(&key.lead_id).as_deref() == Some(lead_id)
}

/// Everything checked and opened before the first call.
struct Prepared {
    job: Arc<Job>,
    /// About how many rows the input holds, for progress and sizing.
    rows_estimate: u64,
    reader: LeadReader,
    limiter: Arc<Limiter>,
    _sandbox: Option<crate::sandbox::Sandbox>,
}

/// Opens the input, loads and checks templates, builds the client and the
/// mail transport (logging in to SMTP once): every run-level fault surfaces
/// here, before any API call.
async fn prepare(mut settings: Settings) -> anyhow::Result<Prepared> {
    let rows_estimate = crate::progress::estimate_rows(&settings.input);
    let sandbox = if settings.sandbox && !settings.dry_run {
        Some(start_sandbox(&mut settings).await?)
    } else {
        None
    };
    if !settings.dry_run {
        settings.require_for_network()?;
    }
    let reader = LeadReader::open(
        &settings.input,
        InputOptions {
            lead_column: settings.lead_column.clone(),
            default_portal: settings.portal_id.clone(),
            expected_rows: usize::try_from(rows_estimate).unwrap_or(0),
            keep_cells: !settings.dry_run || settings.email.is_some(),
            ..InputOptions::default()
        },
    )?;
    let headers = reader.headers().to_vec();
    let mail = match &settings.email {
        Some(email) => Some(prepare_mail(
            email,
            &headers,
            settings.sandbox,
            settings.dry_run,
            settings.preview,
        )?),
        None => None,
    };
    let state = if settings.dry_run && !settings.state.exists() {
        None
    } else {
        Some(StateStore::open(&settings.state)?)
    };
    if let (Some(state), false) = (&state, settings.dry_run) {
        let in_doubt = state.recover_in_doubt(&settings.campaign)?;
        if in_doubt > 0 {
            eprintln!("{in_doubt} lead(s) of campaign {} were being emailed when the last run stopped: reported in_doubt, not sent again (see --resend-in-doubt)", settings.campaign);
        }
        state.clear_expired_keys(Utc::now())?;
    }
    let limiter = Limiter::new(settings.limiter);
    let caller = if settings.dry_run {
        None
    } else {
        Some(build_caller(&settings, Arc::clone(&limiter))?)
    };
    Ok(Prepared {
        job: Arc::new(Job {
            settings,
            headers,
            caller,
            mail,
            state: state.map(std::sync::Mutex::new),
            previews: Default::default(),
            gate: Mutex::new(Gate::Unproven),
        }),
        reader,
        rows_estimate,
        limiter,
        _sandbox: sandbox,
    })
}

fn prepare_mail(
    email: &EmailSettings,
    headers: &[String],
    sandbox: bool,
    dry_run: bool,
    preview: usize,
) -> anyhow::Result<Mail> {
    let templates = Templates::load(&email.templates)?;
    templates.check(headers)?;
    if !headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case(&email.column))
        && email.test_address.is_none()
    {
        return Err(UsageError(format!(
            "the input has no {:?} column for email addresses (columns: {}); use --email-column",
            email.column,
            headers.join(", ")
        ))
        .into());
    }
    let from = email
        .from
        .clone()
        .unwrap_or_else(|| SANDBOX_SENDER.to_owned());
    let from: Mailbox = from.parse().map_err(|e| {
        UsageError(format!(
            "--from {from:?} is not a valid sender address: {e}"
        ))
    })?;
    let transport = match (&email.smtp, &email.outbox) {
        (Some(smtp), _) => Transport::smtp(smtp)?,
        (None, Some(dir)) => Transport::outbox(dir)?,
        (None, None) if sandbox => Transport::outbox(std::path::Path::new(SANDBOX_OUTBOX))?,
        (None, None) => anyhow::bail!("no SMTP server and no outbox"),
    };
    let preview = match (dry_run, preview) {
        (true, n) if n > 0 => Some(Transport::outbox(
            email
                .outbox
                .as_deref()
                .unwrap_or(std::path::Path::new(PREVIEW_OUTBOX)),
        )?),
        _ => None,
    };
    let limiter = email.smtp_rate.map(|rate| {
        Limiter::new(crate::limiter::LimiterSettings {
            arrival_margin: std::time::Duration::ZERO,
            ..crate::limiter::LimiterSettings::new(rate)
        })
    });
    Ok(Mail {
        templates,
        from,
        column: email.column.clone(),
        transport,
        limiter,
        max_attempts: email.max_attempts,
        concurrency: email.concurrency,
        preview,
    })
}

/// Sender of sandbox runs that name none.
const SANDBOX_SENDER: &str = "lsq-dispatch sandbox <sandbox@lsq-dispatch.invalid>";
/// Where `--preview` writes when no `--outbox` is given.
const PREVIEW_OUTBOX: &str = "preview";
/// Outbox of sandbox runs that name neither an SMTP server nor an outbox.
const SANDBOX_OUTBOX: &str = "outbox";

/// `lsq-dispatch run`: the test message when `--test-email` is given,
/// otherwise the batch job; prints the outcome and returns the exit code.
pub async fn execute(settings: Settings) -> anyhow::Result<u8> {
    if settings
        .email
        .as_ref()
        .is_some_and(|e| e.test_address.is_some())
    {
        println!("{}", send_test(settings).await?);
        return Ok(0);
    }
    let outcome = run(settings).await?;
    println!("{}", outcome.describe());
    Ok(outcome.exit_code())
}

/// Runs the batch job with resolved settings.
pub async fn run(settings: Settings) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    let report_path = settings.report.clone();
    let summary_path = settings.summary_json.clone();
    let quiet = settings.quiet;
    let Prepared {
        job,
        reader,
        rows_estimate,
        limiter,
        _sandbox,
    } = prepare(settings).await?;
    let mut report = ReportWriter::create(&report_path)?;
    if job.settings.dry_run {
        report = report.buffered();
    }
    let failed_path = report_path.with_file_name("failed.csv");
    job.check_mail().await?;
    if let Some(path) = &summary_path {
        crate::report::open_check(path)?;
    }
    let mut progress = Progress::new(rows_estimate, quiet);
    let stop = stop_on_signal();

    let mut outcomes = if job.settings.dry_run {
        planned(reader, Arc::clone(&job), stop.clone())
    } else {
        let mut stopped = stop.clone();
        let stopped = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        staged(reader, Arc::clone(&job), stopped)
    };

    let mut summary = Summary::default();
    let mut failed_rows =
        (!job.settings.dry_run).then(|| FailedRows::new(&failed_path, &job.headers));
    let mut plan = job.settings.dry_run.then(Plan::new);
    let mut fatal = None;
    // A dry run makes no call, so there is no 429 to tell of.
    let mut paused_shown = job.settings.dry_run;
    while let Some(outcome) = outcomes.next().await {
        let Finished { record, fields } = match outcome {
            Ok(finished) => finished,
            Err(e) => {
                fatal = Some(e);
                break;
            }
        };
        report
            .write(&record)
            .with_context(|| format!("cannot write the report {}", report.path().display()))?;
        summary.record(record.status);
        if let Some(plan) = &mut plan {
            plan.record(&record);
        }
        match record.status {
            Status::Sent => summary.emails_sent += 1,
            Status::Failed if record.error.starts_with("email") => summary.emails_failed += 1,
            _ => {}
        }
        if let (Some(failed), Status::Failed | Status::Invalid) = (&mut failed_rows, record.status)
        {
            failed.write(&fields)?;
        }
        progress.inc();
        if !paused_shown && limiter.rate_limited() > 0 {
            paused_shown = true;
            progress
                .println("the API answered 429 (rate limited): every call paused, then resumed");
        }
    }
    report
        .flush()
        .with_context(|| format!("cannot write the report {}", report.path().display()))?;
    let failed_csv = match failed_rows {
        Some(failed) => failed.finish()?,
        None => None,
    };
    drop(outcomes);
    progress.finish();

    if let Some(mut plan) = plan {
        let settings = &job.settings;
        plan.finish(
            &PlanSettings {
                rate: settings.limiter.rate,
                tenant_key_given: settings.tenant_auth_key.is_some() || settings.sandbox,
                send_before: settings.send_before,
                emails: settings.email.is_some(),
            },
            chrono::Local::now(),
        );
        summary.plan = Some(plan);
    }
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary.api_calls = limiter.calls();
    summary.rate_limited = limiter.rate_limited();
    summary.paused_secs = limiter.paused_total().as_secs_f64();
    if let Some(path) = &summary_path {
        summary.write_json(path)?;
    }
    if let Some(e) = fatal {
        return Err(e.context(format!(
            "run aborted; the report {} holds every row done before",
            report_path.display()
        )));
    }
    let interrupted = *stop.borrow();
    Ok(RunOutcome {
        summary,
        interrupted,
        report: report_path,
        failed_csv,
    })
}

/// The outcomes of a real run: link stage → email stage → the consumer, each
/// with its own concurrency, joined by bounded channels: a slow SMTP server
/// does not hold back key generation beyond one small buffer, so links are
/// minted shortly before their email goes out. Dropping the stream stops both
/// stages.
fn staged(
    reader: LeadReader,
    job: Arc<Job>,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> futures::stream::BoxStream<'static, anyhow::Result<Finished>> {
    let buffer = job.settings.limiter.rate.calls as usize;
    let (linked_tx, linked_rx) = mpsc::channel(buffer);
    let link_stage = tokio::spawn({
        let job = Arc::clone(&job);
        let concurrency = job.settings.concurrency;
        let steps = read_in_background(reader)
            .take_until(stopped)
            .map(move |item| {
                let job = Arc::clone(&job);
                async move { job.process(item?).await }
            })
            .buffer_unordered(concurrency);
        forward(steps, linked_tx)
    });
    let (done_tx, done_rx) = mpsc::channel(buffer);
    let email_stage = tokio::spawn({
        let concurrency = job.mail.as_ref().map_or(buffer, |m| m.concurrency);
        let records = receive(linked_rx)
            .map(move |step: anyhow::Result<Step>| {
                let job = Arc::clone(&job);
                async move { job.finish(step?).await }
            })
            .buffer_unordered(concurrency);
        forward(records, done_tx)
    });
    let stages = AbortOnDrop(vec![link_stage, email_stage]);
    receive(done_rx)
        .map(move |outcome| {
            let _keep_running = &stages;
            outcome
        })
        .boxed()
}

/// The outcomes of a dry run: nothing waits on the network, so rows are
/// taken one after another on this thread, with no channel or task between
/// them. A million rows plan in about a second.
fn planned(
    reader: LeadReader,
    job: Arc<Job>,
    stop: watch::Receiver<bool>,
) -> futures::stream::BoxStream<'static, anyhow::Result<Finished>> {
    let mut taken = 0u32;
    read_in_background(reader)
        .then(move |item| {
            let job = Arc::clone(&job);
            taken = taken.wrapping_add(1);
            // Every 1024 rows: let the signal handler run, then see whether
            // it asked to stop (checking each row would cost more than the row).
            let check = (taken % 1024 == 0).then(|| stop.clone());
            async move {
                if let Some(stop) = check {
                    tokio::task::yield_now().await;
                    if *stop.borrow() {
                        return None;
                    }
                }
                Some(async { job.finish(job.process(item?).await?).await }.await)
            }
        })
        .take_while(|outcome| futures::future::ready(outcome.is_some()))
        .filter_map(futures::future::ready)
        .boxed()
}

/// Aborts the stage tasks when the run stops consuming their outcomes.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// `--test-email`: the first valid row's message, with a real link, goes to
/// the test address only. No other row is touched and no report is written.
pub async fn send_test(settings: Settings) -> anyhow::Result<String> {
    let Prepared { job, reader, .. } = prepare(settings).await?;
    job.check_mail().await?;
    let mail = job
        .mail
        .as_ref()
        .context("--test-email needs the email settings")?;
    let to = job
        .settings
        .email
        .as_ref()
        .and_then(|e| e.test_address.clone())
        .context("--test-email needs an address")?;
    for item in reader {
        let mut row = item?;
        if row.kind != RowKind::Valid || row.portal_id.is_none() {
            continue;
        }
        let (record, _) = job.link(&mut row).await?;
        if record.status != Status::Linked {
            // An invalid address, a failed key, a lead already done: try the next row.
            continue;
        }
        let message_id = crate::email::message_id(
            &format!("{}/test", job.settings.campaign),
            &record.lead_id,
            mail.from.email.domain(),
        );
        let message = job.message(mail, &record, &row, &to, &message_id)?;
        let (result, _) =
            crate::email::send_with_retry(&mail.transport, &message, mail.max_attempts).await;
        result.map_err(|e| anyhow::anyhow!("the test message was not sent: {e}"))?;
        return Ok(format!(
            "test message for the lead on row {} ({}) sent to {to}, Message-ID {message_id}",
            record.row, record.lead_id
        ));
    }
    anyhow::bail!("no row could be linked for a test message")
}

/// Sends every item of a stream into a channel until either ends.
async fn forward<T>(items: impl futures::Stream<Item = T>, tx: mpsc::Sender<T>) {
    let mut items = std::pin::pin!(items);
    while let Some(item) = items.next().await {
        if tx.send(item).await.is_err() {
            break;
        }
    }
}

/// A channel's receiving end as a stream.
fn receive<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + Unpin {
    Box::pin(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

fn build_caller(settings: &Settings, limiter: Arc<Limiter>) -> anyhow::Result<Caller> {
    let missing = || anyhow::anyhow!("checked before the run");
    let client = ApiClient::new(ApiSettings {
        host: settings.host.clone().ok_or_else(missing)?,
        access_key: settings.access_key.clone().ok_or_else(missing)?,
        secret_key: settings.secret_key.clone().ok_or_else(missing)?,
        connect_timeout: settings.connect_timeout,
        timeout: settings.timeout,
    })?;
    let tenant = TenantKey::new(TenantKeySource {
        given: settings.tenant_auth_key.clone(),
        mint_path: settings.tenant_key_path.clone(),
        mint_method: settings.tenant_key_method.clone(),
        lifetime: KEY_LIFETIME,
    });
    Ok(Caller::new(client, limiter, settings.retry, tenant))
}

/// Streams rows from a reader thread, so file reads never block the runtime.
/// Rows travel in batches: one wake-up per batch, not per row, keeps a
/// million-row dry run fast.
fn read_in_background(
    reader: LeadReader,
) -> impl futures::Stream<Item = Result<InputRow, InputError>> + Send + Unpin {
    const BATCH: usize = 256;
    let (tx, rx) = mpsc::channel::<Vec<Result<InputRow, InputError>>>(8);
    std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(BATCH);
        for item in reader {
            batch.push(item);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if tx.blocking_send(full).is_err() {
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
    });
    receive(rx).flat_map(stream::iter)
}

/// The first Ctrl-C or SIGTERM flips the flag: no new rows are taken, calls
/// in flight finish and are recorded. A second one ends the process at once.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            wait_for_signal().await;
            signals += 1;
            if signals == 1 {
                eprintln!("stopping: no new rows are taken; calls in flight are finished and recorded (press Ctrl-C again to quit at once)");
                let _ = tx.send(true);
            } else {
                eprintln!("quitting at once; the report holds every row finished so far");
                std::process::exit(130);
            }
        }
    });
    rx
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Starts the built-in sandbox in-process and points the run at it.
async fn start_sandbox(settings: &mut Settings) -> anyhow::Result<crate::sandbox::Sandbox> {
    let mut config = crate::sandbox::SandboxConfig::from_env();
    config.budget = settings.limiter.rate;
    if let Some(portal) = &settings.portal_id {
        if !config.portal_ids.contains(portal) {
            config.portal_ids.push(portal.clone());
        }
    }
    let sandbox = crate::sandbox::Sandbox::start(config)
        .await
        .context("cannot start the built-in sandbox")?;
    let config = sandbox.config().clone();
    settings.host = Some(crate::config::parse_host(&sandbox.base_url())?);
    settings.access_key = Some(Secret::new(config.access_key));
    settings.secret_key = Some(Secret::new(config.secret_key));
    settings.tenant_auth_key = Some(Secret::new(config.tenant_auth_key));
    settings.public_auth_key = Some(Secret::new(config.public_auth_key));
    if settings.portal_id.is_none() {
        settings.portal_id = config.portal_ids.first().cloned();
    }
    settings.portal_url = Some(url::Url::parse(&sandbox.portal_url())?);
    eprintln!(
        "SANDBOX RUN: no LeadSquared account is used; calls go to the built-in simulator at {} and links open its portal page",
        sandbox.base_url()
    );
    Ok(sandbox)
}
