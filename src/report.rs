//! The per-lead report CSV and the run summary: the row statuses, the report's
//! columns, a writer that creates the file private (it holds login links) and
//! flushes every row as it happens, and the summary counters with their JSON
//! form.
//!
//! Every text cell is escaped against spreadsheet formula injection, because
//! lead ids and error messages come from the input and operators open the
//! report in Excel.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// What happened to one input row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Dry run: the row would be processed.
    Planned,
    /// A login link was made; no email was asked for.
    Linked,
    /// The link was emailed.
    Sent,
    /// The row could not be completed; see the error column.
    Failed,
    /// The input row is unusable; see the error column.
    Invalid,
    /// Same lead and portal as an earlier row.
    Duplicate,
    /// Already done earlier in this campaign.
    Skipped,
    /// An email whose fate is unknown after a crash.
    InDoubt,
}

impl Status {
    /// Every status, in report order.
    pub const ALL: [Status; 8] = [
        Status::Planned,
        Status::Linked,
        Status::Sent,
        Status::Failed,
        Status::Invalid,
        Status::Duplicate,
        Status::Skipped,
        Status::InDoubt,
    ];

    /// The name written in the report and the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Planned => "planned",
            Status::Linked => "linked",
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::Invalid => "invalid",
            Status::Duplicate => "duplicate",
            Status::Skipped => "skipped",
            Status::InDoubt => "in_doubt",
        }
    }

    /// True for the outcomes that make a finished run exit with code 3.
    pub fn needs_attention(self) -> bool {
        matches!(self, Status::Failed | Status::Invalid | Status::InDoubt)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The input's line number.
    pub row: u64,
    /// Normalised LeadId, or the cell as written when it was invalid.
    pub lead_id: String,
    /// The portal used, empty when none.
    pub portal_id: String,
    /// What happened.
    pub status: Status,
    /// The login link, empty when none was made.
    pub portal_url: String,
    /// When the link's key expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// API calls made for this row, retries included.
    pub attempts: u32,
    /// The recipient, when emailing.
    pub email: String,
    /// The sent email's Message-ID.
    pub message_id: String,
    /// Why the row failed or was invalid; empty otherwise.
    pub error: String,
}

/// The report's header, in column order.
pub const COLUMNS: [&str; 10] = [
    "row",
    "lead_id",
    "portal_id",
    "status",
    "portal_url",
    "expires_at",
    "attempts",
    "email",
    "message_id",
    "error",
];

/// Prefixes a cell that a spreadsheet would run as a formula (first character
/// `=`, `+`, `-`, `@`, tab or CR) with a single quote, as OWASP advises for
/// CSV injection. Other cells are returned as they are.
pub fn escape_cell(s: &str) -> Cow<'_, str> {
    match s.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => Cow::Owned(format!("'{s}")),
        _ => Cow::Borrowed(s),
    }
}

/// Opens `path` for writing readable by its owner only, even if it already
/// existed with wider permissions.
fn open_private(path: &Path, truncate: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    // `mode` applies only to a new file. Leave devices such as /dev/stdout
    // alone: their permissions are not ours to change.
    if meta.is_file() && meta.permissions().mode() & 0o777 != 0o600 {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// The input rows of a run that failed or were invalid, in the input's own
/// columns, ready to be fed back into `run`. Created on the first such row.
pub struct FailedRows {
    path: PathBuf,
    headers: Vec<String>,
    writer: Option<csv::Writer<File>>,
}

impl FailedRows {
    /// Will write to `path` with the input's `headers`.
    pub fn new(path: &Path, headers: &[String]) -> FailedRows {
        FailedRows {
            path: path.to_owned(),
            headers: headers.to_vec(),
            writer: None,
        }
    }

    /// Appends one row's input cells.
    pub fn write(&mut self, fields: &[String]) -> anyhow::Result<()> {
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => {
                let file = open_private(&self.path, true)
                    .with_context(|| format!("cannot create {}", self.path.display()))?;
                let mut writer = csv::WriterBuilder::new().flexible(true).from_writer(file);
                writer.write_record(&self.headers)?;
                self.writer.insert(writer)
            }
        };
        writer.write_record(fields)?;
        writer.flush()?;
        Ok(())
    }

    /// The file written, if any row failed. A file left at the path by an
    /// earlier run is removed when this run had no failed row, so it never
    /// feeds stale rows back in.
    pub fn finish(self) -> anyhow::Result<Option<PathBuf>> {
        match self.writer {
            Some(mut writer) => {
                writer.flush()?;
                Ok(Some(self.path))
            }
            None => {
                if self.path.is_file() {
                    fs::remove_file(&self.path).with_context(|| {
                        format!("cannot remove the stale {}", self.path.display())
                    })?;
                }
                Ok(None)
            }
        }
    }
}

/// A number's decimal digits, written into `buf` without allocating (a
/// million-row report writes two numbers a row).
fn digits(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[start..]).expect("digits are ASCII")
}

