//! The link service and its links as a person meets them: `serve` started
//! as a child process and awaited until it listens, the links a run wrote
//! into its outbox, and a click as a browser makes it (the page's form,
//! followed to its action with its method).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lsq_sandbox::{Sandbox, Stats};

use super::smtp_server::ReceivedMessage;

/// A running `lsq-dispatch serve`, killed (and reaped) on drop.
pub struct LinkService {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Drop for LinkService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LinkService {
    /// Starts `serve` on a free loopback port against `sandbox` (its host,
    /// portal page, budget and credentials), with these link secrets (as
    /// `LSQ_LINK_SECRET` takes them) and extra flags, which may repeat
    /// `--rate` to override the sandbox's budget. Returns once it listens.
    pub fn start(sandbox: &Sandbox, secrets: &str, extra: &[&str]) -> LinkService {
        let dir = tempfile::tempdir().unwrap();
        let config = sandbox.config();
        let mut cmd = super::lsq(dir.path());
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(["--host", &sandbox.base_url()])
            .args(["--portal-url", &sandbox.portal_url()])
            .args(["--rate", &config.budget.to_string()])
            .arg("--state")
            .arg(dir.path().join("state.sqlite"))
            .args(extra)
            .env("LSQ_ACCESS_KEY", &config.access_key)
            .env("LSQ_SECRET_KEY", &config.secret_key)
            .env("LSQ_TENANT_AUTH_KEY", &config.tenant_auth_key)
            .env("LSQ_LINK_SECRET", secrets);
        LinkService::spawn(cmd, dir)
    }

    /// Starts `cmd`, a `serve` that works in `dir`, and returns once it
    /// listens.
    pub fn spawn(mut cmd: std::process::Command, dir: tempfile::TempDir) -> LinkService {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("serve starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let written = Arc::clone(&log);
        std::thread::spawn(move || {
            const LISTENING: &str = "serving links on ";
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(LISTENING) {
                    let rest = &line[at + LISTENING.len()..];
                    let _ = tx.send(rest.split("/l/").next().unwrap().to_owned());
                }
                let mut log = written.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("serve did not start:\n{}", log.lock().unwrap()));
        LinkService {
            child,
            base,
            log,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`, the `--link-base` of runs whose links it
    /// serves.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The link of `token` at this service.
    pub fn link(&self, token: &str) -> String {
        format!("{}/l/{token}", self.base)
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until what it has logged satisfies `ready`: its log reaches
    /// the test through a pipe, a little after the answer it tells of.
    pub async fn wait_for_log(&self, what: &str, ready: impl Fn(&str) -> bool) {
        super::wait_until(what, || ready(&self.log())).await;
    }

    /// Sends it SIGTERM.
    pub fn sigterm(&self) {
        super::sigterm(&self.child);
    }

    /// Waits for it to end.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

/// The token of a redirect link: what follows `/l/`.
pub fn token_of(link: &str) -> &str {
    let at = link
        .find("/l/")
        .unwrap_or_else(|| panic!("no /l/ in {link}"));
    &link[at + 3..]
}

/// The redirect link in each `.eml` of `outbox`, by the lead it was
/// written for: each message's `To` address looked up in `lead_of` (address
/// to LeadId). The link is read from the decoded text part, so a
/// quoted-printable soft break cannot cut it.
pub fn outbox_links(
    outbox: &Path,
    link_base: &str,
    lead_of: &HashMap<String, String>,
) -> HashMap<String, String> {
    let prefix = format!("{link_base}/l/");
    let mut links = HashMap::new();
    for entry in std::fs::read_dir(outbox).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("eml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let message = ReceivedMessage {
            from: String::new(),
            to: Vec::new(),
            data: text.replace("\r\n", "\n").replace('\n', "\r\n"),
            user: None,
        };
        let to = message.header("To").expect("a To header");
        let address = to.rsplit('<').next().unwrap().trim_end_matches('>').trim();
        let lead = lead_of
            .get(address)
            .unwrap_or_else(|| panic!("{address} is no lead's"));
        let body = message.text().expect("a text part");
        let at = body
            .find(&prefix)
            .unwrap_or_else(|| panic!("no link to {prefix} in {body}"));
        let token: String = body[at + prefix.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let link = format!("{prefix}{token}");
        assert_eq!(body.matches(&prefix).count(), 1, "one link: {body}");
        assert!(
            links.insert(lead.clone(), link).is_none(),
            "one mail a lead"
        );
    }
    links
}

/// The sandbox's counters, read over HTTP from its admin endpoint, as an
/// operator would.
pub async fn admin_stats(sandbox: &Sandbox) -> Stats {
    reqwest::get(format!("{}/admin/stats", sandbox.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// An HTTP client that follows no redirect, so a test sees each answer.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The one form of an HTML page: its method, upper case (GET when absent),
/// and its action resolved against the page's URL as a browser resolves it
/// (the page itself when absent or empty).
pub fn form_of(html: &str, page: &str) -> (String, String) {
    let start = html
        .find("<form")
        .unwrap_or_else(|| panic!("no form in {html}"));
    assert_eq!(html.matches("<form").count(), 1, "one form: {html}");
    let tag = &html[start..start + html[start..].find('>').unwrap()];
    let attribute = |name: &str| {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[at..at + tag[at..].find('"')?].to_owned())
    };
    let method = attribute("method").map_or("GET".to_owned(), |m| m.to_ascii_uppercase());
    let page = url::Url::parse(page).unwrap();
    let action = match attribute("action").filter(|a| !a.is_empty()) {
        Some(action) => page.join(&action).unwrap().to_string(),
        None => page.to_string(),
    };
    (method, action)
}

/// A click on `link` as a person makes it: GET the page, then send its form
/// as the browser would. The form's answer, unfollowed.
pub async fn click(link: &str) -> reqwest::Response {
    let client = no_redirects();
    let page = client.get(link).send().await.unwrap();
    assert_eq!(page.status(), 200, "the link's page");
    let html = page.text().await.unwrap();
    let (method, action) = form_of(&html, link);
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    client
        .request(method, action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap()
}
