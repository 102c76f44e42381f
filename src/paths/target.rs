//! Where one output goes: a file in a directory, replaced whole (or created)
//! when written, or something else (the standard output or error, a device,
//! a FIFO) that is opened once, when the run starts, and written as it is:
//! never read, never replaced, never opened twice.
//!
//! A FIFO is opened without blocking. While no program reads it the run
//! waits for one, for [`FIFO_PATIENCE`] at most and only until a signal
//! asks it to stop; then, whenever its reader falls behind, a write waits
//! for room for as long again. No FIFO can hold a run, or the campaign it
//! locks, forever.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::Stream;
use crate::signal::StopSignal;

/// How long a run waits for a program to open a FIFO output for reading,
/// and for the reader to make room for what the run writes.
pub(crate) const FIFO_PATIENCE: Duration = Duration::from_secs(30);

/// How often a run looks again for a reader of a FIFO.
const FIFO_POLL: Duration = Duration::from_millis(20);

/// A signal came while the run waited for a program to read a FIFO output,
/// before it did anything: it ends as interrupted.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped while waiting for a program to read the FIFO {} ({setting}): nothing was done; \
     start the program that reads it before the run, or give {setting} a regular file",
    path.display()
)]
pub(crate) struct StoppedWaiting {
    path: PathBuf,
    setting: &'static str,
}

/// Where one output goes.
#[derive(Debug)]
pub(crate) enum Target {
    /// A regular file, or none yet: created, or replaced whole, when written.
    File(PathBuf),
    /// The standard output or error, a device or a FIFO, opened at the start.
    Opened(OutputFile),
}

impl Target {
    /// The target of the output at `path`, which `setting` names: a device
    /// or a stream is opened now, a FIFO once a program reads it (waiting as
    /// the module says); a file is left for later.
    pub(crate) async fn open(
        path: &Path,
        setting: &'static str,
        stop: &StopSignal,
    ) -> anyhow::Result<Target> {
        let opened = |file, fifo| OutputFile {
            path: path.to_owned(),
            file,
            fifo,
        };
        let fail = || {
            format!(
                "cannot open {} ({setting}) for writing: check its permissions or choose \
                 another path",
                path.display()
            )
        };
        if let Some(stream) = Stream::named(path) {
            return Ok(Target::Opened(opened(
                stream.open().with_context(fail)?,
                false,
            )));
        }
        let kind = match fs::metadata(path) {
            Ok(meta) => meta.file_type(),
            Err(_) => return Ok(Target::File(path.to_owned())),
        };
        if kind.is_fifo() {
            let waited = stop.unless_stopping(open_fifo(path, setting)).await;
            let file = waited.ok_or_else(|| StoppedWaiting {
                path: path.to_owned(),
                setting,
            })??;
            Ok(Target::Opened(opened(file, true)))
        } else if kind.is_char_device() {
            let file = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .with_context(fail)?;
            Ok(Target::Opened(opened(file, false)))
        } else {
            Ok(Target::File(path.to_owned()))
        }
    }

    /// Where the output goes, as given.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Target::File(path) => path,
            Target::Opened(out) => &out.path,
        }
    }

    /// Writes `bytes` as the whole output: a file replaces the one at its
    /// path (with permission bits `mode`, see [`super::write_whole_mode`]);
    /// an opened output takes them as they are.
    pub(crate) fn write_whole(&mut self, bytes: &[u8], mode: u32) -> io::Result<()> {
        match self {
            Target::File(path) => super::write_whole_mode(path, bytes, mode),
            Target::Opened(out) => out.write_all(bytes).and_then(|()| out.flush()),
        }
    }
}

/// Opens the FIFO at `path` for writing once a program reads it, waiting
/// [`FIFO_PATIENCE`] at most.
async fn open_fifo(path: &Path, setting: &str) -> anyhow::Result<File> {
    let deadline = Instant::now() + FIFO_PATIENCE;
    let mut told = false;
    loop {
        // O_NONBLOCK: without a reader the open fails (ENXIO) instead of
        // blocking a thread no signal can free.
        let opened = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path);
        match opened {
            Ok(file) => return Ok(file),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                if !told {
                    told = true;
                    tracing::info!(
                        "waiting up to {} s for a program to read the FIFO {} ({setting})",
                        FIFO_PATIENCE.as_secs(),
                        path.display()
                    );
                }
                tokio::time::sleep(FIFO_POLL).await;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => anyhow::bail!(
                "no program read the FIFO {} ({setting}) within {} s: start the program that \
                 reads it before the run (for example `cat {} &`), or give \
                 {setting} a regular file",
                path.display(),
                FIFO_PATIENCE.as_secs(),
                path.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot open the FIFO {} ({setting}) for writing: check its permissions \
                         or choose another path",
                        path.display()
                    )
                })
            }
        }
    }
}

/// An output opened for writing: a file, a stream, a device or a FIFO.
pub(crate) struct OutputFile {
    path: PathBuf,
    file: File,
    /// Opened without blocking: a write waits for room itself, and not
    /// forever.
    fifo: bool,
}

impl fmt::Debug for OutputFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputFile")
            .field("path", &self.path)
            .field("fifo", &self.fifo)
            .finish_non_exhaustive()
    }
}

impl OutputFile {
    /// A file just created at `path`.
    pub(crate) fn created(path: &Path, file: File) -> OutputFile {
        OutputFile {
            path: path.to_owned(),
            file,
            fifo: false,
        }
    }

    /// Cuts a regular file back to its first `len` bytes, dropping what a
    /// failed write left of a row; anything else is left as it is (what a
    /// pipe or device took cannot be taken back).
    pub(crate) fn cut_back(&self, len: u64) -> io::Result<()> {
        if self.file.metadata()?.is_file() {
            self.file.set_len(len)?;
        }
        Ok(())
    }

    /// Waits until the FIFO has room, or fails after [`FIFO_PATIENCE`].
    fn wait_for_room(&self, since: Instant) -> io::Result<()> {
        let left = FIFO_PATIENCE.saturating_sub(since.elapsed());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the program reading the FIFO {} took nothing for {} s",
                    self.path.display(),
                    FIFO_PATIENCE.as_secs()
                ),
            ));
        }
        let mut poll = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let wait = i32::try_from(left.min(Duration::from_secs(1)).as_millis()).unwrap_or(1000);
        // SAFETY: one valid pollfd for a descriptor this file owns.
        unsafe { libc::poll(&mut poll, 1, wait) };
        Ok(())
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let since = Instant::now();
        loop {
            match self.file.write(buf) {
                Err(e) if self.fifo && e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait_for_room(since)?;
                }
                done => return done,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
