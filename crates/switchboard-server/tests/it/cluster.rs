//! Several nodes on one Redis (`--engine redis`) acting as one: one order,
//! one history, one presence, and what happens when Redis goes away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{ChatClient, ServerProcess, TestServer, WAIT, get_json, post_message};
use crate::redis_server::RedisServer;

async fn nodes(redis: &RedisServer, count: usize) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(TestServer::with_config(|c| redis.configure(c)).await);
    }
    nodes
}

/// A subscriber of `channel` on `addr`, after its `subscribed`.
async fn subscriber(addr: SocketAddr, user: &str, channel: &str) -> (ChatClient, Value) {
    let (mut client, _) = ChatClient::connect(addr, &format!("/ws?user={user}")).await;
    let subscribed = client
        .subscribe(json!({"type":"subscribe","channel":channel}))
        .await;
    (client, subscribed)
}

/// The next `count` messages of `client` as (offset, username, msg).
async fn messages(client: &mut ChatClient, count: usize) -> Vec<(u64, String, String)> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let message = client.recv_type("message").await;
        seen.push((
            message["offset"].as_u64().unwrap(),
            message["username"].as_str().unwrap().to_owned(),
            message["msg"].as_str().unwrap().to_owned(),
        ));
    }
    seen
}

#[tokio::test]
async fn messages_published_on_every_node_reach_every_subscriber_once_in_one_order() {
    const PER_PUBLISHER: usize = 60;
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 3).await;
    let mut subscribers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            subscribers.push(
                subscriber(node.addr, &format!("reader{i}{j}"), "town")
                    .await
                    .0,
            );
        }
    }
    // One publisher per node, all at once, each with a window of publishes
    // in flight so batches from different nodes interleave.
    let mut publishers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let addr = node.addr;
        publishers.push(tokio::spawn(async move {
            let (mut client, _) = ChatClient::connect(addr, &format!("/ws?user=writer{i}")).await;
            for n in 0..PER_PUBLISHER {
                client
                    .send(json!({"type":"publish","channel":"town","msg":format!("{i}-{n}")}))
                    .await;
            }
            let mut acked = HashMap::new();
            for n in 0..PER_PUBLISHER {
                let ack = client.recv_type("ack").await;
                acked.insert(format!("{i}-{n}"), ack["offset"].as_u64().unwrap());
            }
            acked
        }));
    }
    let mut acked = HashMap::new();
    for publisher in publishers {
        acked.extend(publisher.await.unwrap());
    }
    let total = PER_PUBLISHER * nodes.len();
    let mut first: Option<Vec<(u64, String, String)>> = None;
    for subscriber in &mut subscribers {
        let seen = messages(subscriber, total).await;
        let offsets: Vec<u64> = seen.iter().map(|m| m.0).collect();
        assert_eq!(
            offsets,
            (1..=total as u64).collect::<Vec<_>>(),
            "consecutive, once each"
        );
        for (offset, _, msg) in &seen {
            assert_eq!(
                acked[msg], *offset,
                "{msg} delivered under its acked offset"
            );
        }
        match &first {
            None => first = Some(seen),
            Some(first) => assert_eq!(first, &seen, "every subscriber sees one order"),
        }
    }
    // Each publisher's own messages keep the order it sent them in.
    let order = first.unwrap();
    for i in 0..nodes.len() {
        let mine: Vec<&str> = order
            .iter()
            .filter(|m| m.1 == format!("writer{i}"))
            .map(|m| m.2.as_str())
            .collect();
        let sent: Vec<String> = (0..PER_PUBLISHER).map(|n| format!("{i}-{n}")).collect();
        assert_eq!(mine, sent);
    }
}

