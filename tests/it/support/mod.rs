//! Helpers shared by the integration tests, each kept here once.

pub mod browser;
pub mod fifo;
pub mod hostile_server;
mod installed;
pub mod link_service;
pub mod private_ca;
pub mod prometheus;
pub mod redis_server;
mod server_thread;
pub mod small_disk;
pub mod smtp_server;
pub mod tmpfs;
pub mod watch;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lsq_sandbox::{Sandbox, SandboxConfig};

pub use installed::installed_or_skip;

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

/// The report's rows counted by status.
pub fn statuses(report: &Path) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for row in read_report(report) {
        *counts.entry(row["status"].clone()).or_default() += 1;
    }
    counts
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
pub fn run_on_sandbox(sandbox: &Sandbox, dir: &Path, input: &Path, page: &str) -> Command {
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

/// The portal every run against a wiremock server uses.
pub const MOCK_PORTAL: &str = "7f3c2a9e-5b1d-4c8e-9a6f-2d4b8e1c0f37";

/// `lsq-dispatch run INPUT` pointed at a wiremock server, with a budget that
/// never slows a test down. Callers add the report and anything else.
pub fn run_on_mock(server: &wiremock::MockServer, dir: &Path, input: &Path) -> Command {
    run_on_host(&server.uri(), dir, input)
}

/// `lsq-dispatch run INPUT` pointed at any test server's URL, as
/// [`run_on_mock`] does for a wiremock server.
pub fn run_on_host(host: &str, dir: &Path, input: &Path) -> Command {
    let mut cmd = lsq(dir);
    cmd.arg("run")
        .arg(input)
        .args(["--host", host, "--portal-id", MOCK_PORTAL])
        .args(["--portal-url", "https://apply.example.com/login"])
        .args(["--rate", "100/100ms"])
        .env("LSQ_ACCESS_KEY", "access")
        .env("LSQ_SECRET_KEY", "secret")
        .env("LSQ_TENANT_AUTH_KEY", "tenant");
    cmd
}

/// A wiremock server that gives every POST this answer and expects `calls`
/// of them.
pub async fn answering(answer: wiremock::ResponseTemplate, calls: u64) -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(answer)
        .expect(calls)
        .mount(&server)
        .await;
    server
}

/// A wiremock answer that issues a key for the lead asked about.
pub fn key_for(request: &wiremock::Request) -> wiremock::ResponseTemplate {
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "AuthKey": "k+ey/for=",
        "LeadId": body["LeadId"],
    }))
}

/// LeadSquared's answer to bad credentials.
pub fn unauthorized() -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(401).set_body_string(
        r#"{"Status":"Error","ExceptionType":"MXUnAuthorizedAccessException","ExceptionMessage":"Invalid credentials"}"#,
    )
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

/// The repository's `samples/NAME`: the sample leads and email templates the
/// README starts users with, so the tests exercise what users are shown.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

/// A `templates` directory in `dir` holding only this subject and plain-text
/// body, for the template checks the samples cannot exercise.
pub fn write_templates(dir: &Path, subject: &str, body: &str) -> PathBuf {
    let templates = dir.join("templates");
    std::fs::create_dir(&templates).unwrap();
    write(&templates, "subject.txt", subject);
    write(&templates, "body.txt", body);
    templates
}

/// A CSV of `n` leads, each with a FirstName and an Email of its own, for runs
/// that send mail.
pub fn leads_with_email(dir: &Path, n: usize) -> PathBuf {
    let mut csv = String::from("LeadId,FirstName,Email\n");
    for (i, id) in lead_ids(n).iter().enumerate() {
        csv.push_str(&format!("{id},Lead{i},lead{i}@example.com\n"));
    }
    write(dir, "leads.csv", &csv)
}

/// The sandbox's defaults with a budget so large that pacing never slows a
/// test down; tests about pacing set their own.
pub fn fast_config() -> SandboxConfig {
    SandboxConfig {
        budget: "1000/1s".parse().unwrap(),
        ..SandboxConfig::default()
    }
}

