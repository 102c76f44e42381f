//! Pace benchmark: lsq-dispatch against the sandbox set to a strict
//! 25-in-any-5 s window counted at arrival, with 0-100 ms of inbound jitter and
//! a service time, side by side with a plain sliding-log client (it logs its
//! own send times and lets a call go 5.12 s after the 25th-last one, retrying
//! 429s). Prints, per scenario, wall time, the window's lower bound, their
//! ratio and the 429s received, as medians over the runs.
//!
//!     cargo bench --bench window                 # 300 leads, 1 run per scenario
//!     BENCH_LEADS=100 BENCH_RUNS=3 cargo bench --bench window
//!     BENCH_ONLY=redis cargo bench --bench window
//!
//! The scenarios with two runs start the `lsq-dispatch` binary twice, as
//! two cron jobs would, sharing the budget file beside their state file (or
//! a `redis-server` this bench starts, when one is installed).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lsq_dispatch::cli::RunArgs;
use lsq_dispatch::config::Settings;
use lsq_dispatch::limiter::Rate;
use lsq_sandbox::{Sandbox, SandboxConfig};

mod common;
#[path = "../tests/it/support/installed.rs"]
mod installed;
#[path = "window/plain.rs"]
mod plain;
#[path = "../tests/it/support/redis_server.rs"]
mod redis_server;
#[path = "../tests/it/support/server_thread.rs"]
mod server_thread;
#[path = "../tests/it/support/smtp_server.rs"]
#[allow(dead_code)]
mod smtp_server;

use common::{env_number, median};
use installed::installed_or_skip;
use plain::plain;

const WINDOW: Duration = Duration::from_secs(5);

/// How the leads are run.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// One run of all the leads.
    One,
    /// Two runs of as many leads each, the second started when the first ends.
    BackToBack,
    /// Two runs at once, sharing the budget file on this machine.
    Concurrent,
    /// Two runs at once, sharing the budget through Redis.
    ConcurrentRedis,
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    service: (u64, u64),
    competitor: u32,
    /// The competitor stops this many seconds in.
    competitor_stops: Option<u64>,
    /// Email every lead through an SMTP server taking this long per message.
    smtp_delay_ms: Option<u64>,
    /// This fraction of new connections has its first call arrive this many
    /// milliseconds late, as after a lost SYN.
    late_connections: (f64, u64),
    shape: Shape,
}

/// The first scenario; the others say how they differ from it.
const BASE: Scenario = Scenario {
    name: "service 50-300ms",
    service: (50, 300),
    competitor: 0,
    competitor_stops: None,
    smtp_delay_ms: None,
    late_connections: (0.0, 0),
    shape: Shape::One,
};

/// What one run of a scenario made.
#[derive(Default)]
struct Figures {
    wall: f64,
    calls: u64,
    rate_limited: u64,
    done: u64,
    /// Windows after the competitor stopped until ours held the full budget.
    windows_to_full: Option<f64>,
}

fn sandbox_config(scenario: &Scenario, seed: u64) -> SandboxConfig {
    SandboxConfig {
        budget: lsq_sandbox::Budget::DEFAULT,
        jitter: (Duration::ZERO, Duration::from_millis(100)),
        service_time: (
            Duration::from_millis(scenario.service.0),
            Duration::from_millis(scenario.service.1),
        ),
        competitor: scenario.competitor,
        competitor_stops_after: scenario.competitor_stops.map(Duration::from_secs),
        late_connections: (
            scenario.late_connections.0,
            Duration::from_millis(scenario.late_connections.1),
        ),
        seed: Some(seed),
        ..SandboxConfig::default()
    }
}

/// `leads` distinct LeadIds, different for each `batch`.
fn lead_ids(leads: usize, batch: u64) -> Vec<String> {
    (0..leads)
        .map(|i| {
            format!(
                "{:08x}-2222-4333-8444-{batch:012x}",
                0xb0000000u32 + i as u32
            )
        })
        .collect()
}

fn write_input(path: &Path, ids: &[String]) {
    let mut csv = String::from("LeadId,FirstName,Email\n");
    for (i, id) in ids.iter().enumerate() {
        csv.push_str(&format!("{id},Lead{i},lead{i}@example.com\n"));
    }
    std::fs::write(path, csv).unwrap();
}

