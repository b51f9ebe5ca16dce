//! A test server on `127.0.0.1:0` and a raw WebSocket client that can send
//! anything, including what a well-behaved client library never would.

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_server::server::StartError;
use switchboard_server::{Config, server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::redis_server::RedisServer;

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// The server running in this process, with its own data directory, and
/// its own `redis-server` when the tests run against the Redis engine.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), StartError>>,
    _data: tempfile::TempDir,
    _redis: Option<RedisServer>,
}

/// Whether `SWITCHBOARD_TEST_ENGINE=redis` asks for the Redis engine: the
/// protocol tests then run against it, each server on a Redis of its own.
pub fn testing_redis_engine() -> bool {
    std::env::var("SWITCHBOARD_TEST_ENGINE").is_ok_and(|engine| engine == "redis")
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with_config(|_| {}).await
    }

    pub async fn with_config(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: data.path().to_path_buf(),
            ..Config::default()
        };
        let redis = testing_redis_engine().then(RedisServer::start);
        if let Some(redis) = &redis {
            redis.configure(&mut config);
        }
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, config, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task,
            _data: data,
            _redis: redis,
        }
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Triggers graceful shutdown and returns a handle that completes when
    /// the server has finished.
    pub fn shut_down(mut self) -> JoinHandle<Result<(), StartError>> {
        let _ = self.stop.take().unwrap().send(());
        self.task
    }
}