#[tokio::test]
async fn history_is_the_same_from_every_node_and_a_client_resumes_on_another_node() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2).await;
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let (mut left, subscribed) = subscriber(a, "ann", "hall").await;
    let epoch = subscribed["epoch"].as_str().unwrap().to_owned();
    let (mut writer, _) = ChatClient::connect(b, "/ws?user=bob").await;
    for n in 1..=5 {
        writer.publish_acked("hall", &format!("m{n}")).await;
    }
    assert_eq!(messages(&mut left, 5).await.last().unwrap().0, 5);
    drop(left);
    for n in 6..=9 {
        writer.publish_acked("hall", &format!("m{n}")).await;
    }
    // Same history, same epoch, from both nodes.
    let (status, from_a) = get_json(a, "/api/channels/hall/messages?limit=100").await;
    assert_eq!(status, 200);
    let (_, from_b) = get_json(b, "/api/channels/hall/messages?limit=100").await;
    assert_eq!(from_a, from_b);
    assert_eq!(from_a["epoch"], epoch);
    let offsets: Vec<u64> = from_a["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=9).collect::<Vec<_>>());
    // Left at 5 on node A, back on node B: 6..9 replayed, then live.
    let (mut back, _) = ChatClient::connect(b, "/ws?user=ann").await;
    let subscribed = back
        .subscribe(json!({"type":"subscribe","channel":"hall","since":5,"epoch":epoch}))
        .await;
    assert_eq!(subscribed["offset"], 9);
    writer.publish_acked("hall", "m10").await;
    let resumed = messages(&mut back, 5).await;
    let texts: Vec<&str> = resumed.iter().map(|m| m.2.as_str()).collect();
    assert_eq!(texts, ["m6", "m7", "m8", "m9", "m10"]);
    // The same over SSE with Last-Event-ID, on the third path in.
    let body = sse_until(b, "/sse?channel=hall", Some("8"), "m10").await;
    assert!(
        body.contains("\"m9\"") && body.contains("\"m10\""),
        "{body}"
    );
    assert!(
        !body.contains("\"m8\""),
        "nothing at or before the resume point: {body}"
    );
}

/// An SSE stream's text until `marker` appears.
async fn sse_until(
    addr: SocketAddr,
    path: &str,
    last_event_id: Option<&str>,
    marker: &str,
) -> String {
    let mut client = crate::common::RawClient::connect(addr).await;
    let resume = last_event_id
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    use tokio::io::AsyncWriteExt;
    client
        .stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{resume}\r\n").as_bytes())
        .await
        .unwrap();
    String::from_utf8_lossy(&client.read_until(marker.as_bytes()).await).into_owned()
}

