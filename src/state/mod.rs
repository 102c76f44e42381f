//! Campaign state: the durable per-lead record that lets a re-run do exactly
//! the remaining work, and never email a lead twice after a crash.
//!
//! One SQLite file (WAL, `synchronous=FULL`) holds, per campaign, tenant,
//! lead and portal, the lead's last state: `linked`, `reviewed` (its email
//! written to an outbox, not sent), `sending`, `sent`, `failed` or
//! `in_doubt`. Runs of different campaigns share the file; a run claims its
//! campaign, and readers never wait. Every state change is its own committed transaction, so what
//! the store says is what happened up to the moment of a crash. `sending` is
//! written before the SMTP DATA step and `sent` only after the server took the
//! message: a lead left in `sending` by a crash may or may not have its email,
//! and [`StateStore::recover_in_doubt`] marks it so at the start of the next
//! run.
//!
//! The store records; it does not decide. What a re-run skips, re-mints or
//! re-sends is the pipeline's policy.

mod campaigns;
mod entry;
mod file;
mod schema;
mod store;

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

pub use campaigns::{CampaignOverview, Pruning};
pub use entry::{LeadEntry, LeadState, STOPPED_WHILE_SENDING};
pub use file::{default_path_from, default_path_setting, make_directory, APPLICATION_ID};
pub use schema::SCHEMA_VERSION;
pub use store::StateStore;

/// The campaign whose rows to retry were last written to `file`, as the
/// state file at `state` records it; `None` when the file is not a retry
/// file, or the state file cannot say. Opens the state file read-only and
/// changes nothing (a run opens it properly later, and reports any fault).
pub fn retry_file_campaign(state: &Path, file: &Path) -> Option<String> {
    let file = std::fs::canonicalize(file).ok()?;
    if !state.exists() {
        return None;
    }
    let conn = rusqlite::Connection::open_with_flags(
        state,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.query_row(
        "SELECT campaign FROM retry_files WHERE path = ?1",
        [file.to_string_lossy()],
        |r| r.get(0),
    )
    .ok()
}

/// Why the state store could not be opened or used.
#[derive(thiserror::Error, Debug)]
pub enum StateError {
    /// The file is open under another of its names (a hard link): SQLite
    /// keeps its write-ahead log beside each name, so two names open at
    /// once would each have a log of their own for one database.
    #[error(
        "the state file {} is in use under another name (a hard link to the same file) \
         by another lsq-dispatch process: one state file is opened under one name at a \
         time; wait for that run to finish, or pass the same --state path as it does",
        path.display()
    )]
    OtherName {
        /// The state file, as this process names it.
        path: PathBuf,
    },
    /// Another run, in this process or another, holds the campaign.
    #[error(
        "campaign {campaign} is being run by another lsq-dispatch process (state file \
         {}): wait for it to finish, or pass another --campaign",
        path.display()
    )]
    Busy {
        /// The state file.
        path: PathBuf,
        /// The campaign.
        campaign: String,
    },
    /// The directory of the state file cannot be made: a file in the way,
    /// say, or no permission.
    #[error(
        "cannot make the directory of the state file {} ({error}): {}",
        path.display(),
        directory_advice(setting)
    )]
    Directory {
        /// The state file.
        path: PathBuf,
        /// The setting that chose the path: `--state`, `XDG_STATE_HOME`,
        /// `HOME`.
        setting: &'static str,
        /// The operating system's answer, shown in the message (not a
        /// source, so it is not shown twice).
        error: std::io::Error,
    },
    /// The file is not an lsq-dispatch state file.
    #[error(
        "{} is not an lsq-dispatch state file ({detail}); it was left untouched: \
         pass another --state",
        path.display()
    )]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What the file looks like instead.
        detail: String,
    },
    /// The file is ours but cannot be read as a state store.
    #[error(
        "the state file {} is damaged or unreadable ({detail}); it was left \
         untouched: move it aside to keep it, or pass another --state",
        path.display()
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The file, its lock or its directory could not be created or read.
    #[error("cannot use the state file {}: {error}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The operating system's answer, shown in the message (not a
        /// source, so it is not shown twice).
        error: std::io::Error,
    },
    /// `mark_sent` or `mark_in_doubt` for a lead that is not in `sending`
    /// with that Message-ID:
    /// a bug in the caller, reported rather than recorded.
    #[error(
        "lead {lead_id} (portal {portal_id}, campaign {campaign}) cannot leave \
         `sending` with Message-ID {message_id}: it is {found}"
    )]
    NotSending {
        /// The campaign.
        campaign: String,
        /// The lead.
        lead_id: String,
        /// The portal.
        portal_id: String,
        /// The Message-ID passed to `mark_sent` or `mark_in_doubt`.
        message_id: String,
        /// What the store holds for the lead instead.
        found: String,
    },
    /// Any other SQLite failure, shown in the message (not a source, so it
    /// is not shown twice).
    #[error("state database error: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> StateError {
        StateError::Sqlite(e)
    }
}

/// What to do when the directory of a state file chosen by `setting`
/// cannot be made.
fn directory_advice(setting: &str) -> String {
    match setting {
        "--state" => "pass a --state path in a directory you can write".to_owned(),
        _ => format!(
            "the state file is found under {setting}: point {setting} at a directory you \
             can write, or pass --state PATH"
        ),
    }
}

/// Names one lead of one campaign on one portal for one tenant: the store's
/// key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeadKey<'a> {
    /// The campaign the run belongs to.
    pub campaign: &'a str,
    /// The tenant's fingerprint ([`crate::tenant::Tenant::fingerprint`]).
    pub tenant: &'a str,
    /// The normalised LeadId.
    pub lead_id: &'a str,
    /// The portal the link is for.
    pub portal_id: &'a str,
}

/// The file at `path` is not ours; `detail` says what it looks like.
fn foreign(path: &Path, detail: String) -> StateError {
    StateError::Foreign {
        path: path.to_owned(),
        detail,
    }
}

/// Maps SQLite's "this is not a database" answers on a file of ours to
/// [`StateError::Corrupt`]; other failures stay what they are.
fn damaged(path: &Path, e: rusqlite::Error) -> StateError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StateError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        },
        _ => StateError::Sqlite(e),
    }
}
