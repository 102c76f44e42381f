//! docs/nightly.md's "Running it every night" followed as written, into a
//! temporary root standing in for `/`: the install commands, then the
//! nightly unit's `ExecStart` with the environment its `EnvironmentFile=`
//! gives, against the sandbox and an SMTP server on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::smtp_server::{SmtpBehaviour, SmtpServer};
use crate::support::{lead_ids, lsq, mode, read_report, run, sample, sandbox, write};
use lsq_sandbox::SandboxConfig;

/// The directories the steps and the unit name, and where the test puts them.
const PREFIXES: [&str; 3] = ["/usr/share/doc/lsq-dispatch/examples", "/etc/", "/var/lib/"];

/// A temporary root with the package's files where the steps expect them.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        Root {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.dir.path().join(absolute.trim_start_matches('/'))
    }

    /// `text` with every absolute path the steps and units use moved under
    /// the root, and the installed binary replaced by the one just built.
    fn rebase(&self, text: &str) -> String {
        let mut text = text.replace("/usr/bin/lsq-dispatch", env!("CARGO_BIN_EXE_lsq-dispatch"));
        let [examples, etc, var_lib] = PREFIXES;
        text = text.replace(examples, &sample("").display().to_string());
        for prefix in [etc, var_lib] {
            // The root is under the temporary directory, so no path moved
            // here holds another prefix.
            let moved = self.path(prefix.trim_end_matches('/'));
            text = text.replace(prefix, &format!("{}/", moved.display()));
        }
        text
    }
}

/// The shell block of "Running it every night", without the commands that
/// need a real system (the package manager, systemd) and without comments.
fn install_steps() -> Vec<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/nightly.md"))
            .unwrap();
    let section = &doc[doc.find("## Running it every night").unwrap()..];
    let block = &section[section.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    block
        .lines()
        .map(|line| match line.find(" # ") {
            Some(at) => line[..at].trim_end(),
            None => line.trim_end(),
        })
        .filter(|line| !line.is_empty())
        .filter(|line| {
            !["apt ", "systemctl ", "journalctl "]
                .iter()
                .any(|skip| line.starts_with(skip))
        })
        .map(str::to_owned)
        .collect()
}

/// The unit's `ExecStart=` as words, its lines joined and `%S` expanded.
fn exec_start(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart=");
    line.replace("%S", "/var/lib")
        .replace("%%", "%")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A unit setting's value, with `%S` expanded.
fn unit_setting(unit: &str, name: &str) -> String {
    unit.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("the unit has {name}="))
        .replace("%S", "/var/lib")
}

/// The variables an `EnvironmentFile=` sets, read as systemd reads it:
/// `#` and `;` lines are comments, a value in single quotes is taken as it
/// stands, one in double quotes with backslash escapes, a bare value with
/// its surrounding blanks trimmed.
pub fn systemd_environment(text: &str) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (name, value) = line.split_once('=').expect("VAR=value");
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\''))
        {
            inner.to_owned()
        } else if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        } else {
            value.to_owned()
        };
        vars.push((name.trim().to_owned(), value));
    }
    vars
}

#[tokio::test(flavor = "multi_thread")]
async fn the_nightly_install_steps_as_written_give_a_unit_that_runs() {
    let portal = "7f3c2a9e-5b1d-4c8e-9a6f-2d4b8e1c0f37";
    let sandbox = sandbox(SandboxConfig {
        budget: "1000/1s".parse().unwrap(),
        portal_ids: vec![portal.to_owned()],
        ..SandboxConfig::default()
    })
    .await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let root = Root::new();

    let steps = install_steps();
    assert!(
        steps.iter().any(|s| s.contains("lsq-dispatch.toml")),
        "{steps:?}"
    );
    let script = format!("set -eu\n{}\n", root.rebase(&steps.join("\n")));
    let out = run(Command::new("sh").args(["-c", &script]));
    assert_eq!(out.status.code(), Some(0), "the steps run: {script}");

    // The installed config names paths under /etc and /var/lib too.
    let config_file = root.path("/etc/lsq-dispatch/lsq-dispatch.toml");
    let text = std::fs::read_to_string(&config_file).unwrap();
    std::fs::write(&config_file, root.rebase(&text)).unwrap();

    // "then fill it in": the operator's secrets, and this test's API host
    // and SMTP server in place of the real ones.
    let env_file = root.path("/etc/lsq-dispatch/lsq-dispatch.env");
    assert_eq!(mode(&env_file), 0o600);
    let config = sandbox.config();
    let mut env = std::fs::read_to_string(&env_file).unwrap();
    env.push_str(&format!(
        "LSQ_ACCESS_KEY='{}'\nLSQ_SECRET_KEY='{}'\nLSQ_TENANT_AUTH_KEY='{}'\n\
         LSQ_HOST={}\nLSQ_SMTP_URL={}\n",
        config.access_key,
        config.secret_key,
        config.tenant_auth_key,
        sandbox.base_url(),
        smtp.url()
    ));
    std::fs::write(&env_file, env).unwrap();

    // The CRM export drops the night's input in the inbox.
    let unit_text =
        std::fs::read_to_string(sample("systemd/lsq-dispatch-nightly.service")).unwrap();
    let words: Vec<String> = exec_start(&unit_text)
        .iter()
        .map(|w| root.rebase(w))
        .collect();
    let input = PathBuf::from(&words[2]);
    let mut csv = String::from("LeadId,FirstName,Email\n");
    for (i, id) in lead_ids(3).iter().enumerate() {
        csv.push_str(&format!("{id},Lead{i},lead{i}@example.com\n"));
    }
    let inbox = input.parent().unwrap();
    assert!(
        inbox.is_dir(),
        "the steps create the inbox {}",
        inbox.display()
    );
    write(inbox, input.file_name().unwrap().to_str().unwrap(), &csv);

    let workdir = PathBuf::from(root.rebase(&unit_setting(&unit_text, "WorkingDirectory")));
    let env_path = root.rebase(&unit_setting(&unit_text, "EnvironmentFile"));
    let vars = systemd_environment(&std::fs::read_to_string(env_path).unwrap());
    let mut cmd = lsq(&workdir);
    cmd.args(&words[1..]).envs(vars);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{words:?}");

    let report = words
        .iter()
        .position(|w| w == "--report")
        .map(|at| PathBuf::from(&words[at + 1]))
        .unwrap();
    let rows = read_report(&report);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|row| row["status"] == "sent"), "{rows:?}");
    assert_eq!(smtp.messages().len(), 3, "one message per lead");
    assert!(workdir.join("state.sqlite").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_metrics_directory_stops_the_run_before_it_writes_anything() {
    let sandbox = crate::support::fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::leads_csv(dir.path(), &lead_ids(2));
    let state = dir.path().join("state.sqlite");
    let out =
        run(
            crate::support::run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url())
                .args(["--report", "report.csv", "--state"])
                .arg(&state)
                .args(["--metrics-file", "textfile_collector/lsq-dispatch.prom"]),
        );
    assert_eq!(out.status.code(), Some(1));
    let said = crate::support::stderr(&out);
    assert!(
        said.contains("the directory textfile_collector does not exist"),
        "{said}"
    );
    assert!(!dir.path().join("report.csv").exists(), "no report");
    assert!(!state.exists(), "no campaign state");
}