/// An HTTP response as raw parts.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A frame as received: first byte (FIN, RSV, opcode) and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub b0: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    pub fn opcode(&self) -> u8 {
        self.b0 & 0x0F
    }

    /// The status code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode() == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A byte-level client: sends whatever it is told to.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient::from_stream(TcpStream::connect(addr).await.unwrap())
    }

    /// A client on a stream connected elsewhere (e.g. from another source address).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends a raw HTTP request and reads the response head (and body, by
    /// Content-Length).
    pub async fn request(&mut self, request: &str) -> RawResponse {
        self.stream.write_all(request.as_bytes()).await.unwrap();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill().await,
                "the connection ended before a response head"
            );
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).unwrap();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        while self.buf.len() < length {
            assert!(self.fill().await, "the connection ended inside the body");
        }
        let body = String::from_utf8(self.buf.drain(..length).collect()).unwrap();
        RawResponse {
            status,
            headers,
            body,
        }
    }

    /// A client whose socket receives into a tiny kernel buffer, so that
    /// not reading stalls the server quickly.
    pub async fn connect_small_buffer(addr: SocketAddr) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        RawClient {
            stream: socket.connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Performs a valid handshake on `path` with extra header lines.
    pub async fn upgrade(addr: SocketAddr, path: &str, extra: &str) -> (RawClient, RawResponse) {
        RawClient::upgrade_on(RawClient::connect(addr).await, path, extra).await
    }

    /// [`RawClient::upgrade`] on an already connected client.
    pub async fn upgrade_on(
        mut client: RawClient,
        path: &str,
        extra: &str,
    ) -> (RawClient, RawResponse) {
        let addr = client.stream.peer_addr().unwrap();
        let response = client
            .request(&format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n{extra}\r\n"
            ))
            .await;
        assert_eq!(response.status, 101, "{response:?}");
        (client, response)
    }

    /// Sends one frame; `masked` false produces an illegal client frame.
    pub async fn send_frame(&mut self, b0: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![b0];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= 0xFFFF => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0xA5, 0x17, 0x3C, 0x90];
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Reads the next frame from the server; `None` on EOF.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads frames until a close frame, returning it; panics on EOF first.
    pub async fn read_until_close(&mut self) -> RawFrame {
        loop {
            let frame = self.read_frame().await.expect("EOF before a close frame");
            if frame.opcode() == 0x8 {
                return frame;
            }
        }
    }

    /// The next chunk of a chunked body, decoded strictly; `None` at the
    /// last (empty) chunk.
    pub async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let line_end = loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            assert!(self.fill().await, "EOF inside a chunked body");
        };
        let line = std::str::from_utf8(&self.buf[..line_end]).unwrap();
        let size = usize::from_str_radix(line, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        let end = line_end + 2 + size + 2;
        while self.buf.len() < end {
            assert!(self.fill().await, "EOF inside a chunk");
        }
        assert_eq!(&self.buf[end - 2..end], b"\r\n", "a chunk ends in CRLF");
        let data = self.buf[line_end + 2..end - 2].to_vec();
        self.buf.drain(..end);
        (size > 0).then_some(data)
    }

    /// Reads until `marker` has arrived; returns everything read.
    pub async fn read_until(&mut self, marker: &[u8]) -> Vec<u8> {
        while !self.buf.windows(marker.len()).any(|w| w == marker) {
            assert!(self.fill().await, "EOF before {marker:?}");
        }
        std::mem::take(&mut self.buf)
    }

    /// Whatever arrives within `quiet` (empty if nothing does).
    pub async fn read_within(&mut self, quiet: Duration) -> Vec<u8> {
        let mut chunk = [0u8; 16384];
        if let Ok(Ok(n)) = tokio::time::timeout(quiet, self.stream.read(&mut chunk)).await {
            self.buf.extend_from_slice(&chunk[..n]);
        }
        std::mem::take(&mut self.buf)
    }

    /// Whether the server has closed the connection with nothing more sent.
    pub async fn at_eof(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("server did not answer in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }
}

fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let [b0, b1, ..] = *buf else { return None };
    assert_eq!(b1 & 0x80, 0, "server frames must not be masked");
    let (len, at) = match b1 & 0x7F {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap()) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((RawFrame { b0, payload }, at + len))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A native-protocol client over tokio-tungstenite, speaking JSON.
pub struct ChatClient {
    pub ws: Ws,
}

impl ChatClient {
    /// Connects to `path` (e.g. `/ws?user=alice`) and returns the client and its `welcome`.
    pub async fn connect(addr: SocketAddr, path: &str) -> (ChatClient, serde_json::Value) {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
            .await
            .unwrap();
        let mut client = ChatClient { ws };
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (client, welcome)
    }

    pub async fn send(&mut self, request: serde_json::Value) {
        self.send_text(&request.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.ws
            .send(tungstenite::Message::text(text))
            .await
            .unwrap();
    }

    /// The next JSON message (pings are skipped).
    pub async fn recv(&mut self) -> serde_json::Value {
        use futures_util::StreamExt;
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no message in time")
                .expect("connection ended")
                .expect("websocket error");
            match message {
                tungstenite::Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next message of `kind`, skipping others.
    pub async fn recv_type(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let message = self.recv().await;
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Publishes `msg` to `channel` and waits for its `ack`; returns the offset.
    pub async fn publish_acked(&mut self, channel: &str, msg: &str) -> u64 {
        self.send(serde_json::json!({"type":"publish","channel":channel,"msg":msg}))
            .await;
        self.recv_type("ack").await["offset"].as_u64().unwrap()
    }

    /// Subscribes and returns the `subscribed` answer.
    pub async fn subscribe(&mut self, request: serde_json::Value) -> serde_json::Value {
        self.send(request).await;
        self.recv_type("subscribed").await
    }

    /// The close frame the server ends with (skipping everything before it).
    pub async fn recv_close(&mut self) -> Option<tungstenite::protocol::CloseFrame> {
        use futures_util::StreamExt;
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no close in time");
            match message {
                Some(Ok(tungstenite::Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("websocket error before close: {e}"),
                None => return None,
            }
        }
    }
}

/// GET `path` over HTTP/1.1; returns status and parsed JSON body.
pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut client = RawClient::connect(addr).await;
    let response = client
        .request(&format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        ))
        .await;
    let status = response.status;
    (status, response.json())
}

/// `POST /api/channels/{channel}/messages` with `body`; status and JSON answer.
pub async fn post_message(
    addr: SocketAddr,
    channel: &str,
    body: serde_json::Value,
) -> (http::StatusCode, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/channels/{channel}/messages"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

use tokio_tungstenite::tungstenite;

/// The built `switchboard` binary running as a child process.
pub struct ServerProcess {
    pub child: std::process::Child,
    /// The server's own process: `child`, or the wrapper's child.
    pub pid: u32,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the binary on an ephemeral port with `data_dir` and `args`.
    pub fn start(data_dir: &std::path::Path, args: &[&str]) -> ServerProcess {
        ServerProcess::start_under(&[], data_dir, args)
    }

    /// [`ServerProcess::start`] with environment variables `env`.
    pub fn start_with_env(
        data_dir: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ServerProcess {
        ServerProcess::spawn(&[], data_dir, args, env)
    }

    /// [`ServerProcess::start`] with the binary run by `wrapper` (a
    /// command and its arguments, e.g. strace); `child` is the wrapper.
    pub fn start_under(
        wrapper: &[&str],
        data_dir: &std::path::Path,
        args: &[&str],
    ) -> ServerProcess {
        ServerProcess::spawn(wrapper, data_dir, args, &[])
    }

    fn spawn(
        wrapper: &[&str],
        data_dir: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ServerProcess {
        use std::io::{BufRead, BufReader};
        let binary = env!("CARGO_BIN_EXE_switchboard");
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = std::process::Command::new(program);
                command.args(wrapper_args).arg(binary);
                command
            }
            None => std::process::Command::new(binary),
        };
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {wrapper:?} {binary}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            let address = line
                .split_once("listening on http://")
                .or_else(|| line.split_once("listening on https://"));
            if let Some((_, rest)) = address {
                break rest.trim().parse().unwrap();
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let pid = if wrapper.is_empty() {
            child.id()
        } else {
            let children = format!("/proc/{0}/task/{0}/children", child.id());
            let children = std::fs::read_to_string(&children).unwrap();
            children.split_whitespace().next().unwrap().parse().unwrap()
        };
        ServerProcess { child, pid, addr }
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its status.
    pub async fn wait(mut self) -> std::process::ExitStatus {
        tokio::task::spawn_blocking(move || self.child.wait().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for ServerProcess {
    /// A test that fails halfway leaves no server behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if self.pid != self.child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &self.pid.to_string()])
                    .status();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
