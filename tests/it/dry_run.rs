//! `run --dry-run`: no network at all, every rule checked, a plan, previews,
//! and a plan that never overwrites a real run's report.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;

use crate::support::{
    fast_sandbox, lead_ids, leads_csv, lsq, read_report, run, run_ok, run_on_sandbox, sample,
    stdout, with_email, write,
};

/// A listener nobody should ever connect to.
fn trap() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

fn untouched(listener: &TcpListener) -> bool {
    matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn fixture(dir: &Path) -> std::path::PathBuf {
    let ids = lead_ids(6);
    let csv = format!(
        "LeadId,FirstName,Email,PortalId\n\
         {a},Ann,ann@example.com,\n\
         {b},Bob,bob@example.com,\n\
         ,Empty,empty@example.com,\n\
         LD-1,NotGuid,notguid@example.com,\n\
         {c},BadPortal,badportal@example.com,portal-9\n\
         {d},Ragged,ragged@example.com\n\
         {e},NoMail,not-an-address,\n\
         {A},Again,again@example.com,\n\
         {f},Fay,fay@example.com,\n",
        a = ids[0],
        b = ids[1],
        c = ids[2],
        d = ids[3],
        e = ids[4],
        f = ids[5],
        A = ids[0].to_uppercase(),
    );
    write(dir, "leads.csv", &csv)
}

#[test]
fn a_dry_run_opens_no_connection_and_checks_every_row() {
    let api = trap();
    let smtp = trap();
    let monitor = trap();
    let dir = tempfile::tempdir().unwrap();
    let input = fixture(dir.path());
    let mut cmd = lsq(dir.path());
    cmd.arg("run")
        .arg(&input)
        .arg("--dry-run")
        .args(["--host", &format!("http://{}", api.local_addr().unwrap())])
        .args(["--portal-id", "9b2c4f6e-1d3a-4c5b-8e7f-a0b1c2d3e4f5"])
        .args(["--portal-url", "https://apply.example.com/"])
        .args(["--report", "report.csv", "--summary-json", "summary.json"])
        .args(["--preview", "2", "--state", "state.sqlite"])
        .env(
            "LSQ_PING_URL",
            format!("http://{}/ping", monitor.local_addr().unwrap()),
        )
        .env("LSQ_ACCESS_KEY", "a")
        .env("LSQ_SECRET_KEY", "s");
    let smtp_url = format!("smtp://{}", smtp.local_addr().unwrap());
    let out = run(with_email(&mut cmd, &smtp_url, &sample("templates")));
    assert_eq!(out.status.code(), Some(5), "invalid rows alone mean exit 5");
    assert!(untouched(&api), "no connection to the API host");
    assert!(untouched(&smtp), "no connection to the SMTP server");
    assert!(untouched(&monitor), "no ping to the cron monitor");
    assert!(
        !dir.path().join("state.sqlite").exists(),
        "a dry run creates no state"
    );

    let rows = read_report(&dir.path().join("report.csv"));
    let by_line: BTreeMap<u32, (String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["row"].parse().unwrap(),
                (r["status"].clone(), r["error"].clone()),
            )
        })
        .collect();
    let status = |line: u32| by_line[&line].0.as_str();
    let error = |line: u32| by_line[&line].1.clone();
    assert_eq!(status(2), "planned");
    assert_eq!(status(3), "planned");
    assert_eq!(
        (status(4), error(4).contains("LeadId is empty")),
        ("invalid", true)
    );
    assert_eq!((status(5), error(5).contains("LD-1")), ("invalid", true));
    assert_eq!(
        (status(6), error(6).contains("portal-9")),
        ("invalid", true)
    );
    assert_eq!((status(7), error(7).contains("cells")), ("invalid", true));
    assert_eq!(
        (status(8), error(8).contains("not-an-address")),
        ("invalid", true)
    );
    assert_eq!((status(9), error(9).contains("row 2")), ("duplicate", true));
    assert_eq!(status(10), "planned");
    assert_eq!(rows.len(), 9);
    let previews = std::fs::read_dir(dir.path().join("preview"))
        .unwrap()
        .count();
    assert_eq!(previews, 2);
    for name in ["report-retry.csv", "report-invalid.csv"] {
        assert!(!dir.path().join(name).exists(), "{name} is for real runs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_after_a_real_run_leaves_the_real_report_byte_identical() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let input = leads_csv(&inputs, &lead_ids(3));
    run_ok(run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url()).arg("--quiet"));
    let report = dir.path().join("leads-report.csv");
    let before = std::fs::read(&report).unwrap();

    let out = run(lsq(dir.path())
        .arg("run")
        .arg(&input)
        .arg("--dry-run")
        .args(["--portal-id", &sandbox.config().portal_ids[0]]));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        std::fs::read(&report).unwrap() == before,
        "the dry run changed the real report"
    );
    let plan = inputs.join("leads-plan.csv");
    assert!(stdout(&out).contains(&plan.display().to_string()));
    let rows = read_report(&plan);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["status"] == "planned"));
}

/// The README's dry run, on the sample it names (copied, since the plan goes
/// beside its input): the figures it shows, and a plan file beside the input.
#[test]
fn the_readme_dry_run_of_the_sample_plans_its_valid_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("leads.csv");
    std::fs::copy(sample("leads.csv"), &input).unwrap();
    let out = run(lsq(dir.path()).arg("run").arg(&input).args([
        "--dry-run",
        "--portal-id",
        "9b2c4f6e-1d3a-4c5b-8e7f-a0b1c2d3e4f5",
    ]));
    assert_eq!(out.status.code(), Some(5), "the sample has bad rows");
    let plan = stdout(&out);
    for line in [
        "rows read           12",
        "valid                9",
        "duplicates           1",
        "planned              9",
        "API calls needed    10",
    ] {
        assert!(plan.contains(line), "{line:?} in\n{plan}");
    }
    let rows = read_report(&dir.path().join("leads-plan.csv"));
    assert_eq!(rows.iter().filter(|r| r["status"] == "planned").count(), 9);
}
