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
use std::sync::Mutex;

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
