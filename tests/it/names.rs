//! Names a run derives from other names: its output files from an input
//! name that is not UTF-8, and the warning for an email domain that mixes
//! scripts the way a look-alike of a known domain does.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{
    fast_sandbox, lead_ids, lsq, read_report, run, run_on_sandbox, sample, stderr, stdout,
    with_email, write,
};

/// `dir/NAME` + `suffix`, byte for byte.
fn named(dir: &Path, name: &[u8], suffix: &str) -> PathBuf {
    dir.join(OsStr::from_bytes(&[name, suffix.as_bytes()].concat()))
}

/// The lead ids of a report or plan, sorted, invalid rows included.
fn ids_in(report: &Path) -> Vec<String> {
    let mut ids: Vec<String> = read_report(report)
        .into_iter()
        .map(|row| row["lead_id"].clone())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn two_inputs_whose_names_are_not_utf8_keep_reports_and_side_files_apart_under_lang_c() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    // Two names that read alike once their bad bytes become U+FFFD.
    let names: [&[u8]; 2] = [b"x\xff", b"x\xfe"];
    let ids = lead_ids(4);
    let mut expected = Vec::new();
    for (name, pair) in names.iter().zip(ids.chunks(2)) {
        let bad = format!("bad-{}", expected.len());
        let input = named(dir.path(), name, ".csv");
        std::fs::write(&input, format!("LeadId\n{}\n{bad}\n", pair.join("\n"))).unwrap();
        let mut rows = vec![pair[0].clone(), pair[1].clone(), bad.clone()];
        rows.sort();
        expected.push((input, rows, bad));
    }
    for (input, _, _) in &expected {
        let mut cmd = run_on_sandbox(&sandbox, dir.path(), input, &sandbox.portal_url());
        cmd.env("LANG", "C").env("LC_ALL", "C").arg("--quiet");
        assert_eq!(run(&mut cmd).status.code(), Some(5), "{input:?}");
        let mut plan = lsq(dir.path());
        plan.env("LANG", "C")
            .env("LC_ALL", "C")
            .arg("run")
            .arg(input)
            .args(["--dry-run", "--quiet"])
            .args(["--portal-id", lsq_sandbox::DEFAULT_PORTAL_ID]);
        assert_eq!(run(&mut plan).status.code(), Some(5), "{input:?}");
    }
    for (name, (input, rows, bad)) in names.iter().zip(&expected) {
        let report = named(dir.path(), name, "-report.csv");
        assert!(report.is_file(), "no report {report:?} for {input:?}");
        assert_eq!(&ids_in(&report), rows, "{report:?}");
        let plan = named(dir.path(), name, "-plan.csv");
        assert!(plan.is_file(), "no plan {plan:?} for {input:?}");
        assert_eq!(&ids_in(&plan), rows, "{plan:?}");
        let invalid = named(dir.path(), name, "-invalid.csv");
        assert_eq!(
            std::fs::read_to_string(&invalid).ok(),
            Some(format!("LeadId\n{bad}\n")),
            "{invalid:?}"
        );
    }
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains('\u{fffd}'))
        .collect();
    left.sort();
    assert_eq!(left.len(), 8, "each file under its own bytes: {left:?}");
}

