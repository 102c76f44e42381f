//! Mail that real servers take, and every row in the report whatever the
//! SMTP server does: a server that goes away mid-run, greylisting, a strict
//! HELO check, a private CA, header text that looks encoded, and the
//! sample templates scored by SpamAssassin.

use std::path::Path;
use std::time::Duration;

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{fast_sandbox, read_report, run_on_sandbox, sample, with_email};
use lsq_sandbox::Sandbox;

fn email_command(
    sandbox: &Sandbox,
    smtp_url: &str,
    dir: &Path,
    input: &Path,
) -> std::process::Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--quiet"]);
    with_email(&mut cmd, smtp_url, &sample("templates"));
    cmd
}

/// The input rows' retry file, as lead ids.
fn retry_leads(dir: &Path) -> Vec<String> {
    let path = dir.join("report-retry.csv");
    if !path.exists() {
        return Vec::new();
    }
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader.records().map(|r| r.unwrap()[0].to_owned()).collect()
}

/// The SMTP server goes away while messages are going out at 3 a second:
/// the run aborts, and still every input row is in the report and every
/// failed lead in the retry file.
#[tokio::test(flavor = "multi_thread")]
async fn every_row_is_reported_when_the_smtp_server_goes_away_mid_run() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_with_email(dir.path(), 30);
    let mut cmd = email_command(&sandbox, &smtp.url(), dir.path(), &input);
    cmd.args(["--smtp-rate", "3/1s"]);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let accepted = smtp.messages().len();
    drop(smtp);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let rows = read_report(&dir.path().join("report.csv"));
    let mut lines: Vec<u64> = rows.iter().map(|r| r["row"].parse().unwrap()).collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        (2..=31).collect::<Vec<u64>>(),
        "every input line: {rows:?}\n{stderr}"
    );
    let sent = rows.iter().filter(|r| r["status"] == "sent").count();
    assert!(
        sent >= accepted && sent < 30,
        "{sent} sent, {accepted} accepted"
    );
    let mut failed: Vec<String> = rows
        .iter()
        .filter(|r| r["status"] == "failed")
        .map(|r| r["lead_id"].clone())
        .collect();
    assert!(!failed.is_empty(), "{rows:?}");
    let mut retry = retry_leads(dir.path());
    failed.sort();
    retry.sort();
    assert_eq!(retry, failed, "the retry file lists every failed lead");
}
