//! The service units and the crontab line in `samples/` that docs/nightly.md
//! tells operators to install (the Debian package ships them).

use std::process::Command;

use crate::support::{installed_or_skip, run, sample};

/// Where the sample units expect the binary; the test points them at the
/// one just built, since `systemd-analyze verify` checks that it exists.
const INSTALLED_BINARY: &str = "/usr/bin/lsq-dispatch";

#[test]
fn the_sample_systemd_units_pass_systemd_analyze_verify() {
    if !installed_or_skip(
        "the_sample_systemd_units_pass_systemd_analyze_verify",
        "systemd-analyze",
        "apt-get install systemd (Debian/Ubuntu)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(sample("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let copy = dir.path().join(path.file_name().unwrap());
        std::fs::write(
            &copy,
            text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_lsq-dispatch")),
        )
        .unwrap();
        units.push(copy);
    }
    units.sort();
    let names: Vec<String> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "lsq-dispatch-nightly.service",
            "lsq-dispatch-nightly.timer",
            "lsq-dispatch-serve.service"
        ]
    );

    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .current_dir(dir.path()));
    assert_eq!(out.status.code(), Some(0));
    // An unknown or misspelt setting is only a warning to verify: any word
    // about the units fails the test.
    let said = String::from_utf8_lossy(&out.stderr);
    let about_ours: Vec<&str> = said
        .lines()
        .filter(|line| names.iter().any(|name| line.contains(name.as_str())))
        .collect();
    assert!(about_ours.is_empty(), "{said}");
}

#[test]
fn the_sample_service_is_hardened_and_keeps_its_secrets_in_a_private_file() {
    let unit = std::fs::read_to_string(sample("systemd/lsq-dispatch-nightly.service")).unwrap();
    for setting in [
        "DynamicUser=yes",
        "StateDirectory=lsq-dispatch",
        "EnvironmentFile=/etc/lsq-dispatch/lsq-dispatch.env",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "--campaign ",
        "--timezone ",
    ] {
        assert!(unit.contains(setting), "{setting:?} in the service");
    }
    assert!(unit.contains("MUST be mode 0600"));
    assert!(
        !unit.contains("LSQ_ACCESS_KEY="),
        "no secret in the unit itself"
    );
}

#[test]
fn the_sample_link_service_is_hardened_listens_on_loopback_and_believes_only_its_proxy() {
    let unit = std::fs::read_to_string(sample("systemd/lsq-dispatch-serve.service")).unwrap();
    for setting in [
        "DynamicUser=yes",
        "EnvironmentFile=/etc/lsq-dispatch/lsq-dispatch-serve.env",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "--listen 127.0.0.1:8080",
        "--trusted-proxy 127.0.0.1",
        "LSQ_LINK_SECRET",
    ] {
        assert!(unit.contains(setting), "{setting:?} in the service");
    }
    assert!(unit.contains("MUST be mode"));
    assert!(
        !unit.contains("LSQ_ACCESS_KEY="),
        "no secret in the unit itself"
    );
    let caddy = std::fs::read_to_string(sample("caddy/Caddyfile")).unwrap();
    assert!(
        caddy.contains("handle /l/* {"),
        "only the links are proxied"
    );
    assert!(
        caddy.contains("reverse_proxy 127.0.0.1:8080"),
        "to the unit's --listen"
    );
}

#[test]
fn the_sample_crontab_line_runs_every_morning_with_its_secrets_from_a_file() {
    let crontab = std::fs::read_to_string(sample("crontab")).unwrap();
    // Neither comments nor variable settings such as PATH=….
    let jobs: Vec<&str> = crontab
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| !w.contains('='))
        })
        .collect();
    assert_eq!(jobs.len(), 1, "{crontab}");
    let job = jobs[0];
    let fields: Vec<&str> = job.split_whitespace().collect();
    assert_eq!(&fields[..5], ["30", "7", "*", "*", "*"], "{job}");
    assert!(job.contains(". \"$HOME/lsq-dispatch.env\""), "{job}");
    assert!(job.contains("lsq-dispatch run "), "{job}");
    // cron turns a bare % into a new line.
    assert!(!job.replace("\\%", "").contains('%'), "{job}");
    assert!(crontab.contains("MUST be mode 0600"));
}

/// The variables a file sets as `sh`'s `set -a; . FILE` reads it.
fn shell_environment(file: &std::path::Path) -> Vec<(String, String)> {
    let out = run(Command::new("sh")
        .arg("-c")
        .arg("set -a; . \"$1\"; set +a; env -0")
        .arg("sh")
        .arg(file)
        .env_clear());
    assert_eq!(out.status.code(), Some(0));
    let mut vars: Vec<(String, String)> = out
        .stdout
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (name, value) = entry.split_once('=')?;
            name.starts_with("LSQ_")
                .then(|| (name.to_owned(), value.to_owned()))
        })
        .collect();
    vars.sort();
    vars
}

#[test]
fn the_sample_secrets_file_reads_the_same_to_systemd_and_to_a_shell() {
    // Keys such as LeadSquared issues, with what a shell would take apart.
    let planted = "u$r1234&ab;c|d (e) `f` *?#~\\g=h";
    let sample_text = std::fs::read_to_string(sample("lsq-dispatch.env")).unwrap();
    let filled: String = sample_text
        .lines()
        .map(|line| match line.strip_prefix("# LSQ_") {
            Some(rest) if rest.contains("='") => {
                let (name, _) = rest.split_once('=').unwrap();
                format!("LSQ_{name}='{planted}'\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lsq-dispatch.env");
    std::fs::write(&file, &filled).unwrap();
    let mut systemd = crate::install_steps::systemd_environment(&filled);
    systemd.sort();
    assert_eq!(systemd.len(), 6, "{filled}");
    assert!(
        systemd.iter().all(|(_, value)| value == planted),
        "{systemd:?}"
    );
    assert_eq!(shell_environment(&file), systemd);
    // And the file says how to quote.
    assert!(sample_text.contains("single quotes"));
}

#[test]
fn every_example_that_sets_a_key_quotes_it_as_a_shell_needs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    for dir in ["docs", "samples", "samples/systemd"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            // The reference is --help's text, not an example.
            if path.is_file() && !path.ends_with("reference.md") {
                files.push(path);
            }
        }
    }
    let secret = [
        "ACCESS_KEY=",
        "SECRET_KEY=",
        "AUTH_KEY=",
        "PASSWORD=",
        "LINK_SECRET=",
    ];
    let mut unquoted = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("LSQ_") {
                let setting = &line[at..];
                let Some(eq) = setting.find('=') else {
                    continue;
                };
                let (name, value) = setting.split_at(eq + 1);
                if !name[..eq]
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_')
                {
                    continue;
                }
                let value = value.split_whitespace().next().unwrap_or("");
                let quoted = value.starts_with('\'') || value.starts_with('"');
                let special = value.contains(|c: char| "$&;|<>()*?!#~\\".contains(c));
                let a_key = secret.iter().any(|s| name.ends_with(s));
                if !quoted && (special || (a_key && value.contains('…'))) {
                    unquoted.push(format!("{}:{}: {line}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(unquoted.is_empty(), "{unquoted:#?}");
}
