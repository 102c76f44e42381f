//! Helpers shared by the integration tests, each kept here once.

pub mod smtp_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A command for the binary that ignores the machine's own environment and
/// config: only PATH and a scratch HOME survive.
pub fn lsq(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lsq-dispatch"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("XDG_STATE_HOME", dir.join("state"))
        .current_dir(dir);
    cmd
}

/// Writes `name` in `dir` and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A CSV with a LeadId header and these ids, one a line.
pub fn leads_csv(dir: &Path, ids: &[String]) -> PathBuf {
    let mut text = String::from("LeadId\n");
    for id in ids {
        text.push_str(id);
        text.push('\n');
    }
    write(dir, "leads.csv", &text)
}

/// `n` distinct lead GUIDs.
pub fn lead_ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{:08x}-1111-4222-8333-{:012x}", 0xa0000000u32 + i as u32, i))
        .collect()
}

/// The report's rows as maps from column name to cell.
pub fn read_report(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// Runs and returns the output, printing it when the test fails.
pub fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().expect("the binary runs");
    eprintln!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `lsq-dispatch run INPUT` pointed at a running sandbox: its host, first
/// portal, the given portal page, its budget and its credentials. Callers add
/// the report and anything else.
pub fn run_on_sandbox(
    sandbox: &lsq_dispatch::sandbox::Sandbox,
    dir: &Path,
    input: &Path,
    page: &str,
) -> Command {
    let config = sandbox.config();
    let mut cmd = lsq(dir);
    cmd.arg("run")
        .arg(input)
        .args(["--host", &sandbox.base_url()])
        .args(["--portal-id", &config.portal_ids[0]])
        .args(["--portal-url", page])
        .args(["--rate", &config.budget.to_string()])
        .env("LSQ_ACCESS_KEY", &config.access_key)
        .env("LSQ_SECRET_KEY", &config.secret_key)
        .env("LSQ_TENANT_AUTH_KEY", &config.tenant_auth_key);
    cmd
}

/// Opens a login link at the sandbox portal page: its status and the JSON
/// naming the lead it logs in (null when refused).
pub async fn login(url: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}
