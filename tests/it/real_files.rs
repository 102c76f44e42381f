//! The files people really have. What Excel and LeadSquared's own exports
//! save (UTF-16 with a byte-order mark, `;`-separated, Latin-1, a
//! `ProspectID` column) runs as its plain UTF-8 twin does, rows to retry and
//! all; a workbook, a file in another encoding than the one read and a file
//! with two LeadId columns are refused before any call; `--limit` splits a
//! campaign over runs that together do every lead once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{
    fast_config, fast_sandbox, lead_ids, read_report, run, run_on_sandbox, sandbox, stderr,
    with_email, write, write_templates,
};
use lsq_sandbox::{Sandbox, SandboxConfig};

/// A LeadId the sandbox answers with 400 `Lead does not exist`: its row
/// fails, and goes to the rows to retry.
const UNKNOWN: &str = "0badbad0-1111-4222-8333-000000000000";

/// How one file is written.
struct Form {
    name: &'static str,
    separator: &'static str,
    id_column: &'static str,
    line_end: &'static str,
    encoding: Written,
    flags: &'static [&'static str],
}

#[derive(Clone, Copy, PartialEq)]
enum Written {
    Utf8,
    Utf16LeWithBom,
    Latin1,
}

impl Written {
    fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Written::Utf8 => text.as_bytes().to_vec(),
            Written::Utf16LeWithBom => {
                let mut out = vec![0xFF, 0xFE];
                out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
                out
            }
            Written::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).expect("a Latin-1 character"))
                .collect(),
        }
    }
}

const PLAIN: Form = Form {
    name: "plain",
    separator: ",",
    id_column: "LeadId",
    line_end: "\n",
    encoding: Written::Utf8,
    flags: &[],
};

/// Excel's "Unicode Text": UTF-16LE with a byte-order mark, tab-separated.
const UTF16: Form = Form {
    name: "utf16",
    separator: "\t",
    id_column: "LeadId",
    line_end: "\r\n",
    encoding: Written::Utf16LeWithBom,
    flags: &[],
};

/// Excel's "CSV" in a locale whose decimal mark is a comma.
const SEMICOLON: Form = Form {
    name: "semicolon",
    separator: ";",
    id_column: "LeadId",
    line_end: "\r\n",
    encoding: Written::Utf8,
    flags: &[],
};

const LATIN1: Form = Form {
    name: "latin1",
    separator: ",",
    id_column: "LeadId",
    line_end: "\r\n",
    encoding: Written::Latin1,
    flags: &["--encoding", "latin1"],
};

/// LeadSquared's own export.
const PROSPECT: Form = Form {
    name: "prospect",
    separator: ",",
    id_column: "ProspectID",
    line_end: "\n",
    encoding: Written::Utf8,
    flags: &[],
};

/// Names every form can write (Latin-1 has each letter).
const NAMES: [&str; 4] = ["Jérôme", "Zoë", "Ana", "Ñuñez"];

/// The same leads in any form: four good ones, one the sandbox does not
/// know, one invalid and one duplicate. The header line and the data lines,
/// without line ends.
fn lines(form: &Form) -> (String, Vec<String>) {
    let sep = form.separator;
    let ids = lead_ids(NAMES.len());
    let mut rows: Vec<Vec<String>> = ids
        .iter()
        .zip(NAMES)
        .enumerate()
        .map(|(i, (id, name))| vec![id.clone(), name.into(), format!("lead{i}@example.com")])
        .collect();
    rows.push(vec![
        UNKNOWN.into(),
        "Zoë".into(),
        "gone@example.com".into(),
    ]);
    rows.push(vec!["LD-1".into(), "Ana".into(), "ld@example.com".into()]);
    rows.push(vec![
        ids[1].to_uppercase(),
        "Zoë".into(),
        "lead1@example.com".into(),
    ]);
    let header = [form.id_column, "FirstName", "Email"].join(sep);
    let rows = rows.iter().map(|r| r.join(sep)).collect();
    (header, rows)
}

fn write_form(dir: &Path, form: &Form) -> PathBuf {
    let (header, rows) = lines(form);
    let mut text = header + form.line_end;
    for row in rows {
        text += &row;
        text += form.line_end;
    }
    let path = dir.join(format!("{}.csv", form.name));
    std::fs::write(&path, form.encoding.encode(&text)).unwrap();
    path
}

