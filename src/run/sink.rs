//! The one owner of every output of a run: each row's outcome is handed to
//! [`Sink::record`], which writes the report, counts the summary, keeps the
//! rows to retry and the invalid rows, counts the plan and moves the
//! progress; [`Sink::finish`] flushes them all and writes the summary. The
//! rest of the run never knows how many outputs there are.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::config::Settings;
use crate::input::HeaderLine;
use crate::limiter::Limiter;
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
    /// Creates the report and checks the summary's path, before any call;
    /// the run's time counts from `started`.
    pub(super) fn open(
        settings: &Settings,
        header: &HeaderLine,
        rows_estimate: u64,
        limiter: Arc<Limiter>,
        started: Instant,
    ) -> anyhow::Result<Sink> {
        let dry_run = settings.is_dry_run();
        let mut report = ReportWriter::create(&settings.report)?;
        if dry_run {
            report = report.buffered();
        }
        if let Some(path) = &settings.summary_json {
            crate::report::open_check(path)?;
        }
        Ok(Sink {
            report,
            summary_path: settings.summary_json.clone(),
            summary: Summary::default(),
            rerun: (!dry_run).then(|| RerunFiles::new(&settings.report, &settings.input, header)),
            plan: dry_run.then(|| (Plan::new(), settings.plan_settings())),
            progress: Progress::new(rows_estimate, settings.quiet),
            last_line: None,
            limiter,
            // A dry run makes no call, so there is no 429 to tell of.
            paused_shown: dry_run,
            started,
        })
    }

    /// Hands one row's outcome to every output.
    pub(super) fn record(&mut self, finished: Finished) -> anyhow::Result<()> {
        let Finished { record, raw } = finished;
        self.report
            .write(&record)
            .with_context(|| format!("cannot write the report {}", self.report.path().display()))?;
        self.summary.record(&record);
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
            self.progress
                .println("the API answered 429 (rate limited): every call paused, then resumed");
        }
        Ok(())
    }

    /// Flushes the report, puts the files of input rows in place, finishes
    /// the plan and writes the summary: what the run did, whether or not it
    /// went to the end.
    pub(super) fn finish(mut self, interrupted: bool) -> anyhow::Result<RunOutcome> {
        let report = self.report.path().to_owned();
        self.report
            .flush()
            .with_context(|| format!("cannot write the report {}", report.display()))?;
        let rerun = match self.rerun {
            Some(rerun) => rerun.finish()?,
            None => RerunWritten::default(),
        };
        self.progress.finish();
        if let Some((mut plan, settings)) = self.plan {
            plan.finish(&settings, chrono::Local::now());
            self.summary.plan = Some(plan);
        }
        let summary = &mut self.summary;
        summary.elapsed_secs = self.started.elapsed().as_secs_f64();
        summary.api_calls = self.limiter.calls();
        summary.rate_limited = self.limiter.rate_limited();
        summary.paused_secs = self.limiter.paused_total().as_secs_f64();
        if let Some(path) = &self.summary_path {
            summary.write_json(path)?;
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
