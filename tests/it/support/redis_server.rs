//! A real `redis-server` on a free loopback port, for the tests of the budget
//! shared through Redis: started with no persistence, killed when dropped.
//!
//! Where the binary is missing, [`RedisServer::start`] says loudly that the
//! test is skipped and how to install it, and the test passes; under CI
//! (`CI=true`) it fails instead, so a CI machine cannot skip them silently.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed (and reaped) on drop.
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
}

impl RedisServer {
    /// Starts one, or `None` when `redis-server` is not installed outside
    /// CI. `test` names the test for the skip notice.
    pub fn start(test: &str) -> Option<RedisServer> {
        if !super::installed_or_skip(
            test,
            "redis-server",
            "apt-get install redis-server (Debian/Ubuntu), brew install redis (macOS)",
        ) {
            return None;
        }
        // A port the kernel just handed out is free unless another process
        // takes it in between: try again with a new one then.
        for _ in 0..5 {
            if let Some(server) = RedisServer::try_start() {
                return Some(server);
            }
        }
        panic!("redis-server did not start on any of five free ports");
    }

    fn try_start() -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let mut server = RedisServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if server.child.try_wait().unwrap().is_some() {
                return None;
            }
            if server.ping() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills the server at once (SIGKILL), as a crash or a lost machine would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the server answers PING.
    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
