//! What a new operator reads first: `run --help`, the sandbox's first run,
//! and what a slow cron monitor costs.

use std::time::{Duration, Instant};

use crate::support::{lead_ids, leads_csv, lsq, read_report, run, stderr, stdout};

#[test]
fn run_help_names_the_credential_variables_groups_the_options_and_ends_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(lsq(dir.path()).args(["run", "--help"]));
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for variable in [
        "LSQ_ACCESS_KEY",
        "LSQ_SECRET_KEY",
        "LSQ_TENANT_AUTH_KEY",
        "LSQ_SMTP_USER",
        "LSQ_SMTP_PASSWORD",
    ] {
        assert!(help.contains(variable), "{variable} in {help}");
    }
    for heading in [
        "\nLeadSquared API:\n",
        "\nInput:\n",
        "\nReport and monitoring:\n",
        "\nEmail:\n",
        "\nCampaign state:\n",
        "\nThe recipients' day:\n",
        "\nLinks:\n",
        "\nExamples:\n",
    ] {
        assert!(help.contains(heading), "{heading:?} in {help}");
    }
    let examples = &help[help.find("\nExamples:\n").unwrap()..];
    assert!(
        examples.contains("lsq-dispatch run leads.csv --sandbox"),
        "{examples}"
    );
}

#[test]
fn a_sandbox_run_with_a_limit_does_not_promise_a_later_run_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(3));
    let out = run(lsq(dir.path()).arg("run").arg(&input).args([
        "--sandbox",
        "--limit",
        "1",
        "--report",
        "report.csv",
    ]));
    assert_eq!(out.status.code(), Some(0));
    let rows = read_report(&dir.path().join("report.csv"));
    let beyond: Vec<_> = rows.iter().filter(|r| r["status"] == "skipped").collect();
    assert_eq!(beyond.len(), 2);
    for row in beyond {
        let error = &row["error"];
        assert!(
            !error.contains("a later run of this campaign continues"),
            "{error}"
        );
        assert!(error.contains("give --state"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cron_monitor_that_never_answers_costs_one_timeout_and_is_named_as_such() {
    // Accepts every connection and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let sandbox = crate::support::fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(1));
    let mut cmd =
        crate::support::run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv"])
        .args(["--ping-url", &format!("http://{addr}/ping/token")]);
    let started = Instant::now();
    let out = run(&mut cmd);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "a ping never fails the run");
    assert!(took < Duration::from_secs(15), "the run took {took:?}");
    let said = stderr(&out);
    assert!(
        said.contains(&format!(
            "the success ping to http://{addr}/… timed out after 10 s"
        )),
        "{said}"
    );
    assert!(!said.contains("error sending request"), "{said}");
    assert!(!said.contains("/ping/token"), "{said}");
}

#[test]
fn what_the_readmes_first_command_leaves_is_ignored_by_git() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("samples")).unwrap();
    std::fs::copy(
        root.join("samples/leads.csv"),
        dir.path().join("samples/leads.csv"),
    )
    .unwrap();
    let out = run(lsq(dir.path()).args([
        "run",
        "samples/leads.csv",
        "--sandbox",
        "--report",
        "sample-report.csv",
    ]));
    assert_eq!(out.status.code(), Some(5));
    let ignored = std::fs::read_to_string(root.join(".gitignore")).unwrap();
    let ignored: Vec<&str> = ignored.lines().filter(|l| !l.starts_with('#')).collect();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        // The test's own scratch: HOME and XDG_STATE_HOME point here.
        if ["samples", "state"].contains(&name.as_str()) {
            continue;
        }
        assert!(
            ignored.contains(&format!("/{name}").as_str())
                || ignored.contains(&format!("/{name}/").as_str()),
            "{name} is not in .gitignore: {ignored:?}"
        );
    }
}
