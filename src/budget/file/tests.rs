//! The budget file's promises, with a clock the tests move by hand.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

const WINDOW: Duration = Duration::from_secs(1);
const HOLD: Duration = Duration::from_secs(30);

/// A clock the test moves by hand, and two budgets on one file, as two
/// processes would have.
struct Fixture {
    now: Arc<AtomicU64>,
    a: FileBudget,
    b: FileBudget,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicU64::new(1_700_000_000_000));
        let open = || {
            let now = Arc::clone(&now);
            let clock: Clock = Arc::new(move || now.load(Ordering::SeqCst));
            FileBudget::with_clock(dir.path().join("budget.log"), clock, WINDOW).unwrap()
        };
        let (a, b) = (open(), open());
        Fixture {
            now,
            a,
            b,
            _dir: dir,
        }
    }

    fn advance(&self, by: Duration) {
        self.now.fetch_add(ms(by), Ordering::SeqCst);
    }

    fn text(&self) -> String {
        fs::read_to_string(&*self.a.file.path).unwrap()
    }
}

async fn slot(budget: &FileBudget, allowed: u32) -> u64 {
    match budget.take(allowed, WINDOW, HOLD).await.unwrap() {
        Taken::Slot(token) => token,
        other => panic!("no slot: {other:?}"),
    }
}

