//! The input rows worth another look, beside the report and named after it:
//! `X-retry.csv` holds the rows to run again (`failed`), `X-invalid.csv` the
//! rows no run can do as they are (`invalid`, `duplicate`). Both hold the
//! input's own bytes: its header line as it is in the file, and each row's
//! cells as read (untrimmed), with the input's separator and line breaks,
//! in the input's encoding (its byte-order mark too), ready to be fed back
//! into `run` (the invalid ones once fixed).
//!
//! A report written to the standard output or a device has no directory
//! of its own: its files go to the working directory, named after the input
//! as they would be beside its default report.
//!
//! Rows `in_doubt` are left out on purpose: their email may well have
//! arrived. A re-run of the same campaign reports them in doubt again
//! rather than send twice, and a run under another campaign would send a
//! second message; `--resend-in-doubt` on the original input is the way to
//! send them again.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tempfile::NamedTempFile;

use super::Status;
use crate::input::{Encoding, HeaderLine};

/// Where the rows to retry and the invalid rows of a run of `input` go:
/// for the report `DIR/X-report.csv`, `DIR/X-retry.csv` and
/// `DIR/X-invalid.csv`; for a report of any other name, `DIR/NAME.csv`,
/// `DIR/NAME-retry.csv` and `DIR/NAME-invalid.csv`; for a report that is
/// no file in a directory (`/dev/stdout`), `INPUT-retry.csv` and
/// `INPUT-invalid.csv` in the working directory. Names keep their bytes,
/// UTF-8 or not.
pub(crate) fn rerun_paths(report: &Path, input: &Path) -> (PathBuf, PathBuf) {
    use crate::paths::{named_after, stem_before};
    if !crate::paths::is_file_path(report) {
        let stem = input.file_stem().unwrap_or("leads".as_ref());
        return (
            PathBuf::from(named_after(stem, "-retry.csv")),
            PathBuf::from(named_after(stem, "-invalid.csv")),
        );
    }
    let name = report.file_name().unwrap_or_default();
    let base = stem_before(name, "-report.csv")
        .or_else(|| report.file_stem())
        .unwrap_or_default();
    (
        report.with_file_name(named_after(base, "-retry.csv")),
        report.with_file_name(named_after(base, "-invalid.csv")),
    )
}

/// The two files of input rows of one run, each created on its first row.
pub(crate) struct RerunFiles {
    header: HeaderLine,
    retry: RowsFile,
    invalid: RowsFile,
}

/// Where the run left its input rows: each file's path when it holds rows.
#[derive(Debug, Default)]
pub(crate) struct RerunWritten {
    /// The rows to retry.
    pub(crate) retry: Option<PathBuf>,
    /// The invalid and duplicate rows.
    pub(crate) invalid: Option<PathBuf>,
}

impl RerunFiles {
    /// The files for the report at `report` of a run of `input`, under the
    /// input's header line.
    pub(crate) fn new(report: &Path, input: &Path, header: &HeaderLine) -> RerunFiles {
        let (retry, invalid) = rerun_paths(report, input);
        RerunFiles {
            header: header.clone(),
            retry: RowsFile::new(retry),
            invalid: RowsFile::new(invalid),
        }
    }

    /// Adds one row's cells, as read, to the file its `status` belongs in,
    /// if any.
    pub(crate) fn write(&mut self, status: Status, raw: &csv::ByteRecord) -> anyhow::Result<()> {
        let file = match status {
            Status::Failed => &mut self.retry,
            Status::Invalid | Status::Duplicate => &mut self.invalid,
            _ => return Ok(()),
        };
        file.write(&self.header, raw)
    }

    /// Puts both files in place. A file this run has no row for is removed
    /// when an earlier run left one at its path, so it never feeds stale rows
    /// back in. (Neither is ever the input: the run refuses to start then.)
    pub(crate) fn finish(self) -> anyhow::Result<RerunWritten> {
        Ok(RerunWritten {
            retry: self.retry.finish()?,
            invalid: self.invalid.finish()?,
        })
    }
}

