//! The one owner of every output of a run: each row's outcome is handed to
//! [`Sink::record`], which writes the report, counts the summary, keeps the
//! rows to retry and the invalid rows, counts the plan and moves the
//! progress; [`Sink::tick`] refreshes the metrics file; [`Sink::finish`]
//! flushes them all and writes the summary and the metrics. The rest of the
//! run never knows how many outputs there are.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::config::Settings;
use crate::exit::Exit;
use crate::input::HeaderLine;
use crate::limiter::Limiter;
use crate::metrics::MetricsFile;
use crate::plan::{Plan, PlanSettings};
use crate::progress::Progress;
use crate::report::{ReportWriter, RerunFiles, RerunWritten};
use crate::summary::Summary;

use super::{Finished, RunOutcome};

/// Every output of one run.
pub(super) struct Sink {
    report: ReportWriter,
    summary_path: Option<PathBuf>,
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
    /// Creates the report and checks the summary's and the metrics' paths,
    /// before any call; the run's time counts from `started`, and `summary`
    /// says which run it is.
    pub(super) fn open(
        settings: &Settings,
        header: &HeaderLine,
        rows_estimate: u64,
        limiter: Arc<Limiter>,
        (started, summary): (Instant, Summary),
    ) -> anyhow::Result<Sink> {
        let dry_run = settings.is_dry_run();
        let mut report = ReportWriter::create(&settings.report)?;
        if dry_run {
            report = report.buffered();
        }
        if let Some(path) = &settings.summary_json {
            crate::report::open_check(path)?;
        }
        if let Some(path) = &settings.metrics_file {
            crate::report::open_check(path)?;
        }
        Ok(Sink {
            report,
            summary_path: settings.summary_json.clone(),
            metrics: settings
                .metrics_file
                .as_deref()
                .map(|path| MetricsFile::open(path, dry_run)),
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

    /// Hands one row's outcome to every output.
    pub(super) fn record(&mut self, finished: Finished) -> anyhow::Result<()> {
        let Finished { record, raw, .. } = finished;
        self.report
            .write(&record)
            .with_context(|| format!("cannot write the report {}", self.report.path().display()))?;
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
            rerun.write(record.status, raw)?;
        }
        self.progress.inc();
        if !self.paused_shown && self.limiter.rate_limited() > 0 {
            self.paused_shown = true;
            tracing::info!("the API answered 429 (rate limited): every call paused, then resumed");
        }
        Ok(())
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
    /// aborted by `fatal`).
    pub(super) fn finish(
        mut self,
        interrupted: bool,
        fatal: Option<&anyhow::Error>,
    ) -> anyhow::Result<RunOutcome> {
        let report = self.report.path().to_owned();
        self.report
            .flush()
            .with_context(|| format!("cannot write the report {}", report.display()))?;
        let rerun = match self.rerun.take() {
            Some(rerun) => rerun.finish()?,
            None => RerunWritten::default(),
        };
        self.progress.finish();
        if let Some((mut plan, settings)) = self.plan.take() {
            plan.finish(&settings, chrono::Utc::now());
            self.summary.plan = Some(plan);
        }
        self.measure();
        let exit = match fatal {
            Some(e) => Exit::of_error(e),
            None => super::exit_of(&self.summary, interrupted),
        };
        self.summary.end(exit);
        self.write_metrics();
        if let Some(path) = &self.summary_path {
            self.summary.write_json(path)?;
        }
        Ok(RunOutcome {
            summary: self.summary,
            interrupted,
            report,
            retry_csv: rerun.retry,
            invalid_csv: rerun.invalid,
            last_line: self.last_line,
        })
    }
}
