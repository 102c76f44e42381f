//! Pace benchmark: `run` over N leads against the sandbox set to a strict
//! 25-in-any-5 s window counted at arrival, with inbound jitter and service time.
//! Prints wall time, the window's lower bound 5·⌊(N−1)/25⌋ s, their ratio and the
//! 429s received, as medians over the runs.
//!
//!     cargo bench --bench window                 # 300 leads, 3 runs per scenario
//!     BENCH_LEADS=100 BENCH_RUNS=1 cargo bench --bench window

use std::time::{Duration, Instant};

use lsq_dispatch::cli::RunArgs;
use lsq_dispatch::config::Settings;
use lsq_dispatch::limiter::Rate;
use lsq_dispatch::sandbox::{Sandbox, SandboxConfig};

mod common;
#[path = "../tests/it/support/server_thread.rs"]
mod server_thread;
#[path = "../tests/it/support/smtp_server.rs"]
#[allow(dead_code)]
mod smtp_server;

use common::{env_number, median};

struct Scenario {
    name: &'static str,
    service: (u64, u64),
    competitor: u32,
    /// Email every lead through an SMTP server taking this long per message.
    smtp_delay_ms: Option<u64>,
    /// This fraction of new connections has its first call arrive this many
    /// milliseconds late, as after a lost SYN.
    late_connections: (f64, u64),
}

/// The first scenario; the others say how they differ from it.
const BASE: Scenario = Scenario {
    name: "service 50-300ms",
    service: (50, 300),
    competitor: 0,
    smtp_delay_ms: None,
    late_connections: (0.0, 0),
};

struct Figures {
    wall: f64,
    rate_limited: u64,
    done: u64,
    max_in_window: u32,
}

async fn once(scenario: &Scenario, leads: usize, dir: &std::path::Path, seed: u64) -> Figures {
    let sandbox = Sandbox::start(SandboxConfig {
        budget: Rate::DEFAULT,
        jitter: (Duration::ZERO, Duration::from_millis(100)),
        service_time: (
            Duration::from_millis(scenario.service.0),
            Duration::from_millis(scenario.service.1),
        ),
        competitor: scenario.competitor,
        late_connections: (
            scenario.late_connections.0,
            Duration::from_millis(scenario.late_connections.1),
        ),
        seed: Some(seed),
        ..SandboxConfig::default()
    })
    .await
    .expect("the sandbox starts");
    let mut csv = String::from("LeadId,FirstName,Email\n");
    for i in 0..leads {
        csv.push_str(&format!(
            "{:08x}-2222-4333-8444-{:012x},Lead{i},lead{i}@example.com\n",
            0xb0000000u32 + i as u32,
            seed
        ));
    }
    let input = dir.join("bench-leads.csv");
    std::fs::write(&input, csv).unwrap();
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
            .map(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/templates")),
        from: Some("Bench <bench@example.com>".into()),
        input,
        host: Some(sandbox.base_url()),
        portal_id: Some(config.portal_ids[0].clone()),
        portal_url: Some(sandbox.portal_url()),
        report: Some(dir.join("bench-report.csv")),
        // A fresh campaign state each run, so nothing is reused between runs.
        state: Some(dir.join(format!("bench-state-{}-{seed}.sqlite", scenario.name))),
        quiet: true,
        max_attempts: Some(10),
        ..RunArgs::default()
    };
    let settings = Settings::resolve(&args).await.expect("settings");
    let started = Instant::now();
    let outcome = lsq_dispatch::run::run(settings)
        .await
        .expect("the run finishes");
    let wall = started.elapsed().as_secs_f64();
    let stats = sandbox.stats();
    sandbox.shutdown().await;
    Figures {
        wall,
        rate_limited: outcome.summary.rate_limited,
        done: outcome.summary.count(lsq_dispatch::report::Status::Linked)
            + outcome.summary.count(lsq_dispatch::report::Status::Sent),
        max_in_window: stats.max_in_window,
    }
}

fn main() {
    let leads: usize = env_number("BENCH_LEADS", 300);
    let runs: usize = env_number("BENCH_RUNS", 3).max(1);
    let only = std::env::var("BENCH_ONLY").ok();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let scenarios = [
        BASE,
        Scenario {
            name: "+ email, SMTP 200ms/msg",
            smtp_delay_ms: Some(200),
            ..BASE
        },
        Scenario {
            name: "service 1s",
            service: (1000, 1000),
            ..BASE
        },
        Scenario {
            name: "1s, 70% conns 1s late",
            service: (1000, 1000),
            late_connections: (0.7, 1000),
            ..BASE
        },
        Scenario {
            name: "competitor takes 10/25",
            competitor: 10,
            ..BASE
        },
    ];
    println!("{leads} leads, 25 calls in any 5 s counted at arrival, 0-100 ms inbound jitter, {runs} run(s) each; medians");
    println!(
        "{:<24} {:>8} {:>8} {:>7} {:>6} {:>8} {:>8}",
        "scenario", "wall s", "bound s", "ratio", "429s", "done", "max/win"
    );
    let mut medians = Vec::new();
    for scenario in &scenarios {
        if only.as_deref().is_some_and(|o| !scenario.name.contains(o)) {
            continue;
        }
        let budget = 25 - scenario.competitor as usize;
        let bound = 5.0 * ((leads - 1) / budget) as f64;
        let mut walls = Vec::new();
        let mut limited = Vec::new();
        let mut linked = Vec::new();
        let mut max_window = 0;
        for run in 0..runs {
            let f = runtime.block_on(once(scenario, leads, dir.path(), run as u64 + 1));
            walls.push(f.wall);
            limited.push(f.rate_limited as f64);
            linked.push(f.done as f64);
            max_window = max_window.max(f.max_in_window);
        }
        let wall = median(&mut walls);
        medians.push((scenario.name, wall));
        println!(
            "{:<24} {:>8.2} {:>8.1} {:>7.3} {:>6} {:>8} {:>8}",
            scenario.name,
            wall,
            bound,
            bound / wall,
            median(&mut limited),
            median(&mut linked),
            max_window
        );
    }
    let wall_of = |name: &str| medians.iter().find(|(n, _)| *n == name).map(|(_, w)| *w);
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
