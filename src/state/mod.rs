//! Campaign state: the durable per-lead record that lets a re-run do exactly
//! the remaining work, and never email a lead twice after a crash.
//!
//! One SQLite file (WAL, `synchronous=FULL`) holds, per campaign, lead and
//! portal, the lead's last state: `linked`, `sending`, `sent`, `failed` or
//! `in_doubt`. Every state change is its own committed transaction, so what
//! the store says is what happened up to the moment of a crash. `sending` is
//! written before the SMTP DATA step and `sent` only after the server took the
//! message: a lead left in `sending` by a crash may or may not have its email,
//! and [`StateStore::recover_in_doubt`] marks it so at the start of the next
//! run.
//!
//! The store records; it does not decide. What a re-run skips, re-mints or
//! re-sends is the pipeline's policy.

mod file;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use crate::report::{Record, RowError, Status};
use crate::secret::Secret;

pub use file::{default_path_from, APPLICATION_ID};

use file::Header;

/// Version of the schema below, kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for a reader (say, `sqlite3` on the file)
/// before giving up. Runs never wait for each other: the lock turns a second
/// run away at once.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
    CREATE TABLE leads (
        campaign   TEXT NOT NULL,
        lead_id    TEXT NOT NULL,
        portal_id  TEXT NOT NULL,
        row        INTEGER NOT NULL,
        email      TEXT NOT NULL DEFAULT '',
        attempts   INTEGER NOT NULL DEFAULT 0,
        state      TEXT NOT NULL
                   CHECK (state IN ('linked', 'sending', 'sent', 'failed', 'in_doubt')),
        auth_key   TEXT,
        link       TEXT,
        expires_at TEXT,
        message_id TEXT,
        sent_at    TEXT,
        reason     TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (campaign, lead_id, portal_id)
    );
    CREATE INDEX leads_by_row ON leads (campaign, row);
";

/// Why the state store could not be opened or used.
#[derive(thiserror::Error, Debug)]
pub enum StateError {
    /// Another store, in this process or another, holds the file's lock.
    #[error(
        "the state file {} is in use by another lsq-dispatch run: wait for it to \
         finish, or pass another --state",
        path.display()
    )]
    Locked {
        /// The state file.
        path: PathBuf,
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
    #[error("cannot use the state file {}: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// `mark_sent` for a lead that is not in `sending` with that Message-ID:
    /// a bug in the caller, reported rather than recorded.
    #[error(
        "lead {lead_id} (portal {portal_id}, campaign {campaign}) cannot be marked \
         sent with Message-ID {message_id}: it is {found}"
    )]
    NotSending {
        /// The campaign.
        campaign: String,
        /// The lead.
        lead_id: String,
        /// The portal.
        portal_id: String,
        /// The Message-ID passed to `mark_sent`.
        message_id: String,
        /// What the store holds for the lead instead.
        found: String,
    },
    /// Any other SQLite failure.
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Names one lead of one campaign on one portal: the store's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeadKey<'a> {
    /// The campaign the run belongs to.
    pub campaign: &'a str,
    /// The normalised LeadId.
    pub lead_id: &'a str,
    /// The portal the link is for.
    pub portal_id: &'a str,
}

/// Where a lead stands in its campaign.
#[derive(Clone, Debug, PartialEq)]
pub enum LeadState {
    /// A login link was made.
    Linked {
        /// The lead's auth key; `None` once it expired and was cleared.
        auth_key: Option<Secret>,
        /// When the key stops working.
        expires_at: DateTime<Utc>,
    },
    /// The email was being handed to the SMTP server.
    Sending {
        /// The Message-ID of the email.
        message_id: String,
    },
    /// The SMTP server accepted the email.
    Sent {
        /// The Message-ID of the email.
        message_id: String,
        /// When the server accepted it.
        sent_at: DateTime<Utc>,
    },
    /// The lead could not be completed.
    Failed {
        /// Why, as written in the report.
        reason: String,
    },
    /// A run stopped while sending: the email may or may not have arrived.
    InDoubt {
        /// The Message-ID of the email, to look for in the mail server's log.
        message_id: String,
    },
}

