//! What an operator relies on: health checks (`/healthz`, `/readyz`,
//! readiness following Redis down and back) and the logs (`--log-format
//! json`, one line per HTTP request at debug, never with the query).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{TestServer, WAIT, get_json};
use crate::redis_server::RedisServer;

#[tokio::test]
async fn healthz_and_readyz_answer_while_the_store_does() {
    let server = TestServer::start().await;
    let (status, body) = get_json(server.addr, "/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = get_json(server.addr, "/readyz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
}

/// `/readyz` until it answers `status`, within the wait.
async fn readiness_becomes(addr: std::net::SocketAddr, status: u16) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (now, body) = get_json(addr, "/readyz").await;
        if now == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {now}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn readyz_follows_redis_down_and_back_while_healthz_stays() {
    let mut redis = RedisServer::start();
    let node = TestServer::with_config(|c| redis.configure(c)).await;
    readiness_becomes(node.addr, 200).await;

    redis.stop();
    let body = readiness_becomes(node.addr, 503).await;
    assert_eq!(body["status"], "not_ready");
    assert!(body["reason"].as_str().unwrap().contains("store"), "{body}");
    let (status, _) = get_json(node.addr, "/healthz").await;
    assert_eq!(status, 200);

    redis.restart();
    readiness_becomes(node.addr, 200).await;
    // The engine's troubles are in the metrics.
    metric_becomes(node.addr, "switchboard_redis_errors_total", |v| v >= 1.0).await;
    metric_becomes(node.addr, "switchboard_redis_reconnects_total", |v| {
        v >= 1.0
    })
    .await;
}

/// The binary with `args`, its stdout read line by line on a thread.
struct LoggingServer {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl LoggingServer {
    fn start(data: &std::path::Path, args: &[&str], rust_log: &str) -> LoggingServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        LoggingServer { child, lines }
    }

    /// The next line that `matches`, within the wait.
    fn line(&self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("the line in time");
            if matches(&line) {
                return line;
            }
        }
    }
}

impl Drop for LoggingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_a_line_per_request() {
    let data = tempfile::tempdir().unwrap();
    let server = LoggingServer::start(
        data.path(),
        &["--log-format", "json"],
        "info,switchboard_server::http=debug",
    );
    let listening: Value =
        serde_json::from_str(&server.line(|l| l.contains("listening on"))).unwrap();
    assert_eq!(listening["level"], "INFO");
    let message = listening["fields"]["message"].as_str().unwrap();
    let addr: std::net::SocketAddr = message.rsplit("http://").next().unwrap().parse().unwrap();

    let (status, _) = get_json(addr, "/api/channels/lobby/messages?secret=do-not-log").await;
    assert_eq!(status, 200);
    let request: Value =
        serde_json::from_str(&server.line(|l| l.contains("http request"))).unwrap();
    let fields = &request["fields"];
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["path"], "/api/channels/lobby/messages");
    assert_eq!(fields["status"], 200);
    assert!(fields["micros"].as_u64().is_some(), "{request}");
    assert!(!request.to_string().contains("do-not-log"), "{request}");
}

#[tokio::test]
async fn text_logs_stay_the_default() {
    let data = tempfile::tempdir().unwrap();
    let server = LoggingServer::start(data.path(), &[], "info");
    let line = server.line(|l| l.contains("listening on"));
    assert!(serde_json::from_str::<Value>(&line).is_err(), "{line}");
    assert!(line.contains("INFO"), "{line}");
}

/// A WebSocket upgrade of `/ws` from `source`, answered however the
/// server answers it.
async fn upgrade_from(
    source: std::net::IpAddr,
    addr: std::net::SocketAddr,
) -> (crate::common::RawClient, crate::common::RawResponse) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut client = crate::common::RawClient::from_stream(stream);
    let response = client
        .request(&format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n\r\n",
            crate::common::SAMPLE_KEY
        ))
        .await;
    (client, response)
}

