//! Hostile input files through the real binary: a stray quote that would
//! swallow the rest of the file, two columns of one name, a file with no line
//! end at all (`/dev/zero`), a 50 MB cell and rows just under the size limit.
//! No row vanishes without a trace, no column is read ambiguously, and memory
//! stays bounded.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{
    fast_sandbox, lead_ids, lsq, read_report, run, run_measured, run_on_sandbox, stderr, stdout,
    with_email, write, write_templates, Measured,
};

const PORTAL: &str = "9b2c4f6e-1d3a-4c5b-8e7f-a0b1c2d3e4f5";

/// `LeadId,FirstName` with `n` leads, the cell of lead `i` given by `name`.
fn leads_named(dir: &Path, n: usize, name: impl Fn(usize) -> String) -> std::path::PathBuf {
    let mut csv = String::from("LeadId,FirstName\n");
    for (i, id) in lead_ids(n).iter().enumerate() {
        csv.push_str(&format!("{id},{}\n", name(i)));
    }
    write(dir, "leads.csv", &csv)
}

/// `run INPUT --dry-run` with its plan in `dir/plan.csv`.
fn plan(dir: &Path, input: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = lsq(dir);
    cmd.arg("run")
        .arg(input)
        .args(["--dry-run", "--portal-id", PORTAL, "--report", "plan.csv"]);
    cmd
}

/// Runs `cmd` measured, prints its peak memory and checks it against the
/// peak of `ordinary` (the same kind of run on an ordinary input, measured
/// now) plus half of `guarded_mb`, what the run would hold on top if it read
/// what it must not: a whole oversized cell, the whole file ahead. The bound
/// moves with whatever the machine under its present load adds to every
/// run, and stays far below the failure it guards.
fn run_bounded(cmd: &Command, ordinary: &Command, what: &str, guarded_mb: f64) -> Measured {
    let ordinary = run_measured(ordinary, ordinary.get_current_dir().unwrap());
    assert_eq!(
        ordinary.code,
        Some(0),
        "the ordinary run: {}",
        ordinary.stderr
    );
    let dir = cmd.get_current_dir().unwrap();
    let measured = run_measured(cmd, dir);
    let bound = ordinary.peak_rss_mb + guarded_mb / 2.0;
    println!(
        "{what}: peak RSS {:.1} MB (an ordinary run {:.1} MB, bound {bound:.1} MB), exit {:?}",
        measured.peak_rss_mb, ordinary.peak_rss_mb, measured.code
    );
    assert!(
        measured.peak_rss_mb < bound,
        "{what}: peak RSS {:.1} MB, over {bound:.1} MB",
        measured.peak_rss_mb
    );
    measured
}

/// A plan of three ordinary leads in a folder of its own inside `dir`: the
/// run a hostile input is measured against.
fn ordinary_plan(dir: &Path) -> Command {
    let own = dir.join("ordinary");
    std::fs::create_dir(&own).unwrap();
    let input = leads_named(&own, 3, |i| format!("Lead{i}"));
    plan(&own, &input)
}

/// The report's rows by input line.
fn rows_by_line(report: &Path) -> HashMap<u64, HashMap<String, String>> {
    read_report(report)
        .into_iter()
        .map(|row| (row["row"].parse().unwrap(), row))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unterminated_quote_on_row_10_of_1000_loses_no_lead() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    // Row 10 (line 11) opens a quote that nothing closes.
    let input = leads_named(dir.path(), 1000, |i| match i {
        9 => "\"Bob".to_owned(),
        _ => format!("Lead{i}"),
    });
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv"]);
    let out = run(&mut cmd);
    assert_eq!(
        out.status.code(),
        Some(5),
        "one invalid row, every lead linked"
    );

    let rows = rows_by_line(&dir.path().join("report.csv"));
    assert_eq!(rows.len(), 1000, "every input row is in the report");
    for (i, id) in lead_ids(1000).iter().enumerate() {
        let row = &rows[&(i as u64 + 2)];
        assert_eq!(&row["lead_id"], id, "line {}", i + 2);
        if i == 9 {
            assert_eq!(row["status"], "invalid");
            let error = &row["error"];
            assert!(
                error.contains("quote") && error.contains("line 11"),
                "{error}"
            );
        } else {
            assert_eq!(row["status"], "linked", "line {}", i + 2);
        }
    }
    assert_eq!(sandbox.stats().calls, 999, "one call per valid lead");
    let invalid = std::fs::read_to_string(dir.path().join("report-invalid.csv")).unwrap();
    let ids = lead_ids(1000);
    assert_eq!(invalid.lines().count(), 2, "{invalid}");
    assert!(invalid.contains(&ids[9]), "{invalid}");
    assert!(stdout(&out).contains("invalid rows: report-invalid.csv"));
}

