//! `docs/reference.md` is the `--help` of every subcommand, as the binary
//! prints it: the flag reference comes from the clap definitions alone.

use crate::support::{lsq, run, stdout};

/// The command lines whose `--help` the reference holds, in its order.
const COMMANDS: [&[&str]; 10] = [
    &[],
    &["run"],
    &["status"],
    &["sandbox"],
    &["otp"],
    &["otp", "request"],
    &["otp", "signin"],
    &["serve"],
    &["links"],
    &["links", "new-secret"],
];

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reference.md");

/// Set to rewrite `docs/reference.md` from the binary instead of checking it.
const UPDATE: &str = "LSQ_UPDATE_REFERENCE";

/// The reference as the binary would have it.
fn reference_from_help() -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(
        "# Flag reference\n\n\
         The `--help` of every subcommand, as `lsq-dispatch` prints it (`man \
         lsq-dispatch-run` and the other pages hold the same text). This file is \
         generated: a test fails when it differs from the binary, and \
         `LSQ_UPDATE_REFERENCE=1 cargo test --locked --test it reference` rewrites it.\n\
         The [user guide](guide.md) explains the settings and how they combine.\n",
    );
    for command in COMMANDS {
        let out = run(lsq(dir.path()).args(command).arg("--help"));
        assert_eq!(out.status.code(), Some(0), "{command:?} --help");
        let line = ["lsq-dispatch"].iter().chain(command).copied();
        text.push_str(&format!(
            "\n## `{}`\n\n```text\n{}```\n",
            line.collect::<Vec<_>>().join(" "),
            stdout(&out)
        ));
    }
    text
}

#[test]
fn the_reference_is_the_help_of_every_subcommand() {
    let expected = reference_from_help();
    if std::env::var_os(UPDATE).is_some() {
        std::fs::write(REFERENCE, &expected).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(REFERENCE).unwrap_or_default();
    if committed != expected {
        let first = committed
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(expected.lines().count()));
        panic!(
            "docs/reference.md differs from the binary's --help, first at line {}:\n  \
             file: {:?}\n  help: {:?}\nRegenerate it with `{UPDATE}=1 cargo test --locked \
             --test it reference` and commit it.",
            first + 1,
            committed.lines().nth(first).unwrap_or("<end of file>"),
            expected.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}
