//! What a client can make the server hold is bounded: subscriptions per
//! connection, requests in flight, and nothing lasting for channels it
//! merely names.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{ChatClient, ServerProcess, TestServer, WAIT};

#[tokio::test]
async fn subscriptions_past_the_cap_are_refused_and_the_connection_stays() {
    let server = TestServer::with_config(|c| c.max_subscriptions = 3).await;
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=many&channel=c0").await;
    client.recv_type("subscribed").await;
    for name in ["c1", "c2"] {
        client
            .subscribe(json!({"type":"subscribe","channel":name}))
            .await;
    }
    client
        .send(json!({"type":"subscribe","channel":"c3","id":"over"}))
        .await;
    let error = client.recv_type("error").await;
    assert_eq!(error["code"], "too_many_subscriptions");
    assert_eq!(error["id"], "over");
    assert!(error["reason"].as_str().unwrap().contains('3'), "{error}");
    // Subscribing again to one it has is still `already_subscribed`.
    client
        .send(json!({"type":"subscribe","channel":"c1","id":"again"}))
        .await;
    assert_eq!(
        client.recv_type("error").await["code"],
        "already_subscribed"
    );
    // One freed, one more allowed; and the connection works throughout.
    client
        .send(json!({"type":"unsubscribe","channel":"c0"}))
        .await;
    client.recv_type("unsubscribed").await;
    let subscribed = client
        .subscribe(json!({"type":"subscribe","channel":"c3"}))
        .await;
    assert_eq!(subscribed["channel"], "c3");
    assert_eq!(client.publish_acked("c3", "still here").await, 1);
}

#[tokio::test]
async fn a_client_flooding_history_requests_without_reading_holds_a_bounded_number_of_tasks() {
    const REQUESTS: usize = 10_000;
    let server = TestServer::with_config(|c| {
        c.max_queued_bytes = 64 * 1024;
        c.max_requests_in_flight = 4;
    })
    .await;
    let (mut seeder, _) = ChatClient::connect(server.addr, "/ws?user=seeder").await;
    for i in 0..10 {
        seeder
            .publish_acked("big", &format!("message {i} {}", "x".repeat(40)))
            .await;
    }
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();

    let (flood, _) = ChatClient::connect(server.addr, "/ws?user=flood").await;
    let (mut sink, mut stream) = flood.ws.split();
    let writer = tokio::spawn(async move {
        for _ in 0..REQUESTS {
            let request = json!({"type":"history","channel":"big","limit":10}).to_string();
            sink.feed(Message::text(request)).await.unwrap();
        }
        sink.flush().await.unwrap();
        sink
    });
    // Watch the server while the client writes and reads nothing: once it
    // has written everything or stalled (TCP pushing back), keep watching a
    // little longer.
    let started = Instant::now();
    let mut most = 0;
    let mut stalled_since = None;
    while started.elapsed() < WAIT {
        most = most.max(metrics.num_alive_tasks());
        if writer.is_finished() || started.elapsed() > Duration::from_secs(3) {
            let since = *stalled_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(500) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The client's own writer task, and the server's: connection, its
    // requests in flight, its upgrade helper.
    assert!(
        most <= before + 12,
        "{most} tasks alive against {before} before the flood"
    );

    // Nothing was dropped: reading now, every request gets its answer.
    let mut answered = 0;
    while answered < REQUESTS {
        let frame = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("answers keep coming")
            .expect("connection open")
            .unwrap();
        if let Message::Text(text) = frame {
            let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
            if reply["type"] == "history" {
                assert_eq!(reply["messages"].as_array().unwrap().len(), 10);
                answered += 1;
            }
        }
    }
    drop(writer.await.unwrap());
}

/// The server's resident memory, from `/proc`.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Asks for the history of `count` distinct channels starting at `first`,
/// and subscribes to and leaves every tenth; waits for every answer.
async fn name_channels(client: &mut ChatClient, first: usize, count: usize) {
    const WINDOW: usize = 64;
    let mut sent = 0;
    let mut answered = 0;
    while answered < count {
        while sent < count && sent - answered < WINDOW {
            let channel = format!("named-{}", first + sent);
            client
                .send(json!({"type":"history","channel":channel,"limit":1}))
                .await;
            sent += 1;
        }
        let reply = client.recv().await;
        if reply["type"] == "history" {
            answered += 1;
        }
    }
    for i in (first..first + count).step_by(10) {
        let channel = format!("named-{i}");
        client
            .subscribe(json!({"type":"subscribe","channel":channel}))
            .await;
        client
            .send(json!({"type":"unsubscribe","channel":channel}))
            .await;
        client.recv_type("unsubscribed").await;
    }
}

#[tokio::test]
async fn naming_a_hundred_thousand_channels_leaves_the_server_where_it_was() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=namer").await;
    // Warm up: the allocator, SQLite's caches, the runtime's threads.
    name_channels(&mut client, 0, 20_000).await;
    let before = resident_kib(server.child.id());
    name_channels(&mut client, 20_000, 100_000).await;
    drop(client);
    let (_, channels) = crate::common::get_json(server.addr, "/api/channels").await;
    assert_eq!(channels["channels"], json!([]));
    let after = resident_kib(server.child.id());
    // Keeping them cost about 215 bytes a name: 21 MiB for 100,000.
    assert!(
        after < before + 3 * 1024,
        "resident memory went from {before} KiB to {after} KiB"
    );
    server.signal("-TERM");
    assert!(server.wait().await.success());
}
