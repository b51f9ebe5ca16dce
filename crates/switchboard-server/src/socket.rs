//! An HTTP connection's TCP socket, shared: hyper reads the requests and
//! writes the response heads through [`HttpSocket`], and an event stream
//! may write its own body straight to the socket once its head is out
//! ([`RawBody`]), so broadcasts can be written through it as they are
//! through a WebSocket's.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};

use atomic_waker::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Counts hyper's completed flushes: each one means hyper has nothing of
/// its own left unwritten.
#[derive(Debug, Default)]
struct Flushes {
    count: AtomicU64,
    /// A body waiting for its head to go out.
    waiter: AtomicWaker,
}

/// A TCP stream with several writers, each writing only while the others
/// have nothing in flight.
#[derive(Debug)]
pub struct SharedStream(Arc<TcpStream>);

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_write_with(&self.0, cx, |stream| stream.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_write_with(&self.0, cx, |stream| stream.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

fn poll_write_with(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match write(stream) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

/// The I/O hyper serves a connection over.
#[derive(Debug)]
pub struct HttpSocket {
    stream: SharedStream,
    flushes: Arc<Flushes>,
}

impl HttpSocket {
    pub fn new(stream: TcpStream) -> Self {
        HttpSocket {
            stream: SharedStream(Arc::new(stream)),
            flushes: Arc::default(),
        }
    }

    /// What a handler on this connection gets to write a body itself.
    pub fn lend(&self) -> SocketLoan {
        SocketLoan {
            stream: Arc::downgrade(&self.stream.0),
            flushes: self.flushes.clone(),
        }
    }

    /// The stream itself, after an upgrade, unless a body still shares it.
    pub fn into_stream(self) -> Result<TcpStream, HttpSocket> {
        let flushes = self.flushes;
        Arc::try_unwrap(self.stream.0).map_err(|stream| HttpSocket {
            stream: SharedStream(stream),
            flushes,
        })
    }
}

impl AsRawFd for HttpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.0.as_raw_fd()
    }
}

impl AsyncRead for HttpSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = &self.stream.0;
        loop {
            ready!(stream.poll_read_ready(cx))?;
            match stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for HttpSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // TCP has nothing to flush; hyper calls this once its buffer is empty.
        self.flushes.count.fetch_add(1, Ordering::Release);
        self.flushes.waiter.wake();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Put in each request's extensions: lets its handler write the response
/// body to the socket itself.
#[derive(Debug, Clone)]
pub struct SocketLoan {
    /// Weak: an upgrade takes the stream back whole.
    stream: Weak<TcpStream>,
    flushes: Arc<Flushes>,
}

impl SocketLoan {
    /// Called while the response's head is with hyper (a body's first
    /// poll): the body may write once that head has been flushed.
    pub fn into_raw_body(self) -> Option<RawBody> {
        let stream = SharedStream(self.stream.upgrade()?);
        let head_queued_before = self.flushes.count.load(Ordering::Acquire);
        Some(RawBody {
            stream,
            flushes: self.flushes,
            head_queued_before,
            head_out: false,
        })
    }
}

/// A response body's own handle on the socket.
#[derive(Debug)]
pub struct RawBody {
    stream: SharedStream,
    flushes: Arc<Flushes>,
    /// hyper's flush count when the head was still in its buffer.
    head_queued_before: u64,
    head_out: bool,
}

impl RawBody {
    /// `Ready` once hyper has flushed the response head: from then on it
    /// writes nothing until the body ends, and the body writes itself.
    pub fn poll_head_out(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.head_out {
            self.flushes.waiter.register(cx.waker());
            if self.flushes.count.load(Ordering::Acquire) == self.head_queued_before {
                return Poll::Pending;
            }
            self.head_out = true;
        }
        Poll::Ready(())
    }

    pub fn socket(&self) -> RawFd {
        self.stream.0.as_raw_fd()
    }

    /// Where the body writes (only once its head is out). hyper ends the
    /// response, and the connection, itself: the body never shuts it.
    pub fn stream(&mut self) -> &mut SharedStream {
        &mut self.stream
    }
}
