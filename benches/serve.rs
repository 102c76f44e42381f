//! Link-service benchmark: the real binary's `serve` against the built-in
//! sandbox (in this process), in three parts.
//!
//! a. Clicks whose key is in the token (`--mint at-send`) on loopback, from
//!    keep-alive connections: the most POSTs per second answered (closed
//!    loop), and p50/p99 latency at a steady 5,000 POSTs/s offered (open
//!    loop, timed from when each POST was due; see `serve/load.rs`).
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
//!     BENCH_RATE=5000 BENCH_PACED_CONNECTIONS=64     # part a's open loop
//!     BENCH_BASELINE=/path/to/old/lsq-dispatch       # side by side
//!
//! With `BENCH_BASELINE`, parts a and c run that binary too, each of its
//! runs right after the same run of this build, so the machine's load
//! weighs on both alike.
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
#[path = "serve/load.rs"]
mod load;
#[path = "common/sink.rs"]
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
    fn start(binary: &Path, sandbox: &Sandbox, dir: &Path, extra: &[&str]) -> Serve {
        std::fs::create_dir_all(dir).unwrap();
        let mut child = Command::new(binary)
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

/// A built binary under test: this build, and `BENCH_BASELINE` if given.
struct Build {
    name: &'static str,
    path: PathBuf,
}

fn builds() -> Vec<Build> {
    let mut builds = vec![Build {
        name: "this build",
        path: env!("CARGO_BIN_EXE_lsq-dispatch").into(),
    }];
    if let Some(path) = std::env::var_os("BENCH_BASELINE") {
        builds.push(Build {
            name: "baseline",
            path: path.into(),
        });
    }
    builds
}

/// Part a: keep-alive POSTs of links whose key is in the token, closed loop
/// (the most the service answers) and open loop at a steady offered rate
/// (the latency the target means), each build's runs in turn.
async fn throughput(root: &Path) {
    let connections: usize = env_number("BENCH_CONNECTIONS", 32);
    let paced_connections: usize = env_number("BENCH_PACED_CONNECTIONS", 64);
    let rate: f64 = env_number("BENCH_RATE", 5_000.0);
    let seconds: u64 = env_number("BENCH_SECONDS", 10);
    let runs: usize = env_number("BENCH_RUNS", 3).max(1);
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let builds = builds();
    let served: Vec<Serve> = builds
        .iter()
        .enumerate()
        .map(|(b, build)| {
            Serve::start(
                &build.path,
                &sandbox,
                &root.join(format!("throughput-{b}")),
                // One load generator is one client address: no per-client cap.
                &["--client-rate", "10000/1ms", "--log-format", "json"],
            )
        })
        .collect();
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
        "\na. clicks with the key in the token, {seconds} s per run after 1 s of warm-up, \
         {runs} run(s) per build, builds in turn: closed loop on {connections} keep-alive \
         connections (the most answered), and open loop offering {rate:.0}/s steadily on up \
         to {paced_connections} (latency from when each POST was due)"
    );
    println!(
        "  {:<10} {:>3} {:>7} {:>9} {:>8} {:>8} {:>9} {:>8} {:>7}",
        "build", "run", "load", "POSTs/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
    );
    // [build][closed, open][rate, p50, p99, p99.9]
    let mut figures =
        vec![[[(); 4].map(|()| Vec::new()), [(); 4].map(|()| Vec::new())]; builds.len()];
    for run in 0..runs {
        for (b, (build, served)) in builds.iter().zip(&served).enumerate() {
            let length = Duration::from_secs(seconds);
            let closed = load::closed(served.addr, &paths, connections, length).await;
            let open = load::paced(served.addr, &paths, paced_connections, rate, length).await;
            for (m, (mode, measured)) in
                [("closed", closed), ("open", open)].into_iter().enumerate()
            {
                let l = &measured.latencies;
                let row = [
                    l.len() as f64 / seconds as f64,
                    percentile(l, 0.5),
                    percentile(l, 0.99),
                    percentile(l, 0.999),
                ];
                println!(
                    "  {:<10} {run:>3} {mode:>7} {:>9.0} {:>8.3} {:>8.3} {:>9.3} {:>8.3} {:>7}",
                    build.name,
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    l.last().copied().unwrap_or(0.0),
                    measured.errors
                );
                for (column, value) in figures[b][m].iter_mut().zip(row) {
                    column.push(value);
                }
            }
        }
    }
    for (build, figures) in builds.iter().zip(&mut figures) {
        for (mode, columns) in ["closed", "open"].into_iter().zip(figures.iter_mut()) {
            let [r, p50, p99, p999] = columns.each_mut().map(|c| median(c));
            println!(
                "  {:<10} med {mode:>7} {r:>9.0} {p50:>8.3} {p99:>8.3} {p999:>9.3}",
                build.name
            );
        }
    }
    println!(
        "  (targets: >= 5000 POSTs/s closed loop; p99 <= 5 ms open loop at 5000/s); API calls: {}",
        sandbox.stats().calls
    );
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
        Path::new(env!("CARGO_BIN_EXE_lsq-dispatch")),
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
    let builds = builds();
    let mut at_click = vec![Vec::new(); builds.len()];
    for run in 0..runs {
        for (b, build) in builds.iter().enumerate() {
            let dir = root.join(format!("at-click-{run}-{b}"));
            let sandbox = Sandbox::start(strict(run as u64 + 1)).await.unwrap();
            let took = send(&build.path, &sandbox, &dir, leads, &templates, &sink, true);
            assert_eq!(
                sandbox.stats().calls,
                0,
                "an at-click run makes no API call"
            );
            println!(
                "  {:<10} at-click run {run}: {took:.2} s, {:.0} messages/s",
                build.name,
                leads as f64 / took
            );
            at_click[b].push(took);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let at_click: Vec<f64> = at_click.iter_mut().map(|t| median(t)).collect();
    let sandbox = Sandbox::start(strict(7)).await.unwrap();
    let direct = send(
        &builds[0].path,
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
    for (build, at_click) in builds.iter().zip(at_click) {
        println!(
            "  {:<10} median at-click {at_click:.2} s ({:.0} messages/s) vs direct \
             {direct_full:.0} s: {:.0}x faster (target: >= 50x)",
            build.name,
            leads as f64 / at_click,
            direct_full / at_click
        );
    }
}

/// One `run --email` of `leads` leads to the sink; its wall time in seconds.
fn send(
    binary: &Path,
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
    let mut cmd = Command::new(binary);
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
