//! The open, locked state file and every read and write of lead entries.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, ToSql};

use super::entry::{RawEntry, ENTRY_COLUMNS, STOPPED_WHILE_SENDING};
use super::file::{self, default_path_from, FileLock, Header};
use super::schema::{bring_up_to_date, check, intact, is_current, timestamp};
use super::{damaged, foreign, LeadEntry, LeadKey, StateError};
use crate::redirect::LinkMode;
use crate::secret::Secret;

/// How long a statement waits for another writer (a run of another
/// campaign, a migration) before giving up. Every write is one short
/// transaction, so a wait is short; two runs of one campaign never wait for
/// each other: the campaign lock turns the second away at once.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The campaign state file, open for this store's life, with the campaigns
/// this store [claimed](StateStore::claim).
///
/// `Send`, so the pipeline can keep it behind a mutex or move it into
/// `spawn_blocking`; not `Sync`, as one SQLite connection serves one thread at
/// a time.
pub struct StateStore {
    // Declared before `lock` so the connection closes (and checkpoints its
    // WAL) before the lock is released: fields drop in declaration order.
    pub(super) conn: Connection,
    pub(super) lock: FileLock,
    pub(super) path: PathBuf,
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StateStore {
    /// Opens the state file at `path` (symbolic links resolved), creating it
    /// (mode 0600, parents 0700) when it is missing or empty and migrating an
    /// older one in place. Readers such as `status` only open; a run also
    /// [claims](StateStore::claim) its campaign.
    ///
    /// A file that is not an lsq-dispatch state file is refused with
    /// [`StateError::Foreign`] or [`StateError::Corrupt`] and left exactly as
    /// it was; a file open under another of its names (a hard link) gives
    /// [`StateError::OtherName`] at once.
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        StateStore::open_checked(path, true)
    }

    /// [`StateStore::open`] for a reader that writes no lead (a plan,
    /// `status`): every page is read only when the file must be migrated
    /// first, so a large file opens at once; a damaged page the reader meets
    /// is still an error.
    pub fn open_to_read(path: &Path) -> Result<StateStore, StateError> {
        StateStore::open_checked(path, false)
    }

    fn open_checked(path: &Path, check_pages: bool) -> Result<StateStore, StateError> {
        // Look before opening, so that a foreign file is never opened for
        // writing, nor a file made where a foreign one should be.
        match file::read_header(path)? {
            Some(Header::Foreign(detail)) => return Err(foreign(path, detail)),
            Some(_) => {}
            None => file::create_parent_dirs(path)?,
        }
        let path = &file::real_path(path)?;
        // The locks are on the file itself, so it must exist to be locked.
        file::create_private(path)?;
        let lock = FileLock::take(path)?;
        // Look again under the lock: the file may have changed meanwhile.
        if let Some(Header::Foreign(detail)) = file::read_header(path)? {
            return Err(foreign(path, detail));
        }
        file::make_private(path)?;

        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| damaged(path, e))?;
        let (same, names) = lock.names(path)?;
        if !same {
            return Err(StateError::Io {
                path: path.to_owned(),
                error: std::io::Error::other(
                    "the file was replaced while it was being opened; run again",
                ),
            });
        }
        if names > 1 && check_pages {
            tracing::warn!(
                "the state file {} has {names} names (hard links): a run uses it under one \
                 name at a time; after a crash, run again under the same name, as the \
                 changes it had not yet folded into the file are in {}-wal beside that name",
                path.display(),
                path.display()
            );
        }
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if check_pages || !is_current(&conn, path)? {
            intact(&conn, path)?;
        }
        bring_up_to_date(&conn, path)?;
        check(&conn, path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::Io {
                path: path.to_owned(),
                error: std::io::Error::other(format!(
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
            lock,
            path: path.to_owned(),
        })
    }

    /// Claims `campaign` for this store's life, without waiting: a run
    /// claims its campaign before it reads or writes any of its leads.
    /// Another store holding the same campaign, in this process or another,
    /// gives [`StateError::Busy`]; other campaigns of the file stay free.
    /// The claim is recorded as the campaign's last run, so a campaign that
    /// runs every night counts as active even when it has nothing left to do.
    pub fn claim(&self, campaign: &str) -> Result<(), StateError> {
        if !self.lock.claim(campaign)? {
            return Err(StateError::Busy {
                path: self.path.clone(),
                campaign: campaign.to_owned(),
            });
        }
        self.conn.execute(
            "INSERT INTO campaigns (campaign, last_run_at) VALUES (?1, ?2) \
             ON CONFLICT (campaign) DO UPDATE SET last_run_at = excluded.last_run_at",
            params![campaign, timestamp(&Utc::now())],
        )?;
        Ok(())
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

    /// The lead's entry for the key's tenant, or else one carried over from
    /// a state file that did not record tenants; `None` if the campaign
    /// never touched the lead for this tenant.
    pub fn get(&self, key: &LeadKey) -> Result<Option<LeadEntry>, StateError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM leads \
             WHERE campaign = ?1 AND lead_id = ?2 AND portal_id = ?3 AND tenant IN (?4, '') \
             ORDER BY tenant = '' LIMIT 1"
        );
        let raw = self
            .conn
            .prepare_cached(&sql)?
            .query_row(
                params![key.campaign, key.lead_id, key.portal_id, key.tenant],
                RawEntry::read,
            )
            .optional()?;
        raw.map(|r| r.into_entry(&self.path)).transpose()
    }

