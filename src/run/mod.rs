//! The batch job. Rows stream from the CSV through the link stage (a bounded
//! pool of API calls) and the email stage (its own pool) to ONE sink that owns
//! every output. The campaign state decides per lead what is left to do, and
//! records each step.
//!
//! ```text
//! CSV ─▶ rows ─▶ state ─▶ limiter ─▶ Generate (retry) ─▶ link ─▶ [email] ─▶ sink
//!         └─ invalid / duplicate / already done ─────────────────────────▲
//! ```
//!
//! - `prepare`: everything checked and opened before the first call.
//! - `link`: one row to its link (or the reason it has none).
//! - `email`: one linked row to its sent (or planned) message.
//! - `defer`: a message the server deferred, tried again minutes later.
//! - `ledger`: the campaign state, written off the async workers.
//! - `stages`: how rows flow between the two, for real and dry runs.
//! - `sink`: the report, summary, rows to retry, invalid rows, plan and progress.
//! - `test_email`: `--test-email`, one message to one address.

mod defer;
mod email;
mod gate;
mod ledger;
mod link;
mod prepare;
mod resume;
mod sink;
mod stages;
mod test_email;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use futures::StreamExt;

use crate::config::{Mode, Settings};
use crate::console::say;
use crate::exit::Exit;
use crate::logging::RESULT;
use crate::ping::Pinger;
use crate::report::{Record, RowError, Status};
use crate::signal::{watch_signals, Interrupted, Stop, StopSignal};
use crate::summary::Summary;

/// How a finished (or interrupted) run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Counts and figures.
    pub summary: Summary,
    /// Stopped by Ctrl-C, SIGTERM or SIGHUP before every row was done.
    pub interrupted: bool,
    /// Where the report is.
    pub report: PathBuf,
    /// The input rows worth retrying (failed), when there were any.
    pub retry_csv: Option<PathBuf>,
    /// The invalid and duplicate input rows, when there were any.
    pub invalid_csv: Option<PathBuf>,
    /// The input line of the last row the report holds (the highest), if
    /// it holds any: a run that stopped early did no row after it.
    pub last_line: Option<u64>,
}

/// A row's final record, with its input cells as read for the rows to retry
/// or fix (a dry run keeps none).
pub(crate) struct Finished {
    record: Record,
    raw: Option<csv::ByteRecord>,
    /// The fault this row met that stops the run (an SMTP server that takes
    /// no message, a state file that takes no write): the row is still
    /// reported, then the run aborts.
    fatal: Option<anyhow::Error>,
}

/// `lsq-dispatch run`: the test message when `--test-email` is given,
/// otherwise the batch job, between its start line and pings and its end
/// line and closing ping; says how it ended.
pub async fn execute(settings: Settings) -> anyhow::Result<Exit> {
    let settings = start_sandbox(settings).await?;
    if settings.test_address().is_some() {
        return match test_email::send_test(settings).await {
            Ok(sent) => {
                say!("{sent}");
                Ok(Exit::Success)
            }
            Err(error) if error.is::<Interrupted>() => {
                tracing::info!("{error}");
                Ok(Exit::Interrupted)
            }
            Err(error) => Err(error),
        };
    }
    log_start(&settings);
    let begun = Summary::begin(&settings.campaign, &settings.input);
    // A dry run touches no network, and is no run a monitor waits for.
    let pinger = match settings.is_dry_run() {
        true => None,
        false => settings.ping_url.clone().map(Pinger::start),
    };
    let result = run_from(settings, begun.clone()).await;
    let (exit, summary) = match &result {
        Ok(outcome) => (outcome.exit(), outcome.summary.clone()),
        Err(error) if error.is::<Interrupted>() => {
            tracing::info!("{error}");
            (Exit::Interrupted, begun.ended(Exit::Interrupted))
        }
        Err(error) => {
            let exit = Exit::of_error(error);
            match error.downcast_ref::<Aborted>() {
                Some(aborted) => (exit, aborted.summary.clone()),
                // Stopped before its first row: nothing counted.
                None => (exit, begun.ended(exit)),
            }
        }
    };
    if let Some(pinger) = pinger {
        pinger.finish(exit, summary.to_json()).await;
    }
    let outcome = match result {
        Err(error) if error.is::<Interrupted>() => return Ok(Exit::Interrupted),
        result => result?,
    };
    log_end(&outcome, exit);
    Ok(exit)
}

