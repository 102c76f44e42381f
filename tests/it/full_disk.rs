//! A disk that fills up under the report in the middle of a run: the run
//! stops (exit 1), the report ends on a whole row, and every output that
//! can still be written tells the real end (the summary JSON, the metrics
//! file, the closing ping); the error says how to resume.

use crate::monitoring::PingServer;
use crate::support::small_disk::SmallDisk;
use crate::support::{fast_sandbox, lead_ids, leads_csv, prometheus, run, run_on_sandbox, stderr};
use lsq_dispatch::report::COLUMNS;
use lsq_dispatch::state::StateStore;

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_under_the_report_leaves_a_whole_last_row_and_the_real_end_everywhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    let test = "full_disk::a_full_disk_under_the_report_leaves_a_whole_last_row…";
    // 24 KiB: room for about 110 of the 200 rows.
    let Some(_disk) = SmallDisk::mount(test, &small, "24k") else {
        return;
    };
    let sandbox = fast_sandbox().await;
    let input = leads_csv(dir.path(), &lead_ids(200));
    let monitor = PingServer::start().await;
    let report = small.join("report.csv");
    let mut cmd = run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url());
    cmd.arg("--report")
        .arg(&report)
        .args(["--summary-json", "s.json", "--metrics-file", "lsq.prom"])
        .args(["--campaign", "full", "--state", "state.sqlite"])
        .args(["--ping-url", &monitor.url]);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));

    // The summary counts every row the run did, as the API and the
    // campaign state saw them.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("s.json")).unwrap()).unwrap();
    let stats = sandbox.stats();
    let rows = summary["rows"].as_u64().unwrap();
    assert!(rows > 0 && rows < 200, "{summary}");
    assert_eq!(summary["exit_code"], 1);
    assert_eq!(summary["counts"]["linked"], rows);
    assert_eq!(rows, stats.keys_issued.len() as u64, "{summary}");
    // Every call that reached the API is counted, and only those: a call
    // given up while it waited for its slot as the run stopped is not.
    let api_calls = summary["api_calls"].as_u64().unwrap();
    assert_eq!(api_calls, stats.calls, "{summary}");
    assert!(stats.calls >= rows, "{summary}");
    let state = StateStore::open(&dir.path().join("state.sqlite")).unwrap();
    assert_eq!(state.counts("full").unwrap()["linked"], rows);

    // The metrics file says the run ended, and how.
    let text = std::fs::read_to_string(dir.path().join("lsq.prom")).unwrap();
    let metrics = prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let campaign = [("campaign", "full")];
    assert_eq!(metrics.value("lsq_dispatch_running", &campaign), Some(0.0));
    assert_eq!(
        metrics.value("lsq_dispatch_exit_code", &campaign),
        Some(1.0)
    );
    let linked = [("campaign", "full"), ("status", "linked")];
    assert_eq!(
        metrics.value("lsq_dispatch_rows", &linked),
        Some(rows as f64)
    );

    // So does the closing ping.
    assert_eq!(monitor.paths(), ["/start", "/fail"]);
    let body = monitor.last_body();
    assert_eq!(
        (&body["rows"], &body["api_calls"]),
        (&rows.into(), &api_calls.into())
    );

    // The report ends on a whole row: every line has every column.
    let bytes = std::fs::read(&report).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'), "the report ends mid-row");
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let lines: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert!(!lines.is_empty() && lines.len() as u64 <= rows);
    for line in &lines {
        assert_eq!(line.len(), COLUMNS.len(), "{line:?}");
        assert_eq!(&line[3], "linked", "{line:?}");
    }

    // The error says what happened and how to go on.
    let err = stderr(&out);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("re-run the same command"), "{err}");
    assert!(err.contains("--report"), "{err}");
    assert!(err.contains(&format!("{rows} rows")), "{err}");
}
