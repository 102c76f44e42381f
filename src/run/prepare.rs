//! Everything a run checks and opens before its first call: the input, the
//! templates, the campaign state, the API client and the mail transport. Every
//! run-level fault that can be found early surfaces here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;

use crate::api::Caller;
use crate::api::{ApiClient, TenantKey};
use crate::config::{Connection, Delivery, EmailSettings, Settings, UsageError};
use crate::email::{SendError, Sender, Templates, Transport};
use crate::input::{InputOptions, LeadReader};
use crate::limiter::{Limiter, LimiterSettings};
use crate::paths::{Output, Target};
use crate::signal::StopSignal;
use crate::state::{LeadEntry, StateStore};

use super::gate::Gate;
use super::ledger::Ledger;

/// Messages in a row whose every attempt could not connect before the run
/// stops: the SMTP server is down or mistyped, and every other message would
/// fail the same way, each after its retries.
const UNREACHABLE_AFTER: u32 = 3;

/// The email side of a run.
pub(super) struct Mail {
    pub(super) templates: Templates,
    pub(super) sender: Sender,
    pub(super) column: String,
    /// Where messages go; a dry run may have none (see [`Mail::transport`]).
    transport: Option<Transport>,
    pub(super) limiter: Option<Arc<Limiter>>,
    pub(super) max_attempts: u32,
    /// Waits before the later tries of a deferred message.
    pub(super) defer: crate::email::DeferSchedule,
    pub(super) concurrency: usize,
    /// SMTP conversations under way, at most `concurrency`: a row holds a
    /// slot from its `sending` commit until the server has answered, and
    /// waits for its `sent` commit without one, so the connections never
    /// sit idle behind a commit of the row before.
    pub(super) conversations: tokio::sync::Semaphore,
    /// Where a dry run's `--preview` messages go.
    pub(super) preview: Option<Transport>,
    /// Messages in a row whose every attempt could not connect to the SMTP
    /// server.
    unreached: std::sync::atomic::AtomicU32,
}

/// What every row's task shares.
pub(super) struct Job {
    pub(super) settings: Settings,
    pub(super) headers: Vec<String>,
    /// The API path; a dry run has none.
    pub(super) caller: Option<Caller>,
    pub(super) mail: Option<Mail>,
    /// The campaign state; a dry run without a state file opens (and so
    /// creates) none.
    pub(super) state: Option<Ledger>,
    /// A dry run's view of the campaign, read once at the start: a plan of a
    /// million rows must not query the store a million times.
    pub(super) known: Option<HashMap<(String, String), LeadEntry>>,
    /// Messages previewed so far in a dry run.
    pub(super) previews: AtomicUsize,
    /// Rows taken on so far, against `--limit`.
    pub(super) taken: AtomicU64,
    /// The run's first call goes ahead of the others (see [`Gate`]).
    pub(super) gate: Gate,
    /// The mark of the run's credentials (see [`credentials_mark`]), and
    /// whether their acceptance was noted in the budget store yet.
    pub(super) credentials: Option<(String, AtomicBool)>,
    /// Asked before every API attempt and SMTP transaction.
    pub(super) stop: StopSignal,
}

/// Where the report, the summary and the metrics go.
pub(super) struct Targets {
    pub(super) report: Target,
    pub(super) summary_json: Option<Target>,
    pub(super) metrics: Option<Target>,
}

/// Everything checked and opened before the first call.
pub(super) struct Prepared {
    pub(super) job: Arc<Job>,
    pub(super) targets: Targets,
    /// About how many rows the input holds, for progress and sizing.
    pub(super) rows_estimate: u64,
    pub(super) reader: LeadReader,
    pub(super) limiter: Arc<Limiter>,
}