/// A run of `input` on the sandbox under one campaign, emailing through
/// `smtp`, reporting to `report` in `dir`.
fn command(
    sandbox: &Sandbox,
    smtp: &SmtpServer,
    dir: &Path,
    input: &Path,
    report: &str,
) -> Command {
    let templates = dir.join("templates");
    if !templates.exists() {
        write_templates(
            dir,
            "Hello {{ FirstName }}",
            "Dear {{ FirstName }}: {{ link }}\n",
        );
    }
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    cmd.args(["--campaign", "invites", "--report", report]);
    with_email(&mut cmd, &smtp.url(), &templates);
    cmd
}

/// A report row without what a new key changes: the key in the link and
/// its expiry.
fn comparable(row: &HashMap<String, String>) -> BTreeMap<String, String> {
    let mut row: BTreeMap<String, String> = row.clone().into_iter().collect();
    row.remove("expires_at");
    let link = row.get_mut("portal_url").unwrap();
    if let Some(at) = link.find("authKey=") {
        link.truncate(at);
    }
    row
}

fn comparable_report(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut rows: Vec<_> = read_report(path).iter().map(comparable).collect();
    rows.sort_by_key(|r| r["row"].parse::<u64>().unwrap());
    rows
}

/// Each message's recipient, subject (as sent) and text, the link cut off.
fn mail(smtp: &SmtpServer) -> Vec<(Vec<String>, String, String)> {
    let mut mail: Vec<_> = smtp
        .messages()
        .iter()
        .map(|m| {
            let text = m.text().unwrap();
            let text = text.split("http").next().unwrap().to_owned();
            (m.to.clone(), m.header("Subject").unwrap(), text)
        })
        .collect();
    mail.sort();
    mail
}

/// A fast sandbox that does not know [`UNKNOWN`].
async fn sandbox_without_unknown() -> Sandbox {
    sandbox(SandboxConfig {
        unknown_leads: vec![UNKNOWN.into()],
        ..fast_config()
    })
    .await
}

struct Ran {
    dir: tempfile::TempDir,
    report: Vec<BTreeMap<String, String>>,
    mail: Vec<(Vec<String>, String, String)>,
    stderr: String,
}