#[tokio::test]
async fn two_processes_together_take_no_more_than_the_budget() {
    let f = Fixture::new();
    for budget in [&f.a, &f.b, &f.a] {
        slot(budget, 3).await;
    }
    // Every slot is in flight: the wait is for the first to run out.
    assert_eq!(
        f.b.take(3, WINDOW, HOLD).await.unwrap(),
        Taken::Wait(HOLD + WINDOW)
    );
    assert_eq!(f.text().lines().count(), 4, "{}", f.text());
    let mode = fs::metadata(&*f.a.file.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_released_slot_stays_blocked_for_the_rest_of_its_window() {
    let f = Fixture::new();
    let token = slot(&f.a, 1).await;
    f.advance(Duration::from_millis(200));
    f.a.release(token, WINDOW).await.unwrap();
    f.advance(Duration::from_millis(400));
    assert_eq!(
        f.b.take(1, WINDOW, HOLD).await.unwrap(),
        Taken::Wait(Duration::from_millis(600))
    );
    f.advance(Duration::from_millis(600));
    slot(&f.b, 1).await;
}

#[tokio::test]
async fn a_pause_holds_every_process_and_only_grows() {
    let f = Fixture::new();
    f.a.pause(Duration::from_secs(2)).await.unwrap();
    f.b.pause(Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        f.b.take(5, WINDOW, HOLD).await.unwrap(),
        Taken::Paused(Duration::from_secs(2))
    );
    f.advance(Duration::from_secs(2));
    slot(&f.b, 5).await;
}

#[tokio::test]
async fn a_crashed_holders_slot_frees_itself_after_its_hold_and_a_window() {
    let f = Fixture::new();
    // Taken and never released: the holder died mid-call.
    let token = slot(&f.a, 1).await;
    let _ = f.a.held.drain();
    assert!(f.text().contains(&token.to_string()));
    f.advance(HOLD + WINDOW - Duration::from_millis(1));
    assert!(matches!(
        f.b.take(1, WINDOW, HOLD).await.unwrap(),
        Taken::Wait(_)
    ));
    f.advance(Duration::from_millis(1));
    slot(&f.b, 1).await;
    assert!(!f.text().contains(&token.to_string()), "{}", f.text());
}

#[tokio::test]
async fn a_process_that_ends_settles_the_slots_it_did_not_give_back() {
    let f = Fixture::new();
    slot(&f.a, 1).await;
    let Fixture { now, a, b, _dir } = f;
    drop(a);
    // Blocked for a window from the end, not for the whole hold.
    now.fetch_add(ms(WINDOW) + 1, Ordering::SeqCst);
    slot(&b, 1).await;
}

#[tokio::test]
async fn a_line_cut_short_is_dropped_and_a_clock_set_back_blocks_no_longer_than_a_hold() {
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let far = now + 3_600_000;
    let text = format!("{HEADER}\n7 {far}\n8 {far}\n9 17000\n12");
    fs::write(&*f.a.file.path, text).unwrap();
    assert_eq!(
        f.a.take(2, WINDOW, HOLD).await.unwrap(),
        Taken::Wait(HOLD + WINDOW)
    );
    let (log, garbage) = Log::parse(&f.text());
    assert_eq!(log.entries.len(), 2, "{log:?}");
    assert_eq!(garbage, Vec::<usize>::new(), "dropped and written back");
}

#[test]
fn the_file_reads_back_as_written() {
    let log = Log {
        paused_until: 5,
        entries: vec![(1, 10), (u64::MAX, 20)],
        share: Some((15, 2, 30)),
        accepted: Some(("0123abcd".into(), 40)),
    };
    assert_eq!(Log::parse(&log.render()), (log, vec![]));
}

#[tokio::test]
async fn the_learnt_share_and_the_acceptance_are_remembered_for_the_next_run() {
    let f = Fixture::new();
    assert_eq!(f.a.recall().await.unwrap(), Memory::default());
    f.a.remember_share(15, 1).await.unwrap();
    f.a.remember_accepted("abc123".into()).await.unwrap();
    f.advance(Duration::from_secs(60));
    // The next run, another process.
    let memory = f.b.recall().await.unwrap();
    assert_eq!(
        memory.share,
        Some(LearntShare {
            allowed: 15,
            failed_probes: 1,
            age: Duration::from_secs(60)
        })
    );
    assert_eq!(
        memory.accepted,
        Some(("abc123".into(), Duration::from_secs(60)))
    );
    // The acceptance expires after a few hours, the share after a day.
    f.advance(ACCEPTED_FOR);
    let memory = f.b.recall().await.unwrap();
    assert_eq!(memory.accepted, None);
    assert!(memory.share.is_some());
    f.advance(SHARE_REMEMBERED);
    assert_eq!(f.b.recall().await.unwrap(), Memory::default());
    assert!(!f.text().contains("\nshare "), "{}", f.text());
}

#[test]
fn the_lines_that_do_not_read_are_named() {
    let (log, garbage) = Log::parse("# header\n\n1 2\npause x\n3 4 5\nshare 1 2\n");
    assert_eq!(log.entries, vec![(1, 2)]);
    assert_eq!(garbage, vec![4, 5, 6]);
    assert_eq!(lines(&[4]), "line 4 was");
    assert_eq!(lines(&[4, 5, 6]), "lines 4, 5 and 6 were");
    assert_eq!(
        lines(&(1..=10).collect::<Vec<_>>()),
        "lines 1, 2, 3, 4, 5, 6, 7, 8 and 2 more were"
    );
}

#[tokio::test]
async fn times_ahead_of_the_clock_are_capped_so_no_run_is_blocked() {
    let f = Fixture::new();
    let now = f.now.load(Ordering::SeqCst);
    let year = 365 * 24 * 3_600_000;
    let text = format!(
        "{HEADER}\npause {}\nshare 10 0 {}\naccepted m {}\n",
        now + year,
        now + year,
        now + year
    );
    fs::write(&*f.a.file.path, text).unwrap();
    assert_eq!(
        f.a.take(5, WINDOW, HOLD).await.unwrap(),
        Taken::Paused(WINDOW),
        "a pause a year ahead is implausible: cut to a window"
    );
    let memory = f.b.recall().await.unwrap();
    assert_eq!(memory.share.unwrap().age, Duration::ZERO);
    assert_eq!(memory.accepted, Some(("m".into(), Duration::ZERO)));
    f.advance(WINDOW);
    slot(&f.b, 5).await;
}
