//! The campaign locks of the state store: one store claims a campaign at a
//! time, in this process and from another, and a symlink to the state file
//! shares its locks.

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