    /// Every entry of the campaign a run for `tenant` would see, by lead and
    /// portal, as [`StateStore::get`] would give them one by one; with no
    /// tenant, every tenant's (the last one read wins). For a plan, which
    /// reads them all at once rather than a query per row.
    pub fn lookup_table(
        &self,
        campaign: &str,
        tenant: Option<&str>,
    ) -> Result<HashMap<(String, String), LeadEntry>, StateError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM leads \
             WHERE campaign = ?1 AND (?2 IS NULL OR tenant IN (?2, '')) \
             ORDER BY tenant != ''"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let raws = stmt.query_map(params![campaign, tenant], RawEntry::read)?;
        let mut table = HashMap::new();
        for raw in raws {
            let entry = raw?.into_entry(&self.path)?;
            table.insert((entry.lead_id.clone(), entry.portal_id.clone()), entry);
        }
        Ok(table)
    }

    /// Records a fresh login link for the lead, replacing whatever was there
    /// for its tenant. `attempts` is stored as given: the API calls this link
    /// took.
    pub fn mark_linked(
        &self,
        key: &LeadKey,
        row: u64,
        auth_key: &Secret,
        link: &str,
        expires_at: DateTime<Utc>,
        attempts: u32,
    ) -> Result<(), StateError> {
        let mode = LinkMode::Direct;
        self.mark_link_given(key, row, Some(auth_key), link, expires_at, attempts, mode)
    }

    /// Records a fresh link for the lead made in `mode`, as
    /// [`StateStore::mark_linked`] does; a redirect link minted at click has
    /// no key, and `expires_at` is then the link's own expiry.
    #[allow(clippy::too_many_arguments)]
    pub fn mark_link_given(
        &self,
        key: &LeadKey,
        row: u64,
        auth_key: Option<&Secret>,
        link: &str,
        expires_at: DateTime<Utc>,
        attempts: u32,
        mode: LinkMode,
    ) -> Result<(), StateError> {
        self.upsert(
            key,
            row,
            "linked",
            &[
                ("attempts", &attempts),
                ("auth_key", &auth_key.map(Secret::expose)),
                ("link", &link),
                ("expires_at", &timestamp(&expires_at)),
                ("link_mode", &mode.name()),
            ],
            &["message_id", "sent_at", "reason"],
        )
    }

    /// Records that the lead's email, with this Message-ID, was written to an
    /// outbox for a person to review. Nothing was sent: a later run of the
    /// campaign sends it. The key and link stay as they were.
    pub fn mark_reviewed(
        &self,
        key: &LeadKey,
        row: u64,
        email: &str,
        message_id: &str,
    ) -> Result<(), StateError> {
        self.mark_message(key, row, "reviewed", email, message_id)
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
        self.mark_message(key, row, "sending", email, message_id)
    }

    /// A state that names the lead's message: its recipient and Message-ID.
    fn mark_message(
        &self,
        key: &LeadKey,
        row: u64,
        state: &str,
        email: &str,
        message_id: &str,
    ) -> Result<(), StateError> {
        self.upsert(
            key,
            row,
            state,
            &[("email", &email), ("message_id", &message_id)],
            &["sent_at", "reason"],
        )
    }

    /// Records that the SMTP server accepted the lead's email. Only a lead in
    /// `sending` with the same Message-ID can become `sent`; anything else is
    /// a bug in the caller and gives [`StateError::NotSending`].
    pub fn mark_sent(&self, key: &LeadKey, message_id: &str) -> Result<(), StateError> {
        self.settle_sending(key, message_id, "sent", None)
    }

    /// Moves the key's lead from `sending` with this Message-ID to `state`
    /// (`sent` also records when), with `reason`; anything else gives
    /// [`StateError::NotSending`].
    fn settle_sending(
        &self,
        key: &LeadKey,
        message_id: &str,
        state: &'static str,
        reason: Option<&str>,
    ) -> Result<(), StateError> {
        let now = timestamp(&Utc::now());
        let sent_at = if state == "sent" {
            ", sent_at = ?5"
        } else {
            ""
        };
        let changed = self.conn.execute(
            &format!(
                "UPDATE leads SET state = '{state}', updated_at = ?5, reason = ?7{sent_at} \
                 WHERE campaign = ?1 AND lead_id = ?2 AND portal_id = ?3 AND tenant = ?6 \
                   AND state = 'sending' AND message_id = ?4"
            ),
            params![
                key.campaign,
                key.lead_id,
                key.portal_id,
                message_id,
                now,
                key.tenant,
                reason
            ],
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

    /// Records that the lead's email, with this Message-ID, may or may not
    /// have been delivered, and why (`reason`, as the next run reports it):
    /// the SMTP connection failed or went silent once the server could have
    /// had the message. As after a crash, no later run sends it again unless
    /// asked to. Only a lead in `sending` with the same Message-ID can become
    /// `in_doubt`; anything else is a bug in the caller and gives
    /// [`StateError::NotSending`].
    pub fn mark_in_doubt(
        &self,
        key: &LeadKey,
        message_id: &str,
        reason: &str,
    ) -> Result<(), StateError> {
        self.settle_sending(key, message_id, "in_doubt", Some(reason))
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
        self.upsert(
            key,
            row,
            "failed",
            &[("attempts", &attempts), ("reason", &reason)],
            &["message_id", "sent_at"],
        )
    }

    /// Writes the lead's new `state` for its tenant in one transaction: a
    /// lead the campaign has not seen is inserted; a known one gets its row,
    /// state and the `set` columns overwritten and the `clear` columns (left
    /// over from an earlier state) set to NULL. Columns in neither list keep
    /// what they hold. An entry carried over without a tenant gives way to
    /// the new one.
    fn upsert(
        &self,
        key: &LeadKey,
        row: u64,
        state: &str,
        set: &[(&str, &dyn ToSql)],
        clear: &[&str],
    ) -> Result<(), StateError> {
        let now = timestamp(&Utc::now());
        let mut values: Vec<(&str, &dyn ToSql)> = vec![
            ("campaign", &key.campaign),
            ("tenant", &key.tenant),
            ("lead_id", &key.lead_id),
            ("portal_id", &key.portal_id),
            ("row", &row),
            ("state", &state),
            ("updated_at", &now),
        ];
        values.extend_from_slice(set);
        let columns: Vec<&str> = values.iter().map(|(name, _)| *name).collect();
        let placeholders: Vec<String> = (1..=values.len()).map(|i| format!("?{i}")).collect();
        // The key columns stay; every other given column takes the new value.
        let updates: Vec<String> = columns[4..]
            .iter()
            .map(|name| format!("{name} = excluded.{name}"))
            .chain(clear.iter().map(|name| format!("{name} = NULL")))
            .collect();
        let sql = format!(
            "INSERT INTO leads ({}) VALUES ({}) \
             ON CONFLICT (campaign, tenant, lead_id, portal_id) DO UPDATE SET {}",
            columns.join(", "),
            placeholders.join(", "),
            updates.join(", ")
        );
        let params: Vec<&dyn ToSql> = values.iter().map(|(_, value)| *value).collect();
        self.atomically(|| {
            self.conn.prepare_cached(&sql)?.execute(params.as_slice())?;
            if !key.tenant.is_empty() {
                self.conn
                    .prepare_cached(
                        "DELETE FROM leads WHERE campaign = ?1 AND tenant = '' \
                         AND lead_id = ?2 AND portal_id = ?3",
                    )?
                    .execute(params![key.campaign, key.lead_id, key.portal_id])?;
            }
            Ok(())
        })
    }

    /// Runs `step` as one whole: alone, in a transaction of its own; inside
    /// [`StateStore::batch`], undone alone when it fails, so the batch's
    /// other steps stand.
    pub fn atomically<T>(
        &self,
        step: impl FnOnce() -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        self.conn.execute_batch("SAVEPOINT step")?;
        match step() {
            Ok(value) => {
                self.conn.execute_batch("RELEASE step")?;
                Ok(value)
            }
            Err(e) => {
                // The step's changes go; the failure reported is the step's.
                let _ = self.conn.execute_batch("ROLLBACK TO step; RELEASE step");
                Err(e)
            }
        }
    }

    /// Runs `steps` in one transaction and commits it: many leads' changes
    /// for the price of one fsync. Each step should be
    /// [atomic](StateStore::atomically), so that one that fails is undone
    /// alone. Returns what the steps gave, and whether they are on disk: an
    /// `Err` is a failed commit, and none of the steps happened. When no
    /// transaction can begin, each step runs as its own.
    pub fn batch<T>(&self, steps: impl FnOnce() -> T) -> (T, Result<(), StateError>) {
        let began = self.conn.execute_batch("BEGIN IMMEDIATE").is_ok();
        let done = steps();
        if !began {
            return (done, Ok(()));
        }
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => (done, Ok(())),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                (done, Err(e.into()))
            }
        }
    }

    /// Turns every `sending` lead of the campaign into `in_doubt` and returns
    /// how many there were. Call it at the start of a run, under the lock:
    /// no email of this campaign is in flight then, so a `sending` lead is one
    /// a crash interrupted.
    pub fn recover_in_doubt(&self, campaign: &str) -> Result<u64, StateError> {
        let changed = self.conn.execute(
            "UPDATE leads SET state = 'in_doubt', updated_at = ?2, reason = ?3 \
             WHERE campaign = ?1 AND state = 'sending'",
            params![campaign, timestamp(&Utc::now()), STOPPED_WHILE_SENDING],
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

    /// The tenants the campaign has entries for, as fingerprints (empty for
    /// entries carried over without one), sorted.
    pub fn tenants(&self, campaign: &str) -> Result<Vec<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT tenant FROM leads WHERE campaign = ?1 ORDER BY tenant")?;
        let names = stmt.query_map([campaign], |r| r.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    }

    /// Records that the rows to retry of `campaign` were written to `file`
    /// (a real path), so that a run of that file without `--campaign`
    /// resumes the campaign.
    pub fn register_retry_file(&self, file: &Path, campaign: &str) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO retry_files (path, campaign, written_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (path) DO UPDATE SET campaign = excluded.campaign, \
             written_at = excluded.written_at",
            params![file.to_string_lossy(), campaign, timestamp(&Utc::now())],
        )?;
        Ok(())
    }

    /// The campaign's entries in input order.
    pub fn entries(&self, campaign: &str) -> Result<Vec<LeadEntry>, StateError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM leads WHERE campaign = ?1 \
             ORDER BY row, lead_id, portal_id, tenant"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let raws = stmt.query_map([campaign], RawEntry::read)?;
        raws.map(|raw| raw?.into_entry(&self.path)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{APPLICATION_ID, SCHEMA_VERSION};

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
        assert_eq!(pragma("busy_timeout"), "30000");
        assert_eq!(pragma("application_id"), APPLICATION_ID.to_string());
        assert_eq!(pragma("user_version"), SCHEMA_VERSION.to_string());
    }

    #[test]
    fn store_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<StateStore>();
    }
}
