//! The state file on disk, before SQLite sees it: where it lives by default,
//! its real path, the locks that keep runs of one campaign apart while
//! letting other campaigns and readers in, its permissions, and the look at
//! its header that tells our file from someone else's.
//!
//! The header is read with plain file I/O on purpose: SQLite may write to a
//! database it opens (hot-journal rollback, WAL checkpoint on close), and a
//! file that is not ours must come out of a failed open byte for byte the
//! same.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::StateError;

/// `PRAGMA application_id` of every lsq-dispatch state file: "LSQD" in ASCII.
pub const APPLICATION_ID: u32 = 0x4C53_5144;

/// The first 16 bytes of every SQLite 3 database.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Size of the SQLite database header; the application id sits at byte 68.
const HEADER_LEN: usize = 100;

/// What the header of an existing file says about it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Header {
    /// Zero bytes: nothing to lose, so it is initialised.
    Empty,
    /// A SQLite database carrying our application id.
    Ours,
    /// Anything else; the text says what it looks like.
    Foreign(String),
}

/// Reads the header of `path`, or `None` when there is no such file.
pub(super) fn read_header(path: &Path) -> Result<Option<Header>, StateError> {
    let io_err = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Ok(Some(Header::Foreign("it is not a regular file".into())));
    }
    if meta.len() == 0 {
        return Ok(Some(Header::Empty));
    }
    let mut header = Vec::with_capacity(HEADER_LEN);
    (&mut file)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .map_err(io_err)?;
    Ok(Some(classify(&header)))
}

fn classify(header: &[u8]) -> Header {
    if header.len() < HEADER_LEN || &header[..16] != SQLITE_MAGIC {
        return Header::Foreign("it is not a SQLite database".into());
    }
    let app_id = u32::from_be_bytes([header[68], header[69], header[70], header[71]]);
    match app_id {
        APPLICATION_ID => Header::Ours,
        0 => Header::Foreign("it is a SQLite database that lsq-dispatch did not create".into()),
        other => Header::Foreign(format!(
            "it is a SQLite database of another application (application_id {other:#010x})"
        )),
    }
}

/// Creates `path` empty with mode 0600 unless it exists, so that SQLite (which
/// gives its -wal and -shm files the database's mode) never makes a wider one.
pub(super) fn create_private(path: &Path) -> Result<(), StateError> {
    crate::paths::open_private(path)
        .map(drop)
        .map_err(|source| StateError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Narrows a file of ours, and the log SQLite keeps beside it, to 0600: they
/// hold login links, and SQLite gives a new log the database's mode.
pub(super) fn make_private(path: &Path) -> Result<(), StateError> {
    let mut wal = OsString::from(path.as_os_str());
    wal.push("-wal");
    let mut shm = OsString::from(path.as_os_str());
    shm.push("-shm");
    for file in [path, Path::new(&wal), Path::new(&shm)] {
        let io_err = |source| StateError::Io {
            path: file.to_owned(),
            source,
        };
        let mode = match fs::metadata(file) {
            Ok(meta) => meta.permissions().mode(),
            Err(e) if e.kind() == io::ErrorKind::NotFound && file != path => continue,
            Err(e) => return Err(io_err(e)),
        };
        if mode & 0o777 != 0o600 {
            fs::set_permissions(file, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        }
    }
    Ok(())
}

/// Creates the missing parents of `path`, readable by the owner only.
pub(super) fn create_parent_dirs(path: &Path) -> Result<(), StateError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::Io {
                path: dir.to_owned(),
                source,
            }),
        _ => Ok(()),
    }
}

/// `<state path>.lock`: the locks live beside the database rather than on it
/// because SQLite takes and drops its own POSIX locks on the database file.
pub(super) fn lock_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// The real path of a state file: symbolic links resolved, so that two
/// spellings of one file (a symlink, `..`) share one set of locks. A file
/// that does not exist yet is named through its real parent directory.
pub(super) fn real_path(path: &Path) -> Result<PathBuf, StateError> {
    let io_err = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::canonicalize(path) {
        Ok(real) => Ok(real),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if fs::symlink_metadata(path).is_ok() {
                return Err(io_err(io::Error::other(
                    "it is a symbolic link to a file that does not exist; \
                     point --state at a real path",
                )));
            }
            let name = path
                .file_name()
                .ok_or_else(|| io_err(io::Error::other("the path does not name a file")))?;
            let parent = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            Ok(fs::canonicalize(parent).map_err(io_err)?.join(name))
        }
        Err(e) => Err(io_err(e)),
    }
}

