//! Messages for the mistakes people make most: each says what is wrong and
//! what to do, with the exit code that says whether any work was done (2: a
//! usage error before any; 1: the run stopped).

use crate::support::{lsq, run, stderr, write};

/// A one-lead CSV without a PortalId column.
fn one_lead(dir: &std::path::Path) -> std::path::PathBuf {
    write(
        dir,
        "leads.csv",
        "LeadId\n7d6d8886-d5dd-4a6f-ad00-d038090d1bc9\n",
    )
}

#[test]
fn a_secret_given_as_a_flag_is_pointed_to_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let input = one_lead(dir.path());
    for (flag, variable) in [
        ("--access-key", "LSQ_ACCESS_KEY"),
        ("--secret-key=s3cret", "LSQ_SECRET_KEY"),
        ("--tenant-auth-key", "LSQ_TENANT_AUTH_KEY"),
        ("--public-auth-key", "LSQ_PUBLIC_AUTH_KEY"),
    ] {
        let out = run(lsq(dir.path())
            .arg("run")
            .arg(&input)
            .args([flag, "x", "--dry-run"]));
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = stderr(&out);
        assert!(err.contains(variable), "{flag}: {err}");
        assert!(err.contains("--config"), "{flag}: {err}");
        assert!(!err.contains("use '--"), "{flag}: {err}");
        assert!(!err.contains("s3cret"), "{flag}: {err}");
    }
    let out = run(lsq(dir.path()).args(["otp", "request", "--phone", "1", "--access-key", "x"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("LSQ_ACCESS_KEY"), "{}", stderr(&out));
}
