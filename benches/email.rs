//! Email-stage benchmark: an email campaign of N leads (2,000 by default)
//! through the real binary, against the built-in sandbox (a child
//! `lsq-dispatch sandbox` with a budget far above the run's pace) and an SMTP
//! sink on loopback that accepts every message; then the same campaign into
//! an `--outbox` folder. Every run starts with a new state file, so each lead
//! costs the ledger its commits (`linked`, `sending`, `sent`) as in a real
//! campaign. Prints the median wall time and messages/s over the runs.
//!
//!     cargo bench --bench email                           # 2,000 leads, 5 runs
//!     BENCH_LEADS=500 BENCH_RUNS=3 cargo bench --bench email
//!     BENCH_BASELINE=/path/to/old/lsq-dispatch cargo bench --bench email
//!
//! With `BENCH_BASELINE`, that binary runs too, each of its runs right after
//! the same run of this build, and both are printed side by side. Work files
//! go under cargo's target directory, on the disk the state file would use,
//! not on a memory file system where an fsync costs nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

mod common;
#[path = "common/sink.rs"]
mod sink;

use common::{env_number, median};
use sink::SmtpSink;

/// The pace the runs may use and the sandbox's budget: high enough that the
/// API side never waits, so the email stage sets the pace.
const RATE: &str = "10000/1s";

/// Where messages go in one run.
#[derive(Clone, Copy, PartialEq)]
enum Delivery {
    Smtp,
    Outbox,
}

impl Delivery {
    fn name(self) -> &'static str {
        match self {
            Delivery::Smtp => "SMTP sink",
            Delivery::Outbox => "--outbox",
        }
    }
}

/// A built binary under test.
struct Build {
    name: String,
    path: PathBuf,
}

fn main() {
    let leads: u64 = env_number("BENCH_LEADS", 2_000);
    let runs: usize = env_number("BENCH_RUNS", 5).max(1);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-email");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("create the work folder");

    let mut builds = vec![Build {
        name: "this build".into(),
        path: env!("CARGO_BIN_EXE_lsq-dispatch").into(),
    }];
    if let Some(path) = std::env::var_os("BENCH_BASELINE") {
        builds.push(Build {
            name: "baseline".into(),
            path: path.into(),
        });
    }

    let input = root.join("leads.csv");
    write_leads(&input, leads);
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

    let sandbox = Sandbox::start(&builds[0].path, &root);
    let sink = SmtpSink::start();
    println!(
        "email stage: {leads} leads, {runs} run(s) each, sandbox budget {RATE}, state under {}",
        root.display()
    );

    for delivery in [Delivery::Smtp, Delivery::Outbox] {
        let mut secs: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
        for run in 0..runs {
            for (b, build) in builds.iter().enumerate() {
                let dir = root.join(format!("run-{run}-{b}"));
                std::fs::create_dir_all(&dir).unwrap();
                let before = sink.accepted();
                let mut cmd = Command::new(&build.path);
                cmd.env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .env("HOME", &dir)
                    .env("XDG_STATE_HOME", dir.join("state"))
                    .envs(sandbox.env.iter().map(|(k, v)| (k, v)))
                    .current_dir(&dir)
                    .arg("run")
                    .arg(&input)
                    .args(["--rate", RATE, "-q", "--campaign", "bench"])
                    .arg("--report")
                    .arg(dir.join("report.csv"))
                    .arg("--state")
                    .arg(dir.join("state.sqlite"))
                    .arg("--email")
                    .arg("--templates")
                    .arg(&templates)
                    .args(["--from", "Acme <invites@acme.example>"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                match delivery {
                    Delivery::Smtp => cmd.args(["--smtp-url", &sink.url]),
                    Delivery::Outbox => cmd.arg("--outbox").arg(dir.join("outbox")),
                };
                let started = Instant::now();
                let output = cmd.output().expect("the binary starts");
                let took = started.elapsed().as_secs_f64();
                assert!(
                    output.status.success(),
                    "{} exited {:?}: {}",
                    build.name,
                    output.status.code(),
                    String::from_utf8_lossy(&output.stderr)
                );
                let delivered = match delivery {
                    Delivery::Smtp => sink.accepted() - before,
                    Delivery::Outbox => {
                        std::fs::read_dir(dir.join("outbox")).unwrap().count() as u64
                    }
                };
                assert_eq!(delivered, leads, "{}: every lead's message", build.name);
                secs[b].push(took);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        println!("\n{} ({leads} messages):", delivery.name());
        println!(
            "  {:<12} {:>12} {:>14} {:>10} {:>10}",
            "binary", "median s", "messages/s", "best s", "worst s"
        );
        for (b, build) in builds.iter().enumerate() {
            let times = &mut secs[b];
            let mid = median(times);
            println!(
                "  {:<12} {:>12.3} {:>14.0} {:>10.3} {:>10.3}",
                build.name,
                mid,
                leads as f64 / mid,
                times[0],
                times[times.len() - 1]
            );
        }
    }
}

/// Writes a CSV of `n` leads with distinct GUIDs, first names and addresses.
fn write_leads(path: &Path, n: u64) {
    let mut csv = String::from("LeadId,FirstName,Email\n");
    for i in 0..n {
        csv.push_str(&format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x},Lead{i},lead{i}@example.com\n",
            i.wrapping_mul(0x9e37_79b9) & 0xffff_ffff,
            i & 0xffff,
            (i >> 16) & 0xfff,
            (i >> 28) & 0xfff,
            i.wrapping_mul(0x2545_f491_4f6c_dd1d) & 0xffff_ffff_ffff
        ));
    }
    std::fs::write(path, csv).expect("write the leads");
}

/// A child `lsq-dispatch sandbox`, and the environment it prints for a run.
struct Sandbox {
    child: Child,
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn start(binary: &Path, dir: &Path) -> Sandbox {
        let mut child = Command::new(binary)
            .env_clear()
            .env("HOME", dir)
            .args(["sandbox", "--budget", RATE])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the sandbox starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut env = Vec::new();
        for line in lines.by_ref() {
            let line = line.expect("the sandbox's banner");
            if let Some((name, value)) = line
                .strip_prefix("export ")
                .and_then(|rest| rest.split_once('='))
            {
                env.push((name.to_owned(), value.trim_matches('\'').to_owned()));
            }
            if line.starts_with("# budget") {
                break;
            }
        }
        assert!(
            env.iter().any(|(n, _)| n == "LSQ_HOST"),
            "no host in {env:?}"
        );
        // Keep reading, so the sandbox never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Sandbox { child, env }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