fn refusal(response: &crate::common::RawResponse) -> (u16, String) {
    (
        response.status,
        response.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn past_max_connections_new_ones_are_refused_with_503_and_open_ones_go_on() {
    let server = TestServer::with_config(|c| c.max_connections = 3).await;
    let addr = server.addr;
    let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let (mut first, _) = crate::common::ChatClient::connect(addr, "/ws?user=a").await;
    let (second, response) = upgrade_from(local, addr).await;
    assert_eq!(response.status, 101);
    let stream = reqwest::get(format!("http://{addr}/sse?channel=lobby"))
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    let (_, refused) = upgrade_from(local, addr).await;
    assert_eq!(refusal(&refused), (503, "too_many_connections".into()));
    let refused = reqwest::get(format!("http://{addr}/sse?channel=lobby"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let refused = reqwest::get(format!("http://{addr}/socket.io/?EIO=4&transport=polling"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    // The HTTP API is no connection: it still answers.
    let (status, _) = get_json(addr, "/api/channels").await;
    assert_eq!(status, 200);

    // Those open go on.
    first.send(serde_json::json!({"type":"ping","id":1})).await;
    assert_eq!(first.recv_type("pong").await["id"], 1);

    // One gone, one more may come.
    drop(second);
    drop(stream);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, response) = upgrade_from(local, addr).await;
        if response.status == 101 {
            break;
        }
        assert!(Instant::now() < deadline, "the seat was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_address_past_its_share_is_refused_with_429_and_others_are_not() {
    let server = TestServer::with_config(|c| c.max_connections_per_ip = 2).await;
    let addr = server.addr;
    let one: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let (_a, response) = upgrade_from(one, addr).await;
    assert_eq!(response.status, 101);
    let (_b, response) = upgrade_from(one, addr).await;
    assert_eq!(response.status, 101);
    let (_, refused) = upgrade_from(one, addr).await;
    assert_eq!(refusal(&refused), (429, "too_many_connections".into()));
    let (_c, response) = upgrade_from(other, addr).await;
    assert_eq!(response.status, 101);
}

/// The text of `/metrics` on `addr`.
pub async fn metrics(addr: std::net::SocketAddr) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of the series `series` (name and labels, as written) in `text`.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// Waits until `series` on `addr` satisfies `wanted`; returns its value.
pub async fn metric_becomes(
    addr: std::net::SocketAddr,
    series: &str,
    wanted: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, text) = metrics(addr).await;
        let now = value(&text, series).unwrap_or(f64::NAN);
        if wanted(now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{series} stayed {now}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_count_connections_publishes_deliveries_commits_and_refusals() {
    let server = TestServer::with_config(|c| {
        c.max_subscriptions = 1;
        c.publish_rate = 0.001;
        c.publish_burst = 2.0;
        c.max_msg_bytes = 100;
    })
    .await;
    let addr = server.addr;
    let (status, text) = metrics(addr).await;
    assert_eq!(status, 200);
    for name in [
        "switchboard_connections",
        "switchboard_subscriptions",
        "switchboard_messages_published_total",
        "switchboard_messages_delivered_total",
        "switchboard_slow_consumers_total",
        "switchboard_limit_rejections_total",
        "switchboard_history_commit_seconds",
        "switchboard_history_batch_size",
        "switchboard_store_errors_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
    }

    let (mut ann, _) = crate::common::ChatClient::connect(addr, "/ws?user=ann").await;
    ann.subscribe(serde_json::json!({"type":"subscribe","channel":"lobby"}))
        .await;
    let stream = reqwest::get(format!("http://{addr}/sse?channel=lobby"))
        .await
        .unwrap();
    let polling = reqwest::get(format!("http://{addr}/socket.io/?EIO=4&transport=polling"))
        .await
        .unwrap();
    assert_eq!(polling.status(), 200);
    metric_becomes(
        addr,
        r#"switchboard_connections{transport="websocket"}"#,
        |v| v == 1.0,
    )
    .await;
    metric_becomes(addr, r#"switchboard_connections{transport="sse"}"#, |v| {
        v == 1.0
    })
    .await;
    metric_becomes(
        addr,
        r#"switchboard_connections{transport="socketio_polling"}"#,
        |v| v == 1.0,
    )
    .await;
    metric_becomes(addr, "switchboard_subscriptions", |v| v == 2.0).await;

    ann.publish_acked("lobby", "one").await;
    let (status, _) = crate::common::post_message(
        addr,
        "lobby",
        serde_json::json!({"username":"bot","msg":"two"}),
    )
    .await;
    assert_eq!(status, 201);
    metric_becomes(
        addr,
        r#"switchboard_messages_published_total{transport="websocket"}"#,
        |v| v == 1.0,
    )
    .await;
    metric_becomes(
        addr,
        r#"switchboard_messages_published_total{transport="http"}"#,
        |v| v == 1.0,
    )
    .await;
    // Each message reached the WebSocket and the stream.
    metric_becomes(
        addr,
        r#"switchboard_messages_delivered_total{transport="websocket"}"#,
        |v| v == 2.0,
    )
    .await;
    metric_becomes(
        addr,
        r#"switchboard_messages_delivered_total{transport="sse"}"#,
        |v| v == 2.0,
    )
    .await;
    metric_becomes(addr, "switchboard_history_commit_seconds_count", |v| {
        v >= 1.0
    })
    .await;
    metric_becomes(addr, "switchboard_history_batch_size_sum", |v| v == 2.0).await;

    // Limits tripped are counted.
    ann.send(serde_json::json!({"type":"subscribe","channel":"second","id":1}))
        .await;
    assert_eq!(
        ann.recv_type("error").await["code"],
        "too_many_subscriptions"
    );
    metric_becomes(
        addr,
        r#"switchboard_limit_rejections_total{limit="max_subscriptions"}"#,
        |v| v == 1.0,
    )
    .await;
    ann.publish_acked("lobby", "three").await;
    ann.send(serde_json::json!({"type":"publish","channel":"lobby","msg":"four","id":2}))
        .await;
    assert_eq!(ann.recv_type("error").await["code"], "rate_limited");
    metric_becomes(
        addr,
        r#"switchboard_limit_rejections_total{limit="publish_rate"}"#,
        |v| v == 1.0,
    )
    .await;
    let (status, _) = crate::common::post_message(
        addr,
        "lobby",
        serde_json::json!({"username":"bot","msg":"x".repeat(200)}),
    )
    .await;
    assert_eq!(status, 413);
    metric_becomes(
        addr,
        r#"switchboard_limit_rejections_total{limit="max_msg_bytes"}"#,
        |v| v == 1.0,
    )
    .await;

    // Gone connections leave the gauges.
    drop(ann);
    drop(stream);
    metric_becomes(
        addr,
        r#"switchboard_connections{transport="websocket"}"#,
        |v| v == 0.0,
    )
    .await;
    metric_becomes(addr, r#"switchboard_connections{transport="sse"}"#, |v| {
        v == 0.0
    })
    .await;
    metric_becomes(addr, "switchboard_subscriptions", |v| v == 0.0).await;
}

#[tokio::test]
async fn connection_limits_are_counted_and_metrics_can_have_their_own_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = TestServer::with_config(|c| {
        c.max_connections = 1;
        c.metrics_listen = Some(port);
    })
    .await;
    let (status, _) = metrics(server.addr).await;
    assert_eq!(status, 404, "not on the main port");
    let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let (_held, response) = upgrade_from(local, server.addr).await;
    assert_eq!(response.status, 101);
    let (_, refused) = upgrade_from(local, server.addr).await;
    assert_eq!(refused.status, 503);
    metric_becomes(
        port,
        r#"switchboard_limit_rejections_total{limit="max_connections"}"#,
        |v| v == 1.0,
    )
    .await;
}

#[tokio::test]
async fn a_slow_consumer_is_counted_under_its_transport() {
    let server = TestServer::with_config(|c| {
        c.max_queued_bytes = 64 * 1024;
        c.publish_rate = 1e9;
        c.publish_burst = 1e9;
    })
    .await;
    let addr = server.addr;
    // A subscriber that never reads.
    let stalled = crate::common::RawClient::connect_small_buffer(addr).await;
    let (_stalled, _) =
        crate::common::RawClient::upgrade_on(stalled, "/ws?user=stalled&channel=flood", "").await;
    let (mut publisher, _) = crate::common::ChatClient::connect(addr, "/ws?user=pub").await;
    let text = "x".repeat(8 * 1024);
    let counted = tokio::time::timeout(WAIT, async {
        loop {
            publisher.publish_acked("flood", &text).await;
            let (_, metrics) = metrics(addr).await;
            if value(
                &metrics,
                r#"switchboard_slow_consumers_total{transport="websocket"}"#,
            ) == Some(1.0)
            {
                return;
            }
        }
    })
    .await;
    assert!(counted.is_ok(), "the stalled subscriber was never counted");
}
