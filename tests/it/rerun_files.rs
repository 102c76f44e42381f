//! The rows a real run leaves for another look: `X-retry.csv` (rows worth
//! running again) and `X-invalid.csv` (rows no run can do as they are), both
//! named after the report `X-report.csv` and kept beside it.

use std::path::Path;
use std::process::Command;

use crate::support::watch::rows_so_far;
use crate::support::{
    lead_ids, leads_csv, read_report, run, run_ok, run_on_mock, run_on_sandbox, sandbox, stdout,
    unauthorized, wait_until, write, write_templates,
};
use lsq_sandbox::{Sandbox, SandboxConfig};

/// A LeadId the sandbox answers with 400 `Lead does not exist`: its row fails.
const UNKNOWN: &str = "0badbad0-1111-4222-8333-000000000000";

/// A fast sandbox that does not know [`UNKNOWN`].
async fn sandbox_without_unknown() -> Sandbox {
    sandbox(SandboxConfig {
        unknown_leads: vec![UNKNOWN.into()],
        ..crate::support::fast_config()
    })
    .await
}

/// `run INPUT` on the sandbox, with its default report in `dir`.
fn command(sandbox: &Sandbox, dir: &Path, input: &Path) -> Command {
    run_on_sandbox(sandbox, dir, input, &sandbox.portal_url())
}

/// A file's header line and its other lines, sorted: rows finish in any
/// order, so the files hold them in any order.
fn header_and_rows(path: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().map(str::to_owned);
    let header = lines.next().unwrap_or_default();
    let mut rows: Vec<String> = lines.collect();
    rows.sort();
    (header, rows)
}

