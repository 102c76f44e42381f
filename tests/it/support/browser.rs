//! A real browser for the tests: headless Chromium driven by `chromedriver`
//! over WebDriver's HTTP protocol, both from Debian (`chromium`,
//! `chromium-driver`). Chromium starts with a fresh profile and with every
//! background fetch turned off, since a closed network makes it hang on
//! lookups otherwise.
//!
//! Where either is missing, [`Browser::start`] says loudly that the test is
//! skipped and how to install them, and the test passes; under CI
//! (`CI=true`) it fails instead.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

/// How to get both programs.
const INSTALL: &str = "apt-get install chromium chromium-driver";

/// WebDriver's key for an element's id.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session. Dropping it ends the driver and the browser it
/// started (they share a process group of their own); [`Browser::quit`]
/// closes the session first, as a user closing the window would.
pub struct Browser {
    driver: Child,
    session: String,
    http: reqwest::Client,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the group is the
        // driver's own, made at spawn, holding only it and its browser.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts `chromedriver` on a free loopback port and a headless
    /// Chromium session through it; `None` when either program is missing
    /// outside CI. `test` names the test for the skip notice.
    pub async fn start(test: &str) -> Option<Browser> {
        if !super::installed_or_skip(test, CHROMIUM, INSTALL)
            || !super::installed_or_skip(test, "chromedriver", INSTALL)
        {
            return None;
        }
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let stdout = driver.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            const STARTED: &str = "started successfully on port ";
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(STARTED) {
                    let port = line[at + STARTED.len()..].trim_end_matches('.');
                    let _ = tx.send(port.parse::<u16>().unwrap());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromedriver says on which port it listens");
        let profile = tempfile::tempdir().unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut browser = Browser {
            driver,
            session: format!("http://127.0.0.1:{port}/session"),
            http,
            profile,
        };
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!(
            "--user-data-dir={}",
            browser.profile.path().display()
        )])
        .collect::<Vec<_>>();
        let created = browser
            .command(
                reqwest::Method::POST,
                "",
                json!({ "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "timeouts": { "pageLoad": 20_000, "script": 10_000 },
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                }}}),
            )
            .await;
        let id = created["sessionId"].as_str().expect("a session id");
        browser.session = format!("{}/{id}", browser.session);
        Some(browser)
    }

    /// Sends one WebDriver command to the session and returns its `value`.
    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let mut request = self.http.request(method.clone(), &url);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("chromedriver answers");
        let status = answer.status();
        let value: Value = answer.json().await.expect("WebDriver JSON");
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value["value"].clone()
    }

    /// Opens `url` and waits for the page to load.
    pub async fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Clicks the element that `css` selects.
    pub async fn click(&self, css: &str) {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        let id = found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"));
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    /// The page's address now.
    pub async fn url(&self) -> String {
        let url = self.command(reqwest::Method::GET, "/url", json!({})).await;
        url.as_str().unwrap().to_owned()
    }

    /// The page's title.
    pub async fn title(&self) -> String {
        let title = self
            .command(reqwest::Method::GET, "/title", json!({}))
            .await;
        title.as_str().unwrap().to_owned()
    }

    /// The text the page shows.
    pub async fn text(&self) -> String {
        let script = json!({ "script": "return document.body.innerText", "args": [] });
        let text = self
            .command(reqwest::Method::POST, "/execute/sync", script)
            .await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the page's address starts with `prefix`; panics after
    /// 20 s with the address and text of the page it is on.
    pub async fn wait_for_url(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let url = self.url().await;
            if url.starts_with(prefix) {
                return url;
            }
            if Instant::now() > deadline {
                panic!("still on {url}, not {prefix}…:\n{}", self.text().await);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the session (the browser closes), then the driver.
    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}
