//! No key leaks when a server echoes the request that carried it. Every
//! error path that takes in a server's text (a row's failure, a run's
//! abort, the tenant key's mint) is driven with the planted credentials
//! against a server that echoes them back raw, percent-encoded in both cases
//! and twice, decoded, JSON- and HTML-escaped, in base64, cut off, and
//! wrapped in invalid UTF-8; then every output of the run is searched for
//! them: stdout, stderr, the report, the rows to retry, the summary, the
//! outbox, the campaign state (each text column, read with rusqlite, and
//! the raw bytes of its files).

use std::path::Path;
use std::process::Output;

use base64::Engine as _;

use super::{command, finish, key_for};
use crate::support::hostile_server::{Answer, HostileServer, Request};
use crate::support::planted::{self, lower_hex};
use crate::support::{lead_ids, leads_with_email, read_report, run_on_host, sample};

/// How many ways a server answers with the request echoed in it.
const ECHOES: usize = 13;

/// LeadSquared's error body with `message`.
pub(super) fn error_body(message: &str) -> String {
    serde_json::json!({
        "Status": "Error",
        "ExceptionType": "MXInvalidInputException",
        "ExceptionMessage": message,
    })
    .to_string()
}

/// The `variant`-th way of echoing `echo` back (see [`ECHOES`]).
fn echoed(variant: usize, echo: &str) -> Answer {
    let html = echo
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;");
    let cut = echo.find("accessKey=").map_or(echo, |at| &echo[..at + 22]);
    let json_escaped = echo.replace('/', "\\/").replace('$', "\\u0024");
    match variant {
        0 => Answer::new(400, error_body(echo)),
        1 => Answer::new(403, format!("<html><body><pre>{html}</pre></body></html>")),
        2 => Answer::new(
            429,
            error_body(&format!("API calls exceeded the limit: {echo}")),
        )
        .header("Retry-After", "0"),
        3 => Answer::new(500, format!("<html><body>Error in {echo}</body></html>")),
        4 => Answer::new(200, echo),
        5 => Answer::new(200, error_body(echo)),
        6 => Answer::new(400, [b"\xff\xfe", echo.as_bytes(), b"\xc3"].concat()),
        7 => Answer::new(400, format!(r#"{{"error":"{json_escaped}"}}"#)),
        8 => Answer::new(400, base64::engine::general_purpose::STANDARD.encode(echo)),
        9 => Answer::new(400, cut),
        10 => Answer::new(200, serde_json::to_string(echo).unwrap()),
        11 => Answer::new(400, lower_hex(echo)),
        _ => Answer::new(400, echo.replace('%', "%25")),
    }
}

/// The index of a lead of [`lead_ids`] that a Generate request names.
fn lead_index(request: &Request) -> Option<usize> {
    let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
    let id = body["LeadId"].as_str()?;
    lead_ids(ECHOES + 1).iter().position(|l| l == id)
}

/// Every text a run left: its stdout and stderr, and every file in `dir`
/// (the campaign state is there too), with each SQLite file also read
/// column by column.
pub(super) fn everything(dir: &Path, out: &Output) -> Vec<(String, String)> {
    let mut texts: Vec<(String, String)> = planted::outputs(out)
        .into_iter()
        .map(|(name, text)| (name.to_owned(), text))
        .collect();
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let name = path.display().to_string();
            if name.ends_with(".sqlite") {
                texts.push((format!("{name} (rows)"), dump(&path)));
            }
            let bytes = std::fs::read(&path).unwrap();
            texts.push((name, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    texts
}

/// Every text cell of every table of a SQLite file, one a line.
fn dump(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut tables = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap();
    let tables: Vec<String> = tables
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut text = String::new();
    for table in tables {
        let mut rows = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = rows.column_count();
        let mut rows = rows.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                if let Ok(cell) = row.get::<_, String>(i) {
                    text.push_str(&format!("{table}: {cell}\n"));
                }
            }
        }
    }
    text
}

/// Asserts that no planted credential, in any form, is in anything the run
/// in `dir` left.
#[track_caller]
pub(super) fn assert_nothing_leaked(dir: &Path, out: &Output) -> Vec<(String, String)> {
    let texts = everything(dir, out);
    let named: Vec<(&str, String)> = texts.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    planted::assert_absent(&named, &[]);
    texts
}

#[test]
fn no_key_leaks_when_every_failed_row_echoes_the_request() {
    let server = HostileServer::start(|request| match lead_index(request) {
        Some(i) if i < ECHOES => echoed(i, &request.echo()),
        _ => key_for(request),
    });
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), ECHOES + 1);
    let mut cmd = run_on_host(&server.url(), dir.path(), &input);
    cmd.args(["--report", "report.csv", "--summary-json", "summary.json"])
        .args(["--max-attempts", "2", "--email", "--outbox", "outbox"])
        .arg("--templates")
        .arg(sample("templates"))
        .args(["--from", "Acme <invites@acme.example>"])
        .env("LSQ_ACCESS_KEY", planted::ACCESS)
        .env("LSQ_SECRET_KEY", planted::SECRET)
        .env("LSQ_TENANT_AUTH_KEY", planted::TENANT)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = finish(cmd.spawn().unwrap(), std::time::Duration::from_secs(60));

    assert_eq!(out.status.code(), Some(3));
    let rows = read_report(&dir.path().join("report.csv"));
    let failed = rows.iter().filter(|r| r["status"] == "failed").count();
    assert_eq!((rows.len(), failed), (ECHOES + 1, ECHOES), "{rows:?}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .count(),
        1
    );
    let texts = assert_nothing_leaked(dir.path(), &out);
    // The state did store what the server said, scrubbed.
    assert!(
        texts
            .iter()
            .any(|(name, text)| name.ends_with("(rows)") && text.contains("***")),
        "{texts:?}"
    );
}

/// Runs two leads against a server that answers every call with `answer`
/// (built from the request), with or without a tenant key given, and
/// returns the run's exit code after checking that nothing leaked.
fn one_run(answer: fn(&Request) -> Answer, tenant_key: bool) -> Option<i32> {
    let server = HostileServer::start(answer);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(&server, dir.path(), 2);
    cmd.args(["--summary-json", "summary.json", "--max-attempts", "2"]);
    if !tenant_key {
        cmd.env_remove("LSQ_TENANT_AUTH_KEY");
    }
    let out = finish(cmd.spawn().unwrap(), std::time::Duration::from_secs(60));
    assert!(!server.requests().is_empty());
    assert_nothing_leaked(dir.path(), &out);
    out.status.code()
}

#[test]
fn no_key_leaks_when_a_refusal_that_stops_the_run_echoes_the_request() {
    let unauthorized = |r: &Request| Answer::new(401, error_body(&r.echo()));
    let not_found = |r: &Request| Answer::new(404, format!("<h1>Not found</h1>{}", r.echo()));
    let redirect = |r: &Request| {
        Answer::new(307, r.echo()).header("Location", &format!("http://127.0.0.1:9{}", r.target))
    };
    for answer in [unauthorized, not_found, redirect] {
        assert_eq!(one_run(answer, true), Some(1));
    }
}

#[test]
fn no_key_leaks_when_the_tenant_key_mint_echoes_the_request() {
    let unauthorized = |r: &Request| Answer::new(401, r.echo());
    assert_eq!(one_run(unauthorized, false), Some(1));
    let failing = |r: &Request| Answer::new(500, error_body(&r.echo()));
    assert_eq!(one_run(failing, false), Some(3));
}
