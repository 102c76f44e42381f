//! What a run tells about itself to whoever watches it: log lines (text or
//! JSON, `-v`, `-q`) with a start and an end line, the summary JSON's
//! account of the run, exit code 5 for input problems next to 3 for
//! delivery problems, the Prometheus metrics file, and the pings to a cron
//! monitor.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::prometheus;
use crate::support::{
    fast_config, fast_sandbox, lead_ids, leads_csv, planted, run, run_on_sandbox, sandbox, sigterm,
    stderr, stdout, wait_until, RefusedPort,
};
use lsq_sandbox::{Sandbox, SandboxConfig};

/// A LeadId the sandbox answers with 400 `Lead does not exist`: its row fails.
const UNKNOWN: &str = "0badbad0-1111-4222-8333-000000000000";

/// The secret part of the ping URLs the tests use.
const PING_TOKEN: &str = "c0ffee-ping-token";

/// A fast sandbox that does not know [`UNKNOWN`].
async fn sandbox_without_unknown() -> Sandbox {
    sandbox(SandboxConfig {
        unknown_leads: vec![UNKNOWN.into()],
        ..fast_config()
    })
    .await
}

/// `run INPUT` on `sandbox` with `report.csv`, the campaign `nightly` and a
/// state file in `dir`.
fn command(sandbox: &Sandbox, dir: &Path, input: &Path) -> Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--campaign", "nightly", "--state"])
        .arg(dir.join("state.sqlite"));
    cmd
}

/// The lines of a run's output, each parsed as JSON.
fn json_lines(text: &str, stream: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{stream} line {line:?} is not JSON: {e}"));
            let stamp = value["timestamp"].as_str().unwrap_or_default();
            assert!(
                chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
                "{stream} line without an RFC 3339 timestamp: {line}"
            );
            assert!(value["level"].is_string(), "{line}");
            assert!(value["message"].is_string(), "{line}");
            value
        })
        .collect()
}

