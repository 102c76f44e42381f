//! The per-lead report CSV: the row statuses, the report's columns, why a
//! row did not succeed ([`RowError`]), a writer that creates the file private
//! (it holds login links) and never through a symbolic link and flushes every row as it happens, and the input
//! rows to retry or fix, in files of their own beside it.
//!
//! Every text cell is escaped against spreadsheet formula injection, because
//! lead ids and error messages come from the input and operators open the
//! report in Excel.

use std::borrow::Cow;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod error;
mod rerun;
mod writer;

pub use crate::input::{Invalid, StraySign};
pub use error::RowError;
pub(crate) use rerun::{rerun_paths, RerunFiles, RerunWritten};
pub use writer::ReportWriter;

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

    /// True for a lead the run could not deliver (or cannot tell it did):
    /// a finished run with one exits with code 3.
    pub fn is_undelivered(self) -> bool {
        matches!(self, Status::Failed | Status::InDoubt)
    }

    /// True for an input row that needs fixing: a finished run whose leads
    /// all succeeded exits with code 5 when it has one.
    pub fn is_rejected_input(self) -> bool {
        matches!(self, Status::Invalid | Status::Duplicate)
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
    /// Why the row failed, was invalid or was not done; none when it
    /// succeeded, unless with a warning ([`RowError::LookAlike`]).
    pub error: Option<RowError>,
}

impl Record {
    /// A row's record with its ids and status, and nothing else yet.
    pub fn new(row: u64, lead_id: String, portal_id: String, status: Status) -> Record {
        Record {
            row,
            lead_id,
            portal_id,
            status,
            portal_url: String::new(),
            expires_at: None,
            attempts: 0,
            email: String::new(),
            message_id: String::new(),
            error: None,
        }
    }
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
mod tests;
