//! Writing the report row by row.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::SecondsFormat;

use super::{escape_cell, Record, COLUMNS};
use crate::paths::{OutputFile, Target};

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

/// How many bytes of rows a buffered report gathers before writing them.
const BATCH: usize = 64 * 1024;

/// Writes the report, one flushed row at a time, so a crash leaves a valid
/// partial report. Rows reach the file whole: they are encoded in memory
/// and written together, and a write that fails partway (a full disk) is
/// cut back to the last whole row, after which nothing more is written.
pub struct ReportWriter {
    path: PathBuf,
    out: OutputFile,
    /// Rows encoded and not yet written: only whole rows.
    rows: csv::Writer<Vec<u8>>,
    /// The bytes of whole rows written, where a failed write is cut back to.
    written: u64,
    flush_each: bool,
    /// A write failed: the report ends where it was cut back.
    broken: bool,
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
        ReportWriter::open(Target::File(path.to_owned()))
    }

    /// Writes the report to `target`: a file is created as
    /// [`ReportWriter::create`] does; an opened output takes the rows as
    /// they are.
    pub(crate) fn open(target: Target) -> anyhow::Result<ReportWriter> {
        let path = target.path().to_owned();
        let fail = || {
            format!(
                "cannot create the report {}: check that its directory exists and is \
                 writable, or choose another --report path",
                path.display()
            )
        };
        let out = match target {
            Target::File(path) => {
                OutputFile::created(&path, crate::paths::create(&path).with_context(fail)?)
            }
            Target::Opened(out) => out,
        };
        let mut writer = ReportWriter {
            path: path.clone(),
            out,
            rows: csv::Writer::from_writer(Vec::new()),
            written: 0,
            flush_each: true,
            broken: false,
        };
        writer.rows.write_record(COLUMNS).with_context(fail)?;
        writer.flush().with_context(fail)?;
        Ok(writer)
    }

    /// Buffers rows instead of flushing each one: for dry runs, where a
    /// crash loses nothing and a million rows must go fast.
    pub fn buffered(mut self) -> ReportWriter {
        self.flush_each = false;
        self
    }

    /// Hands every row encoded so far to the operating system, whole. When
    /// that fails, the file is cut back to its last whole row and no row is
    /// written any more.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(format!(
                "the report {} could not be written earlier",
                self.path.display()
            )));
        }
        let rows = self.take_rows();
        if rows.is_empty() {
            return Ok(());
        }
        match self.out.write_all(&rows).and_then(|()| self.out.flush()) {
            Ok(()) => {
                self.written += rows.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                match self.out.cut_back(self.written) {
                    Ok(()) => Err(e),
                    Err(cut) => Err(io::Error::new(
                        e.kind(),
                        format!("{e}; its last row may be cut short ({cut})"),
                    )),
                }
            }
        }
    }

    /// The rows encoded so far, taken out of the encoder.
    fn take_rows(&mut self) -> Vec<u8> {
        let rows = std::mem::replace(&mut self.rows, csv::Writer::from_writer(Vec::new()));
        // Into memory, which cannot fail.
        rows.into_inner().unwrap_or_default()
    }

    /// Appends one row and, unless buffered, hands it to the operating
    /// system before returning.
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
            self.rows
                .write_field(escape_cell(cell).as_bytes())
                .map_err(io::Error::from)?;
        }
        self.rows
            .write_record(None::<&[u8]>)
            .map_err(io::Error::from)?;
        if self.flush_each || self.rows.get_ref().len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Where the report is being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ReportWriter {
    /// Writes the rows a buffered report still holds, as the file's own
    /// buffer would have.
    fn drop(&mut self) {
        if !self.broken {
            let _ = self.flush();
        }
    }
}