/// Writes the report, one flushed row at a time, so a crash leaves a valid
/// partial report.
pub struct ReportWriter {
    path: PathBuf,
    writer: csv::Writer<File>,
    flush_each: bool,
}

impl fmt::Debug for ReportWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ReportWriter {
    /// Creates (or truncates) the report with mode 0600 and writes its header.
    pub fn create(path: &Path) -> anyhow::Result<ReportWriter> {
        let fail = || {
            format!(
                "cannot create the report {}: check that its directory exists and is \
                 writable, or choose another --report path",
                path.display()
            )
        };
        let file = open_private(path, true).with_context(fail)?;
        let mut writer = csv::Writer::from_writer(file);
        writer.write_record(COLUMNS).with_context(fail)?;
        writer.flush().with_context(fail)?;
        Ok(ReportWriter {
            path: path.to_owned(),
            writer,
            flush_each: true,
        })
    }

    /// Buffers rows instead of flushing each one: for dry runs, where a
    /// crash loses nothing and a million rows must go fast.
    pub fn buffered(mut self) -> ReportWriter {
        self.flush_each = false;
        self
    }

    /// Hands every buffered row to the operating system.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// Appends one row and hands it to the operating system before returning.
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        let (mut row_buf, mut attempts_buf) = ([0u8; 20], [0u8; 20]);
        let row = digits(record.row, &mut row_buf);
        let expires_at = record
            .expires_at
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_default();
        let attempts = digits(u64::from(record.attempts), &mut attempts_buf);
        let cells: [&str; 10] = [
            row,
            &record.lead_id,
            &record.portal_id,
            record.status.as_str(),
            &record.portal_url,
            &expires_at,
            attempts,
            &record.email,
            &record.message_id,
            &record.error,
        ];
        for cell in cells {
            self.writer
                .write_field(escape_cell(cell).as_bytes())
                .map_err(io::Error::from)?;
        }
        self.writer
            .write_record(None::<&[u8]>)
            .map_err(io::Error::from)?;
        if self.flush_each {
            self.writer.flush()?;
        }
        Ok(())
    }

    /// Where the report is being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Counters for the end-of-run summary (and `--summary-json`). The pipeline
/// fills the fields it measures; [`Summary::record`] keeps `counts` and `rows`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
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
    /// A dry run's plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<crate::plan::Plan>,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            counts: Status::ALL.iter().map(|&s| (s, 0)).collect(),
            rows: 0,
            elapsed_secs: 0.0,
            api_calls: 0,
            rate_limited: 0,
            paused_secs: 0.0,
            emails_sent: 0,
            emails_failed: 0,
            plan: None,
        }
    }
}

impl Summary {
    /// Counts one reported row.
    pub fn record(&mut self, status: Status) {
        *self.counts.entry(status).or_insert(0) += 1;
        self.rows += 1;
    }

    /// Rows reported with `status`.
    pub fn count(&self, status: Status) -> u64 {
        self.counts.get(&status).copied().unwrap_or(0)
    }

    /// Writes the summary as pretty JSON, mode 0600.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).context("cannot encode the summary")?;
        json.push(b'\n');
        let mut file = open_private(path, true)
            .and_then(|mut f| f.write_all(&json).map(|()| f))
            .with_context(|| {
                format!(
                    "cannot write the summary {}: check that its directory exists and is \
                     writable, or choose another --summary-json path",
                    path.display()
                )
            })?;
        file.flush()?;
        Ok(())
    }
}

