//! `--metrics-file`: the run's figures in Prometheus' text exposition
//! format, for node_exporter's textfile collector. The file is written
//! whole (a temporary file beside it, renamed into place) so the collector
//! never reads half of it: every [`EVERY`] while the run works, and at its
//! end. `lsq_dispatch_last_success_timestamp_seconds` is carried over from
//! the file a previous run left when this one does not succeed, so an
//! alert on its age fires however many runs fail in a row.
//!
//! Only a regular file is read back, and only its first [`PREVIOUS_MAX`]
//! bytes. A metrics "file" that is no file in a directory (`/dev/stdout`,
//! a device, a FIFO) is never read, and is written once, at the end: the
//! refreshes are for a collector that reads a file, and a reader of a
//! stream wants one exposition, not one every 15 s.

use std::fmt::Write as _;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::paths::Target;
use crate::summary::Summary;

/// How often a running job rewrites its metrics.
pub(crate) const EVERY: Duration = Duration::from_secs(15);

/// The name of the metric an alert on staleness watches.
const LAST_SUCCESS: &str = "lsq_dispatch_last_success_timestamp_seconds";

/// The permission bits of the metrics file: it holds no secret, and the
/// collector reads it as a user of its own.
const MODE: u32 = 0o644;

/// The most of a previous metrics file read back: ours are a few KiB, and
/// the last success is near their end; a larger file is no metrics file of
/// ours.
const PREVIOUS_MAX: u64 = 1024 * 1024;

/// The metrics file of one run.
#[derive(Debug)]
pub(crate) struct MetricsFile {
    target: Target,
    /// The `job_name` label of the last success: the file's name without
    /// `.prom`, the same every night whatever the campaign is called.
    job_name: String,
    /// A dry run's success is no run's: it never renews the last success.
    dry_run: bool,
    /// The last success the previous file recorded, 0 when none.
    last_success: f64,
}

impl MetricsFile {
    /// The metrics file at `target`, remembering the last success that the
    /// file there records (the file is one job's, whatever its campaigns).
    pub(crate) fn open(target: Target, dry_run: bool) -> MetricsFile {
        let previous = match &target {
            Target::File(path) => previous_text(path),
            Target::Opened(_) => String::new(),
        };
        let path = target.path();
        let prefix = format!("{LAST_SUCCESS}{{");
        let last_success = previous
            .lines()
            .filter(|line| line.starts_with(&prefix))
            .find_map(|line| line.rsplit_once(' '))
            .and_then(|(_, value)| value.trim().parse::<f64>().ok())
            .filter(|value| value.is_finite())
            .unwrap_or(0.0);
        let job_name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .filter(|stem| !stem.is_empty())
            .unwrap_or_else(|| "lsq-dispatch".to_owned());
        MetricsFile {
            target,
            job_name,
            dry_run,
            last_success,
        }
    }

    /// Writes the figures so far; `summary.finished_at` set means the run
    /// has ended with `summary.exit_code`. An output that is no file takes
    /// only those of the end.
    pub(crate) fn write(
        &mut self,
        summary: &Summary,
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        let finished = !summary.finished_at.is_empty();
        if !finished && matches!(self.target, Target::Opened(_)) {
            return Ok(());
        }
        if finished && summary.exit_code == 0 && !self.dry_run {
            self.last_success = now.timestamp() as f64;
        }
        let last_success = (self.job_name.as_str(), self.last_success);
        let text = render(summary, finished, last_success);
        let advice = match self.target {
            Target::File(_) => "check that its directory exists and is writable",
            Target::Opened(_) => "check the device, or the program that reads it",
        };
        self.target
            .write_whole(text.as_bytes(), MODE)
            .with_context(|| {
                format!(
                    "cannot write the metrics file {}: {advice}, or choose another \
                     --metrics-file path",
                    self.target.path().display()
                )
            })
    }
}

