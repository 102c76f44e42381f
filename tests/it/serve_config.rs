//! `lsq-dispatch serve --config FILE`: the file holds `run`'s keys for the
//! settings the two share (host, keys, portal URL, budget, link secret) and
//! `serve`'s own; flags beat the environment, which beats the file; a bad
//! value or an unknown key names itself and the file, exit 2.

use std::path::Path;

use lsq_sandbox::Sandbox;

use crate::serve::{claims, client, secrets, SECRET_A, SECRET_B};
use crate::support::link_service::LinkService;
use crate::support::{fast_config, lead_ids, lsq, sandbox, write};

/// A settings file that gives `serve` everything it needs for `sandbox`,
/// with `extra` lines appended.
fn config_file(dir: &Path, sandbox: &Sandbox, extra: &str) -> std::path::PathBuf {
    let config = sandbox.config();
    let text = format!(
        "host = \"{host}\"\nportal_url = \"{portal}\"\nrate = \"{rate}\"\n\
         state = \"{state}\"\naccess_key = \"{access}\"\nsecret_key = \"{secret}\"\n\
         tenant_auth_key = \"{tenant}\"\nlink_secret = \"{SECRET_A}\"\nkey_lifetime = \"2h\"\n\
         listen = \"127.0.0.1:0\"\nbudget_wait = \"5s\"\ncontact = \"the Admissions office\"\n\
         # run's own keys are welcome: one file serves both\nemail_column = \"Mail\"\n{extra}",
        host = sandbox.base_url(),
        portal = sandbox.portal_url(),
        rate = config.budget,
        state = dir.join("state.sqlite").display(),
        access = config.access_key,
        secret = config.secret_key,
        tenant = config.tenant_auth_key,
    );
    let path = write(dir, "serve.toml", &text);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

/// Clicks a link sealed with `secret` for a new lead and asserts that the
/// person lands on the sandbox portal signed in as that lead.
async fn click_signs_in(sandbox: &Sandbox, served: &LinkService, secret: &str) {
    let lead = &lead_ids(1)[0];
    let link = served.link(&secrets(&[secret]).seal(&claims(sandbox, lead)));
    let clicked = client().post(&link).send().await.unwrap();
    assert_eq!(clicked.status(), 303, "{}", served.log());
    let location = clicked.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&sandbox.portal_url()), "{location}");
    let (status, who) = crate::support::login(&location).await;
    assert_eq!((status, who["LeadId"].as_str()), (200, Some(lead.as_str())));
}

#[tokio::test]
async fn a_config_file_alone_gives_serve_its_host_keys_and_secret() {
    let sandbox = sandbox(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &sandbox, "");
    let mut cmd = lsq(dir.path());
    cmd.arg("serve").arg("--config").arg(&path);
    let served = LinkService::spawn(cmd, dir);
    click_signs_in(&sandbox, &served, SECRET_A).await;
    assert_eq!(sandbox.stats().calls, 1);
    // The file's contact is the expired-link page's.
    let expired = lsq_dispatch::redirect::LinkClaims {
        expires: 1,
        issued: 0,
        ..claims(&sandbox, &lead_ids(2)[1])
    };
    let page = client()
        .get(served.link(&secrets(&[SECRET_A]).seal(&expired)))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 410);
    assert!(page.text().await.unwrap().contains("the Admissions office"));
}

#[tokio::test]
async fn flags_beat_the_environment_which_beats_the_file() {
    let sandbox = sandbox(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    // The file's host answers nothing, and its secret is not the links'.
    let path = config_file(dir.path(), &sandbox, "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("host = \"{}\"", sandbox.base_url()),
        "host = \"http://127.0.0.1:9\"",
    );
    std::fs::write(&path, text).unwrap();
    let mut cmd = lsq(dir.path());
    cmd.arg("serve")
        .arg("--config")
        .arg(&path)
        .args(["--host", &sandbox.base_url()])
        .env("LSQ_HOST", "http://127.0.0.1:9")
        .env("LSQ_LINK_SECRET", SECRET_B);
    let served = LinkService::spawn(cmd, dir);
    click_signs_in(&sandbox, &served, SECRET_B).await;
    let foreign = secrets(&[SECRET_A]).seal(&claims(&sandbox, &lead_ids(1)[0]));
    let refused = client().post(served.link(&foreign)).send().await.unwrap();
    assert_eq!(
        refused.status(),
        404,
        "the file's secret is under the variable's"
    );
}

#[tokio::test]
async fn a_bad_value_or_unknown_key_in_the_file_names_it_and_the_file_exit_2() {
    let sandbox = sandbox(fast_config()).await;
    for (line, named, says) in [
        ("api_timeout = \"soon\"", "api_timeout", "invalid duration"),
        ("client_rate = \"many\"", "client_rate", ""),
        ("listne = \"127.0.0.1:0\"", "listne", "unknown field"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = config_file(dir.path(), &sandbox, line);
        let out = lsq(dir.path())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {err}");
        assert!(err.contains(named), "{line}: {err}");
        assert!(err.contains(&path.display().to_string()), "{line}: {err}");
        assert!(err.contains(says), "{line}: {err}");
        assert!(!err.contains(SECRET_A), "{err}");
    }
    // A shared key's bad value is worded as for run's file.
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &sandbox, "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("key_lifetime = \"2h\"", "key_lifetime = \"25h\"");
    std::fs::write(&path, text).unwrap();
    let out = lsq(dir.path())
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let named = format!("key_lifetime in {}", path.display());
    assert!(err.contains(&named) && err.contains("at most 24h"), "{err}");
}
