//! Where a run writes. Every output is compared with the input and with
//! every other output as files (device and inode, whatever the names), so a
//! run never destroys what it reads nor writes two outputs into one file.
//! Every output is created without following a symbolic link: a new file
//! under a random name beside it (`O_EXCL`, mode 0600), renamed into place,
//! so a link planted where an output goes can neither truncate nor chmod the
//! file it points to; a link there is refused outright.
//!
//! `/dev/stdout` and `/dev/stderr` (or `/dev/fd/1`, `/proc/self/fd/2`, …)
//! are written through the process's own descriptors, and a device or FIFO
//! named directly is written as it is: none of them is replaced, read or
//! opened twice (see [`Target`]), and a character device (a terminal,
//! `/dev/null`) takes any number of outputs.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::usage::UsageError;

mod target;

pub(crate) use target::{OutputFile, StoppedWaiting, Target};

/// One file a run writes, as a message names it.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    /// `--report leads.csv`, or what it is and where its name comes from.
    shown: String,
    /// The setting to change when it clashes.
    setting: &'static str,
    path: PathBuf,
    /// Written by this module (not the campaign database, which resolves
    /// links to find its one file).
    written_here: bool,
}

impl Output {
    /// The file a setting names, such as `--report`.
    pub(crate) fn named(setting: &'static str, path: &Path) -> Output {
        Output {
            shown: format!("{setting} {}", path.display()),
            setting,
            path: path.to_owned(),
            written_here: true,
        }
    }

    /// A file whose name comes from another setting's (`what`, named after
    /// `setting`'s `from`).
    pub(crate) fn derived(what: &str, path: PathBuf, setting: &'static str, from: &Path) -> Output {
        Output {
            shown: format!(
                "{what} {} (named after {setting} {})",
                path.display(),
                from.display()
            ),
            setting,
            path,
            written_here: true,
        }
    }

    /// The campaign database at `path` and the files SQLite and the run
    /// keep beside it.
    pub(crate) fn database(path: &Path) -> Vec<Output> {
        let real = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut files = vec![Output {
            shown: format!("--state {}", path.display()),
            setting: "--state",
            path: real.clone(),
            written_here: false,
        }];
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut side = real.clone().into_os_string();
            side.push(suffix);
            let side = PathBuf::from(side);
            files.push(Output {
                shown: format!(
                    "{}, which --state {} keeps beside it",
                    side.display(),
                    path.display()
                ),
                setting: "--state",
                path: side,
                written_here: false,
            });
        }
        files
    }
}

/// A file's identity: device and inode of an existing file, or of the
/// directory a new one would be made in, with its name.
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    Existing(u64, u64),
    New(u64, u64, OsString),
}

impl Identity {
    /// None for a character device, which any number of outputs may share,
    /// and for a path whose directory cannot be found (creating the file
    /// then fails with its own message).
    fn of(path: &Path) -> Option<Identity> {
        match fs::metadata(path) {
            Ok(meta) => Identity::of_existing(&meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let name = path.file_name()?;
                let dir = fs::metadata(directory_of(path)).ok()?;
                Some(Identity::New(dir.dev(), dir.ino(), name.to_owned()))
            }
            Err(_) => None,
        }
    }

    fn of_existing(meta: &fs::Metadata) -> Option<Identity> {
        (!meta.file_type().is_char_device()).then(|| Identity::Existing(meta.dev(), meta.ino()))
    }
}

/// The directory `path` is in: `.` for a bare name.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Refuses, before anything is written, an output that is the `input` (open
/// as `opened`) or another output, and one written here that is a symbolic
/// link, a directory or no place for a file. `outputs` come in the order
/// a clash is told: the second of two is the one to rename.
pub(crate) fn check(input: &Path, opened: &File, outputs: &[Output]) -> Result<(), UsageError> {
    for output in outputs.iter().filter(|o| o.written_here) {
        check_place(output)?;
    }
    let input_id = opened
        .metadata()
        .ok()
        .and_then(|meta| Identity::of_existing(&meta));
    let mut seen: Vec<(Identity, &Output)> = Vec::new();
    for output in outputs {
        let Some(id) = Identity::of(&output.path) else {
            continue;
        };
        if input_id.as_ref() == Some(&id) {
            return Err(UsageError(format!(
                "{} is the input {} itself: writing it would destroy the rows not read yet; \
                 give {} another path",
                output.shown,
                input.display(),
                output.setting
            )));
        }
        if let Some((_, first)) = seen.iter().find(|(other, _)| *other == id) {
            return Err(UsageError(format!(
                "{} and {} are the same file: the one would overwrite the other; give {} \
                 another path",
                first.shown, output.shown, output.setting
            )));
        }
        seen.push((id, output));
    }
    Ok(())
}

