//! An HTTP connection's TCP socket, shared: hyper reads the requests and
//! writes the response heads through [`HttpSocket`], and an event stream
//! may write its own body straight to the socket once its head is out
//! ([`RawBody`]), so broadcasts can be written through it as they are
//! through a WebSocket's. After an upgrade the WebSocket connection reads
//! and writes it the same way, and lends it to its outbox.
//!
//! Every holder owns the stream (an `Arc`): the descriptor closes only when
//! the last one lets go, so no writer can reach a descriptor reused by
//! another connection.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};

use atomic_waker::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Counts hyper's completed flushes: each one means hyper has nothing of
/// its own left unwritten.
#[derive(Debug, Default)]
struct Flushes {
    count: AtomicU64,
    /// A body waiting for its head to go out.
    waiter: AtomicWaker,
    /// A body took the connection over ([`RawBody::hand_off`]): hyper
    /// reads, writes and shuts down nothing more.
    handed_off: AtomicBool,
}

/// A TCP stream with several writers, each writing only while the others
/// have nothing in flight.
#[derive(Debug)]
pub struct SharedStream(Arc<TcpStream>);

impl SharedStream {
    /// An owning handle for another writer (an outbox writing through).
    pub fn handle(&self) -> Arc<TcpStream> {
        self.0.clone()
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = &self.0;
        loop {
            ready!(stream.poll_read_ready(cx))?;
            // Into the buffer's uninitialised room as it is: zeroing it
            // first (hyper's read buffer is kilobytes) cost every request
            // a memset of all of it.
            let received = stream.try_io(Interest::READABLE, || {
                // SAFETY: `recv` only writes to the slice; nothing in it
                // is de-initialised.
                let unfilled = unsafe { buf.unfilled_mut() };
                socket2::SockRef::from(&**stream).recv(unfilled)
            });
            match received {
                Ok(n) => {
                    // SAFETY: `recv` initialised the first `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

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

    /// The stream, after an upgrade: hyper is done with it.
    pub fn into_stream(self) -> SharedStream {
        self.stream
    }
}

impl HttpSocket {
    fn handed_off(&self) -> bool {
        self.flushes.handed_off.load(Ordering::Acquire)
    }
}

fn handed_off_error() -> io::Error {
    io::Error::other("the connection was handed to a response body")
}

impl AsyncRead for HttpSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.handed_off() {
            return Poll::Ready(Err(handed_off_error()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for HttpSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.handed_off() {
            return Poll::Ready(Err(handed_off_error()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.handed_off() {
            return Poll::Ready(Err(handed_off_error()));
        }
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
        if self.handed_off() {
            // The body that took the connection over ends it.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Put in each request's extensions: lets a handler drop its whole HTTP
/// connection. A streaming response whose client stopped reading is never
/// polled again, so it cannot end itself (see `transport::sse`).
#[derive(Debug, Clone, Default)]
pub struct AbortConnection(CancellationToken);

impl AbortConnection {
    pub fn abort(&self) {
        self.0.cancel();
    }

    /// Resolves once [`AbortConnection::abort`] was called.
    pub async fn aborted(&self) {
        self.0.cancelled().await
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

    /// An owning handle on the socket, to lend to the stream's outbox.
    pub fn socket(&self) -> Arc<TcpStream> {
        self.stream.handle()
    }

    /// Where the body writes (only once its head is out). hyper ends the
    /// response, and the connection, itself: the body never shuts it.
    pub fn stream(&mut self) -> &mut SharedStream {
        &mut self.stream
    }

    /// Takes the connection over from hyper once the head is out, as an
    /// upgrade does: hyper is to be told so by an error from the body
    /// (then it drops its side, buffers and all, without writing, reading
    /// or shutting down anything more), and the caller carries on alone,
    /// writing the rest of the body and ending the connection.
    pub fn hand_off(self) -> OwnedBody {
        debug_assert!(self.head_out, "handed off before the head was out");
        self.flushes.handed_off.store(true, Ordering::Release);
        OwnedBody {
            stream: self.stream,
        }
    }
}

/// A connection taken over from hyper by its response body
/// ([`RawBody::hand_off`]).
#[derive(Debug)]
pub struct OwnedBody {
    stream: SharedStream,
}

impl OwnedBody {
    /// The error that tells hyper its body took the connection over.
    pub fn handed_off() -> io::Error {
        handed_off_error()
    }

    /// An owning handle on the socket, to lend to the stream's outbox.
    pub fn socket(&self) -> Arc<TcpStream> {
        self.stream.handle()
    }

    pub fn stream(&mut self) -> &mut SharedStream {
        &mut self.stream
    }

    /// `Ready` once the client has closed its side (or the connection
    /// failed). An event stream's client sends nothing after its request:
    /// anything it does send is read and dropped.
    pub fn poll_client_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let stream = &self.stream.0;
        let mut scratch = [0u8; 256];
        loop {
            if ready!(stream.poll_read_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            match stream.try_read(&mut scratch) {
                Ok(0) => return Poll::Ready(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(()),
            }
        }
    }
}

/// These pin the hyper behaviour a body that writes itself relies on, which
/// hyper documents nowhere: once it has polled a body for the first time,
/// its next `poll_flush` comes after the response head is written. If a
/// hyper upgrade changes that, the body either waits forever (no flush) or
/// writes ahead of its head, and these fail.
#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body::Frame;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A chunked body that writes its one chunk to the socket itself once
    /// its head is out; hyper then ends it with the last chunk.
    struct SelfWritten {
        loan: Option<SocketLoan>,
        raw: Option<RawBody>,
        chunk: &'static [u8],
        written: usize,
    }

    impl http_body::Body for SelfWritten {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            let this = self.get_mut();
            if this.raw.is_none() {
                this.raw = this.loan.take().and_then(SocketLoan::into_raw_body);
            }
            let raw = this.raw.as_mut().expect("the connection lives");
            ready!(raw.poll_head_out(cx));
            while this.written < this.chunk.len() {
                let rest = &this.chunk[this.written..];
                this.written += ready!(Pin::new(raw.stream()).poll_write(cx, rest))?;
            }
            Poll::Ready(None)
        }
    }

    /// Serves one connection with hyper over an [`HttpSocket`], every
    /// response a [`SelfWritten`] body.
    async fn serve(listener: tokio::net::TcpListener) {
        let (stream, _) = listener.accept().await.unwrap();
        let socket = HttpSocket::new(stream);
        let loan = socket.lend();
        let service = hyper::service::service_fn(move |_request| {
            let body = SelfWritten {
                loan: Some(loan.clone()),
                raw: None,
                chunk: b"5\r\nhello\r\n",
                written: 0,
            };
            async move { Ok::<_, io::Error>(hyper::Response::new(body)) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(socket), service)
            .await;
    }

    /// Reads one response: the head, then the chunked body to its end.
    async fn read_response(client: &mut tokio::net::TcpStream) -> (String, String) {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"0\r\n\r\n") {
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), client.read(&mut byte))
                    .await
                    .expect("the body was written and ended")
                    .unwrap();
            assert_eq!(
                read,
                1,
                "connection closed after {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.push(byte[0]);
        }
        let text = String::from_utf8(seen).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        (head.to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn hyper_flushes_the_head_before_a_self_writing_body_writes_and_on_keep_alive_too() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        for _ in 0..3 {
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                .await
                .unwrap();
            let (head, body) = read_response(&mut client).await;
            assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("transfer-encoding: chunked"),
                "{head}"
            );
            // The chunk the body wrote itself, after the whole head, then
            // hyper's last chunk: nothing interleaved, nothing missing.
            assert_eq!(body, "5\r\nhello\r\n0\r\n\r\n");
        }
        drop(client);
        server.await.unwrap();
    }

    /// A body that takes the connection over once its head is out and
    /// writes the rest from a task of its own.
    struct HandedOff {
        loan: Option<SocketLoan>,
        raw: Option<RawBody>,
    }

    impl http_body::Body for HandedOff {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            let this = self.get_mut();
            if this.raw.is_none() {
                this.raw = this.loan.take().and_then(SocketLoan::into_raw_body);
            }
            ready!(
                this.raw
                    .as_mut()
                    .expect("the connection lives")
                    .poll_head_out(cx)
            );
            let mut owned = this.raw.take().expect("polled once more").hand_off();
            tokio::spawn(async move {
                // After hyper has let go: it must not write or close meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                owned
                    .stream()
                    .write_all(b"5\r\nhello\r\n0\r\n\r\n")
                    .await
                    .unwrap();
            });
            Poll::Ready(Some(Err(OwnedBody::handed_off())))
        }
    }

    #[tokio::test]
    async fn a_body_that_takes_the_connection_over_writes_the_rest_alone_and_ends_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let socket = HttpSocket::new(stream);
            let loan = socket.lend();
            let service = hyper::service::service_fn(move |_request| {
                let body = HandedOff {
                    loan: Some(loan.clone()),
                    raw: None,
                };
                async move { Ok::<_, io::Error>(hyper::Response::new(body)) }
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        // hyper's side ends (with the body's error) before the body's task writes.
        let served = server.await.unwrap();
        assert!(
            served.is_err(),
            "hyper saw the hand-off as the body's error"
        );
        let (head, body) = read_response(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert_eq!(body, "5\r\nhello\r\n0\r\n\r\n");
        // The last holder dropped the socket: the connection is closed.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_end(&mut rest),
        )
        .await
        .expect("closed after the body");
        assert_eq!(read.unwrap(), 0, "nothing after the body: {rest:?}");
    }
}
