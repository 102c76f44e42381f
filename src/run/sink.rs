//! The one owner of every output of a run: each row's outcome is handed to
//! [`Sink::record`], which writes the report, counts the summary, keeps the
//! rows to retry and the invalid rows, counts the plan and moves the
//! progress; [`Sink::tick`] refreshes the metrics file; [`Sink::finish`]
//! flushes them all and writes the summary and the metrics. The rest of the
//! run never knows how many outputs there are.
//!
//! An output that cannot be written does not take the others with it: a
//! report that fails (a full disk) ends on its last whole row, and the rows
//! after it are still counted, kept for retry and told in the summary, the
//! metrics and the closing ping.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Settings;
use crate::exit::Exit;
use crate::input::HeaderLine;
use crate::limiter::Limiter;
use crate::metrics::MetricsFile;
use crate::paths::Target;
use crate::plan::{Plan, PlanSettings};
use crate::progress::Progress;
use crate::report::{ReportWriter, RerunFiles, RerunWritten};
use crate::summary::Summary;

use super::prepare::Targets;
use super::{Finished, RunOutcome};

/// The report could not be written on: it ends on its last whole row.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the report {}", path.display())]
pub(super) struct ReportLost {
    pub(super) path: PathBuf,
    /// The input line of the last row the report holds, if any.
    pub(super) last_line: Option<u64>,
    #[source]
    source: io::Error,
}

/// Every output of one run.
pub(super) struct Sink {
    report: ReportWriter,
    /// The report failed: the rows after it are counted, not written.
    report_lost: bool,
    /// The highest input line the report holds.
    reported_line: Option<u64>,
    summary_json: Option<Target>,
    summary: Summary,
    metrics: Option<MetricsFile>,
    rerun: Option<RerunFiles>,
    plan: Option<(Plan, PlanSettings)>,
    progress: Progress,
    /// The highest input line recorded so far.
    last_line: Option<u64>,
    limiter: Arc<Limiter>,
    /// The 429 notice has been shown (or, in a dry run, cannot apply).
    paused_shown: bool,
    started: Instant,
}

impl Sink {
    /// Creates the report on its target, before any call, and takes the
    /// summary's and the metrics' (checked by `prepare`); the run's time
    /// counts from `started`, and `summary` says which run it is.
    pub(super) fn open(
        settings: &Settings,
        targets: Targets,
        (header, rows_estimate): (&HeaderLine, u64),
        limiter: Arc<Limiter>,
        (started, summary): (Instant, Summary),
    ) -> anyhow::Result<Sink> {
        let dry_run = settings.is_dry_run();
        let mut report = ReportWriter::open(targets.report)?;
        if dry_run {
            report = report.buffered();
        }
        Ok(Sink {
            report,
            report_lost: false,
            reported_line: None,
            summary_json: targets.summary_json,
            metrics: targets
                .metrics
                .map(|target| MetricsFile::open(target, dry_run)),
            summary,
            rerun: (!dry_run).then(|| RerunFiles::new(&settings.report, &settings.input, header)),
            plan: dry_run.then(|| (Plan::new(), settings.plan_settings())),
            progress: Progress::new(
                rows_estimate,
                crate::logging::bar_wanted(settings.log_format, settings.quiet),
            ),
            last_line: None,
            limiter,
            // A dry run makes no call, so there is no 429 to tell of.
            paused_shown: dry_run,
            started,
        })
    }