impl LeadState {
    /// Every state name, as stored and as keyed in [`StateStore::counts`].
    pub const NAMES: [&'static str; 5] = ["linked", "sending", "sent", "failed", "in_doubt"];

    /// The state's name, as stored and as keyed in [`StateStore::counts`].
    pub fn name(&self) -> &'static str {
        match self {
            LeadState::Linked { .. } => "linked",
            LeadState::Sending { .. } => "sending",
            LeadState::Sent { .. } => "sent",
            LeadState::Failed { .. } => "failed",
            LeadState::InDoubt { .. } => "in_doubt",
        }
    }

    /// The Message-ID of the lead's last email, if the state carries one.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            LeadState::Sending { message_id }
            | LeadState::Sent { message_id, .. }
            | LeadState::InDoubt { message_id } => Some(message_id),
            LeadState::Linked { .. } | LeadState::Failed { .. } => None,
        }
    }
}

/// Everything the store holds about one lead.
#[derive(Clone, Debug)]
pub struct LeadEntry {
    /// The campaign.
    pub campaign: String,
    /// The normalised LeadId.
    pub lead_id: String,
    /// The portal.
    pub portal_id: String,
    /// The input line of the lead in the run that last touched it.
    pub row: u64,
    /// The recipient of the last email; empty when none was sent.
    pub email: String,
    /// API calls made for the lead's last link, retries included.
    pub attempts: u32,
    /// Where the lead stands.
    pub state: LeadState,
    /// The login link built from the key; stored with the key and cleared
    /// with it.
    pub link: Option<String>,
    /// When the lead's last key expires (kept after the key is cleared), in
    /// every state, so the pipeline can tell whether `link` is still good.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the entry last changed.
    pub updated_at: DateTime<Utc>,
}

impl LeadEntry {
    /// The entry as a report line, for `status --export`. A `sending` entry
    /// found outside a run is reported `in_doubt`, which is what it is.
    pub fn to_record(&self) -> Record {
        let (status, error) = match &self.state {
            LeadState::Linked { .. } => (Status::Linked, None),
            LeadState::Sent { .. } => (Status::Sent, None),
            LeadState::Failed { reason } => {
                (Status::Failed, Some(RowError::Earlier(reason.clone())))
            }
            LeadState::Sending { .. } | LeadState::InDoubt { .. } => (
                Status::InDoubt,
                Some(RowError::Earlier(
                    "a run stopped while sending this email: it may or may not have \
                     been delivered"
                        .to_owned(),
                )),
            ),
        };
        Record {
            row: self.row,
            lead_id: self.lead_id.clone(),
            portal_id: self.portal_id.clone(),
            status,
            portal_url: self.link.clone().unwrap_or_default(),
            expires_at: self.expires_at,
            attempts: self.attempts,
            email: self.email.clone(),
            message_id: self.state.message_id().unwrap_or_default().to_owned(),
            error,
        }
    }
}

