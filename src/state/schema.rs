//! The layout of a state file: the `leads`, `retry_files` and `campaigns`
//! tables, the version, laying out a new file or migrating an older one in place,
//! checking an existing one before anything writes to it, and how timestamps
//! are written so they sort as text.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::Connection;

use super::file::APPLICATION_ID;
use super::{damaged, StateError};

/// Version of the schema below, kept in `PRAGMA user_version`.
///
/// - 1: `leads` keyed by campaign, lead and portal.
/// - 2: `leads` also keyed by tenant, with the `reviewed` state; the
///   `retry_files` table.
/// - 3: the `campaigns` table: when a run last claimed each campaign, so a
///   campaign whose every lead is done, and which runs nightly skipping them
///   all, still counts as active.
/// - 4: `leads.link_mode`: how the lead's last link was made (`direct`, or a
///   redirect link minted `at-send` or `at-click`); NULL for a lead never
///   given a link.
///
/// Older files are migrated in place, one version at a time.
pub const SCHEMA_VERSION: i64 = 4;

/// The `leads` table under `name`. `tenant` is the fingerprint of the host
/// and access key the entry was made with; empty for entries carried over
/// from version 1, whose tenant is unknown.
fn leads_table(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (
            campaign   TEXT NOT NULL,
            tenant     TEXT NOT NULL DEFAULT '',
            lead_id    TEXT NOT NULL,
            portal_id  TEXT NOT NULL,
            row        INTEGER NOT NULL,
            email      TEXT NOT NULL DEFAULT '',
            attempts   INTEGER NOT NULL DEFAULT 0,
            state      TEXT NOT NULL CHECK (state IN
                       ('linked', 'reviewed', 'sending', 'sent', 'failed', 'in_doubt')),
            auth_key   TEXT,
            link       TEXT,
            expires_at TEXT,
            message_id TEXT,
            sent_at    TEXT,
            reason     TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (campaign, tenant, lead_id, portal_id)
        );"
    )
}

/// What version 2 adds beside the `leads` table: the row index, and the
/// retry files a run wrote, so that retrying one resumes its campaign.
const INDEX_AND_RETRY_FILES: &str = "
    CREATE INDEX leads_by_row ON leads (campaign, row);
    CREATE TABLE retry_files (
        path       TEXT PRIMARY KEY,
        campaign   TEXT NOT NULL,
        written_at TEXT NOT NULL
    );
";

/// What version 3 adds: per campaign, when a run last claimed it.
const CAMPAIGNS: &str = "
    CREATE TABLE campaigns (
        campaign    TEXT PRIMARY KEY,
        last_run_at TEXT NOT NULL
    );
";

/// What version 4 adds to the `leads` table: each lead's link mode.
const LINK_MODE: &str = "
    ALTER TABLE leads ADD COLUMN link_mode TEXT
        CHECK (link_mode IN ('direct', 'at-send', 'at-click'));
";

