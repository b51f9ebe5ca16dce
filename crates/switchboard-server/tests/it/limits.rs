//! Limits against abuse: each one tripped, answered, counted in
//! `switchboard_limit_rejections_total`, while other clients go on.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{ChatClient, RawClient, TestServer, get_json, post_message};
use crate::operating::metric_becomes;

fn rejections(limit: &str) -> String {
    format!(r#"switchboard_limit_rejections_total{{limit="{limit}"}}"#)
}

#[tokio::test]
async fn a_connection_with_no_subscription_is_closed_once_idle() {
    let server = TestServer::with_config(|c| {
        c.idle_timeout = Duration::from_millis(600);
        c.ping_interval = Duration::from_millis(200);
    })
    .await;
    let addr = server.addr;
    let started = Instant::now();
    let (mut idle, _) = ChatClient::connect(addr, "/ws?user=idle").await;
    let (mut subscribed, _) = ChatClient::connect(addr, "/ws?user=sub&channel=lobby").await;
    let (mut talking, _) = ChatClient::connect(addr, "/ws?user=talk").await;

    // Requests keep a connection with no subscription from being idle.
    let mut closed = None;
    for id in 0..15 {
        talking.send(json!({"type":"ping","id":id})).await;
        assert_eq!(talking.recv_type("pong").await["id"], id);
        if closed.is_none() {
            closed = tokio::time::timeout(Duration::from_millis(100), idle.recv_close())
                .await
                .ok();
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let frame = closed
        .expect("the idle connection was closed")
        .expect("with a close frame");
    assert_eq!(u16::from(frame.code), 1000);
    assert_eq!(frame.reason.as_str(), "idle timeout: no subscription");
    assert!(started.elapsed() >= Duration::from_millis(600));

    // The subscribed one is still there, well past the timeout.
    subscribed.send(json!({"type":"ping","id":"late"})).await;
    assert_eq!(subscribed.recv_type("pong").await["id"], "late");
    metric_becomes(addr, &rejections("idle_timeout"), |v| v == 1.0).await;
}

#[tokio::test]
async fn a_slow_request_head_is_dropped_at_the_header_timeout() {
    let server = TestServer::with_config(|c| c.header_timeout = Duration::from_millis(800)).await;
    let addr = server.addr;
    // Slowloris: a request head that never ends, a line at a time.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /api/channels HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut dropped = false;
    for i in 0..40 {
        if slow
            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            dropped = true;
            break;
        }
        // Others are served meanwhile.
        let (status, _) = get_json(addr, "/api/channels").await;
        assert_eq!(status, 200);
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                dropped = true;
                break;
            }
            Ok(Ok(_)) => panic!("the slow request was answered"),
            Err(_) => {}
        }
    }
    assert!(dropped, "the slow request head was never dropped");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "dropped only after {took:?}");
    metric_becomes(addr, &rejections("header_timeout"), |v| v == 1.0).await;
}

#[tokio::test]
async fn a_request_head_over_max_header_bytes_gets_431() {
    let server = TestServer::with_config(|c| c.max_header_bytes = 8192).await;
    let addr = server.addr;
    let mut client = RawClient::connect(addr).await;
    let big = "x".repeat(10_000);
    let response = client
        .request(&format!(
            "GET /api/channels HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"
        ))
        .await;
    assert_eq!(response.status, 431);
    let (status, _) = get_json(addr, "/api/channels").await;
    assert_eq!(status, 200);
    metric_becomes(addr, &rejections("max_header_bytes"), |v| v == 1.0).await;
}

/// Publishes over HTTP from `source`; the status, body and `Retry-After`.
async fn publish_from(
    source: &str,
    addr: std::net::SocketAddr,
    msg: &str,
) -> (u16, serde_json::Value, Option<String>) {
    let client = reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let response = client
        .post(format!("http://{addr}/api/channels/rated/messages"))
        .json(&json!({"username":"bot","msg":msg}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), retry_after)
}

