//! The campaign state store against real SQLite files in temporary
//! directories: every state round-trips, writes survive a reopen, and a file
//! that is not ours is refused and left byte for byte as it was. The locks
//! are `state_locks`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::mode;
use chrono::{DateTime, TimeZone, Utc};
use lsq_dispatch::report::Status;
use lsq_dispatch::secret::Secret;
use lsq_dispatch::state::{default_path_from, LeadKey, LeadState, StateError, StateStore};

pub(crate) const CAMPAIGN: &str = "march";

fn key(lead_id: &str) -> LeadKey<'_> {
    LeadKey {
        campaign: CAMPAIGN,
        tenant: "tenant-1",
        lead_id,
        portal_id: "portal-1",
    }
}

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, hour, 0, 0).unwrap()
}

pub(crate) fn state_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state.sqlite")
}

/// A store in a state file of its own; keep the directory as long as the
/// store.
fn new_store() -> (tempfile::TempDir, StateStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&state_path(&dir)).unwrap();
    (dir, store)
}

/// The auth key that `link` stores.
const KEY: &str = "key";

/// Marks `lead` linked from input row `row` after one attempt, with the link
/// `https://p/LEAD` and a key expiring at `at(hour)`.
pub(crate) fn link(store: &StateStore, lead: &str, row: u64, hour: u32) {
    let url = format!("https://p/{lead}");
    store
        .mark_linked(&key(lead), row, &Secret::new(KEY), &url, at(hour), 1)
        .unwrap();
}

/// Marks `lead` sending from input row `row`, to `LEAD@x` with the
/// Message-ID `<LEAD@x>`.
fn sending(store: &StateStore, lead: &str, row: u64) {
    let address = format!("{lead}@x");
    store
        .mark_sending(&key(lead), row, &address, &format!("<{address}>"))
        .unwrap();
}

/// Marks `lead` sending, then sent.
fn sent(store: &StateStore, lead: &str, row: u64) {
    sending(store, lead, row);
    store.mark_sent(&key(lead), &format!("<{lead}@x>")).unwrap();
}

#[test]
fn every_state_round_trips() {
    let (_dir, store) = new_store();
    let secret = Secret::new("k+y/with=base64$&");

    store
        .mark_linked(&key("a"), 2, &secret, "https://p/?authKey=x", at(4), 3)
        .unwrap();
    let a = store.get(&key("a")).unwrap().unwrap();
    assert_eq!(a.state, LeadState::Linked);
    assert_eq!(a.auth_key, Some(secret.clone()));
    assert_eq!((a.row, a.attempts), (2, 3));
    assert_eq!(a.link.as_deref(), Some("https://p/?authKey=x"));
    assert_eq!(a.expires_at, Some(at(4)));

    store
        .mark_sending(&key("a"), 2, "a@example.com", "<m1@x>")
        .unwrap();
    let a = store.get(&key("a")).unwrap().unwrap();
    assert_eq!(
        a.state,
        LeadState::Sending {
            message_id: "<m1@x>".into()
        }
    );
    assert_eq!(a.email, "a@example.com");
    assert_eq!(a.attempts, 3, "sending keeps the link's attempts");
    assert_eq!(
        a.link.as_deref(),
        Some("https://p/?authKey=x"),
        "sending keeps the link"
    );

    let before = Utc::now();
    store.mark_sent(&key("a"), "<m1@x>").unwrap();
    let a = store.get(&key("a")).unwrap().unwrap();
    match a.state {
        LeadState::Sent {
            ref message_id,
            sent_at,
        } => {
            assert_eq!(message_id, "<m1@x>");
            assert!(sent_at >= before && sent_at <= Utc::now());
        }
        ref other => panic!("expected sent, got {other:?}"),
    }
    assert_eq!(a.to_record().status, Status::Sent);
    assert_eq!(a.to_record().message_id, "<m1@x>");

    store
        .mark_failed(&key("b"), 3, "400 from the API: MXInvalidLead", 1)
        .unwrap();
    let b = store.get(&key("b")).unwrap().unwrap();
    assert_eq!(
        b.state,
        LeadState::Failed {
            reason: "400 from the API: MXInvalidLead".into()
        }
    );
    assert_eq!((b.row, b.attempts, b.link.as_deref()), (3, 1, None));
    assert_eq!(b.to_record().status, Status::Failed);

    store
        .mark_sending(&key("c"), 4, "c@example.com", "<m3@x>")
        .unwrap();
    assert_eq!(store.recover_in_doubt(CAMPAIGN).unwrap(), 1);
    let c = store.get(&key("c")).unwrap().unwrap();
    assert_eq!(
        c.state,
        LeadState::InDoubt {
            message_id: "<m3@x>".into(),
            reason: lsq_dispatch::state::STOPPED_WHILE_SENDING.into(),
        }
    );
    assert_eq!(c.to_record().status, Status::InDoubt);

    assert!(store.get(&key("never-seen")).unwrap().is_none());
}

