//! Mail that real servers take, and every row in the report whatever the
//! SMTP server does: a server that goes away mid-run, greylisting, a strict
//! HELO check, a private CA, header text that looks encoded, and the
//! sample templates scored by SpamAssassin.

use std::path::Path;
use std::time::Duration;

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{fast_sandbox, read_report, run, run_on_sandbox, sample, with_email};
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

/// A header value as a lenient mail reader shows it: every RFC 2047
/// encoded word (`=?charset?b|q?text?=`) decoded wherever it appears, and
/// whitespace between two encoded words dropped.
fn as_mail_reader_shows(value: &str) -> String {
    use base64::Engine as _;
    let mut shown = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let word = rest[start + 2..].splitn(4, '?').collect::<Vec<_>>();
        let decoded = match word.as_slice() {
            [_charset, enc, text, tail] if tail.starts_with('=') => {
                let bytes = match enc.to_ascii_lowercase().as_str() {
                    "b" => base64::engine::general_purpose::STANDARD.decode(text).ok(),
                    "q" => Some(q_decode(text)),
                    _ => None,
                };
                bytes.map(|b| {
                    (
                        String::from_utf8_lossy(&b).into_owned(),
                        text.len() + enc.len(),
                    )
                })
            }
            _ => None,
        };
        let before = &rest[..start];
        match decoded {
            Some((text, _)) => {
                if !(after_word && before.trim().is_empty()) {
                    shown.push_str(before);
                }
                shown.push_str(&text);
                let used = start + 2 + word[0].len() + 1 + word[1].len() + 1 + word[2].len() + 2;
                rest = &rest[used..];
                after_word = true;
            }
            None => {
                shown.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
                after_word = false;
            }
        }
    }
    shown.push_str(rest);
    shown
}

fn q_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => out.push(b' '),
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A cell that looks like an encoded word is shown as typed in the
/// Subject: the run encodes it, so no mail reader decodes the lead's data.
#[tokio::test(flavor = "multi_thread")]
async fn a_cell_that_looks_like_an_encoded_word_shows_as_typed_in_the_subject() {
    const CELL: &str = "=?utf-8?q?hi?=";
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let id = &crate::support::lead_ids(1)[0];
    let input = crate::support::write(
        dir.path(),
        "leads.csv",
        &format!("LeadId,FirstName,Email\n{id},{CELL},lead0@example.com\n"),
    );
    let out = run(&mut email_command(
        &sandbox,
        &smtp.url(),
        dir.path(),
        &input,
    ));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&out)
    );
    let subject = smtp.messages()[0].header("Subject").unwrap();
    assert_eq!(
        as_mail_reader_shows(&subject),
        format!("{CELL}, your sign-in link for the customer portal"),
        "raw: {subject}"
    );
}

/// SpamAssassin's score for one message, from its `X-Spam-Status` line
/// (local rules only: no network test may decide a CI run).
fn spamassassin_score(message: &Path) -> (f64, String) {
    let out = std::process::Command::new("spamassassin")
        .args(["-L", "-t"])
        .stdin(std::fs::File::open(message).unwrap())
        .output()
        .expect("spamassassin runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let score = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Spam-Status: "))
        .and_then(|status| status.split("score=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in spamassassin's output:\n{text}"));
    (score, text)
}

/// The samples' message, rendered as a run renders it, scores at most 0.5
/// with SpamAssassin's local rules.
#[tokio::test(flavor = "multi_thread")]
async fn the_sample_message_passes_spamassassin() {
    let test = "the_sample_message_passes_spamassassin";
    if !crate::support::installed_or_skip(test, "spamassassin", "apt-get install spamassassin") {
        return;
    }
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_with_email(dir.path(), 1);
    let mut cmd = email_command(&sandbox, &smtp.url(), dir.path(), &input);
    let out = run(cmd.args(["--outbox", "outbox"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&out)
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let (score, report) = spamassassin_score(&files[0]);
    assert!(
        score <= 0.5,
        "SpamAssassin scores the sample {score}:\n{report}"
    );
}

/// A server that refuses names that are not fully qualified takes the
/// run's default EHLO name; `--helo-name` and `LSQ_HELO_NAME` set it; and a
/// refused name stops the run at the pre-flight check, saying so.
#[tokio::test(flavor = "multi_thread")]
async fn the_ehlo_name_is_fully_qualified_settable_and_a_refusal_is_explained() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new().fqdn_helo());
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_with_email(dir.path(), 2);
    let out = run(&mut email_command(
        &sandbox,
        &smtp.url(),
        dir.path(),
        &input,
    ));
    let stderr = crate::support::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let names = smtp.helo_names();
    assert!(names.iter().all(|n| n.contains('.')), "{names:?}");

    let smtp = SmtpServer::start(SmtpBehaviour::new().fqdn_helo());
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_with_email(dir.path(), 2);
    let mut cmd = email_command(&sandbox, &smtp.url(), dir.path(), &input);
    let out = run(cmd.env("LSQ_HELO_NAME", "mail.acme.example"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&out)
    );
    assert!(smtp.helo_names().iter().all(|n| n == "mail.acme.example"));

    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_with_email(dir.path(), 2);
    let mut cmd = email_command(&sandbox, &smtp.url(), dir.path(), &input);
    let out = run(cmd.args(["--helo-name", "vm"]));
    let stderr = crate::support::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the EHLO name vm"), "{stderr}");
    assert!(stderr.contains("504 5.5.2"), "{stderr}");
    assert!(stderr.contains("--helo-name"), "{stderr}");
    assert_eq!(smtp.transactions(), 2, "no message after the refusal");
    assert!(read_report(&dir.path().join("report.csv")).is_empty());
}

/// A relay whose certificate comes from a private CA: refused as a
/// certificate error that says what to do, trusted with `--smtp-ca-file`
/// (or `LSQ_SMTP_CA_FILE`), and through the system's store (`SSL_CERT_FILE`).
#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_is_trusted_through_the_ca_file_or_the_system_store() {
    let pki = crate::support::private_ca::PrivateCa::issuing_for(&["127.0.0.1"]);
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new().starttls(pki.server.clone()));
    let url = format!("smtp://{}?tls=required", smtp.addr);
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::support::write(dir.path(), "acme-ca.pem", &pki.ca_pem);
    let input = crate::support::leads_with_email(dir.path(), 2);

    let out = run(&mut email_command(&sandbox, &url, dir.path(), &input));
    let stderr = crate::support::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(stderr.contains("--smtp-ca-file"), "{stderr}");
    assert!(!stderr.contains("usually port"), "no port advice: {stderr}");
    assert!(smtp.tls_failures() > 0);
    assert!(smtp.messages().is_empty());

    let mut cmd = email_command(&sandbox, &url, dir.path(), &input);
    let out = run(cmd.arg("--smtp-ca-file").arg(&ca));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&out)
    );
    assert_eq!(smtp.messages().len(), 2);

    for (name, value) in [("LSQ_SMTP_CA_FILE", &ca), ("SSL_CERT_FILE", &ca)] {
        let dir = tempfile::tempdir().unwrap();
        let input = crate::support::leads_with_email(dir.path(), 1);
        let mut cmd = email_command(&sandbox, &url, dir.path(), &input);
        let out = run(cmd.env(name, value));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            crate::support::stderr(&out)
        );
    }
}
