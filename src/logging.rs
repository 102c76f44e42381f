//! What a run says about itself, through `tracing`: human lines (with a UTC
//! timestamp and a level when standard error is not a terminal, as under
//! cron or systemd), or one JSON object per line for log shippers; `-v`
//! says more, `-q` nothing but errors.
//!
//! Only this crate's events are written: a library's debug output could
//! quote a request URL, and ours carry the access keys in their query.
//! Secrets never reach an event: every text from outside is scrubbed where
//! it comes in (see `secret`), and a [`crate::secret::Secret`] prints `***`.
//!
//! The run's closing line is its result: it goes to standard output (target
//! [`RESULT`]), everything else to standard error, both in the same format.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::console::Stream;

/// The target of the events that are a command's result, written to
/// standard output.
pub(crate) const RESULT: &str = "lsq_dispatch::result";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people; timestamped when standard error is not a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message` and the
    /// event's own fields.
    Json,
}

/// The logging flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSettings {
    /// `--log-format`.
    pub format: LogFormat,
    /// `-v` given this many times.
    pub verbose: u8,
    /// `-q`: errors only.
    pub quiet: bool,
}

impl LogSettings {
    fn level(self) -> LevelFilter {
        match (self.quiet, self.verbose) {
            (true, _) => LevelFilter::ERROR,
            (false, 0) => LevelFilter::INFO,
            (false, _) => LevelFilter::DEBUG,
        }
    }
}

/// Whether a progress bar may be drawn: text logs to a terminal, not quiet.
pub(crate) fn bar_wanted(format: LogFormat, quiet: bool) -> bool {
    format == LogFormat::Text && !quiet && std::io::stderr().is_terminal()
}

/// Installs the process's logger; a second call (a test that runs the job
/// twice in one process) keeps the first.
pub fn init(settings: LogSettings) {
    let only_ours = Targets::new().with_target("lsq_dispatch", settings.level());
    let layer = match settings.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .event_format(TextFormat {
                timestamps: !std::io::stderr().is_terminal(),
            })
            .with_writer(Streams)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false)
            .with_timer(UtcTime)
            .with_writer(Streams)
            .boxed(),
    };
    let warnings = Targets::new().with_target("lsq_dispatch", LevelFilter::WARN);
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(only_ours))
        .with(Warnings.with_filter(warnings))
        .try_init();
}

/// The most warnings a run keeps for its summary: enough for every kind a
/// run gives, few enough that a warning repeated per row cannot swell it.
const KEPT_WARNINGS: usize = 20;

/// The warnings given so far, whatever the log level shows: `--quiet` hides
/// them from the log, not from the summary, the metrics and the ping.
static GIVEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Every warning given so far (the first [`KEPT_WARNINGS`] of them, each
/// once), oldest first.
pub(crate) fn warnings() -> Vec<String> {
    GIVEN.lock().map(|given| given.clone()).unwrap_or_default()
}

/// Keeps the text of every warning for [`warnings`].
struct Warnings;

impl<S: Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() != Level::WARN {
            return;
        }
        let mut text = String::new();
        event.record(&mut Message(&mut Writer::new(&mut text)));
        if let Ok(mut given) = GIVEN.lock() {
            if given.len() < KEPT_WARNINGS && !given.contains(&text) {
                given.push(text);
            }
        }
    }
}

/// The current time, RFC 3339 in UTC to the millisecond.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Timestamps of JSON lines.
struct UtcTime;

impl FormatTime for UtcTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        w.write_str(&now())
    }
}

/// Human lines: `2026-11-23T02:00:00.000Z WARN  message` when timestamped;
/// on a terminal, the message alone, after `warning: ` or `error: ` for
/// those levels. Only the message is written: it reads whole, and the
/// fields an event also carries are for the JSON form.
struct TextFormat {
    timestamps: bool,
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        if self.timestamps {
            write!(writer, "{} {level:<5} ", now())?;
        } else {
            match level {
                Level::ERROR => writer.write_str("error: ")?,
                Level::WARN => writer.write_str("warning: ")?,
                Level::DEBUG | Level::TRACE => writer.write_str("debug: ")?,
                Level::INFO => {}
            }
        }
        event.record(&mut Message(&mut writer));
        writeln!(writer)
    }
}

/// Writes an event's `message` field.
struct Message<'a, 'w>(&'a mut Writer<'w>);

impl Visit for Message<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = self.0.write_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

/// Where a line goes: the result to standard output, the rest to standard
/// error, each written whole around any progress bar.
struct Streams;

impl<'a> MakeWriter<'a> for Streams {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Stream::Err)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line(match meta.target() {
            RESULT => Stream::Out,
            _ => Stream::Err,
        })
    }
}

/// One formatted event on its way to a stream.
struct Line(Stream);

impl std::io::Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::console::write(self.0, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_beats_verbose_and_each_v_says_more() {
        let level = |quiet, verbose| {
            LogSettings {
                format: LogFormat::Text,
                verbose,
                quiet,
            }
            .level()
        };
        assert_eq!(level(false, 0), LevelFilter::INFO);
        assert_eq!(level(false, 1), LevelFilter::DEBUG);
        assert_eq!(level(false, 3), LevelFilter::DEBUG);
        assert_eq!(level(true, 0), LevelFilter::ERROR);
    }
}
