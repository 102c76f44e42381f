//! A misbehaving HTTP server for tests, on a loopback address inside the test
//! process: it answers every request with whatever the test's function
//! builds from it (an echo of the request in a body or a header, a redirect,
//! an absurd Retry-After, a body of a gigabyte streamed out), and records
//! every request it got, so a test can see what the client sent where.
//!
//! It speaks just enough HTTP/1.1: one request per connection, a
//! `Content-Length` body in, and `Connection: close` on every answer. It runs
//! on a [`ServerThread`], like the SMTP server.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::server_thread::ServerThread;

/// One request as the server read it.
#[derive(Clone, Debug)]
pub struct Request {
    /// `POST`, `GET`, …
    pub method: String,
    /// The request target: path and query, as sent.
    pub target: String,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// Everything the client sent, as one text: the request line, the head,
    /// the body, and the query once more with its values decoded, for
    /// answers that echo it all back.
    pub fn echo(&self) -> String {
        let mut text = format!("{} {} HTTP/1.1\n", self.method, self.target);
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\n"));
        }
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(&self.body));
        let query = self.target.split_once('?').map_or("", |(_, q)| q);
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            text.push_str(&format!("\n{name}: {value}"));
        }
        text
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the server sends back.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
}

/// An answer's body.
#[derive(Clone, Debug)]
pub enum Body {
    /// These bytes, with their length.
    Bytes(Vec<u8>),
    /// `len` bytes of `x`, written in 64 KiB pieces until the client hangs
    /// up; with a `Content-Length` when `declared`, else ended by the close.
    Stream {
        /// How many bytes.
        len: u64,
        /// Whether the length is announced up front.
        declared: bool,
    },
}

impl Answer {
    /// An answer with this status and body.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Body::Bytes(body.into()),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

type Respond = dyn Fn(&Request) -> Answer + Send + Sync;

/// A running server; stops when dropped.
pub struct HostileServer {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    _thread: ServerThread,
}

impl HostileServer {
    /// Starts a server on 127.0.0.1 that answers with `respond`.
    pub fn start(respond: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> HostileServer {
        HostileServer::start_on([127, 0, 0, 1].into(), respond)
    }

    /// Starts a server on `ip` (a loopback address) that answers with `respond`.
    pub fn start_on(
        ip: IpAddr,
        respond: impl Fn(&Request) -> Answer + Send + Sync + 'static,
    ) -> HostileServer {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let respond: Arc<Respond> = Arc::new(respond);
        let seen = Arc::clone(&requests);
        let thread = ServerThread::start((ip, 0).into(), move |stream| {
            let (respond, seen) = (Arc::clone(&respond), Arc::clone(&seen));
            async move {
                let _ = exchange(stream, &*respond, &seen).await;
            }
        });
        HostileServer {
            addr: thread.addr,
            requests,
            _thread: thread,
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request, records it, and writes the answer.
async fn exchange(
    stream: TcpStream,
    respond: &Respond,
    seen: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let mut request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let header = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            request.headers.push(header);
        }
    }
    let length: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    request.body = vec![0; length];
    reader.read_exact(&mut request.body).await?;
    seen.lock().unwrap().push(request.clone());
    let answer = respond(&request);
    let mut head = format!(
        "HTTP/1.1 {} Whatever\r\nConnection: close\r\n",
        answer.status
    );
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match answer.body {
        Body::Bytes(bytes) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
            writer.write_all(head.as_bytes()).await?;
            writer.write_all(&bytes).await?;
        }
        Body::Stream { len, declared } => {
            if declared {
                head.push_str(&format!("Content-Length: {len}\r\n"));
            }
            head.push_str("\r\n");
            writer.write_all(head.as_bytes()).await?;
            let piece = vec![b'x'; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(piece.len() as u64) as usize;
                writer.write_all(&piece[..n]).await?;
                left -= n as u64;
            }
        }
    }
    writer.shutdown().await
}
