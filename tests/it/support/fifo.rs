//! FIFOs a test makes and reads as `cat FIFO` would, and a wait for a run
//! that must end by itself (one that hangs fails the test instead of
//! holding it forever).

use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::watch::Captured;

/// Makes a FIFO at `path`, mode 0600.
pub fn mkfifo(path: &Path) {
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `name` is a valid NUL-terminated path.
    let made = unsafe { libc::mkfifo(name.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// A program reading a FIFO: it opens it (waiting for a writer, as `cat`
/// does) and reads to the end, on a thread of its own.
pub struct FifoReader {
    path: PathBuf,
    reader: JoinHandle<Vec<u8>>,
}

impl FifoReader {
    /// Starts reading `path`.
    pub fn start(path: &Path) -> FifoReader {
        let fifo = path.to_owned();
        let reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut file = std::fs::File::open(&fifo).unwrap();
            file.read_to_end(&mut bytes).unwrap();
            bytes
        });
        FifoReader {
            path: path.to_owned(),
            reader,
        }
    }

    /// What it read, once the writer is gone (call after the run ended). A
    /// reader still waiting for a writer to open the FIFO gets an empty end.
    pub fn finish(self) -> Vec<u8> {
        if !self.reader.is_finished() {
            // Opening for writing without waiting releases a reader blocked
            // in its open; it then reads to the end this writer makes.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.path);
        }
        self.reader.join().unwrap()
    }
}

/// The longest a run that must end by itself is given before it counts as
/// hung: far beyond what any of these runs takes on a loaded machine.
const HUNG_AFTER: Duration = Duration::from_secs(120);

/// A running binary whose standard output and error are read as they come.
pub struct Watched {
    child: Child,
    /// Its standard output so far.
    pub stdout: Captured,
    /// Its standard error so far.
    pub stderr: Captured,
}

impl Watched {
    /// Starts `cmd` with both streams piped to readers.
    pub fn spawn(cmd: &mut Command) -> Watched {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        Watched {
            stdout: Captured::start(child.stdout.take().unwrap()),
            stderr: Captured::start(child.stderr.take().unwrap()),
            child,
        }
    }

    /// The process, to signal it.
    pub fn child(&self) -> &Child {
        &self.child
    }

    /// Waits for the run to end by itself and returns its output; a run
    /// that has not ended after two minutes is hung: it is killed and the
    /// test fails.
    pub fn ends_by_itself(mut self) -> Output {
        let deadline = Instant::now() + HUNG_AFTER;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                self.child.wait().unwrap();
                let stderr = String::from_utf8_lossy(&self.stderr.finish()).into_owned();
                panic!("the run hung (killed after {HUNG_AFTER:?}); its stderr:\n{stderr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = Output {
            status,
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
        };
        eprintln!(
            "--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}