/// Opens the input and checks every output against it and one another,
/// loads and checks templates, takes the tenant's shared budget, opens the
/// campaign state and builds the client and the mail transport. `stop`
/// is asked by every wait, from the wait for a FIFO's reader on; a signal
/// while it waits for the shared budget's store ends it with
/// [`crate::signal::Interrupted`].
pub(super) async fn prepare(settings: Settings, stop: StopSignal) -> anyhow::Result<Prepared> {
    let input = crate::input::open_input(&settings.input)?;
    crate::paths::check(&settings.input, &input, &outputs(&settings))?;
    // Outputs that are no file (a stream, a device, a FIFO) are opened now,
    // once, and a FIFO waited for before the campaign is locked.
    let targets = Targets {
        summary_json: checked(settings.summary_json.as_deref(), "--summary-json", &stop).await?,
        metrics: checked(settings.metrics_file.as_deref(), "--metrics-file", &stop).await?,
        report: Target::open(&settings.report, "--report", &stop).await?,
    };
    // The one open of the input, read once: a pipe or a FIFO has no second
    // reading (a regular file's text is checked through a copy of it).
    let copy = input.try_clone();
    let (rows_estimate, input) = crate::progress::estimate_rows(input);
    let reader = LeadReader::from_reader(
        Box::new(input),
        settings.input.display().to_string(),
        InputOptions {
            lead_column: settings.lead_column.clone(),
            encoding: settings.encoding,
            delimiter: settings.delimiter,
            default_portal: settings.portal_id.clone(),
            expected_rows: usize::try_from(rows_estimate).unwrap_or(0),
            keep_cells: settings.email.is_some(),
            keep_raw: !settings.is_dry_run(),
            ..InputOptions::default()
        },
    )?;
    if let Ok(copy) = copy {
        let limits = crate::input::Limits::default();
        crate::input::check_text(copy, &settings.input, settings.encoding, limits)?;
    }
    tracing::info!(
        encoding = %reader.header_line().encoding,
        lead_column = reader.lead_column().name,
        "{}",
        describe_input(&settings, &reader)
    );
    if settings.portal_id.is_none() && !reader.has_portal_column() {
        return Err(UsageError(format!(
            "the input {} has no PortalId column and no default portal is set, so no row \
             could be linked: give --portal-id GUID (or LSQ_PORTAL_ID, or portal_id in the \
             --config file), or add a PortalId column",
            settings.input.display()
        ))
        .into());
    }
    let headers = reader.headers().to_vec();
    let mail = match &settings.email {
        Some(email) => Some(prepare_mail(
            email,
            &headers,
            settings.preview_outbox(),
            settings.daytime,
        )?),
        None => None,
    };
    // The budget file lives beside the state file: a directory that cannot
    // be made is the state path's fault, and is named so.
    if !settings.is_dry_run() {
        crate::state::make_directory(settings.state.path(), settings.state.setting())?;
    }
    let limiter = match (settings.connection(), &settings.tenant) {
        (Some(connection), Some(tenant)) => {
            let store = &settings.budget_store;
            let hold = connection.api.timeout;
            let limiter = crate::budget::limiter(settings.limiter, store, tenant, hold);
            stop.unless_stopping(limiter)
                .await
                .ok_or(crate::signal::Interrupted)??
        }
        _ => Limiter::new(settings.limiter),
    };
    let (state, known) = {
        // Opening checks, migrates and claims: file work, off the workers.
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || open_state(&settings)).await??
    };
    let caller = match settings.connection() {
        Some(connection) => Some(build_caller(&settings, connection, Arc::clone(&limiter))?),
        None => None,
    };
    let credentials = settings.connection().map(credentials_mark);
    let proven = credentials
        .as_ref()
        .is_some_and(|mark| limiter.accepted_recently(mark));
    if proven {
        tracing::debug!("these credentials were accepted lately: the first burst goes at once");
    }
    Ok(Prepared {
        job: Arc::new(Job {
            settings,
            headers,
            caller,
            mail,
            state,
            known,
            previews: AtomicUsize::new(0),
            taken: AtomicU64::new(0),
            gate: Gate::new(proven),
            credentials: credentials.map(|mark| (mark, AtomicBool::new(false))),
            stop,
        }),
        targets,
        reader,
        rows_estimate,
        limiter,
    })
}

/// Where the optional output at `path`, which `setting` names, goes. A
/// file that cannot be written is found here, before the campaign state
/// and the report are, so a refused run leaves nothing.
async fn checked(
    path: Option<&Path>,
    setting: &'static str,
    stop: &StopSignal,
) -> anyhow::Result<Option<Target>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let target = Target::open(path, setting, stop).await?;
    if let Target::File(path) = &target {
        crate::report::open_check(path)?;
    }
    Ok(Some(target))
}

/// One line on how the input is read: `input leads.csv: UTF-16LE,
/// semicolon-separated, LeadIds in column "ProspectID"`.
fn describe_input(settings: &Settings, reader: &LeadReader) -> String {
    let form = reader.header_line();
    let separator = match form.delimiter {
        b',' => "comma".to_owned(),
        b';' => "semicolon".to_owned(),
        b'\t' => "tab".to_owned(),
        b'|' => "bar".to_owned(),
        other => format!("{:?}", char::from(other)),
    };
    let column = reader.lead_column();
    format!(
        "input {}: {}, {separator}-separated, LeadIds in column {:?}{}",
        settings.input.display(),
        form.encoding,
        column.name,
        if column.found {
            " (give --lead-column to use another)"
        } else {
            ""
        }
    )
}