#[tokio::test]
async fn http_publishes_over_the_rate_get_429_per_address() {
    let server = TestServer::with_config(|c| {
        c.http_publish_rate = 0.5;
        c.http_publish_burst = 2.0;
    })
    .await;
    let addr = server.addr;
    for msg in ["one", "two"] {
        let (status, body, _) = publish_from("127.0.0.1", addr, msg).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body, retry_after) = publish_from("127.0.0.1", addr, "three").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let wait = body["error"]["retry_after_ms"].as_u64().unwrap();
    assert!((1..=2000).contains(&wait), "retry_after_ms {wait}");
    assert_eq!(retry_after.as_deref(), Some("2"));
    // Another address has a bucket of its own.
    let (status, body, _) = publish_from("127.0.0.2", addr, "elsewhere").await;
    assert_eq!(status, 201, "{body}");
    // Nothing refused was stored.
    let (_, history) = get_json(addr, "/api/channels/rated/messages?since=0").await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two", "elsewhere"]);
    metric_becomes(addr, &rejections("http_publish_rate"), |v| v == 1.0).await;
}

#[tokio::test]
async fn an_event_stream_over_max_subscriptions_is_refused() {
    let server = TestServer::with_config(|c| c.max_subscriptions = 2).await;
    let addr = server.addr;
    let refused = reqwest::get(format!("http://{addr}/sse?channel=a&channel=b&channel=c"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_subscriptions");
    let taken = reqwest::get(format!("http://{addr}/sse?channel=a&channel=b"))
        .await
        .unwrap();
    assert_eq!(taken.status(), 200);
    metric_becomes(addr, &rejections("max_subscriptions"), |v| v == 1.0).await;
}

#[tokio::test]
async fn messages_over_max_message_size_are_refused_and_counted() {
    let server = TestServer::with_config(|c| c.max_message_size = 1024).await;
    let addr = server.addr;
    let (mut big, _) = ChatClient::connect(addr, "/ws?user=big").await;
    let (mut other, _) = ChatClient::connect(addr, "/ws?user=other").await;
    big.send_text(&"x".repeat(2048)).await;
    let frame = big.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1009);
    other.send(json!({"type":"ping","id":1})).await;
    assert_eq!(other.recv_type("pong").await["id"], 1);

    // A Socket.IO POST over maxPayload (the same limit): 413.
    let open = reqwest::get(format!("http://{addr}/socket.io/?EIO=4&transport=polling"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let handshake: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    let sid = handshake["sid"].as_str().unwrap();
    let response = reqwest::Client::new()
        .post(format!(
            "http://{addr}/socket.io/?EIO=4&transport=polling&sid={sid}"
        ))
        .body(format!("4{}", "y".repeat(2048)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    metric_becomes(addr, &rejections("max_message_size"), |v| v == 2.0).await;
    let (status, _) = post_message(addr, "lobby", json!({"username":"u","msg":"ok"})).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn publishes_past_the_append_queue_are_refused_overloaded() {
    let server = TestServer::with_config(|c| {
        c.append_queue = 2;
        // One message per commit (an fsync, or a Redis round trip each):
        // a burst arrives far faster than that, and the queue fills.
        c.max_batch = 1;
        c.publish_burst = 100.0;
    })
    .await;
    let addr = server.addr;
    let (mut busy, _) = ChatClient::connect(addr, "/ws?user=busy").await;
    let (mut other, _) = ChatClient::connect(addr, "/ws?user=other").await;
    for id in 0..12 {
        busy.send(json!({"type":"publish","channel":"queue","msg":format!("m{id}"),"id":id}))
            .await;
    }
    let (mut acked, mut overloaded) = (0usize, 0u32);
    while acked + (overloaded as usize) < 12 {
        let reply = busy.recv().await;
        match reply["type"].as_str() {
            Some("ack") => acked += 1,
            Some("error") => {
                assert_eq!(reply["code"], "overloaded", "{reply}");
                overloaded += 1;
            }
            _ => {}
        }
    }
    assert!(overloaded > 0, "the queue never filled");
    assert!(acked >= 2, "acked {acked}");
    other.send(json!({"type":"ping","id":7})).await;
    assert_eq!(other.recv_type("pong").await["id"], 7);
    metric_becomes(addr, &rejections("append_queue"), |v| {
        v == f64::from(overloaded)
    })
    .await;
    let (_, history) = get_json(addr, "/api/channels/queue/messages?since=0").await;
    assert_eq!(history["messages"].as_array().unwrap().len(), acked);
}
