//! Hostile input files through the real binary: a stray quote that would
//! swallow the rest of the file, two columns of one name, a file with no line
//! end at all (`/dev/zero`) and a 50 MB cell. No row vanishes without a trace,
//! no column is read ambiguously, and memory stays bounded.

use std::collections::HashMap;
use std::path::Path;

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{
    fast_sandbox, lead_ids, lsq, read_report, run, run_on_sandbox, stderr, stdout, with_email,
    write, write_templates,
};

const PORTAL: &str = "9b2c4f6e-1d3a-4c5b-8e7f-a0b1c2d3e4f5";

/// The report's rows by input line.
fn rows_by_line(report: &Path) -> HashMap<u64, HashMap<String, String>> {
    read_report(report)
        .into_iter()
        .map(|row| (row["row"].parse().unwrap(), row))
        .collect()
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
fn an_input_that_cannot_be_read_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("leads")).unwrap();
    for (input, cause) in [
        ("leads", "is a directory"),
        ("missing.csv", "No such file or directory"),
    ] {
        let out = run(lsq(dir.path())
            .args(["run", input, "--dry-run", "--portal-id", PORTAL])
            .args(["--report", "plan.csv"]));
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
    let out = run(lsq(dir.path()).arg("run").arg(&input).args([
        "--dry-run",
        "--portal-id",
        PORTAL,
        "--report",
        "plan.csv",
    ]));
    assert_eq!(out.status.code(), Some(3));
    let plan = stdout(&out);
    assert!(plan.contains(" 2 (wrong number of cells: 2)"), "{plan}");
    let rows = rows_by_line(&dir.path().join("plan.csv"));
    assert_eq!(rows[&2]["error"], "row has 3 cells, header has 2");
    assert_eq!(rows[&3]["error"], "row has 1 cell, header has 2");
}
