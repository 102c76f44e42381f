//! Events a test waits for instead of sleeping: rows a run has written to its
//! report, lines a child has printed, a child ready for a signal. Each is a
//! fact the test can observe, so no test bets on how fast the machine is.

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The rows a run has written to its report so far (0 before the report
/// exists): whole lines after the header.
pub fn rows_so_far(report: &Path) -> usize {
    std::fs::read_to_string(report).map_or(0, |text| text.matches('\n').count().saturating_sub(1))
}

/// A child's output, read on a thread as it comes, so that a test can wait
/// for a line and still have the whole text at the end.
pub struct Captured {
    text: Arc<Mutex<String>>,
    reader: JoinHandle<()>,
}

impl Captured {
    /// Starts reading `pipe` (a child's stdout or stderr) to its end.
    pub fn start(mut pipe: impl Read + Send + 'static) -> Captured {
        let text = Arc::new(Mutex::new(String::new()));
        let shared = Arc::clone(&text);
        let reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                shared
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Captured { text, reader }
    }

    /// Whether the output so far holds `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.text.lock().unwrap().contains(needle)
    }

    /// The whole output, once the pipe is closed (the child has ended).
    pub fn finish(self) -> Vec<u8> {
        self.reader.join().unwrap();
        std::mem::take(&mut *self.text.lock().unwrap()).into_bytes()
    }
}

/// Whether process `pid` has installed its own handler for SIGTERM, as read
/// from the caught-signals mask in `/proc/PID/status` (Linux).
pub fn catches_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}
