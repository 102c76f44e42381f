//! Progress on stderr: a bar on a terminal, a log line every few seconds
//! otherwise (cron logs, or JSON logs), nothing with `--quiet`.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a progress line is logged when no bar is drawn.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Progress of one run.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    /// Progress over about `total` rows, as a bar when `bar` says one may
    /// be drawn.
    pub(crate) fn new(total: u64, bar: bool) -> Progress {
        let bar = bar.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} rows  {per_sec}  eta {eta}  {msg}",
                )
                .expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            crate::console::set_bar(Some(bar.clone()));
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
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
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            tracing::info!(rows = self.done, "{}", self.line());
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
            crate::console::set_bar(None);
            bar.finish_and_clear();
        }
    }
}

/// The input as the reader reads it: the open file, after the bytes the
/// estimate read from it.
pub(crate) type Input = std::io::Chain<std::io::Cursor<Vec<u8>>, std::fs::File>;

/// About how many data rows the open input holds, for the progress total
/// and for sizing the de-duplication set, and the input to read. The input
/// is read once: the estimate reads the first 256 KiB of a regular file and
/// hands them back ahead of the rest. It is exact for a small file; for a
/// large one it is the file's size over the line length of those bytes, so
/// that a million-row file is not read twice. A pipe, FIFO or device has no
/// size to go by: no estimate (0), and nothing read ahead.
pub(crate) fn estimate_rows(file: std::fs::File) -> (u64, Input) {
    use std::io::Read;
    const SAMPLE: u64 = 256 * 1024;
    let size = match file.metadata() {
        Ok(meta) if meta.is_file() => meta.len(),
        _ => return (0, std::io::Cursor::new(Vec::new()).chain(file)),
    };
    let mut sample = Vec::with_capacity(SAMPLE.min(size) as usize);
    // A read error is left for the reader to meet and report; the bytes
    // read before it are handed back all the same.
    let mut reader = file.take(SAMPLE);
    let failed = reader.read_to_end(&mut sample).is_err();
    let file = reader.into_inner();
    let estimate = match failed {
        true => 0,
        false => rows_in(&sample, size),
    };
    (estimate, std::io::Cursor::new(sample).chain(file))
}

/// The data rows of a file of `size` bytes that begins with `sample`.
fn rows_in(sample: &[u8], size: u64) -> u64 {
    if sample.is_empty() {
        return 0;
    }
    let mut lines = memchr::memchr_iter(b'\n', sample).count() as u64;
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

    use std::io::Read;

    /// The estimate for `path`, and checks that the input handed back is
    /// the whole file.
    fn estimate(path: &std::path::Path) -> u64 {
        let (rows, mut input) = estimate_rows(std::fs::File::open(path).unwrap());
        let mut read = Vec::new();
        input.read_to_end(&mut read).unwrap();
        assert!(read == std::fs::read(path).unwrap(), "bytes lost");
        rows
    }

    #[test]
    fn small_files_are_counted_exactly_and_large_ones_estimated() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.csv");
        std::fs::write(&small, "LeadId\na\nb\nc").unwrap();
        assert_eq!(estimate(&small), 3);
        let large = dir.path().join("large.csv");
        let mut text = String::from("LeadId\n");
        for i in 0..100_000 {
            text.push_str(&format!("{i:036}\n"));
        }
        std::fs::write(&large, text).unwrap();
        let rows = estimate(&large);
        assert!((99_000..=101_000).contains(&rows), "{rows}");
        let empty = dir.path().join("empty.csv");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(estimate(&empty), 0);
    }

    #[test]
    fn a_device_is_not_read_ahead() {
        let (rows, mut input) = estimate_rows(std::fs::File::open("/dev/zero").unwrap());
        assert_eq!(rows, 0);
        let mut first = [1u8; 4];
        input.read_exact(&mut first).unwrap();
        assert_eq!(first, [0; 4]);
    }
}