#[test]
fn leads_are_kept_apart_by_campaign_and_portal() {
    let (_dir, store) = new_store();
    let other_portal = LeadKey {
        portal_id: "portal-2",
        ..key("a")
    };
    let other_campaign = LeadKey {
        campaign: "april",
        ..key("a")
    };
    store.mark_failed(&key("a"), 2, "one", 1).unwrap();
    store.mark_failed(&other_portal, 2, "two", 1).unwrap();
    store.mark_failed(&other_campaign, 2, "three", 1).unwrap();

    let reason = |k: &LeadKey| match store.get(k).unwrap().unwrap().state {
        LeadState::Failed { reason } => reason,
        other => panic!("expected failed, got {other:?}"),
    };
    assert_eq!(reason(&key("a")), "one");
    assert_eq!(reason(&other_portal), "two");
    assert_eq!(reason(&other_campaign), "three");
    assert_eq!(store.campaigns().unwrap(), ["april", "march"]);
}

#[test]
fn mark_sent_requires_sending_with_the_same_message_id() {
    let (_dir, store) = new_store();

    let err = store.mark_sent(&key("a"), "<m@x>").unwrap_err();
    assert!(matches!(err, StateError::NotSending { .. }), "{err}");

    link(&store, "a", 2, 4);
    let err = store.mark_sent(&key("a"), "<m@x>").unwrap_err();
    assert!(err.to_string().contains("it is linked"), "{err}");

    store.mark_sending(&key("a"), 2, "a@x", "<m@x>").unwrap();
    let err = store.mark_sent(&key("a"), "<other@x>").unwrap_err();
    assert!(
        err.to_string().contains("sending with Message-ID <m@x>"),
        "{err}"
    );

    store.mark_sent(&key("a"), "<m@x>").unwrap();
    let err = store.mark_sent(&key("a"), "<m@x>").unwrap_err();
    assert!(err.to_string().contains("it is sent"), "{err}");
}

/// Why a lead is in doubt, as the SMTP stage records it.
const LOST: &str = "the connection to the SMTP server was lost after the message was sent";

#[test]
fn mark_in_doubt_requires_sending_with_the_same_message_id() {
    let (_dir, store) = new_store();
    link(&store, "a", 2, 4);
    let err = store.mark_in_doubt(&key("a"), "<m@x>", LOST).unwrap_err();
    assert!(err.to_string().contains("it is linked"), "{err}");

    store.mark_sending(&key("a"), 2, "a@x", "<m@x>").unwrap();
    let err = store
        .mark_in_doubt(&key("a"), "<other@x>", LOST)
        .unwrap_err();
    assert!(matches!(err, StateError::NotSending { .. }), "{err}");

    store.mark_in_doubt(&key("a"), "<m@x>", LOST).unwrap();
    let entry = store.get(&key("a")).unwrap().unwrap();
    assert_eq!(
        entry.state,
        LeadState::InDoubt {
            message_id: "<m@x>".into(),
            reason: LOST.into(),
        }
    );
    assert!(entry.to_record().error.unwrap().to_string().contains(LOST));
    let err = store.mark_sent(&key("a"), "<m@x>").unwrap_err();
    assert!(err.to_string().contains("it is in_doubt"), "{err}");
}

#[test]
fn marking_one_tenants_lead_leaves_anothers_alone() {
    let (_dir, store) = new_store();
    let other = LeadKey {
        tenant: "tenant-2",
        ..key("a")
    };
    // The same deterministic Message-ID for both tenants' copy of the lead.
    for k in [&key("a"), &other] {
        store.mark_sending(k, 2, "a@x", "<m@x>").unwrap();
    }
    store.mark_in_doubt(&key("a"), "<m@x>", LOST).unwrap();
    store.mark_sent(&other, "<m@x>").unwrap();
    assert_eq!(
        store.get(&key("a")).unwrap().unwrap().state.name(),
        "in_doubt"
    );
    assert_eq!(store.get(&other).unwrap().unwrap().state.name(), "sent");
}