/// The run's last line, its result, on standard output: what `describe`
/// says, with the figures as fields for JSON logs.
fn log_end(outcome: &RunOutcome, exit: Exit) {
    let s = &outcome.summary;
    tracing::info!(
        target: RESULT,
        exit_code = exit.code(),
        interrupted = outcome.interrupted,
        rows = s.rows,
        planned = s.count(Status::Planned),
        linked = s.count(Status::Linked),
        sent = s.count(Status::Sent),
        failed = s.count(Status::Failed),
        invalid = s.count(Status::Invalid),
        duplicate = s.count(Status::Duplicate),
        skipped = s.count(Status::Skipped),
        in_doubt = s.count(Status::InDoubt),
        elapsed_secs = s.elapsed_secs,
        api_calls = s.api_calls,
        rate_limited = s.rate_limited,
        emails_sent = s.emails_sent,
        emails_failed = s.emails_failed,
        "{}",
        outcome.describe()
    );
}

/// The run's first line: what runs, on what, where to, how fast. No
/// secret is in any of it; the ping URL is shown by its host.
fn log_start(settings: &Settings) {
    let host = match (settings.connection(), settings.mints_at_click()) {
        (Some(c), _) => c.api.host.origin().ascii_serialization(),
        (None, true) if !settings.is_dry_run() => "none (keys minted at click)".to_owned(),
        (None, _) => "none (dry run)".to_owned(),
    };
    let input = settings.input.display().to_string();
    let state = settings.state.path().display().to_string();
    let rate = settings.limiter.rate.to_string();
    let ping_host = match settings.is_dry_run() {
        true => None,
        false => settings.ping_url.as_ref().map(|url| url.host()),
    };
    let pings = match ping_host {
        Some(ping_host) => format!(", pings to {ping_host}"),
        None => String::new(),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        input,
        campaign = settings.campaign,
        state,
        host,
        rate,
        dry_run = settings.is_dry_run(),
        ping_host,
        "lsq-dispatch {} starting: input {input}, campaign {}, state file {state}, host {host}, \
         rate {rate}{pings}",
        env!("CARGO_PKG_VERSION"),
        settings.campaign,
    );
}

/// Starts the built-in sandbox a `--sandbox` run calls, and points the run
/// at it; other runs go on as they are.
async fn start_sandbox(settings: Settings) -> anyhow::Result<Settings> {
    let Mode::Sandbox(plan) = &settings.mode else {
        return Ok(settings);
    };
    let config = plan.config(lsq_sandbox::SandboxConfig::from_env());
    let sandbox = lsq_sandbox::Sandbox::start(config)
        .await
        .context("cannot start the built-in sandbox")?;
    tracing::info!(
        "SANDBOX RUN: no LeadSquared account is used; calls go to the built-in simulator at {} and links open its portal page",
        sandbox.base_url()
    );
    settings.calling(sandbox)
}

/// Runs the batch job with resolved settings.
pub async fn run(settings: Settings) -> anyhow::Result<RunOutcome> {
    let settings = start_sandbox(settings).await?;
    let begun = Summary::begin(&settings.campaign, &settings.input);
    run_from(settings, begun).await
}