/// Every file the run writes, in the order a clash is told (the second of
/// two is the one to rename): the campaign state, which was there first,
/// then the report, the rows to retry and to fix, the summary and the
/// metrics.
fn outputs(settings: &Settings) -> Vec<Output> {
    let mut outputs = Output::database(settings.state.path());
    let report = &settings.report;
    outputs.push(Output::named("--report", report));
    if !settings.is_dry_run() {
        let (retry, invalid) = crate::report::rerun_paths(report, &settings.input);
        outputs.push(Output::derived(
            "the rows to retry",
            retry,
            "--report",
            report,
        ));
        outputs.push(Output::derived(
            "the invalid rows",
            invalid,
            "--report",
            report,
        ));
    }
    if let Some(summary) = &settings.summary_json {
        outputs.push(Output::named("--summary-json", summary));
    }
    if let Some(metrics) = &settings.metrics_file {
        outputs.push(Output::named("--metrics-file", metrics));
    }
    outputs
}

/// A run's view of its campaign: the ledger, and for a dry run every entry
/// read at once.
type OpenState = (Option<Ledger>, Option<HashMap<(String, String), LeadEntry>>);

/// The campaign state, claimed for this run's campaign, with the leads a
/// crashed run left mid-send marked in doubt. A dry run opens it only when it
/// exists, claims nothing and changes nothing, and reads its entries at once.
fn open_state(settings: &Settings) -> anyhow::Result<OpenState> {
    let path = settings.state.path();
    let tenant = match &settings.tenant {
        Some(tenant) => format!(", tenant {}", tenant.host()),
        None => String::new(),
    };
    if settings.is_dry_run() && !path.exists() {
        tracing::info!(
            "campaign {} (no state file yet at {}{tenant})",
            settings.campaign,
            path.display()
        );
        return Ok((None, None));
    }
    let state = if settings.is_dry_run() {
        StateStore::open_to_read(path)?
    } else {
        StateStore::open(path)?
    };
    tracing::info!(
        "campaign {} (state file {}{tenant})",
        settings.campaign,
        state.path().display()
    );
    if !settings.is_dry_run() {
        let campaign = &settings.campaign;
        state.claim(campaign)?;
        let in_doubt = state.recover_in_doubt(campaign)?;
        if in_doubt > 0 {
            tracing::warn!("{in_doubt} lead(s) of campaign {campaign} were being emailed when the last run stopped: reported in_doubt, not sent again (see --resend-in-doubt)");
        }
        state.clear_expired_keys(Utc::now())?;
    }
    let fingerprint = settings.tenant.as_ref().map(|t| t.fingerprint());
    let known = match settings.is_dry_run() {
        true => Some(state.lookup_table(&settings.campaign, fingerprint)?),
        false => None,
    };
    // Rows are looked up through a second connection (see `Ledger`); a dry
    // run reads its table above instead.
    let reader = match settings.is_dry_run() {
        true => None,
        false => Some(StateStore::open_to_read(path)?),
    };
    let ledger = Ledger::new(state, reader, &settings.campaign, fingerprint.unwrap_or(""));
    Ok((Some(ledger), known))
}

/// Loads the templates and checks them against the input's columns (a
/// template naming a column the file lacks is a usage error), then opens the
/// transport.
fn prepare_mail(
    email: &EmailSettings,
    headers: &[String],
    preview_outbox: Option<&std::path::Path>,
    daytime: crate::daytime::Daytime,
) -> anyhow::Result<Mail> {
    let templates = Templates::load(&email.templates)
        .and_then(|t| t.check(headers).map(|()| t.for_recipients(daytime)))
        .map_err(|e| UsageError(format!("{e:#}")))?;
    if email.test_address.is_none()
        && !headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&email.column))
    {
        return Err(UsageError(format!(
            "the input has no {:?} column for email addresses (columns: {}); use --email-column",
            email.column,
            headers.join(", ")
        ))
        .into());
    }
    let transport = match &email.delivery {
        Some(Delivery::Smtp(smtp)) => Some(Transport::smtp(smtp)?),
        Some(Delivery::Outbox(dir)) => Some(Transport::outbox(dir)?),
        None => None,
    };
    let limiter = email.smtp_rate.map(|rate| {
        Limiter::new(LimiterSettings {
            arrival_margin: std::time::Duration::ZERO,
            ..LimiterSettings::new(rate)
        })
    });
    Ok(Mail {
        templates,
        sender: email.sender.clone(),
        column: email.column.clone(),
        transport,
        limiter,
        max_attempts: email.max_attempts,
        defer: email.defer.clone(),
        concurrency: email.concurrency,
        conversations: tokio::sync::Semaphore::new(email.concurrency),
        preview: preview_outbox.map(Transport::outbox).transpose()?,
        unreached: std::sync::atomic::AtomicU32::new(0),
    })
}