/// The summary JSON a run wrote at `path`.
fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_line_of_json_logs_parses_with_a_timestamp_on_both_streams() {
    let sandbox = sandbox_without_unknown().await;
    let dir = tempfile::tempdir().unwrap();
    let mut ids = lead_ids(3);
    ids.push(UNKNOWN.into());
    ids.push("not-a-guid".into());
    let input = leads_csv(dir.path(), &ids);
    let out = run(command(&sandbox, dir.path(), &input).args(["--log-format", "json", "-v"]));
    assert_eq!(out.status.code(), Some(3));
    let err = json_lines(&stderr(&out), "stderr");
    let out_lines = json_lines(&stdout(&out), "stdout");

    let start = &err[0];
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(start["campaign"], "nightly");
    assert_eq!(start["input"], input.display().to_string());
    assert_eq!(start["host"], sandbox.base_url().trim_end_matches('/'));
    assert_eq!(start["rate"], "1000/1s");
    assert!(start["state"].as_str().unwrap().ends_with("state.sqlite"));
    // -v: a line for each row.
    let rows: Vec<_> = err.iter().filter(|l| l["row"].is_u64()).collect();
    assert_eq!(rows.len(), 5, "{err:?}");

    let [end] = out_lines.as_slice() else {
        panic!("one end line on stdout: {out_lines:?}");
    };
    assert!(
        end["message"].as_str().unwrap().starts_with("done: "),
        "{end}"
    );
    assert_eq!(end["exit_code"], 3);
    assert_eq!(
        (&end["linked"], &end["failed"], &end["invalid"]),
        (&3.into(), &1.into(), &1.into())
    );

    // An aborted run's error is a JSON line too.
    let out = run(command(&sandbox, dir.path(), &input)
        .args(["--log-format", "json"])
        .env("LSQ_SECRET_KEY", "wrong"));
    assert_eq!(out.status.code(), Some(1));
    let err = json_lines(&stderr(&out), "stderr");
    assert_eq!(err.last().unwrap()["level"], "ERROR", "{err:?}");
    assert!(stdout(&out).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn text_logs_off_a_terminal_are_timestamped_with_a_start_and_an_end_line_and_no_secret() {
    let sandbox = sandbox(planted::sandbox_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(2));
    let dead = RefusedPort::bind();
    let ping = format!("http://{}/ping/{PING_TOKEN}", dead.addr);
    let out = run(command(&sandbox, dir.path(), &input).args(["--ping-url", &ping]));
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    let first = err.lines().next().unwrap();
    let (stamp, rest) = first.split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{first}"
    );
    let rest = rest.trim_start();
    assert!(rest.starts_with("INFO  lsq-dispatch "), "{first}");
    for part in [
        &format!("input {}", input.display()),
        "campaign nightly",
        "state file ",
        &format!("host {}", sandbox.base_url().trim_end_matches('/')),
        "rate 1000/1s",
        "pings to 127.0.0.1",
    ] {
        assert!(first.contains(part), "{part:?} missing from {first}");
    }
    for line in err.lines() {
        let stamp = line.split(' ').next().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "{line}"
        );
    }
    let end = stdout(&out);
    assert!(end.contains(" INFO  done: 2 linked in "), "{end}");
    planted::assert_absent(&planted::outputs(&out), &[PING_TOKEN]);
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_prints_nothing_but_errors() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let mut ids = lead_ids(2);
    ids.push("not-a-guid".into());
    let input = leads_csv(dir.path(), &ids);
    let out = run(command(&sandbox, dir.path(), &input).arg("-q"));
    assert_eq!(out.status.code(), Some(5));
    assert_eq!((stdout(&out), stderr(&out)), (String::new(), String::new()));

    let fresh = tempfile::tempdir().unwrap();
    let out = run(command(&sandbox, fresh.path(), &input)
        .arg("-q")
        .env("LSQ_SECRET_KEY", "wrong"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    let err = stderr(&out);
    assert!(err.contains(" ERROR "), "{err}");
    assert!(!err.contains(" INFO ") && !err.contains(" WARN "), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_or_duplicate_rows_alone_exit_5_and_a_failed_lead_exits_3() {
    let sandbox = sandbox_without_unknown().await;
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(3);
    let cases: [(Vec<String>, u8, &str); 3] = [
        (
            vec![ids[0].clone(), ids[1].clone(), ids[0].to_uppercase()],
            5,
            "a duplicate alone is an input problem",
        ),
        (vec![ids[2].clone(), "LD-1".into()], 5, "an invalid row too"),
        (
            vec![UNKNOWN.into(), "LD-1".into()],
            3,
            "a failed lead beats invalid rows",
        ),
    ];
    for (rows, code, why) in cases {
        let input = leads_csv(dir.path(), &rows);
        let out = run(command(&sandbox, dir.path(), &input).arg("--summary-json=s.json"));
        assert_eq!(out.status.code(), Some(i32::from(code)), "{why}");
        assert_eq!(summary(&dir.path().join("s.json"))["exit_code"], code);
    }
}

/// The run's help lists every exit code, as the README's table does.
#[test]
fn run_help_and_the_readme_list_the_same_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let help = stdout(&run(crate::support::lsq(dir.path()).args(["run", "--help"])));
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("## Exit codes")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .find(|part| part.starts_with("| code"))
        .unwrap()
        .to_owned();
    let codes: Vec<&str> = table
        .lines()
        .skip(2)
        .map(|row| row.trim_start_matches("| ").split(' ').next().unwrap())
        .collect();
    assert_eq!(codes, ["0", "1", "2", "3", "4", "5", "130"]);
    for code in codes {
        assert!(
            help.contains(&format!("\n  {code} ")),
            "{code} missing from run --help"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_summary_says_which_run_it_was_and_how_it_ended() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(3));
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let out = run(command(&sandbox, dir.path(), &input).arg("--summary-json=s.json"));
    assert_eq!(out.status.code(), Some(0));
    let s = summary(&dir.path().join("s.json"));
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["campaign"], "nightly");
    assert_eq!(s["input"], input.display().to_string());
    assert_eq!(
        (&s["exit_code"], &s["interrupted"]),
        (&0.into(), &false.into())
    );
    let time = |key: &str| {
        let text = s[key].as_str().unwrap();
        assert!(text.ends_with('Z'), "{key} in UTC: {text}");
        chrono::DateTime::parse_from_rfc3339(text).unwrap()
    };
    assert!(before <= time("started_at"));
    assert!(time("started_at") <= time("finished_at"));
    assert!(time("finished_at") <= chrono::Utc::now());
    assert_eq!(s["counts"]["linked"], 3);
}

/// A loopback server that records every ping it gets: the path and body.
pub(crate) struct PingServer {
    pub(crate) url: String,
    pings: Arc<Mutex<Vec<(String, String)>>>,
}

impl PingServer {
    pub(crate) async fn start() -> PingServer {
        let pings = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&pings);
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: String| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push((uri.path().to_owned(), body));
                "OK"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/ping/{PING_TOKEN}",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        PingServer { url, pings }
    }

    /// The paths pinged, in order, after the token.
    pub(crate) fn paths(&self) -> Vec<String> {
        let prefix = format!("/ping/{PING_TOKEN}");
        let pings = self.pings.lock().unwrap();
        pings
            .iter()
            .map(|(path, _)| path.strip_prefix(&prefix).unwrap_or(path).to_owned())
            .collect()
    }

    /// The body of the last ping, as JSON.
    pub(crate) fn last_body(&self) -> serde_json::Value {
        let pings = self.pings.lock().unwrap();
        serde_json::from_str(&pings.last().unwrap().1).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cron_monitor_hears_start_then_success_or_start_then_fail_with_the_summary() {
    let sandbox = sandbox_without_unknown().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(2));
    let monitor = PingServer::start().await;
    let out = run(command(&sandbox, dir.path(), &input).args(["--ping-url", &monitor.url]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(monitor.paths(), ["/start", ""]);
    let body = monitor.last_body();
    assert_eq!(
        (&body["exit_code"], &body["counts"]["linked"]),
        (&0.into(), &2.into())
    );

    let failing = PingServer::start().await;
    let input = leads_csv(dir.path(), &[UNKNOWN.into()]);
    let out = run(command(&sandbox, dir.path(), &input).env("LSQ_PING_URL", &failing.url));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(failing.paths(), ["/start", "/fail"]);
    assert_eq!(failing.last_body()["exit_code"], 3);
    assert_eq!(failing.last_body()["counts"]["failed"], 1);
    planted::assert_absent(&planted::outputs(&out), &[PING_TOKEN]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_ping_server_only_warns_and_the_exit_code_stays_the_runs() {
    let sandbox = sandbox_without_unknown().await;
    let dir = tempfile::tempdir().unwrap();
    let dead = RefusedPort::bind();
    let url = format!("http://{}/ping/{PING_TOKEN}", dead.addr);
    for (ids, code) in [(lead_ids(2), 0), (vec![UNKNOWN.to_owned()], 3)] {
        let input = leads_csv(dir.path(), &ids);
        let out = run(command(&sandbox, dir.path(), &input).args(["--ping-url", &url]));
        assert_eq!(out.status.code(), Some(code));
        let err = stderr(&out);
        assert!(
            err.contains("ping to the cron monitor at 127.0.0.1 failed"),
            "{err}"
        );
        assert!(!err.contains(PING_TOKEN), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ping_url_in_plain_http_to_another_host_is_a_usage_error_that_hides_the_token() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(1));
    let url = format!("http://hc-ping.example.com/{PING_TOKEN}");
    let out = run(command(&sandbox, dir.path(), &input).args(["--ping-url", &url]));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("https") && !err.contains(PING_TOKEN), "{err}");
    assert_eq!(sandbox.stats().calls, 0);
}

/// The metrics file, parsed strictly.
fn metrics(path: &Path) -> prometheus::Exposition {
    let text = std::fs::read_to_string(path).unwrap();
    prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_file_is_prometheus_text_replaced_whole_and_keeps_the_last_success() {
    let sandbox = sandbox_without_unknown().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lsq.prom");
    let input = leads_csv(dir.path(), &lead_ids(3));
    let campaign = [("campaign", "nightly")];
    let before = chrono::Utc::now().timestamp() as f64;
    let out = run(command(&sandbox, dir.path(), &input).arg("--metrics-file=lsq.prom"));
    assert_eq!(out.status.code(), Some(0));
    let first = metrics(&path);
    let linked = [("campaign", "nightly"), ("status", "linked")];
    assert_eq!(first.value("lsq_dispatch_rows", &linked), Some(3.0));
    assert_eq!(first.value("lsq_dispatch_api_calls", &campaign), Some(3.0));
    assert_eq!(first.value("lsq_dispatch_exit_code", &campaign), Some(0.0));
    assert_eq!(first.value("lsq_dispatch_running", &campaign), Some(0.0));
    for name in [
        "lsq_dispatch_rate_limited",
        "lsq_dispatch_paused_seconds",
        "lsq_dispatch_emails_sent",
        "lsq_dispatch_duration_seconds",
    ] {
        assert!(first.value(name, &campaign).is_some(), "{name}");
        assert_eq!(first.types[name], "gauge");
        assert!(!first.help[name].is_empty());
    }
    let job = [("job_name", "lsq")];
    let success = first
        .value("lsq_dispatch_last_success_timestamp_seconds", &job)
        .unwrap();
    assert!(success >= before, "{success} < {before}");

    // A failing run replaces the file (a reader of the old one keeps it
    // whole) and carries the last success over.
    let mut held = std::fs::File::open(&path).unwrap();
    let old_text = std::fs::read_to_string(&path).unwrap();
    let input = leads_csv(dir.path(), &[UNKNOWN.into()]);
    let out = run(command(&sandbox, dir.path(), &input).arg("--metrics-file=lsq.prom"));
    assert_eq!(out.status.code(), Some(3));
    let second = metrics(&path);
    assert_eq!(second.value("lsq_dispatch_exit_code", &campaign), Some(3.0));
    let failed = [("campaign", "nightly"), ("status", "failed")];
    assert_eq!(second.value("lsq_dispatch_rows", &failed), Some(1.0));
    assert_eq!(
        second.value("lsq_dispatch_last_success_timestamp_seconds", &job),
        Some(success)
    );
    let mut through_old = String::new();
    std::io::Read::read_to_string(&mut held, &mut through_old).unwrap();
    assert_eq!(
        through_old, old_text,
        "the old file was written over in place"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lsq.prom"))
        .collect();
    assert_eq!(names, ["lsq.prom"], "no temporary file is left");
    assert_eq!(crate::support::mode(&path), 0o644, "the collector reads it");
}

/// Waits for a run ended by a signal and returns its output.
fn wait(child: std::process::Child) -> Output {
    let out = child.wait_with_output().unwrap();
    eprintln!("--- stderr\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_run_says_so_in_its_summary_metrics_and_ping() {
    // 5 calls a second, each answered after 200 ms: 40 leads take 8 s.
    let sandbox = sandbox(SandboxConfig {
        budget: "5/1s".parse().unwrap(),
        service_time: (Duration::from_millis(200), Duration::from_millis(200)),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(40));
    let monitor = PingServer::start().await;
    let metrics_path = dir.path().join("lsq.prom");
    let child = command(&sandbox, dir.path(), &input)
        .args(["--summary-json=s.json", "--metrics-file=lsq.prom"])
        .args(["--ping-url", &monitor.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the first calls", || sandbox.stats().calls >= 3).await;
    // Written while the run works: running, no exit code yet.
    let during = metrics(&metrics_path);
    let campaign = [("campaign", "nightly")];
    assert_eq!(during.value("lsq_dispatch_running", &campaign), Some(1.0));
    assert_eq!(during.value("lsq_dispatch_exit_code", &campaign), None);
    sigterm(&child);
    let out = wait(child);
    assert_eq!(out.status.code(), Some(130));

    let s = summary(&dir.path().join("s.json"));
    assert_eq!(
        (&s["exit_code"], &s["interrupted"]),
        (&130.into(), &true.into())
    );
    assert!(s["rows"].as_u64().unwrap() < 40, "{s}");
    assert!(!s["finished_at"].as_str().unwrap().is_empty());
    let after = metrics(&metrics_path);
    assert_eq!(
        after.value("lsq_dispatch_exit_code", &campaign),
        Some(130.0)
    );
    assert_eq!(
        after.value(
            "lsq_dispatch_last_success_timestamp_seconds",
            &[("job_name", "lsq")]
        ),
        Some(0.0),
        "never succeeded"
    );
    assert_eq!(monitor.paths(), ["/start", "/fail"]);
    assert_eq!(monitor.last_body()["interrupted"], true);
    let text = stdout(&out);
    assert!(text.contains("interrupted: "), "{text}");
}
