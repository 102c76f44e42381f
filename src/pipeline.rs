//! The batch job: rows stream from the CSV through a bounded pool of calls to
//! outcomes; ONE consumer owns the report, the summary and the progress.
//!
//! ```text
//! CSV ─▶ rows ─▶ limiter ─▶ Generate (retry) ─▶ link ─▶ report
//!         └─ invalid / duplicate ─────────────────────────▲
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use futures::{stream, StreamExt};
use tokio::sync::{mpsc, watch, Mutex};

use crate::api::{
    ApiClient, ApiError, ApiSettings, GeneratedKey, TenantKey, TenantKeySource, KEY_LIFETIME,
};
use crate::config::Settings;
use crate::input::{InputError, InputOptions, InputRow, LeadReader, RowKind};
use crate::limiter::Limiter;
use crate::progress::Progress;
use crate::report::{Record, ReportWriter, Status, Summary};
use crate::retry::{Attempted, Caller};
use crate::secret::Secret;

/// How a finished (or interrupted) run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Counts and figures.
    pub summary: Summary,
    /// Stopped by Ctrl-C or SIGTERM before every row was done.
    pub interrupted: bool,
    /// Where the report is.
    pub report: PathBuf,
}

impl RunOutcome {
    /// The exit code DESIGN.md promises: 130 interrupted, 3 when a row failed,
    /// was invalid or is in doubt, else 0.
    pub fn exit_code(&self) -> u8 {
        let count = |s: Status| self.summary.counts.get(&s).copied().unwrap_or(0);
        if self.interrupted {
            130
        } else if count(Status::Failed) + count(Status::Invalid) + count(Status::InDoubt) > 0 {
            3
        } else {
            0
        }
    }
}

impl RunOutcome {
    /// One line for the log: counts by status, time, calls, 429s and where the
    /// report is.
    pub fn describe(&self) -> String {
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
        )
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

/// What every row's task shares.
struct Job {
    settings: Settings,
    caller: Option<Caller>,
    gate: Mutex<Gate>,
}

impl Job {
    /// One row to its report record, or `Err` for a run-level fault.
    async fn process(&self, row: InputRow) -> Result<Record, ApiError> {
        let mut record = Record {
            row: row.line,
            lead_id: row.lead_id.clone(),
            portal_id: row.portal_id.clone().unwrap_or_default(),
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
                return Ok(record);
            }
            RowKind::Duplicate { first_line } => {
                record.status = Status::Duplicate;
                record.error = format!("duplicate of row {first_line}");
                return Ok(record);
            }
            RowKind::Valid => {}
        }
        let Some(portal_id) = row.portal_id.as_deref() else {
            record.error =
                "no PortalId: set --portal-id (or LSQ_PORTAL_ID) or fill the PortalId column"
                    .into();
            return Ok(record);
        };
        let Some(caller) = &self.caller else {
            record.status = Status::Planned;
            return Ok(record);
        };
        let done = self.generate(caller, &row.lead_id, portal_id).await;
        record.attempts = done.attempts;
        match done.result {
            Ok(key) if !same_lead(&key, &row.lead_id) => {
                record.status = Status::Failed;
                record.error = format!("the API answered for another lead ({})", key.lead_id);
            }
            Ok(key) => {
                let portal_url = self
                    .settings
                    .portal_url
                    .as_ref()
                    .expect("checked before the run");
                let ids = self
                    .settings
                    .link_ids
                    .then_some((row.lead_id.as_str(), portal_id));
                record.status = Status::Linked;
                record.portal_url = crate::link::login_link(portal_url, &key.auth_key, ids).into();
                record.expires_at = Some(Utc::now() + KEY_LIFETIME);
            }
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                record.status = Status::Failed;
                record.error = e.to_string();
            }
        }
        Ok(record)
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

/// Runs the batch job with resolved settings.
pub async fn run(mut settings: Settings) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    let _sandbox = if settings.sandbox && !settings.dry_run {
        Some(start_sandbox(&mut settings).await?)
    } else {
        None
    };
    if !settings.dry_run {
        settings.require_for_network()?;
    }

    // Every input and output is opened and checked before the first call.
    let reader = LeadReader::open(
        &settings.input,
        InputOptions {
            lead_column: settings.lead_column.clone(),
            default_portal: settings.portal_id.clone(),
            ..InputOptions::default()
        },
    )?;
    let mut report = ReportWriter::create(&settings.report)?;
    if let Some(path) = &settings.summary_json {
        crate::report::open_check(path)?;
    }
    let mut progress = Progress::new(
        crate::progress::estimate_rows(&settings.input),
        settings.quiet,
    );

    let limiter = Limiter::new(settings.limiter);
    let caller = if settings.dry_run {
        None
    } else {
        Some(build_caller(&settings, Arc::clone(&limiter))?)
    };
    let concurrency = settings.concurrency;
    let job = Arc::new(Job {
        settings,
        caller,
        gate: Mutex::new(Gate::Unproven),
    });

    let rows = read_in_background(reader);
    let stop = stop_on_signal();
    let mut stopped = stop.clone();
    let mut outcomes = rows
        .take_until(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .map(|item: Result<InputRow, InputError>| {
            let job = Arc::clone(&job);
            async move {
                match item {
                    Ok(row) => job.process(row).await.map_err(anyhow::Error::from),
                    Err(e) => Err(anyhow::Error::from(e)),
                }
            }
        })
        .buffer_unordered(concurrency)
        .boxed();

    let mut summary = Summary::default();
    let mut fatal = None;
    let mut paused_shown = false;
    while let Some(outcome) = outcomes.next().await {
        match outcome {
            Ok(record) => {
                report.write(&record).with_context(|| {
                    format!("cannot write the report {}", report.path().display())
                })?;
                summary.record(record.status);
                progress.inc();
                let paused = limiter.paused_total();
                if !paused.is_zero() && !paused_shown {
                    paused_shown = true;
                    progress.println(
                        "the API answered 429 (rate limited): every call paused, then resumed",
                    );
                }
            }
            Err(e) => {
                fatal = Some(e);
                break;
            }
        }
    }
    drop(outcomes);
    progress.finish();

    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary.api_calls = limiter.calls();
    summary.rate_limited = limiter.rate_limited();
    summary.paused_secs = limiter.paused_total().as_secs_f64();
    if let Some(path) = &job.settings.summary_json {
        summary.write_json(path)?;
    }
    let report_path = report.path().to_path_buf();
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
    })
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
fn read_in_background(
    reader: LeadReader,
) -> impl futures::Stream<Item = Result<InputRow, InputError>> + Send + Unpin {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        for item in reader {
            if tx.blocking_send(item).is_err() {
                break;
            }
        }
    });
    Box::pin(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
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