/// One run inside this process, as the library runs it.
async fn ours_in_process(
    scenario: &Scenario,
    sandbox: &Sandbox,
    ids: &[String],
    dir: &Path,
    seed: u64,
) -> Figures {
    let input = dir.join("bench-leads.csv");
    write_input(&input, ids);
    let config = sandbox.config().clone();
    std::env::set_var("LSQ_ACCESS_KEY", &config.access_key);
    std::env::set_var("LSQ_SECRET_KEY", &config.secret_key);
    std::env::set_var("LSQ_TENANT_AUTH_KEY", &config.tenant_auth_key);
    let smtp = scenario.smtp_delay_ms.map(|ms| {
        smtp_server::SmtpServer::start(
            smtp_server::SmtpBehaviour::new().delay(Duration::from_millis(ms)),
        )
    });
    let args = RunArgs {
        email: smtp.is_some(),
        smtp_url: smtp.as_ref().map(|s| s.url()),
        templates: smtp
            .as_ref()
            .map(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/templates")),
        from: Some("Bench <bench@example.com>".parse().unwrap()),
        input,
        host: Some(sandbox.base_url().parse().unwrap()),
        portal_id: Some(config.portal_ids[0].clone()),
        portal_url: Some(sandbox.portal_url().parse().unwrap()),
        report: Some(dir.join("bench-report.csv")),
        // A fresh state (and budget file) each run, so nothing is reused.
        state: Some(
            dir.join(format!("state-{seed}-{}", scenario.name))
                .join("s.sqlite"),
        ),
        quiet: true,
        max_attempts: Some(10),
        ..RunArgs::default()
    };
    std::fs::create_dir_all(args.state.as_ref().unwrap().parent().unwrap()).unwrap();
    let args = lsq_dispatch::config::merge(args).expect("settings");
    let settings = Settings::resolve(&args).expect("settings");
    let started = Instant::now();
    let outcome = lsq_dispatch::run::run(settings)
        .await
        .expect("the run finishes");
    let summary = &outcome.summary;
    Figures {
        wall: started.elapsed().as_secs_f64(),
        calls: summary.api_calls,
        rate_limited: summary.rate_limited,
        done: summary.count(lsq_dispatch::report::Status::Linked)
            + summary.count(lsq_dispatch::report::Status::Sent),
        windows_to_full: None,
    }
}

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
    into.done += summary["counts"]["linked"].as_u64().unwrap_or(0);
}