/// A run that ended aborted: the error's message, and the summary written.
#[derive(Debug)]
struct Aborted {
    message: String,
    summary: Summary,
}

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs the batch job whose summary `begun` started. Signals stop it from
/// the start: one that comes while it prepares ends it with
/// [`Interrupted`], one during the SMTP login check with an empty report.
async fn run_from(settings: Settings, begun: Summary) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    // Signals are heard from the start: one during a wait for a FIFO's
    // reader ends the wait, and one later stops the run before its rows.
    let signal = StopSignal::new();
    let stop = watch_signals(&signal);
    let prepared = prepare::prepare(settings, signal).await?;
    let job = prepared.job;
    let mut sink = sink::Sink::open(
        &job.settings,
        prepared.targets,
        (prepared.reader.header_line(), prepared.rows_estimate),
        prepared.limiter,
        (started, begun),
    )?;
    if job
        .stop
        .unless_stopping(job.check_mail())
        .await
        .transpose()?
        .is_none()
    {
        let (outcome, failed) = sink.finish(true, None);
        return failed.map_or(Ok(outcome), Err);
    }
    if let Some(warning) = job.settings.night_warning(chrono::Utc::now()) {
        tracing::warn!("{warning}");
        if job.settings.refuse_night_links {
            let refused = anyhow::anyhow!("{warning}");
            let (outcome, _) = sink.finish(false, Some(&refused));
            return Err(refused.context(Aborted {
                message: "run refused (--refuse-night-links): no key was made and no email \
                          sent; run the job in the recipients' morning, or change \
                          --working-hours or --timezone. Cause"
                    .to_owned(),
                summary: outcome.summary,
            }));
        }
    }
    let mut outcomes = stages::outcomes(prepared.reader, job.clone(), stop.clone());
    let quit = crate::signal::reached(stop.clone(), Stop::Quit);
    tokio::pin!(quit);
    let mut metrics = tokio::time::interval(crate::metrics::EVERY);
    metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fatal = None;
    // Messages the SMTP server accepted that the state could not record.
    let mut unrecorded = 0u64;
    loop {
        let outcome = tokio::select! {
            outcome = outcomes.next() => outcome,
            () = &mut quit => None,
            _ = metrics.tick() => {
                sink.tick();
                continue;
            }
        };
        match outcome {
            None => break,
            Some(Ok(mut finished)) => {
                let stops = finished.fatal.take();
                if matches!(finished.record.error, Some(RowError::SentUnrecorded(_))) {
                    unrecorded += 1;
                }
                // An output that cannot be written (a full disk) stops the
                // run as a lost budget does; the campaign state records
                // the rows in flight, and the other outputs tell them.
                if let Err(e) = sink.record(finished) {
                    job.stop.raise(Stop::Finish);
                    fatal.get_or_insert(e);
                }
                if let Some(e) = stops {
                    job.stop.raise(Stop::Finish);
                    fatal.get_or_insert(e);
                }
            }
            // The budget shared with other processes is gone, the SMTP
            // server takes no message, or the campaign state takes no write
            // (a full disk): no call or message may start, but those in
            // flight are finished and recorded (or counted), as after a
            // first signal; the run then ends aborted.
            Some(Err(e)) if is_budget_lost(&e) || is_smtp_fatal(&e) || is_state_lost(&e) => {
                job.stop.raise(Stop::Finish);
                fatal.get_or_insert(e);
            }
            Some(Err(e)) => {
                fatal.get_or_insert(e);
                break;
            }
        }
    }
    drop(outcomes);
    let interrupted = *stop.borrow() != Stop::Running;
    let (outcome, failed) = sink.finish(interrupted, fatal.as_ref());
    let fatal = fatal.or(failed);
    let registered = job.register_retry_file(outcome.retry_csv.as_deref()).await;
    let Some(e) = fatal else {
        registered?;
        return Ok(outcome);
    };
    if let Err(unregistered) = registered {
        // The abort's cause matters more; the file is still written.
        tracing::warn!("{unregistered:#}");
    }
    let unrecorded = match unrecorded {
        0 => String::new(),
        n => format!("{}\n", unrecorded_advice(n, &job.settings)),
    };
    let message = match e.downcast_ref::<sink::ReportLost>() {
        Some(lost) => outcome.report_lost(lost, job.settings.is_dry_run()),
        None => format!(
            "run aborted; the report {} holds every row done before{}\n{unrecorded}{}",
            outcome.report.display(),
            outcome.files(),
            outcome.resume_advice("fix the cause and re-run the same command")
        ),
    };
    Err(e.context(Aborted {
        message: message + ". Cause",
        summary: outcome.summary,
    }))
}

