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

/// `run --dry-run` of a one-lead file with this portal URL and host.
fn plan_with(dir: &std::path::Path, portal_url: &str, host: &str) -> std::process::Output {
    let input = one_lead(dir);
    run(lsq(dir)
        .arg("run")
        .arg(&input)
        .args(["--dry-run", "--report", "plan.csv"])
        .args(["--portal-id", "9b2c4f6e-1d3a-4c5b-8e7f-a0b1c2d3e4f5"])
        .args(["--portal-url", portal_url, "--host", host]))
}

#[test]
fn a_url_missing_its_colon_or_slashes_gets_the_url_it_meant() {
    let dir = tempfile::tempdir().unwrap();
    let host = "portalapi.leadsquared.com";
    for (typed, meant) in [
        ("https//apply.example.com", "https://apply.example.com"),
        ("http:/localhost:8080/login", "http://localhost:8080/login"),
        ("https:apply.example.com/x", "https://apply.example.com/x"),
        ("https:///apply.example.com", "https://apply.example.com"),
    ] {
        let out = plan_with(dir.path(), typed, host);
        assert_eq!(out.status.code(), Some(2), "{typed}");
        let err = stderr(&out);
        assert!(err.contains(&format!("{meant}\n")), "{typed}: {err}");
        assert!(!err.contains("https://https"), "{typed}: {err}");
        assert!(!dir.path().join("plan.csv").exists(), "{typed}");
    }
    let page = "https://apply.example.com/";
    let out = plan_with(dir.path(), page, "https//portalapi.leadsquared.com");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("https://portalapi.leadsquared.com\n"), "{err}");
}

#[test]
fn plain_http_is_refused_except_to_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let host = "portalapi.leadsquared.com";
    let out = plan_with(dir.path(), "http://remote-host/login", host);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--portal-url") && err.contains("https://remote-host/login"),
        "{err}"
    );
    let out = plan_with(
        dir.path(),
        "https://apply.example.com/",
        "http://remote-host",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("use https://"), "{}", stderr(&out));
    for page in [
        "http://localhost:8080/login",
        "http://127.0.0.1/x",
        "http://[::1]/",
    ] {
        let out = plan_with(dir.path(), page, "http://127.0.0.1:9");
        assert_eq!(out.status.code(), Some(0), "{page}");
    }
}
