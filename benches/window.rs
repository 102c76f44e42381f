//! Pace benchmark: lsq-dispatch against the sandbox set to a strict
//! 25-in-any-5 s window counted at arrival, with 0-100 ms of inbound jitter and
//! service times with spread (50-300 ms, 900-1,100 ms, a tail of 5 % at
//! 2-3 s), a listener with a backlog of 5 that drops a burst's SYNs (it
//! accepts a connection every 50 ms, or every 1 ms), and a competitor, side by
//! side with a plain sliding-log client (it logs its own send times and lets
//! a call go 5.12 s after the 25th-last one, retrying 429s). Each scenario
//! runs with several seeds; prints the ratio of the window's lower bound to
//! the wall time as min/median/max for both, the worst difference between
//! the two over the seeds, and the median 429s.
//!
//!     cargo bench --bench window                 # 300 leads, 3 seeds per scenario
//!     BENCH_LEADS=150 BENCH_SEEDS=5 cargo bench --bench window
//!     BENCH_ONLY=SYNs,competitor cargo bench --bench window  # names containing either
//!     BENCH_ONLY==900-1100ms cargo bench --bench window      # that name exactly
//!     BENCH_ACCEPTED=1 cargo bench --bench window   # one-run scenarios a window after
//!                                                   # a one-lead run: no call alone
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
#[path = "window/processes.rs"]
mod processes;
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
use processes::ours_two_processes;

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
    /// milliseconds late, unseen by the client.
    late_connections: (f64, u64),
    /// A listener with this accept backlog that accepts one connection per
    /// this many milliseconds: a burst's SYNs beyond it are dropped.
    slow_accept: Option<(u32, u64)>,
    /// This fraction of calls served in this range of milliseconds instead.
    slow_calls: (f64, (u64, u64)),
    /// Fraction of calls answered 500.
    error_rate: f64,
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
    slow_accept: None,
    slow_calls: (0.0, (0, 0)),
    error_rate: 0.0,
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
    /// Each run's 429s and calls, in the order the runs started.
    runs: Vec<(u64, u64)>,
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
        slow_accept: scenario
            .slow_accept
            .map(|(backlog, ms)| (backlog, Duration::from_millis(ms))),
        slow_calls: (
            scenario.slow_calls.0,
            (
                Duration::from_millis(scenario.slow_calls.1 .0),
                Duration::from_millis(scenario.slow_calls.1 .1),
            ),
        ),
        error_rate: scenario.error_rate,
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
    if std::env::var_os("BENCH_ACCEPTED").is_some() {
        // One lead a window before, in the same state directory: the
        // tenant's budget file then remembers that the API accepted these
        // credentials, as after an earlier run in the last hours.
        let warm_up = dir.join("bench-warm-up.csv");
        write_input(&warm_up, &lead_ids(1, 1_000 + seed));
        let args = lsq_dispatch::config::merge(RunArgs {
            input: warm_up,
            email: false,
            smtp_url: None,
            templates: None,
            campaign: Some("warm-up".into()),
            report: Some(dir.join("bench-warm-up-report.csv")),
            ..args.clone()
        })
        .expect("settings");
        let settings = Settings::resolve(&args).expect("settings");
        lsq_dispatch::run::run(settings)
            .await
            .expect("the run finishes");
        tokio::time::sleep(WINDOW + Duration::from_millis(200)).await;
    }
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
        runs: vec![(summary.rate_limited, summary.api_calls)],
    }
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

/// The machine's load averages, as `/proc/loadavg` says (1, 5, 15 min).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Min/median/max of `values`.
fn spread(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    let mid = median(&mut sorted);
    format!(
        "{:.3}/{:.3}/{:.3}",
        sorted[0],
        mid,
        sorted[sorted.len() - 1]
    )
}

