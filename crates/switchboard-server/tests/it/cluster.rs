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
    let message = start_error(format!("redis://{unused}/0")).await;
    assert!(message.contains("cannot reach Redis at"), "{message}");

    let cluster = RedisServer::start_with(&["--cluster-enabled", "yes"]);
    let message = start_error(cluster.url()).await;
    assert!(message.contains("not Redis Cluster"), "{message}");
}

/// Why a node on the Redis at `url` does not start.
async fn start_error(url: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = switchboard_server::Config::default();
    config.engine = switchboard_server::config::Engine::Redis;
    config.redis_url = url;
    switchboard_server::server::run(listener, config, std::future::pending())
        .await
        .expect_err("the start fails")
        .to_string()
}

/// A long-polling Socket.IO client whose every request goes to the next
/// node in turn, as behind a load balancer without sticky sessions.
struct RoundRobinPolling {
    http: reqwest::Client,
    nodes: Vec<SocketAddr>,
    next: usize,
    query: String,
}

impl RoundRobinPolling {
    async fn open(nodes: &[SocketAddr], user: &str, channel: &str) -> RoundRobinPolling {
        let mut client = RoundRobinPolling {
            http: reqwest::Client::new(),
            nodes: nodes.to_vec(),
            next: 0,
            query: format!("EIO=4&transport=polling&user={user}&channel={channel}"),
        };
        let (_, body) = client.request(None).await;
        let open: Value = serde_json::from_str(&body.split('\x1e').next().unwrap()[1..]).unwrap();
        client.query += &format!("&sid={}", open["sid"].as_str().unwrap());
        client
    }

