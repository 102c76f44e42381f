//! Link-service benchmark: the real binary's `serve` against the built-in
//! sandbox (in this process), in three parts.
//!
//! a. Clicks whose key is in the token (`--mint at-send`): POSTs per second
//!    and p50/p99 latency on loopback, from keep-alive connections.
//! b. A click storm in `at-click` mode: 1,000 different leads click within
//!    10 s against the sandbox's strict 25 per 5 s window, with network
//!    jitter and service time. Every click is answered (a 303, or the page
//!    that tries again by itself, which the bench follows as a browser
//!    would, every 5 s, until a 303); the sandbox must answer no 429. Prints
//!    how long each person waited for the 303. Several seeds, side by side.
//! c. A 10,000-lead email campaign to an SMTP sink on loopback in `at-click`
//!    mode, against `direct` mode at the default 25 per 5 s budget. Direct
//!    mode is measured on fewer leads (500) and extrapolated linearly, as its
//!    pace is the budget's, and the output says so.
//!
//!     cargo bench --bench serve
//!     BENCH_PART=a cargo bench --bench serve          # one part: a, b or c
//!     BENCH_CONNECTIONS=64 BENCH_SECONDS=5 BENCH_RUNS=5 BENCH_SEEDS=1,2,3
//!     BENCH_CAMPAIGN_LEADS=10000 BENCH_DIRECT_LEADS=500
//!
//! Figures are medians over the runs (part a, part c's at-click) or the
//! seeds (part b). Work files go under cargo's target directory.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lsq_dispatch::redirect::{LinkClaims, LinkSecrets};
use lsq_dispatch::secret::Secret;
use lsq_sandbox::{Sandbox, SandboxConfig};

mod common;
#[path = "serve/sink.rs"]
mod sink;

use common::{env_number, median};

/// The secret links are sealed with, here and in the service.
const SECRET: &str = "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY";
/// What the busy page waits before it submits again.
const RETRY: Duration = Duration::from_secs(5);

fn main() {
    let part = std::env::var("BENCH_PART").unwrap_or_default();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-serve");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("create the work folder");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{}", load_line());
    runtime.block_on(async {
        if part.is_empty() || part == "a" {
            throughput(&root).await;
        }
        if part.is_empty() || part == "b" {
            storm(&root).await;
        }
        if part.is_empty() || part == "c" {
            campaign(&root).await;
        }
    });
    println!("\n{}", load_line());
}

/// The machine's load, to read the figures by.
fn load_line() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("load average {} ({cores} cores)", load.trim())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A GUID for lead `i`.
fn lead(i: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        i.wrapping_mul(0x9e37_79b9) & 0xffff_ffff,
        i & 0xffff,
        (i >> 16) & 0xfff,
        (i >> 28) & 0xfff,
        i.wrapping_mul(0x2545_f491_4f6c_dd1d) & 0xffff_ffff_ffff
    )
}