/// Refuses an output that is a symbolic link (other than the names of the
/// standard output and error), a directory, or a FIFO or socket that is not
/// the user's own.
fn check_place(output: &Output) -> Result<(), UsageError> {
    if Stream::named(&output.path).is_some() {
        return Ok(());
    }
    let Ok(meta) = fs::symlink_metadata(&output.path) else {
        return Ok(());
    };
    let kind = meta.file_type();
    let why = if kind.is_symlink() {
        let target = fs::read_link(&output.path).unwrap_or_default();
        format!(
            "is a symbolic link (to {}): a run never writes through a link, which could \
             overwrite the file it points to; remove the link or",
            target.display()
        )
    } else if kind.is_dir() {
        "is a directory;".to_owned()
    } else if kind.is_file() || kind.is_char_device() || kind.is_fifo() && owned(&meta) {
        return Ok(());
    } else {
        "is neither a regular file nor a device or FIFO of your own;".to_owned()
    };
    Err(UsageError(format!(
        "{} {why} give {} another path",
        output.shown, output.setting
    )))
}

fn owned(meta: &fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    meta.uid() == unsafe { libc::geteuid() }
}

/// The standard output or error, named as a path.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Out,
    Err,
}

impl Stream {
    /// The stream `path` names, if it names one.
    fn named(path: &Path) -> Option<Stream> {
        let name = path.as_os_str();
        let is = |names: [&str; 3]| names.iter().any(|n| name == OsStr::new(n));
        if is(["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"]) {
            Some(Stream::Out)
        } else if is(["/dev/stderr", "/dev/fd/2", "/proc/self/fd/2"]) {
            Some(Stream::Err)
        } else {
            None
        }
    }

    /// A descriptor of the process's own stream, sharing its offset: the
    /// name may lead to a file opened for appending, or to a pipe.
    fn open(self) -> io::Result<File> {
        let fd = match self {
            Stream::Out => io::stdout().as_fd().try_clone_to_owned(),
            Stream::Err => io::stderr().as_fd().try_clone_to_owned(),
        };
        fd.map(File::from)
    }
}

/// Whether `path` names a file in a directory, new or regular: one that is
/// replaced when written, and beside which other files can go (not the
/// standard output, a device or a FIFO).
pub(crate) fn is_file_path(path: &Path) -> bool {
    Stream::named(path).is_none()
        && match fs::metadata(path) {
            Ok(meta) => meta.is_file(),
            Err(_) => true,
        }
}

/// The file name `STEM` + `suffix` for an output named after another file
/// (`leads` → `leads-report.csv`). Every byte of the stem is kept: input
/// names that are not UTF-8 (`x\xff.csv`, `x\xfe.csv`) would all read as
/// `x\u{fffd}` in text, and their outputs would overwrite one another.
pub(crate) fn named_after(stem: &OsStr, suffix: &str) -> OsString {
    let mut name = stem.to_owned();
    name.push(suffix);
    name
}

/// The stem that [`named_after`] gave `name` with `suffix`, byte for byte;
/// `None` when `name` does not end in `suffix`.
pub(crate) fn stem_before<'a>(name: &'a OsStr, suffix: &str) -> Option<&'a OsStr> {
    use std::os::unix::ffi::OsStrExt as _;
    name.as_bytes()
        .strip_suffix(suffix.as_bytes())
        .map(OsStr::from_bytes)
}

/// A new empty file beside `path`, under a random hidden name, mode 0600,
/// made with `O_EXCL` so it can be no existing file or link.
pub(crate) fn temp_beside(path: &Path) -> io::Result<NamedTempFile> {
    let mut prefix = OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(directory_of(path))
}