#[test]
fn a_stray_quote_closed_rows_later_swallows_nothing_between() {
    let dir = tempfile::tempdir().unwrap();
    // Line 11 opens a quote; line 501's `"Alice" Smith` would close it, so
    // a lenient reader takes lines 11 to 501 for one row.
    let input = leads_named(dir.path(), 1000, |i| match i {
        9 => "\"Bob".to_owned(),
        499 => "\"Alice\" Smith".to_owned(),
        _ => format!("Lead{i}"),
    });
    let out = run(&mut plan(dir.path(), &input));
    assert_eq!(out.status.code(), Some(5));
    let rows = rows_by_line(&dir.path().join("plan.csv"));
    assert_eq!(rows.len(), 1000, "every input row is in the plan");
    assert_eq!(rows[&11]["status"], "invalid");
    assert!(rows[&11]["error"].contains("line 11"), "{:?}", rows[&11]);
    let planned = rows.values().filter(|r| r["status"] == "planned").count();
    assert_eq!(planned, 999);
    assert_eq!(rows[&501]["status"], "planned");
    let plan = stdout(&out);
    assert!(plan.contains(" 1 (stray quote: 1)"), "{plan}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_lead_id_columns_are_a_usage_error_before_any_call() {
    let sandbox = fast_sandbox().await;
    let ids = lead_ids(2);
    for header in ["LeadId,LeadId", " leadid ,LEADID "] {
        let dir = tempfile::tempdir().unwrap();
        let input = write(
            dir.path(),
            "leads.csv",
            &format!("{header}\n{},{}\n", ids[0], ids[1]),
        );
        let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
        cmd.args(["--report", "report.csv", "--quiet"]);
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{header}");
        let err = stderr(&out);
        assert!(
            err.contains("more than one") && err.to_lowercase().contains("\"leadid\""),
            "{err}"
        );
    }
    assert_eq!(sandbox.stats().calls, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_email_columns_are_a_usage_error_before_any_call_or_message() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(2);
    let input = write(
        dir.path(),
        "leads.csv",
        &format!(
            "LeadId,Email,FirstName,Email\n{},first@example.com,Ann,second@example.com\n{},third@example.com,Bo,fourth@example.com\n",
            ids[0], ids[1]
        ),
    );
    let templates = write_templates(dir.path(), "Hi {{ FirstName }}", "{{ Email }}: {{ link }}");
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--quiet"]);
    with_email(&mut cmd, &smtp.url(), &templates);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("\"Email\"") && err.contains("more than one"),
        "{err}"
    );
    assert_eq!(sandbox.stats().calls, 0);
    assert_eq!(smtp.transactions(), 0);
}

#[test]
fn dev_zero_as_input_is_refused_with_bounded_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = plan(dir.path(), "/dev/zero");
    // Reads without a bound would go on to the run's 1 GiB address space.
    let ordinary = ordinary_plan(dir.path());
    let measured = run_bounded(&cmd, &ordinary, "run /dev/zero --dry-run", 1024.0);
    assert_eq!(measured.code, Some(1), "{}", measured.stderr);
    assert!(
        measured.stderr.contains("/dev/zero") && measured.stderr.contains("line 1"),
        "{}",
        measured.stderr
    );
}