/// One file of input rows. It is written to a new temporary file beside
/// its path and renamed into place when the run ends, so an earlier run's
/// file stays whole until this one's is complete.
struct RowsFile {
    path: PathBuf,
    writer: Option<csv::Writer<Encoded<NamedTempFile>>>,
}

impl RowsFile {
    fn new(path: PathBuf) -> RowsFile {
        RowsFile { path, writer: None }
    }

    fn write(&mut self, header: &HeaderLine, raw: &csv::ByteRecord) -> anyhow::Result<()> {
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => self.writer.insert(self.create(header)?),
        };
        writer
            .write_byte_record(raw)
            .with_context(|| format!("cannot write the rows of {}", self.path.display()))
    }

    /// The temporary file, created new (never through an existing file or
    /// link) with mode 0600, with the header line written.
    fn create(&self, header: &HeaderLine) -> anyhow::Result<csv::Writer<Encoded<NamedTempFile>>> {
        let fail = || format!("cannot create a file beside {}", self.path.display());
        let file = crate::paths::temp_beside(&self.path).with_context(fail)?;
        let mut file = Encoded::new(file, header.encoding);
        let (line_break, terminator): (&[u8], _) = match header.crlf {
            true => (b"\r\n", csv::Terminator::CRLF),
            false => (b"\n", csv::Terminator::Any(b'\n')),
        };
        file.write_all(&header.bytes)
            .and_then(|()| file.write_all(line_break))
            .with_context(fail)?;
        Ok(csv::WriterBuilder::new()
            .flexible(true)
            .delimiter(header.delimiter)
            .terminator(terminator)
            .from_writer(file))
    }

    /// Renames the file into place, or, when this run had no row for it,
    /// removes the one an earlier run left at its path.
    fn finish(self) -> anyhow::Result<Option<PathBuf>> {
        let Some(writer) = self.writer else {
            remove_stale(&self.path)?;
            return Ok(None);
        };
        let fail = || format!("cannot write {}", self.path.display());
        let temp = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(Encoded::finish)
            .with_context(fail)?;
        temp.as_file().sync_all().with_context(fail)?;
        temp.persist(&self.path)
            .map_err(|e| e.error)
            .with_context(fail)?;
        Ok(Some(self.path))
    }
}

/// A writer that takes UTF-8 and writes it in the input's encoding. The
/// csv writer hands on its buffer whole or cut anywhere, even inside a
/// character: the start of a cut character waits for the rest.
struct Encoded<W> {
    inner: W,
    encoding: Encoding,
    cut: Vec<u8>,
    out: Vec<u8>,
}

impl<W: Write> Encoded<W> {
    fn new(inner: W, encoding: Encoding) -> Encoded<W> {
        Encoded {
            inner,
            encoding,
            cut: Vec::new(),
            out: Vec::new(),
        }
    }

    /// The writer, once every character has been written whole.
    fn finish(self) -> std::io::Result<W> {
        match self.cut.is_empty() {
            true => Ok(self.inner),
            false => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a character was cut short",
            )),
        }
    }
}

impl<W: Write> Write for Encoded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.encoding == Encoding::Utf8 {
            return self.inner.write(buf);
        }
        self.cut.extend_from_slice(buf);
        let whole = match std::str::from_utf8(&self.cut) {
            Ok(text) => text.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        };
        let text = std::str::from_utf8(&self.cut[..whole]).expect("checked above");
        self.out.clear();
        self.encoding.encode(text, &mut self.out);
        self.inner.write_all(&self.out)?;
        self.cut.drain(..whole);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Removes a file an earlier run left at `path` (a link itself, not what it
/// points to).
fn remove_stale(path: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_dir() => fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale {}", path.display())),
        _ => Ok(()),
    }
}