/// The campaign state file, open and locked for this store's life.
///
/// `Send`, so the pipeline can keep it behind a mutex or move it into
/// `spawn_blocking`; not `Sync`, as one SQLite connection serves one thread at
/// a time.
pub struct StateStore {
    // Declared before `_lock` so the connection closes (and checkpoints its
    // WAL) before the lock is released: fields drop in declaration order.
    conn: Connection,
    _lock: File,
    path: PathBuf,
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const ENTRY_COLUMNS: &str = "campaign, lead_id, portal_id, row, email, attempts, state, \
     auth_key, link, expires_at, message_id, sent_at, reason, updated_at";

impl StateStore {
    /// Opens the state file at `path`, creating it (mode 0600, parents 0700)
    /// when it is missing or empty, and locks it for this store's life.
    ///
    /// A file that is not an lsq-dispatch state file is refused with
    /// [`StateError::Foreign`] or [`StateError::Corrupt`] and left exactly as
    /// it was; a file another store holds gives [`StateError::Locked`] at once.
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        // Look before locking, so that a foreign file does not even get a
        // lock file put beside it.
        match file::read_header(path)? {
            Some(Header::Foreign(detail)) => return Err(foreign(path, detail)),
            Some(_) => {}
            None => file::create_parent_dirs(path)?,
        }
        let lock = file::lock(path)?;
        // Look again under the lock: the file may have changed meanwhile.
        let fresh = match file::read_header(path)? {
            Some(Header::Foreign(detail)) => return Err(foreign(path, detail)),
            Some(Header::Ours) => false,
            Some(Header::Empty) => true,
            None => {
                file::create_private(path)?;
                true
            }
        };
        file::make_private(path)?;

        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| damaged(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if fresh {
            initialise(&conn)?;
        } else {
            check(&conn, path)?;
        }
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::Io {
                path: path.to_owned(),
                source: std::io::Error::other(format!(
                    "SQLite cannot use a write-ahead log here (journal mode stays {mode}); \
                     put the state file on a local file system"
                )),
            });
        }
        // FULL makes every commit fsync the log: `sending` must be on disk
        // before the email goes out.
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(StateStore {
            conn,
            _lock: lock,
            path: path.to_owned(),
        })
    }

    /// `$XDG_STATE_HOME/lsq-dispatch/state.sqlite`, else the platform's state
    /// directory, else `~/.local/state/lsq-dispatch/state.sqlite`. The
    /// directories are created by [`StateStore::open`], not here.
    pub fn default_path() -> PathBuf {
        default_path_from(
            std::env::var_os("XDG_STATE_HOME").as_deref(),
            dirs::state_dir(),
            dirs::home_dir(),
        )
    }

    /// The state file this store uses.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lead's entry, or `None` if the campaign never touched it.
    pub fn get(&self, key: &LeadKey) -> Result<Option<LeadEntry>, StateError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM leads \
             WHERE campaign = ?1 AND lead_id = ?2 AND portal_id = ?3"
        );
        let raw = self
            .conn
            .query_row(
                &sql,
                params![key.campaign, key.lead_id, key.portal_id],
                RawEntry::read,
            )
            .optional()?;
        raw.map(|r| r.into_entry(&self.path)).transpose()
    }

    /// Records a fresh login link for the lead, replacing whatever was there.
    /// `attempts` is stored as given: the API calls this link took.
    pub fn mark_linked(
        &self,
        key: &LeadKey,
        row: u64,
        auth_key: &Secret,
        link: &str,
        expires_at: DateTime<Utc>,
        attempts: u32,
    ) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO leads (campaign, lead_id, portal_id, row, attempts, state, \
                                auth_key, link, expires_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'linked', ?6, ?7, ?8, ?9) \
             ON CONFLICT (campaign, lead_id, portal_id) DO UPDATE SET \
                row = excluded.row, attempts = excluded.attempts, state = 'linked', \
                auth_key = excluded.auth_key, link = excluded.link, \
                expires_at = excluded.expires_at, message_id = NULL, sent_at = NULL, \
                reason = NULL, updated_at = excluded.updated_at",
            params![
                key.campaign,
                key.lead_id,
                key.portal_id,
                row,
                attempts,
                auth_key.expose(),
                link,
                timestamp(&expires_at),
                timestamp(&Utc::now()),
            ],
        )?;
        Ok(())
    }

    /// Records that the lead's email, with this Message-ID, is about to be
    /// handed to the SMTP server. Call it before the DATA step: when it
    /// returns, the record is on disk, so a crash from here on leaves the lead
    /// in doubt rather than forgotten. The link and key stay as they were.
    pub fn mark_sending(
        &self,
        key: &LeadKey,
        row: u64,
        email: &str,
        message_id: &str,
    ) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO leads (campaign, lead_id, portal_id, row, email, state, \
                                message_id, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'sending', ?6, ?7) \
             ON CONFLICT (campaign, lead_id, portal_id) DO UPDATE SET \
                row = excluded.row, email = excluded.email, state = 'sending', \
                message_id = excluded.message_id, sent_at = NULL, reason = NULL, \
                updated_at = excluded.updated_at",
            params![
                key.campaign,
                key.lead_id,
                key.portal_id,
                row,
                email,
                message_id,
                timestamp(&Utc::now()),
            ],
        )?;
        Ok(())
    }

    /// Records that the SMTP server accepted the lead's email. Only a lead in
    /// `sending` with the same Message-ID can become `sent`; anything else is
    /// a bug in the caller and gives [`StateError::NotSending`].
    pub fn mark_sent(&self, key: &LeadKey, message_id: &str) -> Result<(), StateError> {
        let now = timestamp(&Utc::now());
        let changed = self.conn.execute(
            "UPDATE leads SET state = 'sent', sent_at = ?5, updated_at = ?5 \
             WHERE campaign = ?1 AND lead_id = ?2 AND portal_id = ?3 \
               AND state = 'sending' AND message_id = ?4",
            params![key.campaign, key.lead_id, key.portal_id, message_id, now],
        )?;
        if changed == 1 {
            return Ok(());
        }
        let found = match self.get(key)? {
            None => "not recorded in the campaign".to_owned(),
            Some(entry) => match entry.state.message_id() {
                Some(id) => format!("{} with Message-ID {id}", entry.state.name()),
                None => entry.state.name().to_owned(),
            },
        };
        Err(StateError::NotSending {
            campaign: key.campaign.to_owned(),
            lead_id: key.lead_id.to_owned(),
            portal_id: key.portal_id.to_owned(),
            message_id: message_id.to_owned(),
            found,
        })
    }

    /// Records that the lead failed, and why. Its link and key, if any, are
    /// kept: a failed email does not spoil a link that is still valid.
    pub fn mark_failed(
        &self,
        key: &LeadKey,
        row: u64,
        reason: &str,
        attempts: u32,
    ) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO leads (campaign, lead_id, portal_id, row, attempts, state, \
                                reason, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'failed', ?6, ?7) \
             ON CONFLICT (campaign, lead_id, portal_id) DO UPDATE SET \
                row = excluded.row, attempts = excluded.attempts, state = 'failed', \
                reason = excluded.reason, message_id = NULL, sent_at = NULL, \
                updated_at = excluded.updated_at",
            params![
                key.campaign,
                key.lead_id,
                key.portal_id,
                row,
                attempts,
                reason,
                timestamp(&Utc::now()),
            ],
        )?;
        Ok(())
    }

    /// Turns every `sending` lead of the campaign into `in_doubt` and returns
    /// how many there were. Call it at the start of a run, under the lock:
    /// no email of this campaign is in flight then, so a `sending` lead is one
    /// a crash interrupted.
    pub fn recover_in_doubt(&self, campaign: &str) -> Result<u64, StateError> {
        let changed = self.conn.execute(
            "UPDATE leads SET state = 'in_doubt', updated_at = ?2 \
             WHERE campaign = ?1 AND state = 'sending'",
            params![campaign, timestamp(&Utc::now())],
        )?;
        Ok(changed as u64)
    }

    /// Forgets every key and link, in all campaigns, that expired by `now`,
    /// and returns how many leads lost theirs. The expiry time is kept.
    pub fn clear_expired_keys(&self, now: DateTime<Utc>) -> Result<u64, StateError> {
        let changed = self.conn.execute(
            "UPDATE leads SET auth_key = NULL, link = NULL, updated_at = ?2 \
             WHERE expires_at <= ?1 AND (auth_key IS NOT NULL OR link IS NOT NULL)",
            params![timestamp(&now), timestamp(&Utc::now())],
        )?;
        Ok(changed as u64)
    }

    /// The number of the campaign's leads in each state, every state name
    /// present (zero included) so a summary always has the same lines.
    pub fn counts(&self, campaign: &str) -> Result<BTreeMap<String, u64>, StateError> {
        let mut counts: BTreeMap<String, u64> = LeadState::NAMES
            .iter()
            .map(|name| ((*name).to_owned(), 0))
            .collect();
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM leads WHERE campaign = ?1 GROUP BY state")?;
        let rows = stmt.query_map([campaign], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
        })?;
        for row in rows {
            let (state, n) = row?;
            counts.insert(state, n);
        }
        Ok(counts)
    }

    /// The campaign's entries in input order.
    pub fn entries(&self, campaign: &str) -> Result<Vec<LeadEntry>, StateError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM leads WHERE campaign = ?1 \
             ORDER BY row, lead_id, portal_id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let raws = stmt.query_map([campaign], RawEntry::read)?;
        raws.map(|raw| raw?.into_entry(&self.path)).collect()
    }

    /// The names of all campaigns in the file, sorted.
    pub fn campaigns(&self) -> Result<Vec<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT campaign FROM leads ORDER BY campaign")?;
        let names = stmt.query_map([], |r| r.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    }
}

