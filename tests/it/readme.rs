//! The README and `--help` describe the same flags.

use crate::support::{lsq, run, stdout};

#[test]
fn the_readme_documents_every_flag_that_help_lists() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut missing = Vec::new();
    for command in [
        &["run"][..],
        &["status"],
        &["sandbox"],
        &["otp", "request"],
        &["otp", "signin"],
    ] {
        let out = run(lsq(dir.path()).args(command).arg("--help"));
        assert_eq!(out.status.code(), Some(0));
        let help = stdout(&out);
        let flags: Vec<&str> = help
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|word| word.starts_with("--") && word.len() > 2)
            .filter(|flag| !["--help", "--version"].contains(flag))
            .collect();
        assert!(!flags.is_empty(), "{help}");
        for flag in flags {
            let documented = readme.match_indices(flag).any(|(at, _)| {
                // The whole flag, not the start of a longer one.
                let next = readme[at + flag.len()..].chars().next();
                !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            });
            if !documented {
                missing.push(format!("{} {flag}", command.join(" ")));
            }
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "not in the README: {missing:?}");
}