#[test]
fn recover_in_doubt_touches_only_sending_leads_of_the_campaign() {
    let (_dir, store) = new_store();
    sending(&store, "a", 2);
    sent(&store, "b", 3);
    let elsewhere = LeadKey {
        campaign: "april",
        ..key("c")
    };
    store.mark_sending(&elsewhere, 2, "c@x", "<c@x>").unwrap();

    assert_eq!(store.recover_in_doubt(CAMPAIGN).unwrap(), 1);
    assert_eq!(store.recover_in_doubt(CAMPAIGN).unwrap(), 0);
    assert_eq!(store.get(&key("b")).unwrap().unwrap().state.name(), "sent");
    assert_eq!(
        store.get(&elsewhere).unwrap().unwrap().state.name(),
        "sending"
    );
    assert_eq!(store.counts(CAMPAIGN).unwrap()["in_doubt"], 1);
}

#[test]
fn expired_keys_are_cleared_and_valid_ones_kept() {
    let (_dir, store) = new_store();
    link(&store, "old", 2, 4);
    link(&store, "new", 3, 8);
    // A sent lead's key goes too: it is as useless and as sensitive.
    link(&store, "sent", 4, 4);
    sent(&store, "sent", 4);

    assert_eq!(store.clear_expired_keys(at(6)).unwrap(), 2);
    assert_eq!(store.clear_expired_keys(at(6)).unwrap(), 0, "idempotent");

    let old = store.get(&key("old")).unwrap().unwrap();
    assert_eq!((&old.state, &old.auth_key), (&LeadState::Linked, &None));
    assert_eq!(old.link, None);
    assert_eq!(old.expires_at, Some(at(4)), "the expiry is kept");

    let new = store.get(&key("new")).unwrap().unwrap();
    assert_eq!(new.state, LeadState::Linked);
    assert_eq!(new.auth_key, Some(Secret::new(KEY)));
    assert_eq!(new.link.as_deref(), Some("https://p/new"));

    let sent = store.get(&key("sent")).unwrap().unwrap();
    assert_eq!((sent.state.name(), sent.link), ("sent", None));

    // A key expiring exactly now is expired.
    assert_eq!(store.clear_expired_keys(at(8)).unwrap(), 1);
}

#[test]
fn counts_cover_every_state_and_entries_follow_the_input_order() {
    let (_dir, store) = new_store();
    link(&store, "z", 9, 4);
    store.mark_failed(&key("y"), 2, "bad", 1).unwrap();
    sending(&store, "x", 5);
    sent(&store, "w", 12);

    let counts = store.counts(CAMPAIGN).unwrap();
    let expect = [
        ("failed", 1),
        ("in_doubt", 0),
        ("linked", 1),
        ("reviewed", 0),
        ("sending", 1),
        ("sent", 1),
    ];
    assert_eq!(
        counts
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect::<Vec<_>>(),
        expect
    );
    assert!(store
        .counts("no-such-campaign")
        .unwrap()
        .values()
        .all(|n| *n == 0));

    let rows: Vec<_> = store
        .entries(CAMPAIGN)
        .unwrap()
        .into_iter()
        .map(|e| (e.row, e.lead_id))
        .collect();
    assert_eq!(
        rows,
        [
            (2, "y".into()),
            (5, "x".into()),
            (9, "z".into()),
            (12, "w".into())
        ]
    );
}

#[test]
fn a_reopened_store_sees_earlier_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    {
        let store = StateStore::open(&path).unwrap();
        sent(&store, "a", 2);
        sending(&store, "b", 3);
    }
    let store = StateStore::open(&path).unwrap();
    assert_eq!(store.get(&key("a")).unwrap().unwrap().state.name(), "sent");
    assert_eq!(store.recover_in_doubt(CAMPAIGN).unwrap(), 1);
    assert_eq!(store.campaigns().unwrap(), [CAMPAIGN]);
}