/// Checks that `path` can be written, before any network call, so a run does
/// not do its work and then fail to record it. A file that did not exist is
/// not left behind.
pub fn open_check(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    let fail = || format!("cannot write {shown}: check its permissions or choose another path");
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => bail!("{shown} is a directory; give a file path"),
        Ok(_) => {
            OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(fail)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if !parent.is_dir() {
                bail!(
                    "cannot write {shown}: the directory {} does not exist; create it or \
                     choose another path",
                    parent.display()
                );
            }
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(fail)?;
            fs::remove_file(path).with_context(fail)?;
        }
        Err(e) => return Err(e).with_context(fail),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn record() -> Record {
        Record {
            row: 7,
            lead_id: "3f2b8c1e-9d4a-4e7b-a6c5-1b0f7e2d9c84".into(),
            portal_id: "c4e8a2f1-7b3d-4a96-8e15-2d9f0b6c7a31".into(),
            status: Status::Sent,
            portal_url: "https://portal.example.com/login?x=1&authKey=a%2Bb%3D".into(),
            expires_at: Some(Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).unwrap()),
            attempts: 2,
            email: "ann@example.com".into(),
            message_id: "<4f1c@mail.example.com>".into(),
            error: String::new(),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn read_rows(path: &Path) -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(path)
            .unwrap()
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect()
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn status_names_match_the_report_contract() {
        let names: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "planned",
                "linked",
                "sent",
                "failed",
                "invalid",
                "duplicate",
                "skipped",
                "in_doubt"
            ]
        );
        for s in Status::ALL {
            assert_eq!(s.to_string(), s.as_str());
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            let back: Status = serde_json::from_value(s.as_str().into()).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn needs_attention_matches_exit_code_three() {
        let flagged: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.needs_attention())
            .collect();
        assert_eq!(flagged, [Status::Failed, Status::Invalid, Status::InDoubt]);
    }

    #[test]
    fn escape_cell_quotes_every_formula_starter() {
        for first in ["=", "+", "-", "@", "\t", "\r"] {
            let cell = format!("{first}HYPERLINK(\"http://evil\")");
            assert_eq!(escape_cell(&cell), format!("'{cell}"), "{first:?}");
        }
    }

    #[test]
    fn escape_cell_leaves_ordinary_cells_borrowed() {
        for cell in [
            "",
            "3f2b8c1e-9d4a",
            "https://x/?a=-1",
            "ann@example.com",
            " =1",
            "'",
        ] {
            assert!(
                matches!(escape_cell(cell), Cow::Borrowed(c) if c == cell),
                "{cell:?}"
            );
        }
    }

    #[test]
    fn digits_match_to_string() {
        for n in [0u64, 7, 10, 99, 1_000_000, u64::MAX] {
            assert_eq!(digits(n, &mut [0; 20]), n.to_string());
        }
    }

    #[test]
    fn header_is_written_in_contract_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.csv");
        let w = ReportWriter::create(&path).unwrap();
        assert_eq!(w.path(), path);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "row,lead_id,portal_id,status,portal_url,expires_at,attempts,email,message_id,error\n"
        );
    }

    #[test]
    fn report_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.csv");
        ReportWriter::create(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn an_existing_report_is_truncated_and_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.csv");
        fs::write(&path, "old contents that must go\n".repeat(10)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        ReportWriter::create(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(read_rows(&path).len(), 1);
    }

    #[test]
    fn create_error_names_the_path_and_the_fix() {
        let err = ReportWriter::create(Path::new("/nonexistent-dir/report.csv")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("/nonexistent-dir/report.csv"), "{msg}");
        assert!(msg.contains("--report"), "{msg}");
    }

    #[test]
    fn a_record_round_trips_through_a_csv_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.csv");
        let mut w = ReportWriter::create(&path).unwrap();
        let full = record();
        let awkward = Record {
            row: 12,
            lead_id: "abc, \"quoted\"".into(),
            portal_id: String::new(),
            status: Status::InDoubt,
            portal_url: String::new(),
            expires_at: None,
            attempts: 0,
            email: String::new(),
            message_id: String::new(),
            error: "two\nlines, with \"quotes\"".into(),
        };
        w.write(&full).unwrap();
        w.write(&awkward).unwrap();
        let rows = read_rows(&path);
        assert_eq!(rows[0], COLUMNS);
        assert_eq!(
            rows[1],
            [
                "7",
                "3f2b8c1e-9d4a-4e7b-a6c5-1b0f7e2d9c84",
                "c4e8a2f1-7b3d-4a96-8e15-2d9f0b6c7a31",
                "sent",
                "https://portal.example.com/login?x=1&authKey=a%2Bb%3D",
                "2026-11-23T06:00:00Z",
                "2",
                "ann@example.com",
                "<4f1c@mail.example.com>",
                "",
            ]
        );
        assert_eq!(
            rows[2],
            [
                "12",
                "abc, \"quoted\"",
                "",
                "in_doubt",
                "",
                "",
                "0",
                "",
                "",
                "two\nlines, with \"quotes\""
            ]
        );
    }

    #[test]
    fn expires_at_drops_sub_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.csv");
        let mut w = ReportWriter::create(&path).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::milliseconds(678);
        w.write(&Record {
            expires_at: Some(at),
            ..record()
        })
        .unwrap();
        assert_eq!(read_rows(&path)[1][5], "2026-01-02T03:04:05Z");
    }

    #[test]
    fn dangerous_cells_are_escaped_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.csv");
        let mut w = ReportWriter::create(&path).unwrap();
        w.write(&Record {
            lead_id: "=cmd|' /C calc'!A0".into(),
            email: "@SUM(1+1)".into(),
            error: "-2+3".into(),
            ..record()
        })
        .unwrap();
        let row = &read_rows(&path)[1];
        assert_eq!(row[1], "'=cmd|' /C calc'!A0");
        assert_eq!(row[7], "'@SUM(1+1)");
        assert_eq!(row[9], "'-2+3");
    }

    #[test]
    fn each_row_reaches_the_file_before_write_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.csv");
        let mut w = ReportWriter::create(&path).unwrap();
        w.write(&record()).unwrap();
        // The writer is still open: what a crash now would leave behind.
        assert_eq!(read_rows(&path).len(), 2);
        drop(w);
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
        s.record(Status::Sent);
        s.record(Status::Sent);
        s.record(Status::Invalid);
        assert_eq!(
            (s.rows, s.count(Status::Sent), s.count(Status::Invalid)),
            (3, 2, 1)
        );
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
        s.record(Status::Linked);
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
            "rate_limited",
            "paused_secs",
            "emails_sent",
            "emails_failed",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn open_check_leaves_no_stray_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        open_check(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn open_check_keeps_an_existing_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        fs::write(&path, "previous run").unwrap();
        open_check(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "previous run");
    }

    #[test]
    fn open_check_rejects_a_missing_directory_or_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope/summary.json");
        let msg = format!("{:#}", open_check(&missing).unwrap_err());
        assert!(
            msg.contains("does not exist") && msg.contains("nope"),
            "{msg}"
        );
        let msg = format!("{:#}", open_check(dir.path()).unwrap_err());
        assert!(msg.contains("is a directory"), "{msg}");
    }

    #[test]
    fn open_check_rejects_a_place_even_root_cannot_write() {
        let path = Path::new("/proc/lsq-dispatch-open-check.json");
        let msg = format!("{:#}", open_check(path).unwrap_err());
        assert!(msg.contains("/proc/lsq-dispatch-open-check.json"), "{msg}");
        assert!(!path.exists());
    }

    #[test]
    fn open_check_rejects_an_unwritable_place() {
        if is_root() {
            return; // root writes anywhere; permissions cannot be tested
        }
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o500)).unwrap();
        assert!(open_check(&locked.join("summary.json")).is_err());
        let ro = dir.path().join("ro.json");
        fs::write(&ro, "x").unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(open_check(&ro).is_err());
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    }
}
