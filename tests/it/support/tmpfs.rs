//! A small tmpfs mounted for one test, so that a test can fill the file
//! system under a file on purpose (a full disk, for real), and unmounted when
//! the test ends, however it ends.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A tmpfs mounted at `path`; unmounted on drop.
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes at `path` (a new directory). When this
    /// process may not mount (not root, or no `CAP_SYS_ADMIN` in a
    /// container), says loudly that `test` is skipped and how to run it, and
    /// returns `None`; under CI (`CI=true`) it fails instead.
    pub fn mount_or_skip(path: &Path, size: u64, test: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let target = CString::new(path.as_os_str().as_bytes()).unwrap();
        let options = CString::new(format!("size={size},mode=0700")).unwrap();
        // SAFETY: every pointer is a valid NUL-terminated string for the call.
        let mounted = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        if mounted == 0 {
            return Some(Tmpfs {
                path: path.to_owned(),
            });
        }
        let why = std::io::Error::last_os_error();
        let advice = "run the tests as root (or with CAP_SYS_ADMIN) to run this test";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "cannot mount a tmpfs at {}: {why}; {advice}",
                path.display()
            );
        }
        eprintln!(
            "\n*** SKIPPED {test}: cannot mount a tmpfs at {} ({why}); {advice} ***\n",
            path.display()
        );
        None
    }

    /// Fills the file system with one file until no byte more fits, and
    /// returns the file's path: removing it frees the space again.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", filler.display()),
            }
        }
        // Any last bytes smaller than a block.
        while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path. A lazy unmount never fails
        // for files still open (a child that outlived the test).
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
    }
}