#[tokio::test]
async fn presence_spans_nodes_and_a_killed_node_leaves_within_its_ttl() {
    let redis = RedisServer::start();
    let data = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut args = redis.args();
    args.extend(["--node-ttl".into(), "2s".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let one = ServerProcess::start(data[0].path(), &args);
    let two = ServerProcess::start(data[1].path(), &args);
    let (mut ann, subscribed) = subscriber(one.addr, "ann", "porch").await;
    assert_eq!(subscribed["presence"], json!(["ann"]));
    let (mut bob, subscribed) = subscriber(two.addr, "bob", "porch").await;
    assert_eq!(subscribed["presence"], json!(["ann", "bob"]));
    let join = ann.recv_type("join").await;
    assert_eq!(join["username"], "bob");
    // Bob on the other node too: counted once, no second join.
    let (_bob_again, _) = subscriber(one.addr, "bob", "porch").await;
    for node in [one.addr, two.addr] {
        let (_, presence) = get_json(node, "/api/channels/porch/presence").await;
        assert_eq!(presence["users"], json!(["ann", "bob"]));
    }
    drop(_bob_again);
    // Ann leaves node one: bob hears it on node two.
    drop(ann);
    let leave = bob.recv_type("leave").await;
    assert_eq!(leave["username"], "ann");
    let (mut cat, _) = subscriber(one.addr, "cat", "porch").await;
    bob.recv_type("join").await;
    // Node two dies: bob leaves presence on node one within the TTL.
    let killed = Instant::now();
    two.signal("-KILL");
    let leave = cat.recv_type("leave").await;
    assert_eq!(leave["username"], "bob");
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(2) + Duration::from_millis(500),
        "{took:?}"
    );
    let (_, presence) = get_json(one.addr, "/api/channels/porch/presence").await;
    assert_eq!(presence["users"], json!(["cat"]));
}

#[tokio::test]
async fn publishes_fail_while_redis_is_down_and_nothing_acknowledged_is_lost() {
    let mut redis = RedisServer::start();
    let nodes = nodes(&redis, 2).await;
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let (mut reader_a, _) = subscriber(a, "ra", "deck").await;
    let (mut reader_b, _) = subscriber(b, "rb", "deck").await;
    let (mut writer, _) = ChatClient::connect(a, "/ws?user=wa").await;
    let mut acked = Vec::new();
    for n in 0..10 {
        acked.push(writer.publish_acked("deck", &format!("before{n}")).await);
    }
    let seen_a = messages(&mut reader_a, 10).await;
    let seen_b = messages(&mut reader_b, 10).await;
    redis.stop();
    // Refused at once, with the code a client can act on.
    let started = Instant::now();
    writer
        .send(json!({"type":"publish","channel":"deck","msg":"lost?","id":"p1"}))
        .await;
    let error = writer.recv_type("error").await;
    assert_eq!(error["code"], "unavailable", "{error}");
    assert_eq!(error["id"], "p1");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let (status, body) = post_message(b, "deck", json!({"username":"http","msg":"x"})).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    // Nobody was disconnected.
    for client in [&mut reader_a, &mut reader_b, &mut writer] {
        client.send(json!({"type":"ping"})).await;
        client.recv_type("pong").await;
    }
    redis.restart();
    // Publishing works again once the node has reconnected.
    let deadline = Instant::now() + WAIT;
    loop {
        writer
            .send(json!({"type":"publish","channel":"deck","msg":"after0"}))
            .await;
        let answer = loop {
            let answer = writer.recv().await;
            if answer["type"] == "ack" || answer["type"] == "error" {
                break answer;
            }
        };
        if answer["type"] == "ack" {
            acked.push(answer["offset"].as_u64().unwrap());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishing did not resume: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 1..10 {
        acked.push(writer.publish_acked("deck", &format!("after{n}")).await);
    }
    assert_eq!(
        acked,
        (1..=20).collect::<Vec<_>>(),
        "offsets continue where they were"
    );
    for (reader, before) in [(&mut reader_a, &seen_a), (&mut reader_b, &seen_b)] {
        let mut seen = before.clone();
        seen.extend(messages(reader, 10).await);
        let offsets: Vec<u64> = seen.iter().map(|m| m.0).collect();
        assert_eq!(offsets, acked, "everything acknowledged, once, in order");
    }
}

#[tokio::test]
async fn a_node_that_loses_its_pubsub_connection_fills_the_gap_from_history() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2).await;
    let (mut reader, _) = subscriber(nodes[0].addr, "reader", "gap").await;
    let (mut writer, _) = ChatClient::connect(nodes[1].addr, "/ws?user=writer").await;
    writer.publish_acked("gap", "one").await;
    // Every pub/sub connection is cut; messages published meanwhile are
    // announced to nobody on node one until it has reconnected.
    assert_eq!(
        redis
            .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
            .as_deref()
            .map(|r| r.starts_with(':')),
        Some(true)
    );
    for n in 2..=30 {
        writer.publish_acked("gap", &format!("m{n}")).await;
    }
    let seen = messages(&mut reader, 30).await;
    let offsets: Vec<u64> = seen.iter().map(|m| m.0).collect();
    assert_eq!(
        offsets,
        (1..=30).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    // And live again afterwards.
    writer.publish_acked("gap", "after").await;
    assert_eq!(messages(&mut reader, 1).await[0].2, "after");
}

#[tokio::test]
async fn redis_cluster_or_an_unreachable_redis_stops_the_start_with_a_clear_error() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = switchboard_server::Config::default();
    config.engine = switchboard_server::config::Engine::Redis;
    config.redis_url = format!("redis://{unused}/0");
    let error = switchboard_server::server::run(listener, config, std::future::pending())
        .await
        .expect_err("no Redis there");
    let message = error.to_string();
    assert!(message.contains("cannot reach Redis at"), "{message}");

    let cluster = RedisServer::start_with(&["--cluster-enabled", "yes"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = switchboard_server::Config::default();
    cluster.configure(&mut config);
    let error = switchboard_server::server::run(listener, config, std::future::pending())
        .await
        .expect_err("Redis Cluster is refused");
    let message = error.to_string();
    assert!(message.contains("not Redis Cluster"), "{message}");
}
