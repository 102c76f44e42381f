//! The campaign locks of the state store: one store claims a campaign at a
//! time, in this process and from another; a symlink to the state file
//! shares its locks, and a hard link is kept out while another name is open.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use std::path::Path;

use crate::state_store::{link, state_path, CAMPAIGN};
use lsq_dispatch::state::{StateError, StateStore};

#[test]
fn a_campaign_is_claimed_by_one_store_at_a_time_and_others_stay_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let first = StateStore::open(&path).unwrap();
    first.claim(CAMPAIGN).unwrap();

    // A reader, or a run of another campaign, opens the same file meanwhile.
    let second = StateStore::open(&path).unwrap();
    second.claim("april").unwrap();
    let err = second.claim(CAMPAIGN).unwrap_err();
    assert!(matches!(err, StateError::Busy { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("campaign march is being run"), "{msg}");
    assert!(msg.contains("--campaign"), "{msg}");
    link(&second, "written-meanwhile", 2, 4);

    drop(first);
    second.claim(CAMPAIGN).unwrap();
}

#[test]
fn a_symlink_to_the_state_file_shares_its_campaign_locks() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let alias = dir.path().join("alias.sqlite");
    let first = StateStore::open(&path).unwrap();
    first.claim(CAMPAIGN).unwrap();
    std::os::unix::fs::symlink(&path, &alias).unwrap();
    let second = StateStore::open(&alias).unwrap();
    assert_eq!(second.path(), first.path());
    assert!(matches!(
        second.claim(CAMPAIGN),
        Err(StateError::Busy { .. })
    ));
}

#[test]
fn a_hard_link_to_the_state_file_is_the_same_file_to_its_locks() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let first = StateStore::open(&path).unwrap();
    first.claim(CAMPAIGN).unwrap();
    let other_dir = dir.path().join("b");
    std::fs::create_dir(&other_dir).unwrap();
    let other_name = other_dir.join("state.sqlite");
    std::fs::hard_link(&path, &other_name).unwrap();

    // SQLite keeps its log beside each name, so a second name may not open
    // the file at all while the first is open: not for this campaign, not
    // for another, not to read.
    let err = StateStore::open(&other_name).unwrap_err();
    assert!(matches!(err, StateError::OtherName { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&other_name.display().to_string()), "{msg}");
    assert!(msg.contains("another name"), "{msg}");
    assert!(StateStore::open_to_read(&other_name).is_err());
    // The same name stays open to others.
    let again = StateStore::open(&path).unwrap();
    again.claim("april").unwrap();

    drop((first, again));
    let second = StateStore::open(&other_name).unwrap();
    second.claim(CAMPAIGN).unwrap();
    assert!(matches!(
        StateStore::open(&path),
        Err(StateError::OtherName { .. })
    ));
}

/// Set to a state path, it makes `lock_holder_child` hold that store until
/// its stdin closes; the cross-process lock test runs this test binary so.
const CHILD_ENV: &str = "LSQ_DISPATCH_TEST_HOLD_STATE";
const HELD: &str = "state store held";

#[test]
fn lock_holder_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = StateStore::open(Path::new(&path)).unwrap();
    store.claim(CAMPAIGN).unwrap();
    println!("{HELD}");
    std::io::stdout().flush().unwrap();
    // Returns at EOF, when the parent closes our stdin.
    std::io::stdin().lines().for_each(drop);
}

#[test]
fn another_process_holding_the_campaign_locks_this_one_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "state_locks::lock_holder_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let held = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains(HELD));
    assert!(held, "the child process did not open the store");

    let store = StateStore::open(&path).unwrap();
    let err = store.claim(CAMPAIGN).unwrap_err();
    assert!(matches!(err, StateError::Busy { .. }), "{err:?}");
    store.claim("april").unwrap();

    drop(child.stdin.take());
    // Read the child's output to the end so its last lines find a reader.
    lines.for_each(drop);
    assert!(child.wait().unwrap().success());
    store.claim(CAMPAIGN).unwrap();
}
