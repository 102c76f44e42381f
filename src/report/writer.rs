//! Writing the report row by row.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::SecondsFormat;

use super::{escape_cell, Record, COLUMNS};

/// A number's decimal digits, written into `buf` without allocating (a
/// million-row report writes two numbers a row).
pub(super) fn digits(mut n: u64, buf: &mut [u8; 20]) -> &str {
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
    /// Creates the report with mode 0600, in place of any file at `path`
    /// (never writing through a link there), and writes its header.
    pub fn create(path: &Path) -> anyhow::Result<ReportWriter> {
        let fail = || {
            format!(
                "cannot create the report {}: check that its directory exists and is \
                 writable, or choose another --report path",
                path.display()
            )
        };
        let file = crate::paths::create(path).with_context(fail)?;
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
        let error = record
            .error
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
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
            &error,
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