/// `lsq-dispatch status`: prints the campaign counts (and exports) and
/// returns the exit code.
pub fn execute(args: &crate::cli::StatusArgs) -> anyhow::Result<u8> {
    let path = args.state.clone().unwrap_or_else(StateStore::default_path);
    println!(
        "{}",
        status(&path, args.campaign.as_deref(), args.export.as_deref())?
    );
    Ok(0)
}

/// `lsq-dispatch status`: counts by state for one campaign (or every
/// campaign), and with `export` the campaign's leads as a report CSV.
pub fn status(
    path: &Path,
    campaign: Option<&str>,
    export: Option<&Path>,
) -> anyhow::Result<String> {
    if !path.exists() {
        anyhow::bail!(
            "no state file at {}: no campaign has run with it yet (or pass --state)",
            path.display()
        );
    }
    let store = StateStore::open(path)?;
    let campaigns = match campaign {
        Some(name) => vec![name.to_owned()],
        None => store.campaigns()?,
    };
    let mut out = String::new();
    if campaigns.is_empty() {
        out.push_str(&format!("no campaign in {}\n", path.display()));
    }
    for name in &campaigns {
        let counts = store.counts(name)?;
        let total: u64 = counts.values().sum();
        let parts: Vec<String> = counts
            .iter()
            .map(|(state, n)| format!("{state} {n}"))
            .collect();
        out.push_str(&format!("{name}: {total} leads: {}\n", parts.join(", ")));
    }
    if let Some(target) = export {
        let Some(name) = campaign else {
            anyhow::bail!("--export needs --campaign NAME");
        };
        let mut writer = crate::report::ReportWriter::create(target)?;
        for entry in store.entries(name)? {
            writer.write(&entry.to_record())?;
        }
        out.push_str(&format!(
            "exported campaign {name} to {}\n",
            target.display()
        ));
    }
    Ok(out.trim_end().to_owned())
}

