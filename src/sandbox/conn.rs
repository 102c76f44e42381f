//! Connections that a handler can cut without an answer. An HTTP handler can
//! only return a response; to simulate a dropped connection the handler flips
//! a switch shared with the socket, and the socket then fails every read and
//! write and closes with a reset, so the client sees the connection die with
//! not one byte of reply.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The accepting socket; hands out [`CuttableStream`]s.
pub(crate) struct CuttableListener(pub TcpListener);

/// A handle on one connection, given to handlers as connect info.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    cut: Arc<AtomicBool>,
    served: Arc<AtomicBool>,
}

impl Conn {
    /// Makes the connection fail instead of sending whatever the handler
    /// returns.
    pub(super) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Whether this is the connection's first request (asking marks it
    /// served).
    pub(super) fn first_request(&self) -> bool {
        !self.served.swap(true, Ordering::SeqCst)
    }
}

/// A TCP stream that fails once its [`Conn`] is cut.
pub(crate) struct CuttableStream {
    stream: TcpStream,
    cut: Arc<AtomicBool>,
}

impl CuttableStream {
    fn check(&self) -> io::Result<()> {
        if self.cut.load(Ordering::SeqCst) {
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
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
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
        loop {
            match self.0.accept().await {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let cut = Arc::new(AtomicBool::new(false));
                    let conn = Conn {
                        cut: cut.clone(),
                        served: Arc::new(AtomicBool::new(false)),
                    };
                    return (CuttableStream { stream, cut }, conn);
                }
                // Out of file descriptors and the like: back off instead of
                // spinning; the sandbox must not die because a test opened
                // too many sockets.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()?;
        Ok(Conn {
            cut: Arc::new(AtomicBool::new(false)),
            served: Arc::new(AtomicBool::new(false)),
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
    listener.0.local_addr()
}