/// `p` (0 to 1) of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// The environment that drives a run or `serve` against `sandbox`.
fn sandbox_env(sandbox: &Sandbox, dir: &Path) -> Vec<(String, String)> {
    let config = sandbox.config();
    [
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", dir.display().to_string()),
        ("XDG_STATE_HOME", dir.join("state").display().to_string()),
        ("LSQ_HOST", sandbox.base_url()),
        ("LSQ_PORTAL_URL", sandbox.portal_url()),
        ("LSQ_ACCESS_KEY", config.access_key.clone()),
        ("LSQ_SECRET_KEY", config.secret_key.clone()),
        ("LSQ_TENANT_AUTH_KEY", config.tenant_auth_key.clone()),
        ("LSQ_LINK_SECRET", SECRET.to_owned()),
        ("LSQ_PORTAL_ID", config.portal_ids[0].clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A strict sandbox, as LeadSquared's gateway: 25 per 5 s counted at
/// arrival, arrivals delayed 0-80 ms, calls served in 60-400 ms.
fn strict(seed: u64) -> SandboxConfig {
    SandboxConfig {
        budget: "25/5s".parse().unwrap(),
        jitter: (Duration::from_millis(0), Duration::from_millis(80)),
        service_time: (Duration::from_millis(60), Duration::from_millis(400)),
        seed: Some(seed),
        ..SandboxConfig::default()
    }
}

/// A child `lsq-dispatch serve`, its log drained so it never blocks.
struct Serve {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Serve {
    fn start(sandbox: &Sandbox, dir: &Path, extra: &[&str]) -> Serve {
        std::fs::create_dir_all(dir).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lsq-dispatch"))
            .env_clear()
            .envs(sandbox_env(sandbox, dir))
            .current_dir(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--state"])
            .arg(dir.join("state.sqlite"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.expect("serve's log");
            if let Some(at) = line.find("serving links on http://") {
                let rest = &line[at + "serving links on http://".len()..];
                addr = rest.split("/l/").next().and_then(|a| a.parse().ok());
                break;
            }
        }
        let addr = addr.expect("serve did not start");
        std::thread::spawn(move || lines.for_each(drop));
        Serve { child, addr }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Part a: keep-alive POSTs of links whose key is in the token.
async fn throughput(root: &Path) {
    let connections: usize = env_number("BENCH_CONNECTIONS", 32);
    let seconds: u64 = env_number("BENCH_SECONDS", 10);
    let runs: usize = env_number("BENCH_RUNS", 3).max(1);
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let served = Serve::start(
        &sandbox,
        &root.join("throughput"),
        // One load generator is one client address: no per-client cap.
        &["--client-rate", "10000/1ms", "--log-format", "json"],
    );
    let secrets = LinkSecrets::parse(&Secret::new(SECRET)).unwrap();
    let portal = sandbox.config().portal_ids[0].clone();
    let paths: Arc<Vec<String>> = Arc::new(
        (0..1_000)
            .map(|i| {
                let claims = LinkClaims {
                    lead_id: lead(i),
                    portal_id: portal.clone(),
                    campaign: "bench".into(),
                    issued: now(),
                    expires: now() + 86_400,
                    key: Some((Secret::new(format!("k+y/{i}=")), now() + 3_600)),
                };
                format!("/l/{}", secrets.seal(&claims))
            })
            .collect(),
    );
    println!(
        "\na. clicks with the key in the token: {connections} keep-alive connections, \
         {seconds} s per run after 1 s of warm-up, {runs} run(s)"
    );
    println!(
        "  {:>4} {:>12} {:>10} {:>10} {:>10}",
        "run", "POSTs/s", "p50 ms", "p99 ms", "errors"
    );
    let (mut rates, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let (count, mut latencies, errors) = load(
            served.addr,
            &paths,
            connections,
            Duration::from_secs(seconds),
        )
        .await;
        latencies.sort_by(|a, b| a.total_cmp(b));
        let rate = count as f64 / seconds as f64;
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        println!("  {run:>4} {rate:>12.0} {p50:>10.3} {p99:>10.3} {errors:>10}");
        rates.push(rate);
        p50s.push(p50);
        p99s.push(p99);
    }
    println!(
        "  median {:>9.0} {:>10.3} {:>10.3}   (target: >= 5000/s, p99 <= 5 ms); API calls: {}",
        median(&mut rates),
        median(&mut p50s),
        median(&mut p99s),
        sandbox.stats().calls
    );
}

/// POSTs from `connections` keep-alive connections for `length` after a
/// second of warm-up: the count measured, each one's latency in ms, and the
/// answers that were not a 303.
async fn load(
    addr: std::net::SocketAddr,
    paths: &Arc<Vec<String>>,
    connections: usize,
    length: Duration,
) -> (u64, Vec<f64>, u64) {
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + length;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..connections {
        let paths = Arc::clone(paths);
        workers.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            let (mut latencies, mut errors) = (Vec::with_capacity(100_000), 0u64);
            let mut i = worker;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let request = hyper::Request::post(&paths[i % paths.len()])
                    .header("host", addr.to_string())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(String::new())
                    .unwrap();
                i += connections;
                let response = sender.send_request(request).await.unwrap();
                let status = response.status();
                let body = axum::body::Body::new(response.into_body());
                let _ = axum::body::to_bytes(body, 1 << 20).await;
                if sent >= start {
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                    errors += u64::from(status != 303);
                }
            }
            (latencies, errors)
        });
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    while let Some(done) = workers.join_next().await {
        let (latencies, failed) = done.unwrap();
        all.extend(latencies);
        errors += failed;
    }
    (all.len() as u64, all, errors)
}

/// What one seed's storm came to.
struct Storm {
    waits: Vec<f64>,
    answered: usize,
    unanswered: usize,
    rejected: u64,
    minted: u64,
    took: f64,
}

/// Part b: 1,000 at-click clicks in 10 s at 25 per 5 s, on several seeds at
/// once (each its own sandbox and service).
async fn storm(root: &Path) {
    let clicks: u64 = env_number("BENCH_CLICKS", 1_000);
    let seeds: Vec<u64> = std::env::var("BENCH_SEEDS")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "\nb. click storm, at-click: {clicks} leads click within 10 s, sandbox 25/5s strict \
         (arrival jitter 0-80 ms, service 60-400 ms), seeds {seeds:?} run side by side; a busy \
         page is followed every {} s until the 303",
        RETRY.as_secs()
    );
    let runs = seeds.iter().map(|&seed| {
        let dir = root.join(format!("storm-{seed}"));
        async move { storm_once(&dir, seed, clicks).await }
    });
    let results = futures::future::join_all(runs).await;
    println!(
        "  {:>4} {:>9} {:>7} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
        "seed", "answered", "lost", "429s", "minted", "p50 s", "p90 s", "p99 s", "max s", "total s"
    );
    let mut columns = vec![Vec::new(); 5];
    for (seed, mut run) in seeds.iter().zip(results) {
        run.waits.sort_by(|a, b| a.total_cmp(b));
        let figures = [0.5, 0.9, 0.99, 1.0].map(|p| percentile(&run.waits, p));
        println!(
            "  {seed:>4} {:>9} {:>7} {:>6} {:>7} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8.1}",
            run.answered,
            run.unanswered,
            run.rejected,
            run.minted,
            figures[0],
            figures[1],
            figures[2],
            figures[3],
            run.took
        );
        for (column, value) in columns
            .iter_mut()
            .zip(figures.into_iter().chain([run.took]))
        {
            column.push(value);
        }
    }
    let medians: Vec<f64> = columns.iter_mut().map(|c| median(c)).collect();
    println!(
        "  median {:>37.1} {:>7.1} {:>7.1} {:>7.1} {:>8.1}   (seconds from click to 303)",
        medians[0], medians[1], medians[2], medians[3], medians[4]
    );
}

async fn storm_once(dir: &Path, seed: u64, clicks: u64) -> Storm {
    let sandbox = Sandbox::start(strict(seed)).await.unwrap();
    let served = Serve::start(
        &sandbox,
        dir,
        &["--rate", "25/5s", "--trusted-proxy", "127.0.0.1"],
    );
    let secrets = LinkSecrets::parse(&Secret::new(SECRET)).unwrap();
    let portal = sandbox.config().portal_ids[0].clone();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let start = Instant::now();
    let mut people = tokio::task::JoinSet::new();
    for i in 0..clicks {
        let claims = LinkClaims {
            lead_id: lead(1_000_000 + i),
            portal_id: portal.clone(),
            campaign: "storm".into(),
            issued: now(),
            expires: now() + 86_400,
            key: None,
        };
        let link = format!("http://{}/l/{}", served.addr, secrets.seal(&claims));
        let client = client.clone();
        // Each person from an address of their own, through the proxy.
        let from = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        people.spawn(async move {
            tokio::time::sleep_until((start + Duration::from_millis(i * 10_000 / clicks)).into())
                .await;
            let clicked = Instant::now();
            loop {
                let answer = client
                    .post(&link)
                    .header("x-forwarded-for", &from)
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                match answer {
                    Ok(303) => return Some(clicked.elapsed().as_secs_f64()),
                    Ok(503) => tokio::time::sleep(RETRY).await,
                    _ => return None,
                }
            }
        });
    }
    let mut waits = Vec::new();
    let mut unanswered = 0;
    while let Some(done) = people.join_next().await {
        match done.unwrap() {
            Some(wait) => waits.push(wait),
            None => unanswered += 1,
        }
    }
    let stats = sandbox.stats();
    Storm {
        answered: waits.len(),
        waits,
        unanswered,
        rejected: stats.by_status.get(&429).copied().unwrap_or(0),
        minted: stats.keys_issued.values().sum(),
        took: start.elapsed().as_secs_f64(),
    }
}

/// Part c: an email campaign in at-click mode against direct mode.
async fn campaign(root: &Path) {
    let leads: u64 = env_number("BENCH_CAMPAIGN_LEADS", 10_000);
    let direct_leads: u64 = env_number("BENCH_DIRECT_LEADS", 500);
    let runs: usize = env_number("BENCH_RUNS", 3).max(1);
    let sink = sink::SmtpSink::start();
    let templates = root.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(
        templates.join("subject.txt"),
        "Your portal, {{ FirstName }}",
    )
    .unwrap();
    std::fs::write(
        templates.join("body.txt"),
        "Hello {{ FirstName }},\n\nsign in here: {{ link }}\n",
    )
    .unwrap();
    println!(
        "\nc. email campaign to an SMTP sink: {leads} leads at-click ({runs} run(s)) against \
         direct mode at 25/5s on a strict sandbox, measured on {direct_leads} leads and \
         extrapolated linearly to {leads}"
    );
    let mut at_click = Vec::new();
    for run in 0..runs {
        let dir = root.join(format!("at-click-{run}"));
        let sandbox = Sandbox::start(strict(run as u64 + 1)).await.unwrap();
        let took = send(&sandbox, &dir, leads, &templates, &sink, true);
        assert_eq!(
            sandbox.stats().calls,
            0,
            "an at-click run makes no API call"
        );
        println!(
            "  at-click run {run}: {took:.2} s, {:.0} messages/s",
            leads as f64 / took
        );
        at_click.push(took);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let at_click = median(&mut at_click);
    let sandbox = Sandbox::start(strict(7)).await.unwrap();
    let direct = send(
        &sandbox,
        &root.join("direct"),
        direct_leads,
        &templates,
        &sink,
        false,
    );
    let stats = sandbox.stats();
    let direct_full = direct / direct_leads as f64 * leads as f64;
    println!(
        "  direct: {direct:.1} s for {direct_leads} leads ({} calls, {} 429s), so about \
         {direct_full:.0} s for {leads} (extrapolated)",
        stats.calls,
        stats.by_status.get(&429).copied().unwrap_or(0)
    );
    println!(
        "  median at-click {at_click:.2} s vs direct {direct_full:.0} s: {:.0}x faster \
         (target: >= 50x)",
        direct_full / at_click
    );
}

/// One `run --email` of `leads` leads to the sink; its wall time in seconds.
fn send(
    sandbox: &Sandbox,
    dir: &Path,
    leads: u64,
    templates: &Path,
    sink: &sink::SmtpSink,
    at_click: bool,
) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let input: PathBuf = dir.join("leads.csv");
    let mut csv = String::from("LeadId,FirstName,Email\n");
    for i in 0..leads {
        csv.push_str(&format!("{},Lead{i},lead{i}@example.com\n", lead(i)));
    }
    std::fs::write(&input, csv).unwrap();
    let before = sink.accepted();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lsq-dispatch"));
    cmd.env_clear()
        .envs(sandbox_env(sandbox, dir))
        .current_dir(dir)
        .arg("run")
        .arg(&input)
        .args([
            "-q",
            "--campaign",
            "bench",
            "--email",
            "--smtp-url",
            &sink.url,
        ])
        .args(["--from", "Acme <invites@acme.example>", "--templates"])
        .arg(templates)
        .arg("--state")
        .arg(dir.join("state.sqlite"))
        .arg("--report")
        .arg(dir.join("report.csv"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if at_click {
        cmd.args(["--links", "redirect", "--mint", "at-click"])
            .args(["--link-base", "https://go.example.com"]);
    }
    let started = Instant::now();
    let output = cmd.output().expect("the binary starts");
    let took = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "run exited {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(sink.accepted() - before, leads, "every lead's message");
    took
}
