//! Whether a tool a test needs is installed, shared with the benches.

use std::process::Command;

/// Whether `program --version` runs. When it does not, says loudly that
/// `test` is skipped and how to install the program (`install`), and the test
/// passes; under CI (`CI=true`) it fails instead, so a CI machine cannot skip
/// it silently.
pub fn installed_or_skip(test: &str, program: &str, install: &str) -> bool {
    let installed = Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        let advice = format!("install it to run this test: {install}");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{program} is not installed; {advice}");
        }
        eprintln!("\n*** SKIPPED {test}: {program} is not installed; {advice} ***\n");
    }
    installed
}
