//! The load generators of part a, both on keep-alive connections posting
//! links in turn:
//!
//! - closed loop: each connection sends its next POST as soon as the last
//!   one is answered; the most the service can answer, and the latency at
//!   that saturation.
//! - open loop (paced): a pacer thread schedules POSTs at a steady rate and
//!   any free connection takes the next; latency counts from the time a
//!   POST was due, not from when it went out, so a stall that holds POSTs
//!   back shows in every one it delayed (no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one load run came to: the POSTs measured, each one's latency in ms,
/// and the answers that were not a 303.
pub struct Measured {
    pub latencies: Vec<f64>,
    pub errors: u64,
}

/// A keep-alive HTTP/1 connection to the service.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<String>,
    host: String,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Connection {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        Connection {
            sender,
            host: addr.to_string(),
        }
    }

    /// POSTs `path` and reads the whole answer: whether it was a 303.
    async fn post(&mut self, path: &str) -> bool {
        let request = hyper::Request::post(path)
            .header("host", &self.host)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(String::new())
            .unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status();
        let body = axum::body::Body::new(response.into_body());
        let _ = axum::body::to_bytes(body, 1 << 20).await;
        status == 303
    }
}

/// Closed loop: POSTs from `connections` connections for `length` after a
/// second of warm-up.
pub async fn closed(
    addr: SocketAddr,
    paths: &Arc<Vec<String>>,
    connections: usize,
    length: Duration,
) -> Measured {
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + length;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..connections {
        let paths = Arc::clone(paths);
        workers.spawn(async move {
            let mut connection = Connection::open(addr).await;
            let (mut latencies, mut errors) = (Vec::with_capacity(100_000), 0u64);
            let mut i = worker;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let redirected = connection.post(&paths[i % paths.len()]).await;
                i += connections;
                if sent >= start {
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                    errors += u64::from(!redirected);
                }
            }
            (latencies, errors)
        });
    }
    gather(workers).await
}

/// Open loop: `rate` POSTs a second, due at even intervals, for `length`
/// after a second of warm-up, from up to `connections` connections.
pub async fn paced(
    addr: SocketAddr,
    paths: &Arc<Vec<String>>,
    connections: usize,
    rate: f64,
    length: Duration,
) -> Measured {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let first = Instant::now() + Duration::from_millis(100);
    let start = first + Duration::from_secs(1);
    let end = start + length;
    let (due_tx, due_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    // A thread of its own: its sleep is precise to tens of microseconds,
    // where the runtime's timer rounds up to the next millisecond.
    let pacer = std::thread::spawn(move || {
        for i in 0.. {
            let due = first + interval * i as u32;
            if due >= end {
                break;
            }
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if due_tx.send((i, due)).is_err() {
                break;
            }
        }
    });
    let due_rx = Arc::new(tokio::sync::Mutex::new(due_rx));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (paths, due_rx) = (Arc::clone(paths), Arc::clone(&due_rx));
        workers.spawn(async move {
            let mut connection = Connection::open(addr).await;
            let (mut latencies, mut errors) = (Vec::with_capacity(100_000), 0u64);
            loop {
                let next = due_rx.lock().await.recv().await;
                let Some((i, due)) = next else { break };
                let redirected = connection.post(&paths[i % paths.len()]).await;
                if due >= start {
                    latencies.push(due.elapsed().as_secs_f64() * 1e3);
                    errors += u64::from(!redirected);
                }
            }
            (latencies, errors)
        });
    }
    let measured = gather(workers).await;
    pacer.join().unwrap();
    measured
}

async fn gather(mut workers: tokio::task::JoinSet<(Vec<f64>, u64)>) -> Measured {
    let mut measured = Measured {
        latencies: Vec::new(),
        errors: 0,
    };
    while let Some(done) = workers.join_next().await {
        let (latencies, errors) = done.unwrap();
        measured.latencies.extend(latencies);
        measured.errors += errors;
    }
    measured.latencies.sort_by(|a, b| a.total_cmp(b));
    measured
}