async fn run_form(sandbox: &Sandbox, form: &Form) -> Ran {
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = write_form(dir.path(), form);
    let out = run(command(sandbox, &smtp, dir.path(), &input, "report.csv").args(form.flags));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}: failed and invalid rows",
        form.name
    );
    Ran {
        report: comparable_report(&dir.path().join("report.csv")),
        mail: mail(&smtp),
        stderr: stderr(&out),
        dir,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn utf16_semicolon_latin1_and_prospect_id_files_give_the_plain_files_report_and_mail() {
    let sandbox = sandbox_without_unknown().await;
    let plain = run_form(&sandbox, &PLAIN).await;
    let statuses: Vec<&str> = plain.report.iter().map(|r| r["status"].as_str()).collect();
    assert_eq!(
        statuses,
        [
            "sent",
            "sent",
            "sent",
            "sent",
            "failed",
            "invalid",
            "duplicate"
        ]
    );
    let greeted: Vec<&str> = plain
        .mail
        .iter()
        .map(|(_, _, text)| text.as_str())
        .collect();
    assert_eq!(
        greeted,
        NAMES.map(|n| format!("Dear {n}: ")),
        "templates see the names as written"
    );
    for (form, told) in [
        (
            &UTF16,
            "UTF-16LE, tab-separated, LeadIds in column \"LeadId\"",
        ),
        (
            &SEMICOLON,
            "UTF-8, semicolon-separated, LeadIds in column \"LeadId\"",
        ),
        (
            &LATIN1,
            "windows-1252, comma-separated, LeadIds in column \"LeadId\"",
        ),
        (
            &PROSPECT,
            "UTF-8, comma-separated, LeadIds in column \"ProspectID\"",
        ),
    ] {
        let mut ran = run_form(&sandbox, form).await;
        // An invalid row's reason names the file's own LeadId column.
        for row in &mut ran.report {
            let error = row.get_mut("error").unwrap();
            *error = error.replace(form.id_column, "LeadId");
        }
        assert_eq!(ran.report, plain.report, "{}", form.name);
        assert_eq!(ran.mail, plain.mail, "{}", form.name);
        let said = format!("{}.csv: {told}", form.name);
        assert!(ran.stderr.contains(&said), "{}: {}", form.name, ran.stderr);
    }
}

/// Decodes a file written in `written`, checking its byte-order mark.
fn decode(written: Written, bytes: &[u8]) -> String {
    match written {
        Written::Utf16LeWithBom => {
            assert_eq!(&bytes[..2], b"\xFF\xFE", "the byte-order mark is kept");
            let units: Vec<u16> = bytes[2..]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).unwrap()
        }
        _ => String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rows_to_retry_of_a_utf16_or_semicolon_file_run_again_as_the_file_did() {
    let sandbox = sandbox_without_unknown().await;
    for form in [&UTF16, &SEMICOLON] {
        let ran = run_form(&sandbox, form).await;
        let dir = ran.dir.path();
        let (header, rows) = lines(form);
        let file = |name: &str| std::fs::read(dir.join(name)).unwrap();
        // Line by line (rows finish in any order), in the input's encoding,
        // separator and line ends.
        let expected = |picked: &[&String]| {
            let mut sorted: Vec<String> = picked
                .iter()
                .map(|r| format!("{r}{}", form.line_end))
                .collect();
            sorted.sort();
            format!("{header}{}{}", form.line_end, sorted.concat())
        };
        let in_order = |written: Written, bytes: &[u8]| {
            let text = decode(written, bytes);
            let (head, rest) =
                text.split_at(text.find(form.line_end).unwrap() + form.line_end.len());
            let mut sorted: Vec<String> = rest
                .split_inclusive(form.line_end)
                .map(str::to_owned)
                .collect();
            sorted.sort();
            format!("{head}{}", sorted.concat())
        };
        let retry = file("report-retry.csv");
        assert_eq!(
            in_order(form.encoding, &retry),
            expected(&[&rows[4]]),
            "{}",
            form.name
        );
        assert_eq!(form.encoding.encode(&decode(form.encoding, &retry)), retry);
        let invalid = file("report-invalid.csv");
        assert_eq!(
            in_order(form.encoding, &invalid),
            expected(&[&rows[5], &rows[6]]),
            "{}",
            form.name
        );

        let smtp = SmtpServer::start(SmtpBehaviour::new());
        let retry_file = dir.join("report-retry.csv");
        let out = run(&mut command(&sandbox, &smtp, dir, &retry_file, "again.csv"));
        assert_eq!(out.status.code(), Some(3), "{}", form.name);
        let before = ran.report.iter().find(|r| r["status"] == "failed").unwrap();
        let after = comparable_report(&dir.join("again.csv"));
        assert_eq!(after.len(), 1, "{}", form.name);
        for column in ["lead_id", "portal_id", "status", "error", "email"] {
            assert_eq!(after[0][column], before[column], "{}: {column}", form.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workbook_is_refused_before_any_call_saying_how_to_save_it_as_csv() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        (
            "leads.xlsx",
            &b"PK\x03\x04\x14\x00\x06\x00\x08\x00[Content_Types].xml"[..],
        ),
        (
            "export.csv",
            &b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\x00\x00\x00\x00"[..],
        ),
    ] {
        let input = dir.path().join(name);
        std::fs::write(&input, bytes).unwrap();
        let out = run(&mut run_on_sandbox(
            &sandbox,
            dir.path(),
            &input,
            &sandbox.portal_url(),
        ));
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("cannot read the input {}", input.display())),
            "{err}"
        );
        assert!(err.contains("Excel"), "{err}");
        assert!(err.contains("\"CSV UTF-8 (Comma delimited)\""), "{err}");
    }
    assert_eq!(sandbox.stats().calls, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_not_in_utf8_is_refused_before_any_call_naming_its_line_and_the_encoding_to_give() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    // The first non-ASCII name far down the file, past what any one read
    // takes in: still found before the first call.
    let mut bytes = b"LeadId,FirstName\n".to_vec();
    for id in lead_ids(5000) {
        bytes.extend_from_slice(format!("{id},Ann\n").as_bytes());
    }
    bytes.extend_from_slice(b"0badbad0-1111-4222-8333-000000000001,J\xe9r\xf4me\n");
    let input = dir.path().join("leads.csv");
    std::fs::write(&input, &bytes).unwrap();
    let out = run(&mut run_on_sandbox(
        &sandbox,
        dir.path(),
        &input,
        &sandbox.portal_url(),
    ));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot read the input {}: line 5002 is not UTF-8; if Excel or another Windows \
             program saved it, give --encoding windows-1252",
            input.display()
        )),
        "{err}"
    );
    assert_eq!(sandbox.stats().calls, 0, "refused before any call");
    let report = dir.path().join("leads-report.csv");
    assert!(!report.exists() || read_report(&report).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_columns_that_could_hold_the_lead_are_a_usage_error_naming_both() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let id = &lead_ids(1)[0];
    let input = write(
        dir.path(),
        "leads.csv",
        &format!("Lead ID,Email,ProspectID\n{id},a@example.com,{id}\n"),
    );
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "the input {} has more than one LeadId column: \"Lead ID\" (column 1) and \
             \"ProspectID\" (column 3); name the one to use with --lead-column",
            input.display()
        )),
        "{}",
        stderr(&out)
    );
    let out = run(cmd.args(["--lead-column", "ProspectID"]));
    assert_eq!(out.status.code(), Some(0), "named, it runs");
    assert_eq!(sandbox.stats().calls, 1);
}

