//! Standard output and error: the lines the commands print for people and
//! scripts, and the log lines (see `logging`).
//!
//! They are written with error handling, not `println!`, which panics once
//! the reader has gone (`lsq-dispatch run … | head -1`, or a closed pipe):
//! by then the run's work is done, and its exit code must still say how it
//! went, not report a crash. A line written while a progress bar is drawn
//! goes above the bar, which is drawn again below it.

use std::fmt;
use std::io::{ErrorKind, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Mutex, OnceLock};

use indicatif::ProgressBar;

/// Set once a failure to write has been reported, so it is reported once.
static REPORTED: AtomicBool = AtomicBool::new(false);

/// The progress bar on the terminal, while one is drawn.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// One of the process's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

/// Lines written from now on go above `bar` (or, with `None`, as they are).
pub(crate) fn set_bar(bar: Option<ProgressBar>) {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = bar;
}

/// Writes `bytes` (whole lines) to `stream`. A reader that has gone (a
/// closed pipe) is not an error: there is no one left to tell. Any other
/// failure (a full disk under a redirect) is reported on stderr, once, and
/// the command goes on.
pub(crate) fn write(stream: Stream, bytes: &[u8]) {
    if stream == Stream::Err {
        if let Some(later) = LATER.get() {
            // Blocks only when the writer is that far behind: no line is lost.
            if later.send(Later::Line(bytes.to_vec())).is_ok() {
                return;
            }
        }
    }
    put(stream, bytes);
}

fn put(stream: Stream, bytes: &[u8]) {
    let put = || match stream {
        Stream::Out => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        }
        Stream::Err => std::io::stderr().lock().write_all(bytes),
    };
    let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let written = match bar {
        Some(bar) => bar.suspend(put),
        None => put(),
    };
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {}
        Err(e) => {
            if !REPORTED.swap(true, Ordering::Relaxed) {
                let name = match stream {
                    Stream::Out => "standard output",
                    Stream::Err => "standard error",
                };
                let _ = writeln!(std::io::stderr(), "warning: cannot write to {name}: {e}");
            }
        }
    }
}

/// Lines for standard error, to its writer thread (see [`write_in_background`]).
static LATER: OnceLock<SyncSender<Later>> = OnceLock::new();

/// What the standard-error thread is handed.
enum Later {
    Line(Vec<u8>),
    /// Answer once every line before this one is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// Lines the writer thread may fall behind by before a writer waits.
const LATER_LINES: usize = 65_536;

/// From now on standard error is written by a thread of its own, many lines
/// to a write: a service's log line per request then costs its worker no
/// system call, and a reader that is slow to take them (a full pipe) holds
/// up no request until it is [`LATER_LINES`] behind. Call [`flush`] before
/// the process ends.
pub(crate) fn write_in_background() {
    let (tx, rx) = std::sync::mpsc::sync_channel(LATER_LINES);
    if LATER.set(tx).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("stderr".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(64 * 1024);
            while let Ok(first) = rx.recv() {
                let mut flushed = Vec::new();
                for item in std::iter::once(first).chain(rx.try_iter().take(1024)) {
                    match item {
                        Later::Line(line) => batch.extend_from_slice(&line),
                        Later::Flush(done) => flushed.push(done),
                    }
                }
                put(Stream::Err, &batch);
                batch.clear();
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
    // Without its thread the queue has no reader: every line is then
    // written where it is made, as before.
    drop(spawned);
}

/// Waits until every line handed to the standard-error thread is written.
pub(crate) fn flush() {
    if let Some(later) = LATER.get() {
        let (done, written) = std::sync::mpsc::channel();
        if later.send(Later::Flush(done)).is_ok() {
            let _ = written.recv();
        }
    }
}

/// Prints `text` and a newline on standard output, as [`write`] does.
pub(crate) fn print_line(text: impl fmt::Display) {
    write(Stream::Out, format!("{text}\n").as_bytes());
}

/// `println!` for the commands' output: formats its arguments and prints
/// them with [`print_line`], so a closed standard output is no panic.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Quotes a value for a POSIX shell when it needs it (single quotes, a `'`
/// closed, escaped and reopened), so a printed command or `export` line can
/// be pasted as is: `$`, `&`, spaces and the rest stay as they are.
pub(crate) fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_values_and_quotes_the_rest() {
        assert_eq!(shell_quote("+14-157415569"), "+14-157415569");
        assert_eq!(
            shell_quote("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("a$b&c"), "'a$b&c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn a_quoted_value_reaches_a_shell_whole() {
        let value = "x'$HOME&`id` \\ \"y\"";
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf %s {}", shell_quote(value))])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), value);
    }
}
