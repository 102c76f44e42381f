//! Exit codes refined by the one exit-code type: a template problem is a
//! usage error (2) found before any call, and a second signal returns 130
//! through `main` at once, with the report still whole.

use std::time::{Duration, Instant};

use crate::support::watch::Captured;
use crate::support::{
    fast_sandbox, lead_ids, leads_with_email, read_report, run, run_on_sandbox, sandbox, sigterm,
    wait_until, with_email, write_templates,
};
use lsq_sandbox::SandboxConfig;

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_template_variable_is_a_usage_error_before_any_call() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 3);
    let templates = write_templates(dir.path(), "Hi {{ NoSuchColumn }}", "{{ link }}");
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--quiet"]);
    with_email(&mut cmd, "smtp://127.0.0.1:9", &templates);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NoSuchColumn"), "{stderr}");
    assert_eq!(sandbox.stats().calls, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_quits_at_once_with_130_and_a_whole_report() {
    // Every call takes 20 s, so the first signal alone would wait for them.
    let sandbox = sandbox(SandboxConfig {
        service_time: (Duration::from_secs(20), Duration::from_secs(20)),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_csv(dir.path(), &lead_ids(10));
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = Captured::start(child.stderr.take().unwrap());
    // The first call is in flight: the sandbox counted its arrival.
    wait_until("the first call", || sandbox.stats().max_in_window >= 1).await;
    let signalled = Instant::now();
    sigterm(&child);
    // The run took the first signal before the second is sent, so the two
    // are not seen as one.
    wait_until("the first signal taken", || stderr.contains("stopping:")).await;
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let out = std::process::Output {
        stderr: stderr.finish(),
        ..out
    };
    assert_eq!(out.status.code(), Some(130));
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "quit took {:?}, as long as the calls in flight",
        signalled.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("quitting at once"), "{stderr}");
    // The report was flushed on the way out: a header and whole rows only.
    let rows = read_report(&dir.path().join("report.csv"));
    assert!(rows.len() < 10, "{} rows", rows.len());
}

/// What `text` says exit code 5 means: from `marker` to the next `;`.
fn meaning_of_5<'a>(text: &'a str, marker: &str) -> &'a str {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {text}"));
    let rest = &text[at + marker.len()..];
    &rest[..rest.find(';').unwrap_or(rest.len())]
}

#[test]
fn exit_code_5_means_one_thing_in_the_readme_the_nightly_doc_and_the_unit() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
    let readme = read("README.md");
    let table = meaning_of_5(&readme, "| 5 |");
    assert!(table.contains("every lead succeeded"), "{table}");
    let nightly = read("docs/nightly.md");
    let unit = read("samples/systemd/lsq-dispatch-nightly.service");
    // The unit's comment runs over several `#` lines.
    let unit_comment: String = unit
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .collect::<Vec<_>>()
        .join(" ");
    let unit_comment = unit_comment
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let nightly = nightly.split_whitespace().collect::<Vec<_>>().join(" ");
    for (what, meaning) in [
        ("docs/nightly.md", meaning_of_5(&nightly, "`5`")),
        ("the unit", meaning_of_5(&unit_comment, "; 5 ")),
    ] {
        assert!(
            meaning.contains("every lead") && meaning.contains("invalid or duplicate"),
            "{what} says 5 is {meaning:?}, the README {table:?}"
        );
        assert!(!meaning.contains("only"), "{what}: {meaning:?}");
    }
}
