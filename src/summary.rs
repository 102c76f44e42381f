//! The run's summary: which run it was (version, campaign, input, start and
//! end), how it ended (exit code, interrupted), counts per status, calls,
//! 429s, time, emails, and a dry run's plan; printed at the end, written as
//! `--summary-json` and sent with the closing ping.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::plan::Plan;
use crate::report::{Record, Status};

/// Counters for the end-of-run summary (and `--summary-json`). The pipeline
/// fills the fields it measures; [`Summary::record`] keeps `counts` and `rows`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The lsq-dispatch version that ran.
    pub version: String,
    /// The campaign the run worked for.
    pub campaign: String,
    /// The input CSV, as given.
    pub input: String,
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
    /// When it ended, RFC 3339 UTC (empty until then).
    pub finished_at: String,
    /// The process's exit code (see the README's table).
    pub exit_code: u8,
    /// Stopped by a signal before every row was done: the counts are of the
    /// rows it got to.
    pub interrupted: bool,
    /// Rows per status; every status is present, zero when unused.
    pub counts: BTreeMap<Status, u64>,
    /// Rows reported, whatever their status.
    pub rows: u64,
    /// Wall-clock duration of the run.
    pub elapsed_secs: f64,
    /// API requests sent, retries included.
    pub api_calls: u64,
    /// Answers that said the rate limit was exceeded (429, or 403 saying so).
    pub rate_limited: u64,
    /// Time spent paused after rate-limit answers.
    pub paused_secs: f64,
    /// Emails accepted by the SMTP server (or written to the outbox).
    pub emails_sent: u64,
    /// Emails that could not be sent.
    pub emails_failed: u64,
    /// The warnings the run gave (links expiring at night, a config file
    /// others can read, …), whether or not the log showed them.
    pub warnings: Vec<String>,
    /// A dry run's plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            campaign: String::new(),
            input: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
            exit_code: 0,
            interrupted: false,
            counts: Status::ALL.iter().map(|&s| (s, 0)).collect(),
            rows: 0,
            elapsed_secs: 0.0,
            api_calls: 0,
            rate_limited: 0,
            paused_secs: 0.0,
            emails_sent: 0,
            emails_failed: 0,
            warnings: Vec::new(),
            plan: None,
        }
    }
}

/// Now, as the summary's times are written.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Summary {
    /// The summary of a run of `campaign` over `input` starting now.
    pub fn begin(campaign: &str, input: &Path) -> Summary {
        Summary {
            campaign: campaign.to_owned(),
            input: input.display().to_string(),
            started_at: now(),
            ..Summary::default()
        }
    }

    /// Notes how the run ended, now.
    pub fn end(&mut self, exit: crate::exit::Exit) {
        self.finished_at = now();
        self.warnings = crate::logging::warnings();
        self.exit_code = exit.code();
        self.interrupted = exit == crate::exit::Exit::Interrupted;
    }

    /// This summary, ended with `exit` now.
    pub fn ended(mut self, exit: crate::exit::Exit) -> Summary {
        self.end(exit);
        self
    }

    /// The summary as the JSON that `--summary-json` and the closing ping
    /// carry.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, numbers and maps keyed by names: nothing fails to encode.
        let mut json = serde_json::to_vec_pretty(self).unwrap_or_default();
        json.push(b'\n');
        json
    }

    /// Counts one reported row, and its email when it had one.
    pub fn record(&mut self, record: &Record) {
        *self.counts.entry(record.status).or_insert(0) += 1;
        self.rows += 1;
        if record.status == Status::Sent {
            self.emails_sent += 1;
        } else if record.error.as_ref().is_some_and(|e| e.is_email_failure()) {
            self.emails_failed += 1;
        }
    }

    /// Rows reported with `status`.
    pub fn count(&self, status: Status) -> u64 {
        self.counts.get(&status).copied().unwrap_or(0)
    }

    /// Writes the summary as pretty JSON, mode 0600, in place of any file
    /// at `path` (never through a link there), whole or not at all.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        self.write_to(&mut crate::paths::Target::File(path.to_owned()))
    }

    /// Writes the summary as pretty JSON to `target`: a file as
    /// [`Summary::write_json`] does, an opened output (a FIFO, a stream) as
    /// it is.
    pub(crate) fn write_to(&self, target: &mut crate::paths::Target) -> anyhow::Result<()> {
        target.write_whole(&self.to_json(), 0o600).with_context(|| {
            format!(
                "cannot write the summary {}: check that its directory exists and is \
                 writable (or that a program reads it), or choose another --summary-json path",
                target.path().display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn row(status: Status) -> Record {
        Record::new(2, String::new(), String::new(), status)
    }

    #[test]
    fn summary_starts_with_every_status_at_zero() {
        let s = Summary::default();
        assert_eq!(s.counts.len(), 8);
        assert!(Status::ALL.iter().all(|&st| s.count(st) == 0));
    }

    #[test]
    fn summary_record_counts_rows_and_statuses() {
        let mut s = Summary::default();
        s.record(&row(Status::Sent));
        s.record(&row(Status::Sent));
        s.record(&row(Status::Invalid));
        assert_eq!(
            (s.rows, s.count(Status::Sent), s.count(Status::Invalid)),
            (3, 2, 1)
        );
        assert_eq!((s.emails_sent, s.emails_failed), (2, 0));
        s.record(&Record {
            error: Some(crate::report::RowError::Email("refused".into())),
            ..row(Status::Failed)
        });
        assert_eq!(s.emails_failed, 1);
    }

    #[test]
    fn summary_json_lists_every_status_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        fs::write(&path, "stale").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let mut s = Summary {
            api_calls: 41,
            rate_limited: 1,
            elapsed_secs: 8.5,
            ..Summary::default()
        };
        s.record(&row(Status::Linked));
        s.write_json(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\n  \"counts\": {"), "pretty: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for st in Status::ALL {
            let want = u64::from(st == Status::Linked);
            assert_eq!(v["counts"][st.as_str()], want, "{st}");
        }
        assert_eq!(v["rows"], 1);
        assert_eq!(v["api_calls"], 41);
        assert_eq!(v["elapsed_secs"], 8.5);
        for key in [
            "version",
            "campaign",
            "input",
            "started_at",
            "finished_at",
            "exit_code",
            "interrupted",
            "rate_limited",
            "paused_secs",
            "emails_sent",
            "emails_failed",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
    }
}