/// The sample crontab's job line as cron runs it: `\%` is `%`.
fn crontab_job() -> String {
    let crontab = std::fs::read_to_string(sample("crontab")).unwrap();
    let line = crontab
        .lines()
        .find(|l| l.starts_with("30 7 "))
        .expect("the job line");
    let command = line.splitn(6, ' ').nth(5).unwrap();
    command.replace("\\%", "%")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sample_crontab_is_silent_on_success_and_tells_cron_of_a_failure() {
    let sandbox = crate::support::fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let root = Root::new();
    let home = root.path("/home/lsq-dispatch");
    for dir in ["inbox", "reports"] {
        std::fs::create_dir_all(home.join(dir)).unwrap();
    }
    std::fs::create_dir_all(root.path("/var/lib/node_exporter/textfile_collector")).unwrap();
    let templates = root.path("/etc/lsq-dispatch/templates");
    std::fs::create_dir_all(&templates).unwrap();
    for name in ["subject.txt", "body.txt", "body.html"] {
        std::fs::copy(sample("templates").join(name), templates.join(name)).unwrap();
    }
    let toml = std::fs::read_to_string(sample("lsq-dispatch.toml")).unwrap();
    let toml = format!(
        "{}\nportal_id = \"{}\"\n",
        root.rebase(&toml).replace("portal_id = ", "# portal_id = "),
        sandbox.config().portal_ids[0]
    );
    write(&home, "lsq-dispatch.toml", &toml);
    let mut csv = String::from("LeadId,FirstName,Email\n");
    for (i, id) in lead_ids(2).iter().enumerate() {
        csv.push_str(&format!("{id},Lead{i},lead{i}@example.com\n"));
    }
    write(&home.join("inbox"), "reminders.csv", &csv);
    let bin = root.path("/usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lsq-dispatch"), bin.join("lsq-dispatch"))
        .unwrap();
    let config = sandbox.config();
    let env_file = |secret: &str| {
        let text = format!(
            "{}LSQ_ACCESS_KEY='{}'\nLSQ_SECRET_KEY='{secret}'\nLSQ_TENANT_AUTH_KEY='{}'\n\
             LSQ_HOST='{}'\nLSQ_SMTP_URL='{}'\n",
            std::fs::read_to_string(sample("lsq-dispatch.env")).unwrap(),
            config.access_key,
            config.tenant_auth_key,
            sandbox.base_url(),
            smtp.url()
        );
        write(&home, "lsq-dispatch.env", &text);
    };
    let job = root.rebase(&crontab_job());
    let cron = || {
        run(Command::new("/bin/sh")
            .args(["-c", &job])
            .env_clear()
            .env("HOME", &home)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display())))
    };

    env_file(&config.secret_key);
    let out = cron();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "cron mails nothing"
    );
    assert_eq!(smtp.messages().len(), 2);

    // A wrong key: the job fails, and what it prints is what cron mails.
    env_file("not-the-secret");
    write(
        &home.join("inbox"),
        "reminders.csv",
        &csv.replace("a0000000", "b0000000"),
    );
    let out = cron();
    assert_ne!(out.status.code(), Some(0));
    let mailed = format!(
        "{}{}",
        crate::support::stdout(&out),
        crate::support::stderr(&out)
    );
    assert!(
        mailed.contains("lsq-dispatch run failed with exit code 1"),
        "{mailed}"
    );
    assert!(mailed.contains("401 from the API"), "{mailed}");
}
