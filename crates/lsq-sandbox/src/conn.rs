//! Connections that a handler can cut without an answer, and that close
//! themselves once idle.
//!
//! An HTTP handler can only return a response; to simulate a dropped
//! connection the handler flips a switch shared with the socket, and the
//! socket then fails every read and write and closes with a reset, so the
//! client sees the connection die with not one byte of reply.
//!
//! A connection with no request being served and no bytes moving for the
//! idle timeout reads as closed by the client, so the HTTP server closes it:
//! clients that connect and go quiet cannot hold the sandbox's file
//! descriptors for ever. A request being served never times out, however
//! long its service time.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// The accepting socket; hands out [`CuttableStream`]s.
pub(crate) struct CuttableListener {
    listener: TcpListener,
    idle_timeout: Duration,
    /// At most one connection accepted per this long (see
    /// `SandboxConfig::slow_accept`).
    accept_every: Duration,
    last_accept: Option<Instant>,
}

impl CuttableListener {
    /// Accepts on `listener`, closing connections idle for `idle_timeout`.
    pub(super) fn new(listener: TcpListener, idle_timeout: Duration) -> Self {
        CuttableListener {
            listener,
            idle_timeout,
            accept_every: Duration::ZERO,
            last_accept: None,
        }
    }

    /// Accepts at most one connection per `every`, leaving the others in
    /// the kernel's backlog (and the SYNs beyond it dropped).
    pub(super) fn accepting_every(mut self, every: Duration) -> Self {
        self.accept_every = every;
        self
    }
}

/// What one connection's socket and its handlers share.
#[derive(Debug)]
struct ConnState {
    cut: AtomicBool,
    /// Whether a request came on the connection yet.
    served: AtomicBool,
    /// Requests being served.
    serving: AtomicUsize,
    /// When bytes last moved or a request was last answered.
    active: Mutex<Instant>,
}

impl ConnState {
    fn new() -> Arc<ConnState> {
        Arc::new(ConnState {
            cut: AtomicBool::new(false),
            served: AtomicBool::new(false),
            serving: AtomicUsize::new(0),
            active: Mutex::new(Instant::now()),
        })
    }

    fn touch(&self) {
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn active(&self) -> Instant {
        *self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle on one connection, given to handlers as connect info.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    state: Arc<ConnState>,
}

impl Conn {
    /// Makes the connection fail instead of sending whatever the handler
    /// returns.
    pub(super) fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
    }

    /// Marks a request as being served until the guard is dropped, so the
    /// connection is not idle meanwhile.
    pub(super) fn serving(&self) -> Serving {
        self.state.serving.fetch_add(1, Ordering::SeqCst);
        Serving(self.state.clone())
    }

    /// Whether this is the connection's first request (asking marks it
    /// served).
    pub(super) fn first_request(&self) -> bool {
        !self.state.served.swap(true, Ordering::SeqCst)
    }
}

/// A request being served on a connection; see [`Conn::serving`].
pub(crate) struct Serving(Arc<ConnState>);

impl Drop for Serving {
    fn drop(&mut self) {
        // The answer is written next: the idle time starts now.
        self.0.touch();
        self.0.serving.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A TCP stream that fails once its [`Conn`] is cut, and ends once idle.
pub(crate) struct CuttableStream {
    stream: TcpStream,
    state: Arc<ConnState>,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
}

impl CuttableStream {
    fn check(&self) -> io::Result<()> {
        if self.state.cut.load(Ordering::SeqCst) {
            // A reset, not a FIN, so the peer gets an unambiguous error even
            // if it is not reading at this moment.
            let _ = self.stream.set_zero_linger();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection dropped by the sandbox",
            ));
        }
        Ok(())
    }

    /// With nothing to read: ready (an end of stream) once the connection
    /// has been idle for the timeout, else pending, with the timer set to
    /// wake the reader then.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.serving.load(Ordering::SeqCst) > 0 {
            // Its end touches the clock, and the answer wakes the reader.
            return Poll::Pending;
        }
        let deadline = self.state.active() + self.idle_timeout;
        if self.idle.deadline() != deadline {
            self.idle.as_mut().reset(deadline);
        }
        self.idle.as_mut().poll(cx).map(Ok)
    }
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Pending => self.poll_idle(cx),
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.state.touch();
                Poll::Ready(Ok(()))
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        if let Some(last) = self.last_accept {
            tokio::time::sleep_until(last + self.accept_every).await;
        }
        if !self.accept_every.is_zero() {
            self.last_accept = Some(Instant::now());
        }
        loop {
            match self.listener.accept().await {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let state = ConnState::new();
                    let conn = Conn {
                        state: state.clone(),
                    };
                    let idle = Box::pin(tokio::time::sleep(self.idle_timeout));
                    let stream = CuttableStream {
                        stream,
                        state,
                        idle_timeout: self.idle_timeout,
                        idle,
                    };
                    return (stream, conn);
                }
                // Out of file descriptors and the like: back off instead of
                // spinning; the sandbox must not die because a test opened
                // too many sockets.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()?;
        Ok(Conn {
            state: ConnState::new(),
        })
    }
}

impl Connected<IncomingStream<'_, CuttableListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The address the listener is bound to (the [`Listener`] trait can only give
/// back a [`Conn`]).
pub(crate) fn bound_addr(listener: &CuttableListener) -> io::Result<SocketAddr> {
    listener.listener.local_addr()
}
