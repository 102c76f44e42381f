//! A small tmpfs mounted under a test's directory, to fill up: a disk that
//! runs out of space under an output. Mounting needs root (or
//! CAP_SYS_ADMIN); without it the test says loudly that it was skipped and
//! how to run it, and passes, except under CI (`CI=true`), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted when dropped.
pub struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`24k`) at `dir` (made here), or says why
    /// `test` is skipped and returns `None`.
    pub fn mount(test: &str, dir: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(SmallDisk {
                dir: dir.to_owned(),
            }),
            failed => {
                let why = match failed {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                let advice = "run the tests as root (or with CAP_SYS_ADMIN), for example \
                              sudo -E cargo test --locked --test it full_disk";
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("cannot mount a tmpfs for {test} ({why}); {advice}");
                }
                eprintln!("\n*** SKIPPED {test}: cannot mount a tmpfs ({why}); {advice} ***\n");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily, so that a file a dying run still holds cannot keep it.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
