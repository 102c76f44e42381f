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
