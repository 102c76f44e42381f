//! lsq-dispatch as cron would start it: the binary, twice, one run after
//! the other or both at once, sharing the tenant's budget file or Redis.

use super::*;

/// Where the runs find the sandbox, for threads that do not hold it.
#[derive(Clone)]
struct Target {
    base_url: String,
    portal_url: String,
    config: SandboxConfig,
}

impl Target {
    fn of(sandbox: &Sandbox) -> Target {
        Target {
            base_url: sandbox.base_url(),
            portal_url: sandbox.portal_url(),
            config: sandbox.config().clone(),
        }
    }
}

/// Starts the `lsq-dispatch` binary on `ids`, with the state file (and so
/// the budget file beside it) in `state_dir`.
fn spawn_ours(
    target: &Target,
    ids: &[String],
    dir: &Path,
    state_dir: &Path,
    name: &str,
    budget_store: Option<&str>,
) -> (Child, PathBuf) {
    let input = dir.join(format!("{name}.csv"));
    write_input(&input, ids);
    let summary = dir.join(format!("{name}-summary.json"));
    let config = &target.config;
    let mut command = Command::new(env!("CARGO_BIN_EXE_lsq-dispatch"));
    command
        .arg("run")
        .arg(&input)
        .args(["--host", &target.base_url])
        .args(["--portal-id", &config.portal_ids[0]])
        .args(["--portal-url", &target.portal_url])
        .arg("--report")
        .arg(dir.join(format!("{name}-report.csv")))
        .arg("--state")
        .arg(state_dir.join("state.sqlite"))
        .args(["--campaign", name, "--max-attempts", "10", "--quiet"])
        .arg("--summary-json")
        .arg(&summary)
        .env("LSQ_ACCESS_KEY", &config.access_key)
        .env("LSQ_SECRET_KEY", &config.secret_key)
        .env("LSQ_TENANT_AUTH_KEY", &config.tenant_auth_key)
        .env_remove("LSQ_BUDGET_STORE")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(store) = budget_store {
        command.args(["--budget-store", store]);
    }
    (command.spawn().expect("lsq-dispatch starts"), summary)
}

/// Waits for a run started by [`spawn_ours`] and adds its summary to `into`.
fn finish_ours(mut child: Child, summary: &Path, into: &mut Figures) {
    let status = child.wait().unwrap();
    assert!(
        matches!(status.code(), Some(0 | 3)),
        "lsq-dispatch ended with {status}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap();
    let number = |key: &str| summary[key].as_u64().unwrap_or(0);
    into.calls += number("api_calls");
    into.rate_limited += number("rate_limited");
    into.runs
        .push((number("rate_limited"), number("api_calls")));
    into.done += summary["counts"]["linked"].as_u64().unwrap_or(0);
}

/// Two runs as the scenario's shape says, as separate processes.
pub(super) async fn ours_two_processes(
    scenario: &Scenario,
    sandbox: &Sandbox,
    leads: usize,
    dir: &Path,
    seed: u64,
    redis: Option<&str>,
) -> Figures {
    let state_dir = dir.join(format!("state-{seed}-{}", scenario.name));
    std::fs::create_dir_all(&state_dir).unwrap();
    let (first, second) = (
        lead_ids(leads, seed * 10 + 1),
        lead_ids(leads, seed * 10 + 2),
    );
    let started = Instant::now();
    let target = Target::of(sandbox);
    let (dir, redis, shape) = (dir.to_owned(), redis.map(str::to_owned), scenario.shape);
    // The processes run on their own; this runtime keeps serving the sandbox.
    let waited = tokio::task::spawn_blocking(move || {
        let spawn = |ids: &[String], name: &str| {
            spawn_ours(&target, ids, &dir, &state_dir, name, redis.as_deref())
        };
        let mut figures = Figures::default();
        let (a, a_summary) = spawn(&first, "first");
        if shape == Shape::BackToBack {
            finish_ours(a, &a_summary, &mut figures);
            let (b, b_summary) = spawn(&second, "second");
            finish_ours(b, &b_summary, &mut figures);
        } else {
            let (b, b_summary) = spawn(&second, "second");
            finish_ours(a, &a_summary, &mut figures);
            finish_ours(b, &b_summary, &mut figures);
        }
        figures
    });
    let mut figures = waited.await.unwrap();
    figures.wall = started.elapsed().as_secs_f64();
    figures
}