/// Brings the file to [`SCHEMA_VERSION`]: lays out a new (empty) file, or
/// migrates an older one in place, in one `BEGIN IMMEDIATE` transaction, so
/// two runs opening the same file at once take turns and the second finds it
/// done. A crash leaves the file as it was before or completely migrated.
pub(super) fn bring_up_to_date(conn: &Connection, path: &Path) -> Result<(), StateError> {
    // The common case reads and writes nothing: readers never queue behind
    // a run's writes.
    if is_current(conn, path)? {
        return Ok(());
    }
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| damaged(path, e))?;
    let version = user_version(&tx, path)?;
    let has_tables: bool = tx
        .query_row("SELECT EXISTS (SELECT 1 FROM sqlite_schema)", [], |r| {
            r.get(0)
        })
        .map_err(|e| damaged(path, e))?;
    match version {
        SCHEMA_VERSION => return Ok(()),
        0 if !has_tables => {
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.execute_batch(&leads_table("leads"))?;
            tx.execute_batch(INDEX_AND_RETRY_FILES)?;
            tx.execute_batch(CAMPAIGNS)?;
            tx.execute_batch(LINK_MODE)?;
        }
        1 => {
            migrate_from_1(&tx)?;
            migrate_from_2(&tx)?;
            migrate_from_3(&tx)?;
        }
        2 => {
            migrate_from_2(&tx)?;
            migrate_from_3(&tx)?;
        }
        3 => migrate_from_3(&tx)?,
        v if v > SCHEMA_VERSION => {
            return Err(StateError::Corrupt {
                path: path.to_owned(),
                detail: format!(
                    "it was written by a newer lsq-dispatch (schema version {v}, this one \
                     knows {SCHEMA_VERSION}); upgrade lsq-dispatch"
                ),
            })
        }
        v => {
            return Err(StateError::Corrupt {
                path: path.to_owned(),
                detail: format!("unknown schema version {v}"),
            })
        }
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Version 1 to 2: every entry is kept, under the unknown tenant (''). Its
/// key and link are dropped, since nothing proves which tenant made them: a
/// lead that was only linked is minted again, while `sent` and `in_doubt`
/// leads stay exactly as they were, for every tenant.
fn migrate_from_1(tx: &rusqlite::Transaction<'_>) -> Result<(), StateError> {
    tx.execute_batch(&leads_table("leads_v2"))?;
    tx.execute_batch(
        "INSERT INTO leads_v2 (campaign, tenant, lead_id, portal_id, row, email, attempts,
                               state, auth_key, link, expires_at, message_id, sent_at,
                               reason, updated_at)
         SELECT campaign, '', lead_id, portal_id, row, email, attempts, state, NULL, NULL,
                expires_at, message_id, sent_at, reason, updated_at
         FROM leads;
         DROP TABLE leads;
         ALTER TABLE leads_v2 RENAME TO leads;",
    )?;
    tx.execute_batch(INDEX_AND_RETRY_FILES)?;
    Ok(())
}

/// Version 2 to 3: each campaign's last run is taken to be its latest lead
/// change, the best a file that did not record runs can say.
fn migrate_from_2(tx: &rusqlite::Transaction<'_>) -> Result<(), StateError> {
    tx.execute_batch(CAMPAIGNS)?;
    tx.execute_batch(
        "INSERT INTO campaigns (campaign, last_run_at)
         SELECT campaign, MAX(updated_at) FROM leads GROUP BY campaign;",
    )?;
    Ok(())
}

/// Version 3 to 4: every link made before redirect links existed was a
/// direct one; a lead with no expiry was never given one.
fn migrate_from_3(tx: &rusqlite::Transaction<'_>) -> Result<(), StateError> {
    tx.execute_batch(LINK_MODE)?;
    tx.execute_batch(
        "UPDATE leads SET link_mode = 'direct'
         WHERE expires_at IS NOT NULL OR state != 'failed';",
    )?;
    Ok(())
}

/// The file is at this version already: nothing to lay out or migrate.
pub(super) fn is_current(conn: &Connection, path: &Path) -> Result<bool, StateError> {
    Ok(user_version(conn, path)? == SCHEMA_VERSION)
}

fn user_version(conn: &Connection, path: &Path) -> Result<i64, StateError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| damaged(path, e))
}

/// Reads every page of a file of ours before anything writes to it, so that
/// a damaged file is refused here, before any API call and before any
/// migration, not halfway through a run.
pub(super) fn intact(conn: &Connection, path: &Path) -> Result<(), StateError> {
    let verdict: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|e| damaged(path, e))?;
    if verdict != "ok" {
        return Err(StateError::Corrupt {
            path: path.to_owned(),
            detail: verdict,
        });
    }
    Ok(())
}

/// Checks that a file brought up to date has the tables of this version.
pub(super) fn check(conn: &Connection, path: &Path) -> Result<(), StateError> {
    let corrupt = |detail: String| StateError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    for table in ["leads", "retry_files", "campaigns"] {
        let has_table: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)",
                [table],
                |r| r.get(0),
            )
            .map_err(|e| damaged(path, e))?;
        if !has_table {
            return Err(corrupt(format!("the {table} table is missing")));
        }
    }
    Ok(())
}

/// Timestamps are stored as RFC 3339 UTC text with a fixed nine-digit
/// fraction: readable in `sqlite3`, exact on the way back, and ordered as
/// text, which `clear_expired_keys` relies on.
pub(super) fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_as_text_in_time_order() {
        let a = DateTime::parse_from_rfc3339("2025-01-01T09:59:59.9Z").unwrap();
        let b = DateTime::parse_from_rfc3339("2025-01-01T10:00:00Z").unwrap();
        let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
        assert!(timestamp(&a) < timestamp(&b));
    }
}
