//! Progress on stderr: a bar on a terminal, a plain line every few seconds
//! otherwise (cron logs), nothing with `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Progress of one run.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    log_lines: bool,
    total: u64,
    done: u64,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    /// Progress over about `total` rows.
    pub(crate) fn new(total: u64, quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} rows  {per_sec}  eta {eta}  {msg}",
                )
                .expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            log_lines: !quiet && !terminal,
            total,
            done: 0,
            started: now,
            last_log: now,
        }
    }

    /// One more row is done.
    pub(crate) fn inc(&mut self) {
        self.done += 1;
        if let Some(bar) = &self.bar {
            if self.done > self.total {
                self.total = self.done;
                bar.set_length(self.total);
            }
            bar.set_position(self.done);
        } else if self.log_lines && self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    /// Prints a line without breaking the bar; nothing with `--quiet`.
    pub(crate) fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.log_lines => eprintln!("{line}"),
            None => {}
        }
    }

    fn line(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = self.done as f64 / elapsed.max(0.001);
        let total = self.total.max(self.done);
        let eta = (total - self.done) as f64 / rate.max(0.001);
        format!(
            "progress: {}/{} rows ({:.0}%), {:.1} rows/s, eta {:.0}s",
            self.done,
            total,
            100.0 * self.done as f64 / total.max(1) as f64,
            rate,
            eta
        )
    }

    /// Clears the bar.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// About how many data rows a file holds, for the progress total and for
/// sizing the de-duplication set: exact for a small file; for a large one,
/// its size over the line length of its first 256 KiB, so that a million-row
/// file is not read twice.
pub(crate) fn estimate_rows(path: &std::path::Path) -> u64 {
    use std::io::Read;
    const SAMPLE: usize = 256 * 1024;
    let Ok(file) = std::fs::File::open(path) else {
        return 0;
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut sample = Vec::with_capacity(SAMPLE);
    if file.take(SAMPLE as u64).read_to_end(&mut sample).is_err() || sample.is_empty() {
        return 0;
    }
    let mut lines = memchr::memchr_iter(b'\n', &sample).count() as u64;
    if size <= sample.len() as u64 {
        if sample.last() != Some(&b'\n') {
            lines += 1;
        }
        return lines.saturating_sub(1);
    }
    let bytes_per_line = sample.len() as f64 / lines.max(1) as f64;
    ((size as f64 / bytes_per_line) as u64).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_counted_exactly_and_large_ones_estimated() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.csv");
        std::fs::write(&small, "LeadId\na\nb\nc").unwrap();
        assert_eq!(estimate_rows(&small), 3);
        let large = dir.path().join("large.csv");
        let mut text = String::from("LeadId\n");
        for i in 0..100_000 {
            text.push_str(&format!("{i:036}\n"));
        }
        std::fs::write(&large, text).unwrap();
        let estimate = estimate_rows(&large);
        assert!((99_000..=101_000).contains(&estimate), "{estimate}");
        assert_eq!(estimate_rows(&dir.path().join("missing.csv")), 0);
    }
}
