//! Unit tests of the report: contract, escaping, files and permissions.

use super::*;
use chrono::TimeZone;
use chrono::Utc;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use writer::digits;

fn record() -> Record {
    Record {
        row: 7,
        lead_id: "3f2b8c1e-9d4a-4e7b-a6c5-1b0f7e2d9c84".into(),
        portal_id: "c4e8a2f1-7b3d-4a96-8e15-2d9f0b6c7a31".into(),
        status: Status::Sent,
        portal_url: "https://portal.example.com/login?x=1&authKey=a%2Bb%3D".into(),
        expires_at: Some(Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).unwrap()),
        attempts: 2,
        email: "ann@example.com".into(),
        message_id: "<4f1c@mail.example.com>".into(),
        error: None,
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read_rows(path: &Path) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .unwrap()
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn status_names_match_the_report_contract() {
    let names: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "planned",
            "linked",
            "sent",
            "failed",
            "invalid",
            "duplicate",
            "skipped",
            "in_doubt"
        ]
    );
    for s in Status::ALL {
        assert_eq!(s.to_string(), s.as_str());
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        let back: Status = serde_json::from_value(s.as_str().into()).unwrap();
        assert_eq!(back, s);
    }
}

#[test]
fn undelivered_leads_and_rejected_rows_are_told_apart() {
    let undelivered: Vec<_> = Status::ALL
        .into_iter()
        .filter(|s| s.is_undelivered())
        .collect();
    assert_eq!(undelivered, [Status::Failed, Status::InDoubt]);
    let rejected: Vec<_> = Status::ALL
        .into_iter()
        .filter(|s| s.is_rejected_input())
        .collect();
    assert_eq!(rejected, [Status::Invalid, Status::Duplicate]);
}

#[test]
fn escape_cell_quotes_every_formula_starter() {
    for first in ["=", "+", "-", "@", "\t", "\r"] {
        let cell = format!("{first}HYPERLINK(\"http://evil\")");
        assert_eq!(escape_cell(&cell), format!("'{cell}"), "{first:?}");
    }
}

#[test]
fn escape_cell_leaves_ordinary_cells_borrowed() {
    for cell in [
        "",
        "3f2b8c1e-9d4a",
        "https://x/?a=-1",
        "ann@example.com",
        " =1",
        "'",
    ] {
        assert!(
            matches!(escape_cell(cell), Cow::Borrowed(c) if c == cell),
            "{cell:?}"
        );
    }
}

#[test]
fn digits_match_to_string() {
    for n in [0u64, 7, 10, 99, 1_000_000, u64::MAX] {
        assert_eq!(digits(n, &mut [0; 20]), n.to_string());
    }
}

#[test]
fn header_is_written_in_contract_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.csv");
    let w = ReportWriter::create(&path).unwrap();
    assert_eq!(w.path(), path);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "row,lead_id,portal_id,status,portal_url,expires_at,attempts,email,message_id,error\n"
    );
}

#[test]
fn report_is_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.csv");
    ReportWriter::create(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn an_existing_report_is_replaced_by_a_private_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.csv");
    fs::write(&path, "old contents that must go\n".repeat(10)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    ReportWriter::create(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(read_rows(&path).len(), 1);
}

#[test]
fn create_error_names_the_path_and_the_fix() {
    let err = ReportWriter::create(Path::new("/nonexistent-dir/report.csv")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("/nonexistent-dir/report.csv"), "{msg}");
    assert!(msg.contains("--report"), "{msg}");
}

#[test]
fn a_record_round_trips_through_a_csv_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.csv");
    let mut w = ReportWriter::create(&path).unwrap();
    let full = record();
    let awkward = Record {
        row: 12,
        lead_id: "abc, \"quoted\"".into(),
        portal_id: String::new(),
        status: Status::InDoubt,
        portal_url: String::new(),
        expires_at: None,
        attempts: 0,
        email: String::new(),
        message_id: String::new(),
        error: Some(RowError::Earlier("two\nlines, with \"quotes\"".into())),
    };
    w.write(&full).unwrap();
    w.write(&awkward).unwrap();
    let rows = read_rows(&path);
    assert_eq!(rows[0], COLUMNS);
    assert_eq!(
        rows[1],
        [
            "7",
            "3f2b8c1e-9d4a-4e7b-a6c5-1b0f7e2d9c84",
            "c4e8a2f1-7b3d-4a96-8e15-2d9f0b6c7a31",
            "sent",
            "https://portal.example.com/login?x=1&authKey=a%2Bb%3D",
            "2026-11-23T06:00:00Z",
            "2",
            "ann@example.com",
            "<4f1c@mail.example.com>",
            "",
        ]
    );
    assert_eq!(
        rows[2],
        [
            "12",
            "abc, \"quoted\"",
            "",
            "in_doubt",
            "",
            "",
            "0",
            "",
            "",
            "two\nlines, with \"quotes\""
        ]
    );
}

#[test]
fn expires_at_drops_sub_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.csv");
    let mut w = ReportWriter::create(&path).unwrap();
    let at =
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::milliseconds(678);
    w.write(&Record {
        expires_at: Some(at),
        ..record()
    })
    .unwrap();
    assert_eq!(read_rows(&path)[1][5], "2026-01-02T03:04:05Z");
}