/// The start of the regular file at `path` (nothing when it is none, or
/// cannot be read): never more than [`PREVIOUS_MAX`] bytes, and never
/// waiting for a writer, should a FIFO have taken the file's place.
fn previous_text(path: &Path) -> String {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path);
    let Ok(file) = opened else {
        return String::new();
    };
    if !file.metadata().is_ok_and(|meta| meta.is_file()) {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.take(PREVIOUS_MAX).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A label value with `\`, `"` and line ends escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text.
fn render(summary: &Summary, finished: bool, (job_name, last_success): (&str, f64)) -> String {
    let campaign = format!("campaign=\"{}\"", escape(&summary.campaign));
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP lsq_dispatch_{name} {help}");
        let _ = writeln!(out, "# TYPE lsq_dispatch_{name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "lsq_dispatch_{name}{{{labels}}} {value}");
        }
    };
    let rows: Vec<(String, f64)> = summary
        .counts
        .iter()
        .map(|(status, n)| (format!("{campaign},status=\"{status}\""), *n as f64))
        .collect();
    gauge("rows", "Rows of the last run by report status.", &rows);
    let exit_code = finished.then_some((
        "exit_code",
        "The last run's exit code (0 success; see the README).",
        f64::from(summary.exit_code),
    ));
    let singles = [
        (
            "api_calls",
            "API requests the last run sent, retries included.",
            summary.api_calls as f64,
        ),
        (
            "rate_limited",
            "Rate-limit answers (429) the last run received.",
            summary.rate_limited as f64,
        ),
        (
            "paused_seconds",
            "Seconds the last run paused after rate-limit answers.",
            summary.paused_secs,
        ),
        (
            "emails_sent",
            "Emails the last run had accepted by the SMTP server (or wrote to the outbox).",
            summary.emails_sent as f64,
        ),
        (
            "emails_failed",
            "Emails the last run could not send.",
            summary.emails_failed as f64,
        ),
        (
            "warnings",
            "Warnings the last run gave (its summary JSON lists them), shown in the log or not.",
            summary.warnings.len() as f64,
        ),
        (
            "duration_seconds",
            "How long the last run has taken.",
            summary.elapsed_secs,
        ),
        (
            "running",
            "1 while the run works, 0 once it has ended.",
            if finished { 0.0 } else { 1.0 },
        ),
    ];
    for (name, help, value) in singles.into_iter().chain(exit_code) {
        gauge(name, help, &[(campaign.clone(), value)]);
    }
    gauge(
        "last_success_timestamp_seconds",
        "When a run of this job (the metrics file's name) last ended with exit code 0 (Unix time; 0 never).",
        &[(format!("job_name=\"{}\"", escape(job_name)), last_success)],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_or_a_dry_run_keeps_the_last_success_and_a_successful_one_renews_it() {
        use crate::exit::Exit;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lsq.prom");
        let campaign = "night \"1\"";
        let ended = |exit| Summary::begin(campaign, Path::new("leads.csv")).ended(exit);
        let open = |dry_run| MetricsFile::open(Target::File(path.clone()), dry_run);
        let mut file = open(false);
        assert_eq!(file.last_success, 0.0);
        let then = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        file.write(&ended(Exit::Success), then).unwrap();
        for (exit, dry_run, code) in [(Exit::Attention, false, 3), (Exit::Success, true, 0)] {
            let mut next = open(dry_run);
            next.write(&ended(exit), chrono::Utc::now()).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let label = "{campaign=\"night \\\"1\\\"\"}";
            assert!(
                text.contains(
                    "lsq_dispatch_last_success_timestamp_seconds{job_name=\"lsq\"} 1700000000\n"
                ),
                "{text}"
            );
            assert!(text.contains(&format!("lsq_dispatch_exit_code{label} {code}\n")));
        }
        // Another file is another job's.
        let other = dir.path().join("other.prom");
        assert_eq!(
            MetricsFile::open(Target::File(other), false).last_success,
            0.0
        );
    }
}
