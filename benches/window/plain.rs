//! The plain sliding-log client the bench runs beside lsq-dispatch: twenty
//! lines of what anyone would write first, to measure our pace against.

use super::*;

/// The plain sliding-log client: a call goes when fewer than 25 were sent in
/// the last 5.12 s by its own log; a 429 is retried the same way.
struct PlainClient {
    http: reqwest::Client,
    url: String,
    config: SandboxConfig,
    log: Mutex<VecDeque<Instant>>,
    calls: AtomicU64,
    rate_limited: AtomicU64,
}

impl PlainClient {
    fn new(sandbox: &Sandbox) -> Arc<PlainClient> {
        Arc::new(PlainClient {
            http: reqwest::Client::new(),
            url: format!("{}/api/AutoLogin/Generate", sandbox.base_url()),
            config: sandbox.config().clone(),
            log: Mutex::new(VecDeque::new()),
            calls: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        })
    }

    async fn turn(&self) {
        let budget = Rate::DEFAULT.calls as usize;
        loop {
            let wait = {
                let mut log = self.log.lock().unwrap();
                let now = Instant::now();
                let free_at = (log.len() == budget).then(|| log[0] + Duration::from_millis(5120));
                match free_at {
                    Some(at) if at > now => at - now,
                    _ => {
                        if log.len() == budget {
                            log.pop_front();
                        }
                        log.push_back(now);
                        return;
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Mints a key for every lead with 30 tasks; returns how many succeeded.
    async fn run(self: &Arc<Self>, ids: Arc<Vec<String>>) -> u64 {
        let next = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..30 {
            let (client, ids, next, done) = (self.clone(), ids.clone(), next.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(id) = ids.get(next.fetch_add(1, Ordering::SeqCst)) {
                    for _ in 0..10 {
                        client.turn().await;
                        client.calls.fetch_add(1, Ordering::SeqCst);
                        let answer = client
                            .http
                            .post(&client.url)
                            .query(&[
                                ("accessKey", &client.config.access_key),
                                ("secretKey", &client.config.secret_key),
                                ("authkey", &client.config.tenant_auth_key),
                            ])
                            .json(&serde_json::json!({
                                "LeadId": id,
                                "PortalId": client.config.portal_ids[0],
                            }))
                            .send()
                            .await;
                        match answer.map(|a| a.status().as_u16()) {
                            Ok(200) => {
                                done.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            Ok(429) => {
                                client.rate_limited.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => {}
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        done.load(Ordering::SeqCst)
    }
}

/// The plain client in the scenario's shape: each run has its own log, as
/// separate processes would.
pub(super) async fn plain(
    scenario: &Scenario,
    sandbox: &Sandbox,
    leads: usize,
    seed: u64,
) -> Figures {
    let started = Instant::now();
    let runs: Vec<Arc<PlainClient>> = match scenario.shape {
        Shape::One => vec![PlainClient::new(sandbox)],
        _ => vec![PlainClient::new(sandbox), PlainClient::new(sandbox)],
    };
    let batches: Vec<Arc<Vec<String>>> = (0..runs.len())
        .map(|i| Arc::new(lead_ids(leads, seed * 10 + 5 + i as u64)))
        .collect();
    let mut done = 0;
    let mut per_run = Vec::new();
    if scenario.shape == Shape::BackToBack || runs.len() == 1 {
        for (client, ids) in runs.iter().zip(&batches) {
            done += client.run(ids.clone()).await;
            per_run.push((
                client.rate_limited.load(Ordering::SeqCst),
                client.calls.load(Ordering::SeqCst),
            ));
        }
    } else {
        let (a, b) = tokio::join!(
            runs[0].run(batches[0].clone()),
            runs[1].run(batches[1].clone())
        );
        done = a + b;
    }
    Figures {
        wall: started.elapsed().as_secs_f64(),
        calls: runs.iter().map(|r| r.calls.load(Ordering::SeqCst)).sum(),
        rate_limited: runs
            .iter()
            .map(|r| r.rate_limited.load(Ordering::SeqCst))
            .sum(),
        done,
        windows_to_full: None,
        runs: per_run,
    }
}