#[test]
fn dangerous_cells_are_escaped_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.csv");
    let mut w = ReportWriter::create(&path).unwrap();
    w.write(&Record {
        lead_id: "=cmd|' /C calc'!A0".into(),
        email: "@SUM(1+1)".into(),
        error: Some(RowError::Earlier("-2+3".into())),
        ..record()
    })
    .unwrap();
    let row = &read_rows(&path)[1];
    assert_eq!(row[1], "'=cmd|' /C calc'!A0");
    assert_eq!(row[7], "'@SUM(1+1)");
    assert_eq!(row[9], "'-2+3");
}

#[test]
fn each_row_reaches_the_file_before_write_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.csv");
    let mut w = ReportWriter::create(&path).unwrap();
    w.write(&record()).unwrap();
    // The writer is still open: what a crash now would leave behind.
    assert_eq!(read_rows(&path).len(), 2);
    drop(w);
}

#[test]
fn open_check_leaves_no_stray_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.json");
    open_check(&path).unwrap();
    assert!(!path.exists());
}

#[test]
fn open_check_keeps_an_existing_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.json");
    fs::write(&path, "previous run").unwrap();
    open_check(&path).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "previous run");
}

#[test]
fn open_check_rejects_a_missing_directory_or_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope/summary.json");
    let msg = format!("{:#}", open_check(&missing).unwrap_err());
    assert!(
        msg.contains("does not exist") && msg.contains("nope"),
        "{msg}"
    );
    let msg = format!("{:#}", open_check(dir.path()).unwrap_err());
    assert!(msg.contains("is a directory"), "{msg}");
}

#[test]
fn open_check_rejects_a_place_even_root_cannot_write() {
    let path = Path::new("/proc/lsq-dispatch-open-check.json");
    let msg = format!("{:#}", open_check(path).unwrap_err());
    assert!(msg.contains("/proc/lsq-dispatch-open-check.json"), "{msg}");
    assert!(!path.exists());
}

#[test]
fn open_check_rejects_an_unwritable_place() {
    if is_root() {
        return; // root writes anywhere; permissions cannot be tested
    }
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    fs::create_dir(&locked).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o500)).unwrap();
    assert!(open_check(&locked.join("summary.json")).is_err());
    let ro = dir.path().join("ro.json");
    fs::write(&ro, "x").unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o400)).unwrap();
    assert!(open_check(&ro).is_err());
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn the_rerun_files_are_named_after_the_report_and_kept_beside_it() {
    let paths = |report: &str| {
        let (retry, invalid) = rerun::rerun_paths(Path::new(report), Path::new("in/leads.csv"));
        (retry.display().to_string(), invalid.display().to_string())
    };
    assert_eq!(
        paths("/data/leads-report.csv"),
        (
            "/data/leads-retry.csv".into(),
            "/data/leads-invalid.csv".into()
        )
    );
    assert_eq!(
        paths("out/march.csv"),
        ("out/march-retry.csv".into(), "out/march-invalid.csv".into())
    );
    // The standard output has no directory of its own.
    assert_eq!(
        paths("/dev/stdout"),
        ("leads-retry.csv".into(), "leads-invalid.csv".into())
    );
}

#[test]
fn the_rerun_files_keep_the_bytes_of_a_report_name_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt as _;
    let path = |bytes: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(bytes));
    assert_eq!(
        rerun::rerun_paths(&path(b"/d/x\xff-report.csv"), Path::new("in.csv")),
        (path(b"/d/x\xff-retry.csv"), path(b"/d/x\xff-invalid.csv"))
    );
    assert_eq!(
        rerun::rerun_paths(Path::new("/dev/stdout"), &path(b"in/x\xfe.csv")),
        (path(b"x\xfe-retry.csv"), path(b"x\xfe-invalid.csv"))
    );
}