/// What an abort says about the `n` messages the SMTP server accepted that
/// the campaign state could not record as sent.
fn unrecorded_advice(n: u64, settings: &Settings) -> String {
    let (emails, leads, them) = match n {
        1 => ("email", "that lead", "it"),
        _ => ("emails", "those leads", "them"),
    };
    format!(
        "the SMTP server accepted {n} {emails} that the state file {} could not record as \
         sent (the report lists {them} as sent): the next run of campaign {} holds {leads} \
         in_doubt and does not send {them} again; free space for the state file (or fix the \
         cause below), check the mailboxes if need be, and re-run; --resend-in-doubt would \
         send {them} a second time",
        settings.state.path().display(),
        settings.campaign,
    )
}

/// 130 interrupted; 3 when a lead failed or is in doubt; 5 when every lead
/// succeeded but input rows were invalid or duplicates; else 0.
fn exit_of(summary: &Summary, interrupted: bool) -> Exit {
    let any = |of: fn(Status) -> bool| summary.counts.iter().any(|(s, n)| of(*s) && *n > 0);
    if interrupted {
        Exit::Interrupted
    } else if any(Status::is_undelivered) {
        Exit::Attention
    } else if any(Status::is_rejected_input) {
        Exit::InputRejected
    } else {
        Exit::Success
    }
}

/// A row's error says that no message can be sent.
fn is_smtp_fatal(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<crate::email::SendError>()
        .is_some_and(crate::email::SendError::is_fatal)
}

/// A row's error says the campaign state cannot be written (or read).
fn is_state_lost(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.is::<crate::state::StateError>())
}

/// A row's error says the shared API budget cannot be used.
fn is_budget_lost(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<crate::api::ApiError>(),
        Some(crate::api::ApiError::Budget(_))
    )
}

impl RunOutcome {
    /// How the run ended, by the README's table of exit codes.
    pub fn exit(&self) -> Exit {
        exit_of(&self.summary, self.interrupted)
    }

    /// What the run prints at the end: a dry run's plan, then one line with
    /// counts by status, time, calls, 429s and where the report and the
    /// files of input rows are; after an interrupted real run, a second line
    /// says what was not done and how to resume.
    pub fn describe(&self) -> String {
        let plan = match &self.summary.plan {
            Some(plan) => format!("{}\n", plan.render()),
            None => String::new(),
        };
        let resume = match self.interrupted && self.summary.plan.is_none() {
            true => format!("\n{}", self.resume_advice("re-run the same command")),
            false => String::new(),
        };
        plan + &self.describe_counts() + &resume
    }

    /// For a run that stopped early: which input rows it did not process,
    /// and how to do them (`how`).
    fn resume_advice(&self, how: &str) -> String {
        let undone = match self.last_line {
            Some(line) => format!(
                "input rows after line {line} were not processed (nor any other row the report lacks)"
            ),
            None => "no input row was processed".to_owned(),
        };
        format!("{undone}: to resume, {how}; leads already done are skipped by the campaign state")
    }

    /// For a run whose report failed (`lost`): where the report ends, that
    /// the campaign state holds the rest, and how to resume.
    fn report_lost(&self, lost: &sink::ReportLost, dry_run: bool) -> String {
        let ends = match lost.last_line {
            Some(line) => format!("on its last whole row, input line {line}"),
            None => "after its header".to_owned(),
        };
        let rows = self.summary.rows;
        let done = match dry_run {
            true => format!("the run planned {rows} rows"),
            false => format!("the campaign state holds every lead the run did, {rows} rows"),
        };
        let how = format!(
            "make room for the report (or give --report another path) and re-run the same \
             command{}",
            match dry_run {
                true => "",
                false => "; leads already done are skipped by the campaign state",
            }
        );
        format!(
            "run aborted: the report {} could not be written, and ends {ends}; {done}{}\n{}",
            lost.path.display(),
            self.files(),
            match self.last_line {
                Some(line) =>
                    format!("input rows after line {line} were not processed: to resume, {how}"),
                None => format!("to resume, {how}"),
            }
        )
    }