    /// Hands one row's outcome to every output, even when one of them
    /// fails; the first failure is returned (a report that failed is not
    /// written to again).
    pub(super) fn record(&mut self, finished: Finished) -> anyhow::Result<()> {
        let Finished { record, raw, .. } = finished;
        let mut failure = None;
        if !self.report_lost {
            match self.report.write(&record) {
                Ok(()) => self.reported_line = self.reported_line.max(Some(record.row)),
                Err(e) => failure = Some(self.lose_report(e)),
            }
        }
        self.summary.record(&record);
        tracing::debug!(
            row = record.row,
            lead_id = %record.lead_id,
            status = %record.status,
            attempts = record.attempts,
            "row {}: {} {}{}",
            record.row,
            record.lead_id,
            record.status,
            match &record.error {
                Some(error) => format!(" ({error})"),
                None => String::new(),
            }
        );
        self.last_line = self.last_line.max(Some(record.row));
        if let Some((plan, _)) = &mut self.plan {
            plan.record(&record);
        }
        if let (Some(rerun), Some(raw)) = (&mut self.rerun, &raw) {
            if let Err(e) = rerun.write(record.status, raw) {
                failure.get_or_insert(e);
            }
        }
        self.progress.inc();
        if !self.paused_shown && self.limiter.rate_limited() > 0 {
            self.paused_shown = true;
            tracing::info!("the API answered 429 (rate limited): every call paused, then resumed");
        }
        failure.map_or(Ok(()), Err)
    }

    /// Notes that the report failed with `error`: no row is written to it
    /// any more.
    fn lose_report(&mut self, error: io::Error) -> anyhow::Error {
        self.report_lost = true;
        ReportLost {
            path: self.report.path().to_owned(),
            last_line: self.reported_line,
            source: error,
        }
        .into()
    }

    /// Writes the metrics file with the figures so far; a failure is a
    /// warning, as the run's work matters more than its metrics.
    pub(super) fn tick(&mut self) {
        self.measure();
        self.write_metrics();
    }

    fn write_metrics(&mut self) {
        if let Some(metrics) = &mut self.metrics {
            if let Err(e) = metrics.write(&self.summary, chrono::Utc::now()) {
                tracing::warn!("{e:#}");
            }
        }
    }

    /// Copies the limiter's figures and the time so far into the summary.
    fn measure(&mut self) {
        let summary = &mut self.summary;
        summary.elapsed_secs = self.started.elapsed().as_secs_f64();
        summary.api_calls = self.limiter.calls();
        summary.rate_limited = self.limiter.rate_limited();
        summary.paused_secs = self.limiter.paused_total().as_secs_f64();
        summary.warnings = crate::logging::warnings();
    }

    /// Flushes the report, puts the files of input rows in place, finishes
    /// the plan and writes the summary and the metrics: what the run did,
    /// whether or not it went to the end, and how it ended (interrupted, or
    /// aborted by `fatal`). Every output is tried whatever another does; the
    /// first that fails is returned with the outcome, and the run ends
    /// aborted by it when nothing else aborted it.
    pub(super) fn finish(
        mut self,
        interrupted: bool,
        fatal: Option<&anyhow::Error>,
    ) -> (RunOutcome, Option<anyhow::Error>) {
        let mut failed = None;
        if !self.report_lost {
            if let Err(e) = self.report.flush() {
                failed = Some(self.lose_report(e));
            }
        }
        let report = self.report.path().to_owned();
        let rerun = match self.rerun.take().map(RerunFiles::finish) {
            Some(Ok(written)) => written,
            Some(Err(e)) => {
                failed.get_or_insert(e);
                RerunWritten::default()
            }
            None => RerunWritten::default(),
        };
        self.progress.finish();
        if let Some((mut plan, settings)) = self.plan.take() {
            plan.finish(&settings, chrono::Utc::now());
            self.summary.plan = Some(plan);
        }
        self.measure();
        let exit = match fatal.or(failed.as_ref()) {
            Some(e) => Exit::of_error(e),
            None => super::exit_of(&self.summary, interrupted),
        };
        self.summary.end(exit);
        if let Some(target) = &mut self.summary_json {
            if let Err(e) = self.summary.write_to(target) {
                if fatal.or(failed.as_ref()).is_none() {
                    // The summary said 0; the metrics and the ping must not.
                    self.summary.end(Exit::of_error(&e));
                }
                failed.get_or_insert(e);
            }
        }
        self.write_metrics();
        let outcome = RunOutcome {
            summary: self.summary,
            interrupted,
            report,
            retry_csv: rerun.retry,
            invalid_csv: rerun.invalid,
            last_line: self.last_line,
        };
        (outcome, failed)
    }
}