#[test]
fn the_state_file_and_its_log_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new").join("deeper").join("state.sqlite");
    let store = StateStore::open(&path).unwrap();
    link(&store, "a", 2, 4);
    assert_eq!(mode(&path), 0o600);
    let wal = path.with_extension("sqlite-wal");
    assert!(wal.exists(), "the store runs in WAL mode");
    assert_eq!(mode(&wal), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&dir.path().join("new")), 0o700);
}

#[test]
fn an_existing_empty_file_is_initialised_and_made_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    fs::write(&path, b"").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let store = StateStore::open(&path).unwrap();
    store.mark_failed(&key("a"), 2, "x", 1).unwrap();
    assert_eq!(mode(&path), 0o600);
}

/// Opens `contents` written to a state path, expects a refusal naming the
/// path, and checks the file is untouched and nothing was put beside it.
fn refused(contents: &[u8]) -> StateError {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    fs::write(&path, contents).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    refused_at(&path, contents)
}

fn refused_at(path: &Path, contents: &[u8]) -> StateError {
    let before: Vec<_> = dir_listing(path.parent().unwrap());
    let err = StateStore::open(path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("left untouched"), "{msg}");
    assert!(msg.contains("--state"), "{msg}");
    assert_eq!(fs::read(path).unwrap(), contents, "the file was modified");
    assert_eq!(mode(path), 0o644, "the file's mode was changed");
    assert_eq!(dir_listing(path.parent().unwrap()), before);
    err
}

fn dir_listing(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
}

#[test]
fn a_text_file_is_refused_and_left_alone() {
    let err = refused(b"LeadId,Email\n9f0c,a@example.com\n");
    assert!(matches!(err, StateError::Foreign { .. }), "{err:?}");
    assert!(err.to_string().contains("not a SQLite database"), "{err}");
}

#[test]
fn random_bytes_are_refused_and_left_alone() {
    // A fixed pseudo-random sequence, longer than a SQLite header and page.
    let mut x: u32 = 0x1234_5678;
    let bytes: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let err = refused(&bytes);
    assert!(matches!(err, StateError::Foreign { .. }), "{err:?}");
}

#[test]
fn another_applications_sqlite_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
            .unwrap();
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let contents = fs::read(&path).unwrap();
    let err = refused_at(&path, &contents);
    assert!(matches!(err, StateError::Foreign { .. }), "{err:?}");
    assert!(err.to_string().contains("did not create"), "{err}");

    // Another application that marks its files has them named as such.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "application_id", 0x0F05_51D5)
            .unwrap();
    }
    let contents = fs::read(&path).unwrap();
    let err = refused_at(&path, &contents);
    assert!(err.to_string().contains("another application"), "{err}");
}

#[test]
fn a_damaged_state_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    {
        let store = StateStore::open(&path).unwrap();
        for i in 0..200u64 {
            let id = format!("lead-{i}");
            store.mark_failed(&key(&id), i + 2, "x", 1).unwrap();
        }
    }
    // Keep the header, so it still looks like ours, and wreck every page.
    let mut contents = fs::read(&path).unwrap();
    assert!(contents.len() > 4096, "the file spans several pages");
    for b in &mut contents[100..] {
        *b = 0xA5;
    }
    fs::write(&path, &contents).unwrap();

    let err = StateStore::open(&path).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("left untouched"), "{msg}");
    assert_eq!(fs::read(&path).unwrap(), contents, "the file was modified");
}

#[test]
fn default_path_prefers_xdg_state_home_then_the_platform_then_home() {
    let platform = Some(PathBuf::from("/platform/state"));
    let home = Some(PathBuf::from("/home/op"));
    let tail = Path::new("lsq-dispatch/state.sqlite");

    assert_eq!(
        default_path_from(Some(OsStr::new("/xdg")), platform.clone(), home.clone()),
        Path::new("/xdg").join(tail)
    );
    // The XDG spec says to ignore an empty or relative value.
    for ignored in ["", "relative/dir"] {
        assert_eq!(
            default_path_from(Some(OsStr::new(ignored)), platform.clone(), home.clone()),
            Path::new("/platform/state").join(tail)
        );
    }
    assert_eq!(
        default_path_from(None, None, home),
        Path::new("/home/op/.local/state").join(tail)
    );
    assert_eq!(default_path_from(None, None, None), tail);
    assert!(StateStore::default_path().ends_with(tail));
}