    /// "; rows to retry: …; invalid rows: …" for the files that were written.
    fn files(&self) -> String {
        let mut files = String::new();
        if let Some(path) = &self.retry_csv {
            files += &format!("; rows to retry: {}", path.display());
        }
        if let Some(path) = &self.invalid_csv {
            files += &format!("; invalid rows: {}", path.display());
        }
        files
    }

    fn describe_counts(&self) -> String {
        let counts: Vec<String> = self
            .summary
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(status, n)| format!("{n} {status}"))
            .collect();
        let counts = if counts.is_empty() {
            "no rows".to_string()
        } else {
            counts.join(", ")
        };
        format!(
            "{}{counts} in {:.1}s, {} API calls, {} rate-limited; report: {}{}",
            if self.interrupted {
                "interrupted: "
            } else {
                "done: "
            },
            self.summary.elapsed_secs,
            self.summary.api_calls,
            self.summary.rate_limited,
            self.report.display(),
            self.files()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(interrupted: bool, statuses: &[Status]) -> RunOutcome {
        let mut summary = Summary::default();
        for &status in statuses {
            *summary.counts.entry(status).or_insert(0) += 1;
        }
        RunOutcome {
            summary,
            interrupted,
            report: "r.csv".into(),
            retry_csv: None,
            invalid_csv: None,
            last_line: Some(9),
        }
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(outcome(false, &[Status::Linked]).exit(), Exit::Success);
        assert_eq!(outcome(false, &[Status::Skipped]).exit(), Exit::Success);
        for status in [Status::Failed, Status::InDoubt] {
            assert_eq!(
                outcome(false, &[Status::Sent, status, Status::Invalid]).exit(),
                Exit::Attention
            );
        }
        for status in [Status::Invalid, Status::Duplicate] {
            assert_eq!(
                outcome(false, &[Status::Sent, status]).exit(),
                Exit::InputRejected
            );
        }
        assert_eq!(outcome(true, &[Status::Failed]).exit(), Exit::Interrupted);
    }

    #[test]
    fn the_last_line_counts_what_happened() {
        let line = outcome(false, &[Status::Sent, Status::Sent]).describe();
        assert!(line.starts_with("done: 2 sent in "), "{line}");
        assert!(line.ends_with("report: r.csv"), "{line}");
    }

    #[test]
    fn an_interrupted_run_says_what_it_did_not_do_and_how_to_resume() {
        let text = outcome(true, &[Status::Sent, Status::Sent]).describe();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("interrupted: 2 sent in "), "{text}");
        assert!(lines[0].ends_with("report: r.csv"), "{text}");
        assert!(
            lines[1].starts_with("input rows after line 9 were not processed"),
            "{text}"
        );
        assert!(lines[1].contains("re-run the same command"), "{text}");
        let mut nothing = outcome(true, &[]);
        nothing.last_line = None;
        assert!(nothing.describe().contains("no input row was processed"));
    }

    #[test]
    fn the_last_line_names_the_rows_to_retry_and_the_invalid_rows() {
        let mut done = outcome(false, &[Status::Failed, Status::Invalid]);
        done.retry_csv = Some("r-retry.csv".into());
        done.invalid_csv = Some("r-invalid.csv".into());
        let line = done.describe();
        assert!(
            line.ends_with(
                "report: r.csv; rows to retry: r-retry.csv; invalid rows: r-invalid.csv"
            ),
            "{line}"
        );
    }
}
