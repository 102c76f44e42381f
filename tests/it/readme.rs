//! The README and the user guide in `docs/` explain every flag `--help` lists.

use crate::support::{lsq, run, stdout};

/// The README and every page of `docs/` written by hand: the generated
/// reference (`docs/reference.md`) holds every flag by construction.
fn user_docs() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut pages: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .filter(|path| !path.ends_with("reference.md"))
        .collect();
    pages.sort();
    assert!(pages.len() > 3, "{pages:?}");
    for page in pages {
        text.push_str(&std::fs::read_to_string(page).unwrap());
    }
    text
}

#[test]
fn the_docs_explain_every_flag_that_help_lists() {
    let docs = user_docs();
    let dir = tempfile::tempdir().unwrap();
    let mut missing = Vec::new();
    for command in [
        &["run"][..],
        &["status"],
        &["sandbox"],
        &["otp", "request"],
        &["otp", "signin"],
        &["serve"],
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
            let documented = docs.match_indices(flag).any(|(at, _)| {
                // The whole flag, not the start of a longer one.
                let next = docs[at + flag.len()..].chars().next();
                !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            });
            if !documented {
                missing.push(format!("{} {flag}", command.join(" ")));
            }
        }
    }
    missing.dedup();
    assert!(
        missing.is_empty(),
        "not in the README nor docs/: {missing:?}"
    );
}