/// The campaign name a run gets when `--campaign` is not given: the input
/// file's name without its extension, so `/x/leads.csv` is `leads` and
/// re-running the same file resumes the same campaign.
pub fn default_campaign(input: &Path) -> String {
    match input.file_stem() {
        Some(stem) if !stem.is_empty() => stem.to_string_lossy().into_owned(),
        _ => "default".to_owned(),
    }
}

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

/// Lays out a new state file. The marker, the schema and the version go in
/// one transaction, before the switch to WAL, so they reach the main file
/// together: a crash leaves either an empty file or a complete one.
fn initialise(conn: &Connection) -> Result<(), StateError> {
    let tx = conn.unchecked_transaction()?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Checks a file of ours before anything writes to it.
fn check(conn: &Connection, path: &Path) -> Result<(), StateError> {
    let corrupt = |detail: String| StateError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| damaged(path, e))?;
    if version > SCHEMA_VERSION {
        return Err(corrupt(format!(
            "it was written by a newer lsq-dispatch (schema version {version}, this one \
             knows {SCHEMA_VERSION}); upgrade lsq-dispatch"
        )));
    }
    if version < SCHEMA_VERSION {
        return Err(corrupt(format!("unknown schema version {version}")));
    }
    // quick_check reads every page: a damaged file is refused here, before
    // any API call, not halfway through a run.
    let verdict: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|e| damaged(path, e))?;
    if verdict != "ok" {
        return Err(corrupt(verdict));
    }
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'leads')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| damaged(path, e))?;
    if !has_table {
        return Err(corrupt("the leads table is missing".into()));
    }
    Ok(())
}