#[test]
fn a_50_mb_cell_is_refused_naming_its_line_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(3);
    let input = dir.path().join("leads.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    write!(file, "LeadId,Note\n{},short\n{},", ids[0], ids[1]).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..50 {
        file.write_all(&chunk).unwrap();
    }
    write!(file, "\n{},short\n", ids[2]).unwrap();
    file.into_inner().unwrap().sync_all().unwrap();

    let cmd = plan(dir.path(), &input);
    let ordinary = ordinary_plan(dir.path());
    let what = "run with a 50 MB cell --dry-run";
    let measured = run_bounded(&cmd, &ordinary, what, 50.0);
    assert_eq!(measured.code, Some(1), "{}", measured.stderr);
    assert!(
        measured.stderr.contains("line 3") && measured.stderr.contains("longer than"),
        "{}",
        measured.stderr
    );
    let rows = rows_by_line(&dir.path().join("plan.csv"));
    assert_eq!(rows[&2]["status"], "planned", "rows before it are kept");
}

#[test]
fn an_input_that_cannot_be_read_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("leads")).unwrap();
    for (input, cause) in [
        ("leads", "is a directory"),
        ("missing.csv", "No such file or directory"),
    ] {
        let out = run(&mut plan(dir.path(), input));
        assert_eq!(out.status.code(), Some(1), "{input}");
        let err = stderr(&out);
        assert_eq!(err.matches(cause).count(), 1, "{err}");
        assert!(!err.contains("os error 21"), "{err}");
    }
}

#[test]
fn a_plan_counts_ragged_rows_under_a_readable_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(3);
    let input = write(
        dir.path(),
        "leads.csv",
        &format!(
            "LeadId,Name\n{},a,extra\n{}\n{},c\n",
            ids[0], ids[1], ids[2]
        ),
    );
    let out = run(&mut plan(dir.path(), &input));
    assert_eq!(out.status.code(), Some(5));
    let plan = stdout(&out);
    assert!(plan.contains(" 2 (wrong number of cells: 2)"), "{plan}");
    let rows = rows_by_line(&dir.path().join("plan.csv"));
    assert_eq!(rows[&2]["error"], "row has 3 cells, header has 2");
    assert_eq!(rows[&3]["error"], "row has 1 cell, header has 2");
}

/// A plan with email, to an outbox, of `rows` rows of 14 cells of 60 KB
/// (840 KB each, under the 1 MiB limit), in `dir`.
fn near_limit_plan(dir: &Path, rows: usize) -> Command {
    let input = dir.join("leads.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    let columns: Vec<String> = (0..14).map(|i| format!("Note{i}")).collect();
    writeln!(file, "LeadId,Email,{}", columns.join(",")).unwrap();
    let cells = vec!["y".repeat(60_000); 14].join(",");
    for (i, id) in lead_ids(rows).iter().enumerate() {
        writeln!(file, "{id},lead{i}@example.com,{cells}").unwrap();
    }
    file.into_inner().unwrap().sync_all().unwrap();
    let templates = write_templates(dir, "Hi", "{{ link }}");
    std::fs::create_dir(dir.join("outbox")).unwrap();

    let mut cmd = plan(dir, &input);
    cmd.args(["--portal-url", "https://apply.example.com/login", "--email"])
        .arg("--templates")
        .arg(&templates)
        .args(["--from", "invites@acme.example", "--outbox", "outbox"]);
    cmd
}

#[test]
fn rows_near_the_size_limit_are_not_read_far_ahead() {
    let dir = tempfile::tempdir().unwrap();
    // 100 rows: 84 MB, all of it held if the file were read far ahead.
    let cmd = near_limit_plan(dir.path(), 100);
    let own = dir.path().join("ordinary");
    std::fs::create_dir(&own).unwrap();
    let ordinary = near_limit_plan(&own, 2);
    let what = "run with 100 rows of 840 KB --dry-run --email";
    let measured = run_bounded(&cmd, &ordinary, what, 84.0);
    assert_eq!(measured.code, Some(0), "{}", measured.stderr);
    assert_eq!(read_report(&dir.path().join("plan.csv")).len(), 100);
}