/// The fingerprint of the sandbox's tenant, as runs against it store it.
pub fn tenant_of(sandbox: &Sandbox) -> String {
    let host = url::Url::parse(&sandbox.base_url()).unwrap();
    let key = lsq_dispatch::secret::Secret::new(sandbox.config().access_key.clone());
    lsq_dispatch::tenant::Tenant::new(&host, &key)
        .fingerprint()
        .to_owned()
}

/// Starts a sandbox on a loopback port the kernel picks.
pub async fn sandbox(config: SandboxConfig) -> Sandbox {
    Sandbox::start(config).await.expect("the sandbox starts")
}

/// A sandbox with [`fast_config`].
pub async fn fast_sandbox() -> Sandbox {
    sandbox(fast_config()).await
}

/// The permission bits of `path`, to check that files holding secrets are
/// private.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A loopback address where nothing listens, so connecting there is refused.
/// The socket is bound but never listens; while it lives it holds the port,
/// so no other test in this process can start listening there meanwhile (a
/// listener bound and dropped would free the port for anyone).
pub struct RefusedPort {
    _socket: tokio::net::TcpSocket,
    /// The address to connect to.
    pub addr: SocketAddr,
}

impl RefusedPort {
    /// Binds a port the kernel picks on 127.0.0.1, without listening.
    pub fn bind() -> RefusedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        RefusedPort {
            _socket: socket,
            addr,
        }
    }
}

/// The process's standard output, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The process's standard error, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Distinctive credentials to plant in a run and then search every output
/// for. Each holds `$ + / = &`, which encoding changes, after a seven-letter
/// prefix that no other text contains.
pub mod planted {
    use lsq_sandbox::SandboxConfig;

    pub const ACCESS: &str = "AKplantA$+/=&1";
    pub const SECRET: &str = "SKplantS&=+/$2";
    pub const TENANT: &str = "TKplantT+/=&3";
    pub const PUBLIC: &str = "PKplantP+/=&3";
    pub const REGISTER: &str = "RTplantR-4";
    pub const SMTP_PASSWORD: &str = "SPplantP=+/&5";

    /// A fast sandbox that accepts exactly the planted credentials.
    pub fn sandbox_config() -> SandboxConfig {
        SandboxConfig {
            access_key: ACCESS.into(),
            secret_key: SECRET.into(),
            tenant_auth_key: TENANT.into(),
            public_auth_key: PUBLIC.into(),
            ..super::fast_config()
        }
    }

    /// Every form in which `secret` could leak: as is, form-encoded (a query
    /// string), strictly percent-encoded in upper and lower case, in base64
    /// (standard and URL-safe), and cut to its first seven characters (a
    /// truncated print).
    pub fn forms(secret: &str) -> Vec<String> {
        use base64::Engine as _;
        let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let strict =
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let lower = lower_hex(&strict);
        let base64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(secret);
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let cut = secret[..7].to_owned();
        vec![
            secret.to_owned(),
            form,
            strict,
            lower,
            base64,
            url_safe,
            cut,
        ]
    }

    /// `text` with the hex digits of its percent escapes in lower case.
    pub fn lower_hex(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut hex_left = 0;
        for c in text.chars() {
            if hex_left > 0 {
                out.push(c.to_ascii_lowercase());
                hex_left -= 1;
            } else {
                out.push(c);
                if c == '%' {
                    hex_left = 2;
                }
            }
        }
        out
    }

    /// Asserts that no planted credential in any of its [`forms`], nor any of
    /// `also` as given (an OTP, say), occurs in any of the named texts.
    pub fn assert_absent(texts: &[(&str, String)], also: &[&str]) {
        let mut needles: Vec<String> = also.iter().map(|s| s.to_string()).collect();
        for secret in [ACCESS, SECRET, TENANT, PUBLIC, REGISTER, SMTP_PASSWORD] {
            needles.extend(forms(secret));
        }
        for needle in &needles {
            for (name, text) in texts {
                assert!(
                    !text.contains(needle),
                    "{needle:?} leaked into {name}:\n{text}"
                );
            }
        }
    }