/// The campaign a run named in its first JSON log line.
fn campaign_of(out: &std::process::Output) -> String {
    let first = stderr(out).lines().next().unwrap_or_default().to_owned();
    let start: serde_json::Value = serde_json::from_str(&first).expect("a JSON log line");
    start["campaign"].as_str().expect("the campaign").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retry_file_of_an_input_whose_name_is_not_utf8_never_resumes_anothers_campaign() {
    let unknown = [
        "0badbad0-1111-4222-8333-000000000001",
        "0badbad0-1111-4222-8333-000000000002",
    ];
    let sandbox = crate::support::sandbox(lsq_sandbox::SandboxConfig {
        unknown_leads: unknown.map(String::from).to_vec(),
        ..crate::support::fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let names: [&[u8]; 2] = [b"x\xff", b"x\xfe"];
    let ids = lead_ids(2);
    let mut campaigns = Vec::new();
    for ((name, id), bad) in names.iter().zip(&ids).zip(unknown) {
        let input = named(dir.path(), name, ".csv");
        std::fs::write(&input, format!("LeadId\n{id}\n{bad}\n")).unwrap();
        let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
        cmd.env("LANG", "C").args(["--log-format", "json"]);
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(3), "{input:?}");
        let campaign = campaign_of(&out);
        let advice = format!("run that file with --campaign '{campaign}'");
        assert!(
            crate::support::stderr(&out).contains(&advice),
            "no {advice:?}"
        );
        campaigns.push(campaign);
    }
    assert_ne!(campaigns[0], campaigns[1]);
    let retry = named(dir.path(), names[0], "-retry.csv");
    assert_eq!(
        std::fs::read_to_string(&retry).unwrap(),
        format!("LeadId\n{}\n", unknown[0])
    );
    let mut again = run_on_sandbox(&sandbox, dir.path(), &retry, &sandbox.portal_url());
    again.env("LANG", "C").args(["--log-format", "json"]);
    let out = run(&mut again);
    assert_eq!(out.status.code(), Some(3));
    assert_ne!(
        campaign_of(&out),
        campaigns[1],
        "the rows to retry of {} ran in the campaign of {}",
        names[0].escape_ascii(),
        names[1].escape_ascii()
    );
}

/// Addresses, and whether their domain mixes scripts: Latin with a Cyrillic
/// `а` (U+0430), written as it reads and in punycode; a domain wholly in
/// Cyrillic; a plain one.
const LOOKALIKES: [(&str, bool); 4] = [
    ("ann@ex\u{430}mple.com", true),
    ("cy@xn--exmple-4nf.com", true),
    (
        "bob@\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}",
        false,
    ),
    ("dee@example.com", false),
];

/// `leads.csv` in `dir` with one lead per address of [`LOOKALIKES`].
fn lookalike_leads(dir: &Path) -> PathBuf {
    let mut csv = String::from("LeadId,FirstName,Email\n");
    for (id, (address, _)) in lead_ids(LOOKALIKES.len()).iter().zip(LOOKALIKES) {
        csv.push_str(&format!("{id},Lead,{address}\n"));
    }
    write(dir, "leads.csv", &csv)
}

/// Checks that the report's rows have `status` and a note exactly for the
/// addresses of [`LOOKALIKES`] whose domain mixes scripts, and that the log
/// warns of those and no other.
fn assert_flagged(report: &Path, log: &str, status: &str) {
    let rows = read_report(report);
    assert_eq!(rows.len(), LOOKALIKES.len());
    for (address, mixed) in LOOKALIKES {
        let row = rows.iter().find(|r| r["email"] == address).expect(address);
        assert_eq!(row["status"], status, "{row:?}");
        let noted = row["error"].contains("mixes Latin with Cyrillic");
        assert_eq!(noted, mixed, "{row:?}");
        let warned = log
            .lines()
            .any(|line| line.contains(address) && line.contains("mixes"));
        assert_eq!(warned, mixed, "{address} in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_domain_mixing_scripts_is_mailed_with_a_warning_and_one_wholly_cyrillic_without() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = lookalike_leads(dir.path());
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv"]);
    let out = run(with_email(&mut cmd, &smtp.url(), &sample("templates")));
    assert_eq!(out.status.code(), Some(0), "a warning fails no row");
    assert_flagged(&dir.path().join("report.csv"), &stderr(&out), "sent");
    assert_eq!(smtp.messages().len(), LOOKALIKES.len());
}

#[test]
fn a_dry_run_plan_flags_a_domain_mixing_scripts_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let input = lookalike_leads(dir.path());
    let mut cmd = lsq(dir.path());
    cmd.arg("run")
        .arg(&input)
        .args(["--dry-run", "--report", "plan.csv"])
        .args(["--portal-id", lsq_sandbox::DEFAULT_PORTAL_ID]);
    let out = run(with_email(
        &mut cmd,
        "smtp://127.0.0.1:25",
        &sample("templates"),
    ));
    assert_eq!(out.status.code(), Some(0));
    assert_flagged(&dir.path().join("plan.csv"), &stderr(&out), "planned");
    let plan = stdout(&out);
    let warning = plan
        .lines()
        .find(|line| line.starts_with("warning: 2 addresses have a domain that mixes scripts"))
        .unwrap_or_else(|| panic!("no warning in the plan:\n{plan}"));
    assert!(warning.contains(LOOKALIKES[0].0), "{warning}");
}