/// Timestamps are stored as RFC 3339 UTC text with a fixed nine-digit
/// fraction: readable in `sqlite3`, exact on the way back, and ordered as
/// text, which `clear_expired_keys` relies on.
fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// One `leads` row as SQLite gives it, before its columns are checked to fit
/// its state.
struct RawEntry {
    campaign: String,
    lead_id: String,
    portal_id: String,
    row: u64,
    email: String,
    attempts: u32,
    state: String,
    auth_key: Option<String>,
    link: Option<String>,
    expires_at: Option<String>,
    message_id: Option<String>,
    sent_at: Option<String>,
    reason: Option<String>,
    updated_at: String,
}

impl RawEntry {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
        Ok(RawEntry {
            campaign: r.get(0)?,
            lead_id: r.get(1)?,
            portal_id: r.get(2)?,
            row: r.get(3)?,
            email: r.get(4)?,
            attempts: r.get(5)?,
            state: r.get(6)?,
            auth_key: r.get(7)?,
            link: r.get(8)?,
            expires_at: r.get(9)?,
            message_id: r.get(10)?,
            sent_at: r.get(11)?,
            reason: r.get(12)?,
            updated_at: r.get(13)?,
        })
    }

    fn into_entry(self, path: &Path) -> Result<LeadEntry, StateError> {
        let bad = |what: &str| StateError::Corrupt {
            path: path.to_owned(),
            detail: format!(
                "lead {} of campaign {} in state {} has {what}",
                self.lead_id, self.campaign, self.state
            ),
        };
        let time = |text: &str, what: &str| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| bad(&format!("an unreadable {what} {text:?}")))
        };
        let expires_at = self
            .expires_at
            .as_deref()
            .map(|t| time(t, "expires_at"))
            .transpose()?;
        let message_id = || self.message_id.clone().ok_or_else(|| bad("no message_id"));
        let state = match self.state.as_str() {
            "linked" => LeadState::Linked {
                auth_key: self.auth_key.clone().map(Secret::new),
                expires_at: expires_at.ok_or_else(|| bad("no expires_at"))?,
            },
            "sending" => LeadState::Sending {
                message_id: message_id()?,
            },
            "sent" => LeadState::Sent {
                message_id: message_id()?,
                sent_at: time(
                    self.sent_at.as_deref().ok_or_else(|| bad("no sent_at"))?,
                    "sent_at",
                )?,
            },
            "failed" => LeadState::Failed {
                reason: self.reason.clone().unwrap_or_default(),
            },
            "in_doubt" => LeadState::InDoubt {
                message_id: message_id()?,
            },
            _ => return Err(bad("an unknown state")),
        };
        let updated_at = time(&self.updated_at, "updated_at")?;
        Ok(LeadEntry {
            campaign: self.campaign,
            lead_id: self.lead_id,
            portal_id: self.portal_id,
            row: self.row,
            email: self.email,
            attempts: self.attempts,
            state,
            link: self.link,
            expires_at,
            updated_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_campaign_is_the_file_stem() {
        assert_eq!(default_campaign(Path::new("/x/leads.csv")), "leads");
        assert_eq!(
            default_campaign(Path::new("march.invites.csv")),
            "march.invites"
        );
        assert_eq!(default_campaign(Path::new("/")), "default");
    }

    #[test]
    fn timestamps_sort_as_text_in_time_order() {
        let a = DateTime::parse_from_rfc3339("2025-01-01T09:59:59.9Z").unwrap();
        let b = DateTime::parse_from_rfc3339("2025-01-01T10:00:00Z").unwrap();
        let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
        assert!(timestamp(&a) < timestamp(&b));
    }

    #[test]
    fn the_connection_is_durable_and_marked_as_ours() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("s.sqlite")).unwrap();
        let pragma = |name: &str| -> String {
            store
                .conn
                .query_row(&format!("PRAGMA {name}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "2", "FULL");
        assert_eq!(pragma("busy_timeout"), "5000");
        assert_eq!(pragma("application_id"), APPLICATION_ID.to_string());
        assert_eq!(pragma("user_version"), SCHEMA_VERSION.to_string());
    }

    #[test]
    fn store_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<StateStore>();
    }
}