/// Two runs as the scenario's shape says, as separate processes.
async fn ours_two_processes(
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

/// Windows from the competitor's stop until our calls first filled a
/// window: the first of our arrivals after the stop that has 24 of 25 within
/// the window from it.
fn windows_to_full(arrivals: &[Duration], stop: Duration) -> Option<f64> {
    let after: Vec<Duration> = arrivals.iter().copied().filter(|t| *t >= stop).collect();
    let full = Rate::DEFAULT.calls as usize - 1;
    (0..after.len())
        .find(|&i| {
            after[i..]
                .iter()
                .take_while(|t| **t - after[i] < WINDOW)
                .count()
                >= full
        })
        .map(|i| (after[i] - stop).as_secs_f64() / WINDOW.as_secs_f64())
}

/// The shortest time `calls` calls can take at `per_window` a window, and
/// when the competitor stops, at the whole budget after that.
fn bound(scenario: &Scenario, calls: usize) -> f64 {
    let budget = Rate::DEFAULT.calls as usize;
    let window = WINDOW.as_secs_f64();
    match scenario.competitor_stops {
        Some(stop) => {
            let windows_before = stop.div_ceil(5) as usize;
            let before = windows_before * (budget - scenario.competitor as usize);
            let rest = calls.saturating_sub(before);
            window * (windows_before + rest.div_ceil(budget)).saturating_sub(1) as f64
        }
        None => window * ((calls - 1) / (budget - scenario.competitor as usize)) as f64,
    }
}

fn main() {
    let leads: usize = env_number("BENCH_LEADS", 300);
    let runs: usize = env_number("BENCH_RUNS", 1).max(1);
    let only = std::env::var("BENCH_ONLY").ok();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let one_second = Scenario {
        name: "service 1s",
        service: (1000, 1000),
        ..BASE
    };
    let scenarios = [
        BASE,
        Scenario {
            name: "+ email, SMTP 200ms/msg",
            smtp_delay_ms: Some(200),
            ..BASE
        },
        one_second,
        Scenario {
            name: "1s, 70% conns 1s late",
            late_connections: (0.7, 1000),
            ..one_second
        },
        Scenario {
            name: "competitor takes 10/25",
            competitor: 10,
            ..BASE
        },
        Scenario {
            name: "competitor leaves at 20s",
            competitor: 10,
            competitor_stops: Some(20),
            ..BASE
        },
        Scenario {
            name: "2 runs back to back",
            shape: Shape::BackToBack,
            ..BASE
        },
        Scenario {
            name: "2 runs at once, file",
            shape: Shape::Concurrent,
            ..BASE
        },
        Scenario {
            name: "2 runs at once, Redis",
            shape: Shape::ConcurrentRedis,
            ..BASE
        },
    ];
    let redis = scenarios
        .iter()
        .any(|s| {
            s.shape == Shape::ConcurrentRedis && only.as_deref().is_none_or(|o| s.name.contains(o))
        })
        .then(|| redis_server::RedisServer::start("the Redis scenario"))
        .flatten();
    println!(
        "{leads} leads a run, 25 calls in any 5 s counted at arrival, 0-100 ms inbound jitter, \
         {runs} run(s) each; medians. plain = a sliding-log client (5.12 s after its 25th-last call)"
    );
    println!(
        "{:<25} {:>7} {:>7} {:>6} {:>10} | {:>6} {:>10} | note",
        "scenario", "wall s", "bound s", "ratio", "429s/calls", "plain", "429s/calls"
    );
    let mut walls_of = Vec::new();
    for scenario in &scenarios {
        if only.as_deref().is_some_and(|o| !scenario.name.contains(o)) {
            continue;
        }
        let redis_url = redis.as_ref().map(|r| r.url());
        if scenario.shape == Shape::ConcurrentRedis && redis_url.is_none() {
            println!(
                "{:<25} skipped: redis-server is not installed",
                scenario.name
            );
            continue;
        }
        let total = match scenario.shape {
            Shape::One => leads,
            _ => 2 * leads,
        };
        let bound = bound(scenario, total);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let seed = run as u64 + 1;
            let figures = runtime.block_on(async {
                let sandbox = Sandbox::start(sandbox_config(scenario, seed))
                    .await
                    .unwrap();
                let mut figures = match scenario.shape {
                    Shape::One => {
                        ours_in_process(
                            scenario,
                            &sandbox,
                            &lead_ids(leads, seed),
                            dir.path(),
                            seed,
                        )
                        .await
                    }
                    Shape::ConcurrentRedis => {
                        ours_two_processes(
                            scenario,
                            &sandbox,
                            leads,
                            dir.path(),
                            seed,
                            redis_url.as_deref(),
                        )
                        .await
                    }
                    _ => {
                        ours_two_processes(scenario, &sandbox, leads, dir.path(), seed, None).await
                    }
                };
                if let Some(stop) = scenario.competitor_stops {
                    figures.windows_to_full =
                        windows_to_full(&sandbox.arrivals(), Duration::from_secs(stop));
                }
                sandbox.shutdown().await;
                let sandbox = Sandbox::start(sandbox_config(scenario, seed))
                    .await
                    .unwrap();
                let plain = plain(scenario, &sandbox, leads, seed).await;
                sandbox.shutdown().await;
                (figures, plain)
            });
            ours.push(figures.0);
            theirs.push(figures.1);
        }
        let ratio = |f: &Figures| bound / f.wall;
        let mid = |all: &[Figures], of: &dyn Fn(&Figures) -> f64| {
            median(&mut all.iter().map(of).collect::<Vec<_>>())
        };
        let wall = mid(&ours, &|f| f.wall);
        walls_of.push((scenario.name, wall));
        let note = match scenario.competitor_stops {
            Some(_) => match mid(&ours, &|f| f.windows_to_full.unwrap_or(f64::INFINITY)) {
                w if w.is_finite() => format!("full budget {w:.1} windows after it left"),
                _ => "never back to the full budget".into(),
            },
            None => format!("{} of {total} done", mid(&ours, &|f| f.done as f64)),
        };
        println!(
            "{:<25} {:>7.2} {:>7.1} {:>6.3} {:>10} | {:>6.3} {:>10} | {note}",
            scenario.name,
            wall,
            bound,
            mid(&ours, &ratio),
            format!(
                "{}/{}",
                mid(&ours, &|f| f.rate_limited as f64),
                mid(&ours, &|f| f.calls as f64)
            ),
            mid(&theirs, &ratio),
            format!(
                "{}/{}",
                mid(&theirs, &|f| f.rate_limited as f64),
                mid(&theirs, &|f| f.calls as f64)
            ),
        );
    }
    let wall_of = |name: &str| walls_of.iter().find(|(n, _)| *n == name).map(|(_, w)| *w);
    if let (Some(link), Some(email)) = (
        wall_of("service 50-300ms"),
        wall_of("+ email, SMTP 200ms/msg"),
    ) {
        println!(
            "email run / link-only run: {:.3} (target <= 1.05)",
            email / link
        );
    }
}