fn sorted(rows: &[&str]) -> Vec<String> {
    let mut rows: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_run_of_another_input_leaves_the_first_inputs_retry_file() {
    let sandbox = sandbox_without_unknown().await;
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(2);
    let a = write(
        dir.path(),
        "a.csv",
        &format!("LeadId\n{}\n{UNKNOWN}\n", ids[0]),
    );
    let out = run(&mut command(&sandbox, dir.path(), &a));
    assert_eq!(out.status.code(), Some(3));
    let retry_a = dir.path().join("a-retry.csv");
    assert!(stdout(&out).contains("rows to retry: a-retry.csv"));
    let before = std::fs::read(&retry_a).unwrap();
    assert_eq!(before, format!("LeadId\n{UNKNOWN}\n").into_bytes());

    let b = write(dir.path(), "b.csv", &format!("LeadId\n{}\n", ids[1]));
    run_ok(&mut command(&sandbox, dir.path(), &b));
    assert!(
        std::fs::read(&retry_a).unwrap() == before,
        "a clean run of b.csv changed a-retry.csv"
    );
    assert!(!dir.path().join("b-retry.csv").exists());
    assert!(!dir.path().join("b-invalid.csv").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_and_duplicate_rows_go_to_the_invalid_file_not_the_retry_file() {
    let sandbox = sandbox_without_unknown().await;
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(2);
    let good = format!("{},ann@example.com", ids[0]);
    let failed = format!("{UNKNOWN},gone@example.com");
    let not_guid = "LD-1,bad@example.com".to_string();
    let duplicate = format!("{},again@example.com", ids[0].to_uppercase());
    let bad_address = format!("{},not-an-address", ids[1]);
    let input = write(
        dir.path(),
        "leads.csv",
        &format!("LeadId,Email\n{good}\n{failed}\n{not_guid}\n{duplicate}\n{bad_address}\n"),
    );
    let templates = write_templates(dir.path(), "Your link", "{{ link }}\n");
    let mut cmd = command(&sandbox, dir.path(), &input);
    cmd.args(["--email", "--outbox", "outbox", "--from", "a@acme.example"])
        .arg("--templates")
        .arg(&templates);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(3));
    let statuses: Vec<String> = read_report(&dir.path().join("leads-report.csv"))
        .into_iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses.len(), 5, "{statuses:?}");
    assert!(stdout(&out).contains("invalid rows: leads-invalid.csv"));

    let retry = header_and_rows(&dir.path().join("leads-retry.csv"));
    assert_eq!(retry, ("LeadId,Email".into(), sorted(&[&failed])));
    let invalid = header_and_rows(&dir.path().join("leads-invalid.csv"));
    assert_eq!(
        invalid,
        (
            "LeadId,Email".into(),
            sorted(&[&not_guid, &duplicate, &bad_address])
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retry_file_feeds_back_into_run_and_reproduces_the_failed_rows() {
    let sandbox = sandbox_without_unknown().await;
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(3);
    let csv = format!(
        "LeadId,FirstName\n{},Ann\n{UNKNOWN},Gone\nnope,Bad\n{},Bob\n{{{}}},Braced\n",
        ids[0], ids[1], ids[2]
    );
    let input = write(dir.path(), "leads.csv", &csv);
    let out = run(&mut command(&sandbox, dir.path(), &input));
    assert_eq!(out.status.code(), Some(3));
    let failed = |report: &str| {
        read_report(&dir.path().join(report))
            .into_iter()
            .filter(|r| r["status"] == "failed")
            .map(|r| (r["lead_id"].clone(), r["error"].clone()))
            .collect::<Vec<_>>()
    };
    let first = failed("leads-report.csv");
    assert_eq!(first.len(), 1);

    // The recipe: the retry file, in the same campaign as the original run.
    let retry = dir.path().join("leads-retry.csv");
    let again = run(command(&sandbox, dir.path(), &retry).args(["--campaign", "leads"]));
    assert_eq!(again.status.code(), Some(3));
    let rows = read_report(&dir.path().join("leads-retry-report.csv"));
    assert_eq!(rows.len(), 1, "only the failed row comes back");
    assert_eq!(failed("leads-retry-report.csv"), first);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_with_nothing_to_retry_removes_its_own_stale_files() {
    let sandbox = sandbox_without_unknown().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(2));
    let stale_retry = write(dir.path(), "leads-retry.csv", "LeadId\nstale\n");
    let stale_invalid = write(dir.path(), "leads-invalid.csv", "LeadId\nstale\n");
    run_ok(&mut command(&sandbox, dir.path(), &input));
    assert!(!stale_retry.exists() && !stale_invalid.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rerun_files_keep_the_inputs_bytes_exactly() {
    let sandbox = sandbox_without_unknown().await;
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(2);
    // A Latin-1 export with Windows line ends: `é` and `ë` are single bytes.
    let header = b"LeadId,Pr\xe9nom,Note\r\n".to_vec();
    let failed = format!(" {UNKNOWN} , Ann ,\"a, \"\"b\"\"\"\r\n").into_bytes();
    let mut latin1 = format!("{}-7,Zo", &ids[0][..2]).into_bytes();
    latin1.extend_from_slice(b"\xeb,x\r\n");
    let linked = format!("{},Bob,y\r\n", ids[1]).into_bytes();
    let input = dir.path().join("leads.csv");
    std::fs::write(&input, [&header[..], &failed, &latin1, &linked].concat()).unwrap();
    let out = run(command(&sandbox, dir.path(), &input).args(["--encoding", "latin1"]));
    assert_eq!(out.status.code(), Some(3));
    let statuses: Vec<String> = read_report(&dir.path().join("leads-report.csv"))
        .into_iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses.len(), 3, "{statuses:?}");

    let bytes = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let shown = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (retry, invalid) = (bytes("leads-retry.csv"), bytes("leads-invalid.csv"));
    assert!(
        retry == [&header[..], &failed].concat(),
        "leads-retry.csv: {}",
        shown(&retry)
    );
    assert!(
        invalid == [&header[..], &latin1].concat(),
        "leads-invalid.csv: {}",
        shown(&invalid)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_mid_run_says_how_to_resume_and_keeps_invalid_rows_out_of_the_retry_file() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    let gone = r#"{"Status":"Error","ExceptionType":"MXInvalidEntityException","ExceptionMessage":"Lead does not exist"}"#;
    // One key, two leads that do not exist, then the credentials are refused.
    for (priority, answer, times) in [
        (1, None, 1),
        (2, Some(ResponseTemplate::new(400).set_body_string(gone)), 2),
        (3, Some(unauthorized()), 1),
    ] {
        let mock = Mock::given(method("POST"));
        let mock = match answer {
            Some(answer) => mock.respond_with(answer),
            None => mock.respond_with(crate::support::key_for),
        };
        mock.up_to_n_times(times)
            .with_priority(priority)
            .expect(times)
            .mount(&server)
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(13);
    let mut csv = format!(
        "LeadId,Note\n{},linked\nLD-1,invalid\n{},failed\n{},duplicate\n{},failed\n",
        ids[0],
        ids[1],
        ids[0].to_uppercase(),
        ids[2]
    );
    for id in &ids[3..] {
        csv.push_str(&format!("{id},never\n")); // lines 7 to 16: refused or never reached
    }
    let input = write(dir.path(), "leads.csv", &csv);
    let mut cmd = run_on_mock(&server, dir.path(), &input);
    cmd.args([
        "--report",
        "leads-report.csv",
        "--quiet",
        "--concurrency",
        "1",
    ]);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let rows = read_report(&dir.path().join("leads-report.csv"));
    assert_eq!(rows.len(), 5, "lines 2 to 6 were done");
    let err = crate::support::stderr(&out);
    assert!(
        err.contains("input rows after line 6 were not processed"),
        "{err}"
    );
    assert!(
        err.contains("to resume, fix the cause and re-run the same command"),
        "{err}"
    );
    assert!(err.contains("rows to retry: leads-retry.csv; invalid rows: leads-invalid.csv"));

    let retry = header_and_rows(&dir.path().join("leads-retry.csv"));
    let failed = [format!("{},failed", ids[1]), format!("{},failed", ids[2])];
    assert_eq!(
        retry,
        ("LeadId,Note".into(), sorted(&[&failed[0], &failed[1]]))
    );
    let invalid = header_and_rows(&dir.path().join("leads-invalid.csv"));
    let duplicate = format!("{},duplicate", ids[0].to_uppercase());
    assert_eq!(invalid.1, sorted(&["LD-1,invalid", &duplicate]));
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_says_how_to_resume_and_keeps_invalid_rows_out_of_the_retry_file() {
    let sandbox = sandbox(SandboxConfig {
        budget: "5/1s".parse().unwrap(),
        unknown_leads: vec![UNKNOWN.into()],
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut csv = format!("LeadId\n{UNKNOWN}\nLD-1\n");
    for id in lead_ids(28) {
        csv.push_str(&id);
        csv.push('\n');
    }
    let input = write(dir.path(), "leads.csv", &csv);
    let child = command(&sandbox, dir.path(), &input)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // At 5 calls a second, 28 leads take over 5 s: three rows in the
    // report leave most of them undone.
    let report = dir.path().join("leads-report.csv");
    wait_until("three rows in the report", || rows_so_far(&report) >= 3).await;
    // SAFETY: kill has no memory effects; the child is ours and still running.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let rows = read_report(&dir.path().join("leads-report.csv"));
    assert!(
        rows.len() > 2 && rows.len() < 30,
        "{} rows done",
        rows.len()
    );
    let last = rows.iter().map(|r| r["row"].parse::<u64>().unwrap()).max();
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "input rows after line {} were not processed",
            last.unwrap()
        )),
        "{text}"
    );
    assert!(
        text.contains("to resume, re-run the same command"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("leads-retry.csv")).unwrap(),
        format!("LeadId\n{UNKNOWN}\n")
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("leads-invalid.csv")).unwrap(),
        "LeadId\nLD-1\n"
    );
}