fn refuse_link(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::other(format!(
            "{} is a symbolic link: not written through; remove the link or choose another path",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Opens (creating it, mode 0600) a file of our own that we read and
/// update in place, such as a lock or a budget log, never through a link;
/// what it holds is kept.
pub(crate) fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens the output at `path` for writing, never through a link: a new
/// empty file (mode 0600) takes the place of any file there; the standard
/// output or error, a device or a FIFO is opened as it is.
pub(crate) fn create(path: &Path) -> io::Result<File> {
    if let Some(stream) = Stream::named(path) {
        return stream.open();
    }
    refuse_link(path)?;
    if is_file_path(path) {
        return temp_beside(path)?.persist(path).map_err(|e| e.error);
    }
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Writes `bytes` as the whole of the output at `path`, as [`create`] does,
/// except that a file appears at `path` only once complete and on disk.
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_whole_mode(path, bytes, 0o600)
}

/// [`write_whole`] with the file's permission bits `mode`, set whatever
/// the umask, for an output others must read (the metrics file).
pub(crate) fn write_whole_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    if !is_file_path(path) {
        let mut file = create(path)?;
        return file.write_all(bytes).and_then(|()| file.flush());
    }
    refuse_link(path)?;
    let mut temp = temp_beside(path)?;
    if mode != 0o600 {
        use std::os::unix::fs::PermissionsExt as _;
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))?;
    }
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Checks `outputs` against an input `leads.csv` made in `dir`.
    fn check_in(dir: &Path, outputs: &[Output]) -> Result<(), String> {
        let input = dir.join("leads.csv");
        fs::write(&input, "LeadId\n").unwrap();
        let opened = File::open(&input).unwrap();
        check(&input, &opened, outputs).map_err(|e| e.0)
    }

    #[test]
    fn outputs_are_compared_as_files_not_names() {
        let dir = tempfile::tempdir().unwrap();
        let named = |setting, path: PathBuf| Output::named(setting, &path);

        let same = named("--report", dir.path().join(".").join("leads.csv"));
        let msg = check_in(dir.path(), &[same]).unwrap_err();
        assert!(
            msg.contains("is the input") && msg.contains("--report"),
            "{msg}"
        );

        // Two new files, one spelt through `..`.
        let a = named("--report", dir.path().join("r.csv"));
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let b = named("--summary-json", sub.join("..").join("r.csv"));
        let msg = check_in(dir.path(), &[a.clone(), b]).unwrap_err();
        assert!(msg.contains("same file") && msg.ends_with("give --summary-json another path"));

        let other = named("--summary-json", dir.path().join("s.json"));
        check_in(dir.path(), &[a.clone(), other]).unwrap();
        let null = named("--summary-json", "/dev/null".into());
        check_in(dir.path(), &[named("--report", "/dev/null".into()), null]).unwrap();
    }

    #[test]
    fn the_files_beside_the_state_are_outputs_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut outputs = Output::database(&dir.path().join("st.sqlite"));
        outputs.push(Output::named("--report", &dir.path().join("st.sqlite-wal")));
        let msg = check_in(dir.path(), &outputs).unwrap_err();
        assert!(msg.contains("keeps beside it"), "{msg}");
    }

    #[test]
    fn a_link_or_a_directory_is_no_place_for_an_output() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("r.csv");
        std::os::unix::fs::symlink(dir.path().join("victim"), &link).unwrap();
        let msg = check_in(dir.path(), &[Output::named("--report", &link)]).unwrap_err();
        assert!(msg.contains("symbolic link"), "{msg}");
        assert!(create(&link).is_err());
        assert!(write_whole(&link, b"x").is_err());
        assert!(!dir.path().join("victim").exists());
        let msg = check_in(dir.path(), &[Output::named("--report", dir.path())]).unwrap_err();
        assert!(msg.contains("is a directory"), "{msg}");
    }

    #[test]
    fn an_output_replaces_the_file_there_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        fs::write(&path, "old and long").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let hard = dir.path().join("hard.json");
        fs::hard_link(&path, &hard).unwrap();
        write_whole(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode(&path), 0o600);
        // Another name of the old file is left alone.
        assert_eq!(fs::read_to_string(&hard).unwrap(), "old and long");
        let mut file = create(&path).unwrap();
        file.write_all(b"row").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "row");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "temporary files left: {left:?}");
    }

    #[test]
    fn devices_and_the_standard_streams_are_written_as_they_are() {
        assert!(!is_file_path(Path::new("/dev/null")));
        assert!(!is_file_path(Path::new("/dev/stdout")));
        assert!(is_file_path(Path::new("new.csv")));
        write_whole(Path::new("/dev/null"), b"x").unwrap();
        create(Path::new("/dev/stderr")).unwrap();
    }
}