/// The rows of a report by status, as the LeadIds in them.
fn leads_by_status(report: &Path) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in read_report(report) {
        by.entry(row["status"].clone())
            .or_default()
            .push(row["lead_id"].clone());
    }
    by.values_mut().for_each(|v| v.sort());
    by
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_with_a_limit_do_every_lead_of_the_campaign_once() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(7);
    let mut csv = String::from("LeadId\n");
    // Invalid and duplicate rows are not counted against the limit.
    for (i, id) in ids.iter().enumerate() {
        csv += &format!("{id}\n");
        if i == 1 {
            csv += "LD-1\n";
            csv += &format!("{}\n", ids[0]);
        }
    }
    let input = write(dir.path(), "leads.csv", &csv);
    let command = |report: &str| {
        let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
        cmd.args(["--limit", "4", "--report", report]);
        cmd
    };

    let out = run(&mut command("first.csv"));
    assert_eq!(
        out.status.code(),
        Some(5),
        "the invalid row, and nothing failed"
    );
    let first = leads_by_status(&dir.path().join("first.csv"));
    assert_eq!(
        first["linked"],
        ids[..4].to_vec(),
        "the first four, in input order"
    );
    assert_eq!(first["skipped"], ids[4..].to_vec());
    assert_eq!(sandbox.stats().calls, 4);
    let beyond = read_report(&dir.path().join("first.csv"))
        .into_iter()
        .find(|r| r["status"] == "skipped")
        .unwrap();
    assert_eq!(
        beyond["error"],
        "beyond --limit 4; a later run of this campaign continues with it"
    );
    assert!(
        !dir.path().join("first-retry.csv").exists(),
        "rows beyond the limit are no rows to retry"
    );

    // A plan of the next run: four keys kept, three to mint, none left.
    let out = run(command("plan.csv").arg("--dry-run"));
    assert_eq!(plan_figure(&out, "links reused"), 4);
    assert_eq!(plan_figure(&out, "API calls needed"), 3);
    assert_eq!(plan_figure(&out, "beyond --limit"), 0);

    let out = run(&mut command("second.csv"));
    assert_eq!(out.status.code(), Some(5));
    let second = leads_by_status(&dir.path().join("second.csv"));
    assert_eq!(
        second["linked"],
        ids.to_vec(),
        "kept keys for four, new for three"
    );
    assert!(!second.contains_key("skipped"), "{second:?}");
    assert_eq!(
        sandbox.stats().calls,
        7,
        "every lead minted once over the two runs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_plans_the_limit_and_reports_the_rest_beyond_it() {
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(5);
    let input = crate::support::leads_csv(dir.path(), &ids);
    let out = run(crate::support::lsq(dir.path())
        .args(["run", "--dry-run", "--limit", "2"])
        .arg(&input)
        .args(["--portal-id", "c4e8a2f1-7b3d-4a96-8e15-2d9f0b6c7a31"]));
    assert_eq!(out.status.code(), Some(0));
    let plan = leads_by_status(&dir.path().join("leads-plan.csv"));
    assert_eq!(plan["planned"], ids[..2].to_vec());
    assert_eq!(plan["skipped"], ids[2..].to_vec());
    assert_eq!(plan_figure(&out, "planned"), 2);
    assert_eq!(plan_figure(&out, "beyond --limit"), 3);
}

/// A figure of the plan a dry run printed; 0 for a line it left out.
fn plan_figure(out: &std::process::Output, label: &str) -> u64 {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| {
            line.strip_prefix(label)
                .filter(|rest| rest.starts_with(' '))
        })
        .map_or(0, |rest| rest.trim().replace(',', "").parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_email_a_limit_counts_the_messages_and_the_next_run_sends_the_rest() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_with_email(dir.path(), 5);
    for (report, sent, skipped) in [
        ("first.csv", 2, 3),
        ("second.csv", 2, 3),
        ("third.csv", 1, 4),
    ] {
        let out = run(command(&sandbox, &smtp, dir.path(), &input, report).args(["--limit", "2"]));
        assert_eq!(out.status.code(), Some(0), "{report}");
        let by = leads_by_status(&dir.path().join(report));
        assert_eq!(by["sent"].len(), sent, "{report}: {by:?}");
        assert_eq!(by["skipped"].len(), skipped, "{report}: {by:?}");
    }
    assert_eq!(smtp.messages().len(), 5, "each lead emailed once");
    assert_eq!(sandbox.stats().calls, 5, "each lead minted once");
}
