//! The layout of a state file: the `leads` table, its version, laying out a
//! new file, checking an existing one before anything writes to it, and how
//! timestamps are written so they sort as text.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::Connection;

use super::file::APPLICATION_ID;
use super::{damaged, StateError};

/// Version of the schema below, kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

pub(super) const SCHEMA: &str = "
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

/// Lays out a new state file. The marker, the schema and the version go in
/// one transaction, before the switch to WAL, so they reach the main file
/// together: a crash leaves either an empty file or a complete one.
pub(super) fn initialise(conn: &Connection) -> Result<(), StateError> {
    let tx = conn.unchecked_transaction()?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Checks a file of ours before anything writes to it.
pub(super) fn check(conn: &Connection, path: &Path) -> Result<(), StateError> {
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