    /// The process's stdout and stderr, named, for [`assert_absent`].
    pub fn outputs(output: &std::process::Output) -> Vec<(&'static str, String)> {
        vec![
            ("stdout", super::stdout(output)),
            ("stderr", super::stderr(output)),
        ]
    }
}

/// Adds `--email` to a run: these templates, this SMTP server, and a fixed
/// sender, so each test names only what it is about.
pub fn with_email<'a>(cmd: &'a mut Command, smtp_url: &str, templates: &Path) -> &'a mut Command {
    cmd.arg("--email")
        .arg("--templates")
        .arg(templates)
        .args(["--smtp-url", smtp_url])
        .args(["--from", "Acme <invites@acme.example>"])
}

/// Polls until `ready` holds; panics after 30 s.
pub async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends SIGTERM to a running binary.
pub fn sigterm(child: &std::process::Child) {
    send_signal(child, libc::SIGTERM);
}

/// Runs and asserts a zero exit, for the runs that set the stage for what a
/// test is about.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Output {
    let output = run(cmd);
    assert_eq!(output.status.code(), Some(0));
    output
}

/// How a run measured by [`run_measured`] ended.
pub struct Measured {
    /// The exit code, or `None` when a signal ended it.
    pub code: Option<i32>,
    /// Its standard error.
    pub stderr: String,
    /// Its peak resident set size, from `wait4`.
    pub peak_rss_mb: f64,
}

/// Runs `cmd` (a command from [`lsq`]) to its end and reads its peak
/// memory from `wait4`, which std's `Child::wait` would discard. The run's
/// address space is capped at 1 GiB and its CPU time at two minutes, so one
/// that grows or spins without bound fails the test instead of taking the
/// machine with it. The caps are set by a shell that then becomes the run
/// (limits set between fork and exec would count the test process's own
/// memory as the child's peak). Standard output goes to `dir/stdout.txt`.
pub fn run_measured(cmd: &Command, dir: &Path) -> Measured {
    let stderr_path = dir.join("stderr.txt");
    let mut shell = Command::new("/bin/sh");
    shell
        .arg("-c")
        .arg(r#"ulimit -v 1048576 && ulimit -t 120 && exec "$0" "$@""#)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout.txt")).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    for (name, value) in cmd.get_envs() {
        if let Some(value) = value {
            shell.env(name, value);
        }
    }
    if let Some(cwd) = cmd.get_current_dir() {
        shell.current_dir(cwd);
    }
    let child = shell.spawn().expect("the binary starts");
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    let mut status = 0;
    // SAFETY: rusage is plain old data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped; both pointers are valid.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    // The child is reaped; dropping the handle neither waits nor kills.
    drop(child);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    eprintln!("--- stderr\n{stderr}");
    Measured {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stderr,
        // ru_maxrss is in KiB on Linux.
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
    }
}

/// The budget file runs against `sandbox` share in `dir`, the directory of
/// their campaign state file: `budget-` and 16 hex digits of the tenant.
pub fn budget_file(dir: &Path, sandbox: &Sandbox) -> PathBuf {
    dir.join(format!("budget-{}.log", &tenant_of(sandbox)[..16]))
}

/// The keys of the sandbox tenant's budget in a Redis server: `(log, pause)`.
pub fn redis_budget_keys(sandbox: &Sandbox) -> (String, String) {
    let tag = format!("lsq-dispatch:{{budget-{}}}", &tenant_of(sandbox)[..16]);
    (format!("{tag}:log"), format!("{tag}:pause"))
}

/// Milliseconds since 1970 on this machine's clock, as budget stores write
/// their times.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sends `signal` (`libc::SIGTERM`, `libc::SIGHUP`, …) to a running binary.
pub fn send_signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}