/// The lock file of one state file, open for as long as a store uses it.
///
/// Every store holds a shared `flock` on it for its whole life: stores of
/// this version share the file, while an older lsq-dispatch, which takes the
/// whole file exclusively, is kept out (and keeps this one out). Each
/// campaign a store runs is claimed with an exclusive open-file-description
/// lock on one byte of the same file, chosen by the campaign's name: two runs
/// of one campaign exclude each other, runs of different campaigns do not.
///
/// The locks belong to this open file description and go with it (or with
/// the process, after a crash, so a stale lock never blocks the next run).
/// The lock file itself is never deleted, since unlinking a lock file another
/// process is about to lock lets two runs in.
#[derive(Debug)]
pub(super) struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Opens (or creates, mode 0600) the lock file of the state file at
    /// `path` and takes the shared lock, without waiting.
    pub(super) fn share(path: &Path) -> Result<LockFile, StateError> {
        let lock_path = lock_path(path);
        let file = crate::paths::open_private(&lock_path).map_err(|source| StateError::Io {
            path: lock_path.clone(),
            source,
        })?;
        let lock = LockFile {
            file,
            path: lock_path,
        };
        // SAFETY: the descriptor is valid for the duration of the call.
        let held = lock.retrying(|fd| unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) })?;
        if !held {
            return Err(StateError::Locked {
                path: path.to_owned(),
            });
        }
        Ok(lock)
    }

    /// Claims `campaign` for this lock file's holder, without waiting:
    /// `false` when another holder has it.
    pub(super) fn claim(&self, campaign: &str) -> Result<bool, StateError> {
        let range = campaign_byte(campaign);
        // SAFETY: the descriptor is valid and `range` outlives the call.
        self.retrying(|fd| unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &range) })
    }

    /// Whether another holder (a run, in this process or another) has
    /// claimed `campaign`, asked without taking or waiting for anything.
    pub(super) fn claimed_elsewhere(&self, campaign: &str) -> Result<bool, StateError> {
        let mut range = campaign_byte(campaign);
        // SAFETY: the descriptor is valid and `range` outlives the call.
        self.retrying(|fd| unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut range) })?;
        Ok(range.l_type != libc::F_UNLCK as libc::c_short)
    }

    /// Runs a non-blocking lock call until it is not interrupted: `true` when
    /// the lock was taken, `false` when someone else holds it.
    fn retrying(&self, mut call: impl FnMut(i32) -> i32) -> Result<bool, StateError> {
        loop {
            if call(self.file.as_raw_fd()) == 0 {
                return Ok(true);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::PermissionDenied => return Ok(false),
                _ => {
                    return Err(StateError::Io {
                        path: self.path.clone(),
                        source: err,
                    })
                }
            }
        }
    }
}

/// The exclusive lock on the one byte of the lock file that stands for
/// `campaign`.
fn campaign_byte(campaign: &str) -> libc::flock {
    let digest = ring::digest::digest(&ring::digest::SHA256, campaign.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    // Byte 0 is left alone; offsets stay far below off_t's limit.
    let offset = 1 + (u64::from_be_bytes(first) >> 2);
    // SAFETY: an all-zero `flock` is a valid value of the plain C struct.
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = libc::F_WRLCK as libc::c_short;
    range.l_whence = libc::SEEK_SET as libc::c_short;
    range.l_start = offset as libc::off_t;
    range.l_len = 1;
    range
}

/// The default state file, from the values of `$XDG_STATE_HOME`, the
/// platform's state directory and the home directory, in that order of
/// preference. Taking them as arguments keeps the choice testable without
/// touching the process environment.
///
/// An empty or relative `XDG_STATE_HOME` is ignored, as the XDG base directory
/// specification asks. With none of the three, the path is relative:
/// `lsq-dispatch/state.sqlite` under the current directory.
pub fn default_path_from(
    xdg_state_home: Option<&OsStr>,
    platform_state_dir: Option<PathBuf>,
    home: Option<PathBuf>,
) -> PathBuf {
    let base = xdg_state_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or(platform_state_dir)
        .or_else(|| home.map(|h| h.join(".local").join("state")))
        .unwrap_or_default();
    base.join("lsq-dispatch").join("state.sqlite")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_with_app_id(id: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..16].copy_from_slice(SQLITE_MAGIC);
        h[68..72].copy_from_slice(&id.to_be_bytes());
        h
    }

    #[test]
    fn classify_tells_ours_from_foreign() {
        assert_eq!(classify(&header_with_app_id(APPLICATION_ID)), Header::Ours);
        assert!(matches!(
            classify(&header_with_app_id(0)),
            Header::Foreign(_)
        ));
        assert!(matches!(
            classify(&header_with_app_id(7)),
            Header::Foreign(_)
        ));
        assert!(matches!(classify(b"LeadId\n1\n"), Header::Foreign(_)));
        // A truncated header is not trusted even with the right magic.
        assert!(matches!(classify(SQLITE_MAGIC), Header::Foreign(_)));
    }

    #[test]
    fn lock_path_appends_to_the_file_name() {
        assert_eq!(
            lock_path(Path::new("/x/state.sqlite")),
            PathBuf::from("/x/state.sqlite.lock")
        );
    }
}