    /// A GET (`None`) or a POST of `body` to the next node.
    async fn request(&mut self, body: Option<String>) -> (u16, String) {
        let url = format!("http://{}/socket.io/?{}", self.nodes[self.next], self.query);
        self.next = (self.next + 1) % self.nodes.len();
        let request = match body {
            None => self.http.get(url),
            Some(body) => self.http.post(url).body(body),
        };
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Polls (on the next nodes) until `done` says the packets seen suffice.
    async fn poll_until(&mut self, seen: &mut Vec<String>, done: impl Fn(&[String]) -> bool) {
        tokio::time::timeout(WAIT, async {
            while !done(seen) {
                let (status, body) = self.request(None).await;
                assert_eq!(status, 200, "{body}");
                seen.extend(body.split('\x1e').map(str::to_owned));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("not all packets arrived: {seen:?}"));
    }
}

#[tokio::test]
async fn socketio_polling_without_sticky_sessions_chats_with_no_loss() {
    const EACH: usize = 20;
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2).await;
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let mut clients = Vec::new();
    for user in ["xena", "yuri"] {
        let mut client = RoundRobinPolling::open(&addrs, user, "rr").await;
        assert_eq!(client.request(Some("40".into())).await, (200, "ok".into()));
        let mut seen = Vec::new();
        client
            .poll_until(&mut seen, |seen| seen.iter().any(|p| p.starts_with("40{")))
            .await;
        clients.push(client);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let user = client.query.split("user=").nth(1).unwrap()[..4].to_owned();
                for i in 0..EACH {
                    let packet =
                        format!(r#"42{i}["publish",{{"channel":"rr","msg":"{user}-{i}"}}]"#);
                    assert_eq!(client.request(Some(packet)).await, (200, "ok".into()));
                }
                let mut seen = Vec::new();
                client
                    .poll_until(&mut seen, |seen| {
                        let messages = seen
                            .iter()
                            .filter(|p| p.starts_with(r#"42["message""#))
                            .count();
                        let acks = seen.iter().filter(|p| p.starts_with("43")).count();
                        messages == 2 * EACH && acks == EACH
                    })
                    .await;
                seen.into_iter()
                    .filter_map(|p| {
                        let args: Vec<Value> = serde_json::from_str(p.strip_prefix("42")?).ok()?;
                        (args[0] == "message").then(|| {
                            (
                                args[1]["offset"].as_u64().unwrap(),
                                args[1]["msg"].as_str().unwrap().to_owned(),
                            )
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut views = Vec::new();
    for task in tasks {
        views.push(task.await.unwrap());
    }
    let offsets: Vec<u64> = views[0].iter().map(|m| m.0).collect();
    assert_eq!(
        offsets,
        (1..=2 * EACH as u64).collect::<Vec<_>>(),
        "once each, in order"
    );
    assert_eq!(views[0], views[1], "both see one order");
}

#[tokio::test]
async fn a_poll_for_a_session_of_a_node_that_is_gone_is_unknown_at_once() {
    let redis = RedisServer::start();
    let mut nodes = nodes(&redis, 2).await;
    let client = RoundRobinPolling::open(&[nodes[0].addr], "zed", "gone").await;
    let stopped = nodes.remove(0).shut_down();
    stopped.await.unwrap().unwrap();
    let url = format!("http://{}/socket.io/?{}", nodes[0].addr, client.query);
    let started = Instant::now();
    let response = client.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 1, "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_socketio_session_recovers_on_another_node() {
    let redis = RedisServer::start();
    // A short window, so that node two does not honour the offset merely
    // as a node restarted within it.
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(
            TestServer::with_config(|c| {
                redis.configure(c);
                c.recovery_window = Duration::from_millis(300);
            })
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (one, two) = (nodes[0].addr, nodes[1].addr);
    let mut before = RoundRobinPolling::open(&[one], "rita", "rec").await;
    before.request(Some("40".into())).await;
    let mut seen = Vec::new();
    before
        .poll_until(&mut seen, |seen| seen.iter().any(|p| p.starts_with("40{")))
        .await;
    let connect: Value =
        serde_json::from_str(&seen.iter().find(|p| p.starts_with("40{")).unwrap()[2..]).unwrap();
    let pid = connect["pid"].as_str().expect("recovery is on").to_owned();
    post_message(two, "rec", json!({"username":"sam","msg":"m1"})).await;
    before
        .poll_until(&mut seen, |seen| seen.iter().any(|p| p.contains("\"m1\"")))
        .await;
    let last: Vec<Value> =
        serde_json::from_str(&seen.iter().find(|p| p.contains("\"m1\"")).unwrap()[2..]).unwrap();
    let offset = last[2].as_str().expect("the recovery offset").to_owned();
    // Gone from node one; two messages while away.
    assert_eq!(before.request(Some("1".into())).await.0, 200);
    for msg in ["m2", "m3"] {
        post_message(two, "rec", json!({"username":"sam","msg":msg})).await;
    }
    let mut after = RoundRobinPolling::open(&[two], "rita", "other").await;
    let hello = json!({"pid": pid, "offset": offset}).to_string();
    after.request(Some(format!("40{hello}"))).await;
    let mut seen = Vec::new();
    after
        .poll_until(&mut seen, |seen| seen.iter().any(|p| p.contains("\"m3\"")))
        .await;
    let connect: Value =
        serde_json::from_str(&seen.iter().find(|p| p.starts_with("40{")).unwrap()[2..]).unwrap();
    assert_eq!(connect["pid"], pid.as_str(), "recovered: the same pid");
    let missed: Vec<&str> = seen
        .iter()
        .filter_map(|p| {
            ["\"m1\"", "\"m2\"", "\"m3\""]
                .into_iter()
                .find(|m| p.contains(*m))
        })
        .collect();
    assert_eq!(
        missed,
        ["\"m2\"", "\"m3\""],
        "what it missed, once, in order"
    );
}

#[tokio::test]
async fn nodes_reach_redis_over_tls_with_a_private_ca() {
    let (_redis, tls, ca) = RedisServer::start_tls();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let ca = ca.clone();
        nodes.push(
            TestServer::with_config(move |c| {
                c.engine = switchboard_server::config::Engine::Redis;
                c.redis_url = format!("rediss://{tls}/0");
                c.redis_ca_cert = Some(ca);
            })
            .await,
        );
    }
    let (mut reader, _) = subscriber(nodes[0].addr, "tess", "secure").await;
    let (mut writer, _) = ChatClient::connect(nodes[1].addr, "/ws?user=tom").await;
    assert_eq!(writer.publish_acked("secure", "over tls").await, 1);
    assert_eq!(messages(&mut reader, 1).await[0].2, "over tls");

    // Without the CA, the certificate is not trusted: the start fails.
    let message = start_error(format!("rediss://{tls}/0")).await;
    assert!(message.contains("cannot reach Redis"), "{message}");
}

#[tokio::test]
async fn history_in_redis_is_trimmed_by_count_at_once_and_by_age_in_the_background() {
    let redis = RedisServer::start();
    let node = TestServer::with_config(|c| {
        redis.configure(c);
        c.history_max_count = 4;
        c.history_max_age = Some(Duration::from_millis(600));
        c.retention_interval = Duration::from_millis(100);
    })
    .await;
    let (mut writer, _) = ChatClient::connect(node.addr, "/ws?user=old").await;
    for n in 1..=6 {
        writer.publish_acked("aging", &format!("m{n}")).await;
    }
    let offsets = |history: &Value| -> Vec<u64> {
        history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect()
    };
    let (_, history) = get_json(node.addr, "/api/channels/aging/messages").await;
    assert_eq!(offsets(&history), [3, 4, 5, 6], "the newest four");
    tokio::time::sleep(Duration::from_millis(700)).await;
    writer.publish_acked("aging", "fresh").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, history) = get_json(node.addr, "/api/channels/aging/messages").await;
        if offsets(&history) == [7] {
            break;
        }
        assert!(Instant::now() < deadline, "not trimmed by age: {history}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
