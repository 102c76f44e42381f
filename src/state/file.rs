//! The state file on disk, before SQLite sees it: where it lives by default,
//! its real path, the locks on it that keep runs of one campaign (and two
//! names of the file) apart while letting other campaigns and readers in, its
//! permissions, and the look at its header that tells our file from someone
//! else's.
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
        error: source,
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
            error: source,
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
            error: source,
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
                error: source,
            }),
        _ => Ok(()),
    }
}

/// The real path of a state file: symbolic links resolved, so that two
/// spellings of one file (a symlink, `..`) share one set of locks. A file
/// that does not exist yet is named through its real parent directory.
pub(super) fn real_path(path: &Path) -> Result<PathBuf, StateError> {
    let io_err = |source| StateError::Io {
        path: path.to_owned(),
        error: source,
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

/// Where the campaign locks live in the database file: far above the bytes
/// SQLite locks (from 0x4000_0000 up, 1 GiB) and below `off_t`'s limit.
const CAMPAIGN_LOCKS: i64 = 1 << 60;
/// Where the locks on the file's names live, above the campaign locks.
const NAME_LOCKS: i64 = 1 << 61;
/// How many bytes each set of locks spans.
const LOCK_SPAN: i64 = 1 << 60;

/// The database file itself, open for as long as a store uses it, carrying
/// the store's locks. Locks on the file (not on a file named after the
/// path) belong to its inode, so every name of one file, hard links
/// included, shares them.
///
/// Each campaign a store runs is claimed with an exclusive
/// open-file-description lock on one byte, chosen by the campaign's name:
/// two runs of one campaign exclude each other, runs of different campaigns
/// do not. Each store also holds a shared lock on one byte chosen by the
/// name it opened the file by, and a store opening it by another name while
/// one is held is turned away: SQLite keeps its write-ahead log and its
/// index beside each name (`NAME-wal`, `NAME-shm`), which a hard link does
/// not link, so one database open under two names at once would have two
/// logs, and lose or corrupt writes.
///
/// These are record locks in a range no SQLite lock reaches, so they never
/// meet SQLite's own (POSIX) locks on the same file; and, belonging to this
/// open file description, they are not dropped when SQLite closes a
/// descriptor of its own. They go with this file (or with the process,
/// after a crash, so a stale lock never blocks the next run).
#[derive(Debug)]
pub(super) struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Opens the database file at `path` (a real path, of an existing file)
    /// and takes the lock of its name, without waiting; another name of the
    /// file in use gives [`StateError::OtherName`].
    pub(super) fn take(path: &Path) -> Result<FileLock, StateError> {
        let file = crate::paths::open_private(path).map_err(|source| StateError::Io {
            path: path.to_owned(),
            error: source,
        })?;
        let lock = FileLock {
            file,
            path: path.to_owned(),
        };
        let name = lock.name_byte();
        let mut range = byte_range(libc::F_RDLCK, name, 1);
        // SAFETY: the descriptor is valid and `range` outlives the call.
        let held = lock.retrying(|fd| unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &range) })?;
        // Taken first, looked for after: of two names opened at once, the
        // later one, or both, are turned away, never neither.
        let below = byte_range(libc::F_WRLCK, NAME_LOCKS, name - NAME_LOCKS);
        let above = byte_range(libc::F_WRLCK, name + 1, NAME_LOCKS + LOCK_SPAN - name - 1);
        let mut other_name = !held;
        // A zero length would mean "to the end of the file": not probed.
        for probe in [below, above].into_iter().filter(|p| p.l_len > 0) {
            range = probe;
            // SAFETY: the descriptor is valid and `range` outlives the call.
            lock.retrying(|fd| unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut range) })?;
            other_name |= range.l_type != libc::F_UNLCK as libc::c_short;
        }
        if other_name {
            return Err(StateError::OtherName {
                path: path.to_owned(),
            });
        }
        Ok(lock)
    }

    /// Whether `path` still names the file this lock is on, and how many
    /// names the file has.
    pub(super) fn names(&self, path: &Path) -> Result<(bool, u64), StateError> {
        use std::os::unix::fs::MetadataExt;
        let io_err = |source| StateError::Io {
            path: path.to_owned(),
            error: source,
        };
        let held = self.file.metadata().map_err(io_err)?;
        let named = fs::metadata(path).map_err(io_err)?;
        let same = (held.dev(), held.ino()) == (named.dev(), named.ino());
        Ok((same, held.nlink()))
    }

    /// Claims `campaign` for this lock's holder, without waiting: `false`
    /// when another holder has it.
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

    /// The byte that stands for the name this file was opened by.
    fn name_byte(&self) -> i64 {
        NAME_LOCKS + spread(self.path.as_os_str().as_encoded_bytes())
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
                        error: err,
                    })
                }
            }
        }
    }
}

/// The exclusive lock on the one byte of the database file that stands for
/// `campaign`.
fn campaign_byte(campaign: &str) -> libc::flock {
    byte_range(
        libc::F_WRLCK,
        CAMPAIGN_LOCKS + spread(campaign.as_bytes()),
        1,
    )
}

/// An offset below [`LOCK_SPAN`] picked by `name`'s SHA-256.
fn spread(name: &[u8]) -> i64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, name);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    (u64::from_be_bytes(first) % LOCK_SPAN as u64) as i64
}

/// A lock of `kind` on `len` bytes from `start`.
fn byte_range(kind: libc::c_int, start: i64, len: i64) -> libc::flock {
    // SAFETY: an all-zero `flock` is a valid value of the plain C struct.
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = kind as libc::c_short;
    range.l_whence = libc::SEEK_SET as libc::c_short;
    range.l_start = start as libc::off_t;
    range.l_len = len as libc::off_t;
    range
}

/// Which setting chose the default state file ([`default_path_from`] with
/// this process's environment), for messages: `XDG_STATE_HOME` when it is
/// set to an absolute path, else `HOME`.
pub fn default_path_setting() -> &'static str {
    match std::env::var_os("XDG_STATE_HOME") {
        Some(dir) if Path::new(&dir).is_absolute() => "XDG_STATE_HOME",
        _ => "HOME",
    }
}

/// Creates the missing directories of the state file at `path` (mode 0700),
/// before anything else is kept beside it; `setting` is what chose the path
/// (`--state`, `XDG_STATE_HOME`), for the message when they cannot be made.
pub fn make_directory(path: &Path, setting: &'static str) -> Result<(), StateError> {
    create_parent_dirs(path).map_err(|e| match e {
        StateError::Io { error, .. } => StateError::Directory {
            path: path.to_owned(),
            setting,
            error,
        },
        other => other,
    })
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
}
