//! No secret ever reaches stdout, stderr, the report or the summary: planted,
//! distinctive values are searched for raw and percent-encoded, on the success
//! path and on every failure path that carries a request URL.

use std::path::Path;
use std::time::Duration;

use crate::support::planted::{self, ACCESS, SECRET, TENANT};
use crate::support::{lead_ids, leads_csv, lsq, run};
use crate::support::{sandbox, RefusedPort};
use lsq_sandbox::SandboxConfig;
use wiremock::{Mock, MockServer, ResponseTemplate};

const PORTAL: &str = "7f3c2a9e-5b1d-4c8e-9a6f-2d4b8e1c0f37";

/// Asserts that the report and the summary were written, and that neither
/// they nor stdout and stderr hold a planted credential.
fn assert_no_secret(dir: &Path, output: &std::process::Output) {
    let mut texts = planted::outputs(output);
    for name in ["report.csv", "summary.json"] {
        let path = dir.join(name);
        assert!(path.exists(), "{name} was written");
        texts.push((name, std::fs::read_to_string(path).unwrap()));
    }
    planted::assert_absent(&texts, &[]);
}

fn command(dir: &Path, host: &str) -> std::process::Command {
    let input = leads_csv(dir, &lead_ids(3));
    let mut cmd = lsq(dir);
    cmd.arg("run")
        .arg(input)
        .args(["--host", host])
        .args(["--portal-id", PORTAL])
        .args(["--portal-url", "https://apply.example.com/"])
        .args([
            "--rate",
            "1000/1s",
            "--max-attempts",
            "2",
            "--timeout",
            "500ms",
        ])
        .args(["--report", "report.csv", "--summary-json", "summary.json"])
        .env("LSQ_ACCESS_KEY", ACCESS)
        .env("LSQ_SECRET_KEY", SECRET)
        .env("LSQ_TENANT_AUTH_KEY", TENANT);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_on_the_success_path() {
    let sandbox = sandbox(SandboxConfig {
        portal_ids: vec![PORTAL.into()],
        ..planted::sandbox_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut command(dir.path(), &sandbox.base_url()));
    assert_eq!(out.status.code(), Some(0));
    assert_no_secret(dir.path(), &out);
}

#[test]
fn no_secret_when_the_connection_is_refused() {
    let refused = RefusedPort::bind();
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut command(
        dir.path(),
        &format!("http://{}", refused.addr),
    ));
    // Leads in a row that cannot connect stop the run.
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&std::fs::read(dir.path().join("report.csv")).unwrap())
            .contains("connect")
    );
    assert_no_secret(dir.path(), &out);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_when_the_call_times_out() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut command(dir.path(), &server.uri()));
    assert_eq!(out.status.code(), Some(3));
    assert!(std::fs::read_to_string(dir.path().join("report.csv"))
        .unwrap()
        .contains("timed out"));
    assert_no_secret(dir.path(), &out);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_when_the_server_fails() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500).set_body_string("internal error"))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut command(dir.path(), &server.uri()));
    assert_eq!(out.status.code(), Some(3));
    assert_no_secret(dir.path(), &out);
}

/// A 200 Generate answer that lacks `LeadId` fails its rows, and the error
/// names what is missing without quoting the lead's key from the body.
#[tokio::test(flavor = "multi_thread")]
async fn a_generate_answer_without_lead_id_keeps_its_key_out_of_the_report() {
    const KEY: &str = "LeAdKeY+0123456789abcdef/XYZ==";
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "AuthKey": KEY,
            "Expires": "2030-01-01",
        })))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(2));
    let mut cmd = crate::support::run_on_mock(&server, dir.path(), &input);
    cmd.args(["--report", "report.csv", "--summary-json", "summary.json"]);
    let output = run(&mut cmd);
    assert_eq!(output.status.code(), Some(3));
    let report = std::fs::read_to_string(dir.path().join("report.csv")).unwrap();
    let rows = crate::support::read_report(&dir.path().join("report.csv"));
    assert!(rows.iter().all(|r| r["status"] == "failed"), "{report}");
    assert!(rows[0]["error"].contains("LeadId"), "{report}");
    for (name, text) in planted::outputs(&output)
        .into_iter()
        .chain([("report.csv", report.clone())])
    {
        for form in planted::forms(KEY) {
            assert!(!text.contains(&form), "{name} holds the key: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_with_a_key_holding_shell_characters_says_to_quote_it() {
    let sandbox = crate::support::fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(1));
    // What a shell made of `LSQ_SECRET_KEY=…&…` unquoted: a different key.
    let key = "wrong$secret&key";
    let out =
        run(
            crate::support::run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url())
                .args(["--report", "report.csv"])
                .env("LSQ_SECRET_KEY", key),
        );
    assert_eq!(out.status.code(), Some(1));
    let said = crate::support::stderr(&out);
    assert!(said.contains("401 from the API"), "{said}");
    assert!(
        said.contains(
            "LSQ_ACCESS_KEY and LSQ_SECRET_KEY hold characters a shell treats specially ($, &, a space, …)"
        ),
        "{said}"
    );
    assert!(said.contains("in single quotes"), "{said}");
    planted::assert_absent(&planted::outputs(&out), &[key]);

    // A key of letters and digits alone gets no such advice.
    let out =
        run(
            crate::support::run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url())
                .args(["--report", "report2.csv"])
                .env("LSQ_ACCESS_KEY", "plainaccess")
                .env("LSQ_SECRET_KEY", "plainsecret")
                .env("LSQ_TENANT_AUTH_KEY", "plaintenant"),
        );
    assert_eq!(out.status.code(), Some(1));
    assert!(!crate::support::stderr(&out).contains("single quotes"));
}