/// A short, non-reversible name for the run's credentials: SHA-256 over the
/// host's origin, the access and secret keys and the tenant key given, if
/// any. The budget store keeps it to remember that the API accepted them.
fn credentials_mark(connection: &Connection) -> String {
    let api = &connection.api;
    let mut input = b"lsq-dispatch credentials v1\0".to_vec();
    for part in [
        api.host.origin().ascii_serialization().as_str(),
        api.access_key.expose(),
        api.secret_key.expose(),
        connection
            .tenant
            .given
            .as_ref()
            .map_or("", |key| key.expose()),
    ] {
        input.extend_from_slice(part.as_bytes());
        input.push(0);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    crate::tenant::hex(&digest.as_ref()[..8])
}

fn build_caller(
    settings: &Settings,
    connection: &Connection,
    limiter: Arc<Limiter>,
) -> anyhow::Result<Caller> {
    let client = ApiClient::new(connection.api.clone())?;
    let tenant = TenantKey::new(connection.tenant.clone());
    Ok(Caller::new(client, limiter, settings.retry, tenant))
}

impl Job {
    /// Takes one more row on, if `--limit` leaves room for it. Rows ask in
    /// input order, as they are decided (see `Job::decide_read`).
    pub(super) fn take_on(&self) -> bool {
        match self.settings.limit {
            None => true,
            Some(limit) => self.taken.fetch_add(1, Ordering::Relaxed) < limit,
        }
    }
}

impl Mail {
    /// Messages go to an outbox for a person to review: nothing is sent, so
    /// nothing can be in doubt, and a later SMTP run sends the lead.
    pub(super) fn reviews(&self) -> bool {
        matches!(self.transport, Some(Transport::Outbox(_)))
    }

    /// Where messages go. Every run that sends has a transport: only a dry
    /// run may be given none, and it sends nothing.
    pub(super) fn transport(&self) -> &Transport {
        self.transport
            .as_ref()
            .expect("settings give every run that sends an SMTP server or an outbox")
    }

    /// Counts messages in a row that could not connect at all; the last of
    /// [`UNREACHABLE_AFTER`] stops the run, as the server is down or
    /// mistyped and every other message would fail the same way.
    pub(super) fn give_up_on_a_dead_server(
        &self,
        result: Result<(), SendError>,
    ) -> Result<(), SendError> {
        use std::sync::atomic::Ordering;
        match result {
            Err(SendError::Unconnected(cause))
                if self.unreached.fetch_add(1, Ordering::SeqCst) + 1 >= UNREACHABLE_AFTER =>
            {
                Err(SendError::Fatal(format!(
                    "{cause}. {UNREACHABLE_AFTER} messages in a row could not connect, so \
                     the run stops"
                )))
            }
            Err(SendError::Unconnected(cause)) => Err(SendError::Unconnected(cause)),
            other => {
                self.unreached.store(0, Ordering::SeqCst);
                other
            }
        }
    }
}

impl Job {
    /// Connects and logs in to the SMTP server once, so that bad credentials
    /// stop the run before any key is minted or message sent.
    pub(super) async fn check_mail(&self) -> anyhow::Result<()> {
        match &self.mail {
            Some(mail) if !self.settings.is_dry_run() => {
                mail.transport().check().await.map_err(|e| match e {
                    SendError::Transient(_) => anyhow::anyhow!(
                        "the SMTP server cannot be used: {e}; try again later, or check --smtp-url"
                    ),
                    // Each says what failed and what to check.
                    e => anyhow::anyhow!(e),
                })
            }
            _ => Ok(()),
        }
    }

    /// Records which campaign the rows to retry were written for, so that a
    /// run of that file without `--campaign` resumes the campaign rather
    /// than start another that would email its leads again.
    pub(super) async fn register_retry_file(
        &self,
        file: Option<&std::path::Path>,
    ) -> anyhow::Result<()> {
        let (Some(file), Some(_), false) = (file, &self.state, self.settings.is_dry_run()) else {
            return Ok(());
        };
        let real = std::fs::canonicalize(file)
            .with_context(|| format!("cannot resolve the retry file {}", file.display()))?;
        let campaign = self.settings.campaign.clone();
        if real.to_str().is_none() {
            // The state file records the path as text, where a name that
            // is not UTF-8 reads like others of its shape: recorded, it
            // could make a run of another such file resume this campaign.
            tracing::warn!(
                "the rows to retry are in {}, whose path is not UTF-8, so the campaign \
                 state cannot remember them: run that file with --campaign {}",
                file.display(),
                crate::console::shell_quote(&campaign)
            );
            return Ok(());
        }
        self.ledger()
            .with(move |store| store.register_retry_file(&real, &campaign))
            .await?;
        Ok(())
    }

    /// The campaign state; only a dry run may have none, and a dry run
    /// writes nothing to it.
    pub(super) fn ledger(&self) -> &Ledger {
        self.state
            .as_ref()
            .expect("every real run opens the campaign state")
    }
}