fn main() {
    let leads: usize = env_number("BENCH_LEADS", 300);
    let seeds: usize = env_number("BENCH_SEEDS", env_number("BENCH_RUNS", 3)).max(1);
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|o| o.split(',').map(|p| p.trim().to_owned()).collect());
    let chosen = |name: &str| {
        only.as_ref().is_none_or(|parts| {
            parts.iter().any(|p| match p.strip_prefix('=') {
                Some(exact) => name == exact,
                None => name.contains(p.as_str()),
            })
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let one_second = Scenario {
        name: "900-1100ms",
        service: (900, 1100),
        ..BASE
    };
    let scenarios = [
        Scenario {
            name: "50-300ms, 2% 500s",
            error_rate: 0.02,
            ..BASE
        },
        Scenario {
            name: "+ email, SMTP 200ms/msg",
            smtp_delay_ms: Some(200),
            ..BASE
        },
        one_second,
        Scenario {
            name: "900-1100ms, SYNs dropped",
            slow_accept: Some((5, 50)),
            ..one_second
        },
        Scenario {
            name: "SYNs dropped, fast accept",
            slow_accept: Some((5, 1)),
            ..one_second
        },
        Scenario {
            name: "900-1100ms, 10% late unseen",
            late_connections: (0.1, 1000),
            ..one_second
        },
        Scenario {
            name: "50-300ms, 5% at 2-3s",
            slow_calls: (0.05, (2000, 3000)),
            ..BASE
        },
        Scenario {
            name: "competitor 10/25, 2 runs",
            competitor: 10,
            shape: Shape::BackToBack,
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
        .any(|s| s.shape == Shape::ConcurrentRedis && chosen(s.name))
        .then(|| redis_server::RedisServer::start("the Redis scenario"))
        .flatten();
    println!(
        "{leads} leads a run, 25 calls in any 5 s counted at arrival, 0-100 ms inbound jitter, \
         {seeds} seed(s) each; ratio = lower bound for the calls made (5 s * floor((calls - 1) / 25)) / wall time, \
         min/median/max over the seeds; \
         worst = the lowest of (ours - plain) over the seeds; 429s/calls are medians. \
         plain = a sliding-log client (5.12 s after its 25th-last call). load {}",
        load()
    );
    println!(
        "{:<25} {:>7} {:>19} {:>10} | {:>19} {:>10} | {:>6} | note",
        "scenario", "bound s", "ratio", "429s/calls", "plain", "429s/calls", "worst"
    );
    let mut walls_of = Vec::new();
    for scenario in &scenarios {
        if !chosen(scenario.name) {
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
        let bound_of = |f: &Figures| bound(scenario, f.calls.max(1) as usize);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for run in 0..seeds {
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
        // The shortest time the calls made (retries included) can take.
        let ratio = |f: &Figures| bound_of(f) / f.wall;
        let mid = |all: &[Figures], of: &dyn Fn(&Figures) -> f64| {
            median(&mut all.iter().map(of).collect::<Vec<_>>())
        };
        let ratios = |all: &[Figures]| all.iter().map(ratio).collect::<Vec<_>>();
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(o, t)| ratio(o) - ratio(t))
            .fold(f64::INFINITY, f64::min);
        walls_of.push((scenario.name, mid(&ours, &|f| f.wall)));
        let note = match (
            scenario.competitor_stops,
            scenario.competitor,
            scenario.shape,
        ) {
            (Some(_), _, _) => match mid(&ours, &|f| f.windows_to_full.unwrap_or(f64::INFINITY)) {
                w if w.is_finite() => format!("full budget {w:.1} windows after it left"),
                _ => "never back to the full budget".into(),
            },
            (None, c, Shape::BackToBack) if c > 0 => {
                let share = |all: &[Figures], run: usize| {
                    mid(all, &|f| {
                        f.runs
                            .get(run)
                            .map_or(0.0, |(r, c)| 100.0 * *r as f64 / (*c).max(1) as f64)
                    })
                };
                format!(
                    "429s: first run {:.1} %, second {:.1} % (plain {:.1} %, {:.1} %)",
                    share(&ours, 0),
                    share(&ours, 1),
                    share(&theirs, 0),
                    share(&theirs, 1)
                )
            }
            _ => format!("{} of {total} done", mid(&ours, &|f| f.done as f64)),
        };
        println!(
            "{:<25} {:>7.1} {:>19} {:>10} | {:>19} {:>10} | {:>+6.3} | {note}; load {}",
            scenario.name,
            mid(&ours, &bound_of),
            spread(&ratios(&ours)),
            format!(
                "{}/{}",
                mid(&ours, &|f| f.rate_limited as f64),
                mid(&ours, &|f| f.calls as f64)
            ),
            spread(&ratios(&theirs)),
            format!(
                "{}/{}",
                mid(&theirs, &|f| f.rate_limited as f64),
                mid(&theirs, &|f| f.calls as f64)
            ),
            worst,
            load(),
        );
    }
    let wall_of = |name: &str| walls_of.iter().find(|(n, _)| *n == name).map(|(_, w)| *w);
    if let (Some(link), Some(email)) = (
        wall_of("50-300ms, 2% 500s"),
        wall_of("+ email, SMTP 200ms/msg"),
    ) {
        println!(
            "email run / link-only run: {:.3} (target <= 1.05)",
            email / link
        );
    }
}
