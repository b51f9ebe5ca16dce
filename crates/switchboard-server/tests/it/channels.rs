//! Channels over the native protocol: ordered fan-out, acks, presence,
//! resume with `since`, errors, and slow subscribers.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::common::{ChatClient, RawClient, RawFrame, TestServer, WAIT, get_json};

/// The `msg` of each message in a history page.
fn texts(page: &Value) -> Vec<&str> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect()
}

/// The `offset` of each message in a history page.
fn offsets(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect()
}

fn fast_publishers(config: &mut switchboard_server::Config) {
    config.publish_rate = 1e9;
    config.publish_burst = 1e9;
}

#[tokio::test]
async fn welcome_names_the_user_from_the_query_or_the_path_or_a_guest() {
    let server = TestServer::start().await;
    let (_a, welcome) = ChatClient::connect(server.addr, "/ws?user=alice").await;
    assert_eq!(welcome["username"], "alice");
    assert!(welcome["connection_id"].is_u64());
    assert_eq!(welcome["server_version"], env!("CARGO_PKG_VERSION"));
    let (_b, welcome) = ChatClient::connect(server.addr, "/ws/Bob%20B").await;
    assert_eq!(welcome["username"], "Bob B");
    let (_c, welcome) = ChatClient::connect(server.addr, "/ws").await;
    assert!(welcome["username"].as_str().unwrap().starts_with("guest-"));
}

#[tokio::test]
async fn an_invalid_username_or_channel_is_refused_at_the_handshake() {
    let server = TestServer::start().await;
    for (path, code) in [
        ("/ws?user=%07bell", "invalid_username"),
        (&format!("/ws?user={}", "x".repeat(65)), "invalid_username"),
        ("/ws?channel=no%20spaces", "invalid_channel"),
    ] {
        let mut raw = RawClient::connect(server.addr).await;
        let response = raw
            .request(&format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            ))
            .await;
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(response.json()["error"]["code"], code, "{path}");
    }
}

#[tokio::test]
async fn two_clients_see_each_others_messages_in_the_same_order() {
    let server = TestServer::start().await;
    let (mut alice, _) = ChatClient::connect(server.addr, "/ws?user=alice").await;
    let (mut bob, _) = ChatClient::connect(server.addr, "/ws?user=bob").await;
    let subscribed = alice
        .subscribe(json!({"type":"subscribe","channel":"lobby"}))
        .await;
    assert_eq!(subscribed["offset"], 0);
    assert_eq!(subscribed["presence"], json!(["alice"]));
    let subscribed = bob
        .subscribe(json!({"type":"subscribe","channel":"lobby","id":1}))
        .await;
    assert_eq!(subscribed["presence"], json!(["alice", "bob"]));
    assert_eq!(subscribed["id"], 1);
    assert_eq!(alice.recv_type("join").await["username"], "bob");

    alice
        .send(json!({"type":"publish","channel":"lobby","msg":"hi bob","id":"a1"}))
        .await;
    bob.send(json!({"type":"publish","channel":"lobby","msg":"hi alice","id":"b1"}))
        .await;
    let mut seen = Vec::new();
    for client in [&mut alice, &mut bob] {
        let mut messages = Vec::new();
        let mut acked = false;
        while messages.len() < 2 || !acked {
            let m = client.recv().await;
            match m["type"].as_str().unwrap() {
                "message" => messages.push(m),
                "ack" => {
                    assert!(m["offset"].as_u64().unwrap() >= 1);
                    acked = true;
                }
                // With --engine redis, alice's own join comes back through
                // Redis and may reach bob after his `subscribed` listed her.
                "join" if m["username"] == "alice" => {}
                other => panic!("unexpected {other}: {m}"),
            }
        }
        seen.push(messages);
    }
    assert_eq!(seen[0], seen[1], "both see one order");
    let first = &seen[0][0];
    assert_eq!(first["channel"], "lobby");
    assert_eq!(first["offset"], 1);
    assert_eq!(seen[0][1]["offset"], 2);
    let time = first["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.len() == 24, "{time}");
    let senders: HashSet<&str> = seen[0]
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(senders, HashSet::from(["alice", "bob"]));
}

#[tokio::test]
async fn a_subscribed_publisher_gets_each_message_before_its_ack() {
    let server = TestServer::start().await;
    let (mut alice, _) = ChatClient::connect(server.addr, "/ws?user=alice").await;
    alice
        .subscribe(json!({"type":"subscribe","channel":"lobby"}))
        .await;
    // Pipelined, so group commits carry several messages at once.
    for i in 0..50 {
        alice
            .send(json!({"type":"publish","channel":"lobby","msg":format!("m{i}"),"id":i}))
            .await;
    }
    let mut delivered = HashSet::new();
    let mut acks = 0;
    while acks < 50 {
        let m = alice.recv().await;
        let offset = m["offset"].as_u64().unwrap();
        match m["type"].as_str().unwrap() {
            "message" => {
                delivered.insert(offset);
            }
            "ack" => {
                assert!(delivered.contains(&offset), "ack for {offset} came first");
                acks += 1;
            }
            other => panic!("unexpected {other}: {m}"),
        }
    }
    assert_eq!(delivered.len(), 50);
}

#[tokio::test]
async fn a_commit_interval_holds_quick_followers_into_one_commit_but_not_a_lone_message() {
    // The longest allowed: a message that is held waits this long, so "not
    // held" is told apart by the widest margin a noisy machine can get.
    let interval = Duration::from_secs(1);
    let server = TestServer::with_config(|config| {
        fast_publishers(config);
        config.commit_interval = interval;
    })
    .await;
    let (mut alice, _) = ChatClient::connect(server.addr, "/ws?user=alice").await;
    alice
        .subscribe(json!({"type":"subscribe","channel":"paced"}))
        .await;

    // Nothing committed lately: a message goes out at once.
    let first_sent = Instant::now();
    alice.publish_acked("paced", "first").await;
    assert!(first_sent.elapsed() < interval, "a lone message was held");

    // Two more right behind it wait for the interval, then share a commit
    // (one commit, one `time`).
    for msg in ["second", "third"] {
        alice
            .send(json!({"type":"publish","channel":"paced","msg":msg}))
            .await;
    }
    let mut times = Vec::new();
    while times.len() < 2 {
        let m = alice.recv().await;
        if m["type"] == "message" && m["msg"] != "first" {
            times.push(m["time"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        first_sent.elapsed() >= interval,
        "followers were committed {:?} after the first",
        first_sent.elapsed()
    );
    assert_eq!(times[0], times[1], "the followers were committed apart");

    // After a quiet interval, the next one goes out at once again.
    tokio::time::sleep(interval).await;
    let later_sent = Instant::now();
    alice.publish_acked("paced", "later").await;
    assert!(
        later_sent.elapsed() < interval,
        "a message after a lull was held"
    );
}

#[tokio::test]
async fn the_username_comes_from_the_connection_not_the_message() {
    let server = TestServer::start().await;
    let (mut mallory, _) = ChatClient::connect(server.addr, "/ws?user=mallory&channel=lobby").await;
    mallory.recv_type("subscribed").await;
    mallory
        .send(json!({"type":"publish","channel":"lobby","msg":"x","username":"alice"}))
        .await;
    let error = mallory.recv_type("error").await;
    assert_eq!(error["code"], "bad_request");
    mallory
        .send(json!({"type":"publish","channel":"lobby","msg":"x"}))
        .await;
    assert_eq!(mallory.recv_type("message").await["username"], "mallory");
}

#[tokio::test]
async fn a_thousand_messages_from_four_publishers_reach_fifty_subscribers_in_one_order() {
    let server = TestServer::with_config(fast_publishers).await;
    let mut subscribers = Vec::new();
    for i in 0..50 {
        let (mut client, _) =
            ChatClient::connect(server.addr, &format!("/ws?user=s{i}&channel=fanout")).await;
        client.recv_type("subscribed").await;
        subscribers.push(client);
    }
    let mut publishers = Vec::new();
    for p in 0..4 {
        let addr = server.addr;
        publishers.push(tokio::spawn(async move {
            let (mut client, _) = ChatClient::connect(addr, &format!("/ws?user=p{p}")).await;
            for i in 0..250 {
                client
                    .send(json!({"type":"publish","channel":"fanout","msg":format!("{p}:{i}"),"id":i}))
                    .await;
            }
            let mut acks = 0;
            while acks < 250 {
                if client.recv().await["type"] == "ack" {
                    acks += 1;
                }
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut reference: Option<Vec<String>> = None;
    for subscriber in &mut subscribers {
        let mut order = Vec::with_capacity(1000);
        while order.len() < 1000 {
            let m = subscriber.recv().await;
            if m["type"] == "message" {
                assert_eq!(m["offset"], order.len() as u64 + 1, "offsets without gaps");
                order.push(m["msg"].as_str().unwrap().to_owned());
            }
        }
        match &reference {
            None => {
                let distinct: HashSet<&String> = order.iter().collect();
                assert_eq!(distinct.len(), 1000, "no loss, no duplicate");
                reference = Some(order);
            }
            Some(reference) => assert_eq!(&order, reference),
        }
    }
}

#[tokio::test]
async fn resuming_with_since_replays_exactly_the_missed_messages() {
    let server = TestServer::with_config(fast_publishers).await;
    let (mut writer, _) = ChatClient::connect(server.addr, "/ws?user=writer").await;
    let (mut reader, _) = ChatClient::connect(server.addr, "/ws?user=reader&channel=room").await;
    reader.recv_type("subscribed").await;
    for i in 1..=5 {
        writer
            .send(json!({"type":"publish","channel":"room","msg":format!("m{i}")}))
            .await;
    }
    let mut last = 0;
    while last < 3 {
        let m = reader.recv_type("message").await;
        last = m["offset"].as_u64().unwrap();
    }
    let epoch = get_json(server.addr, "/api/channels/room/messages").await.1["epoch"].clone();
    drop(reader);
    for i in 6..=10 {
        writer
            .send(json!({"type":"publish","channel":"room","msg":format!("m{i}")}))
            .await;
    }
    for _ in 0..10 {
        writer.recv_type("ack").await;
    }
    let (mut reader, _) = ChatClient::connect(server.addr, "/ws?user=reader").await;
    let subscribed = reader
        .subscribe(json!({"type":"subscribe","channel":"room","since":3,"epoch":epoch}))
        .await;
    assert_eq!(subscribed["offset"], 10);
    assert_eq!(subscribed["epoch"], epoch);
    writer
        .send(json!({"type":"publish","channel":"room","msg":"m11"}))
        .await;
    let mut offsets = Vec::new();
    while offsets.last() != Some(&11) {
        let m = reader.recv_type("message").await;
        assert_eq!(m["msg"], format!("m{}", m["offset"]));
        offsets.push(m["offset"].as_u64().unwrap());
    }
    assert_eq!(offsets, (4..=11).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_since_from_another_epoch_replays_all_retained_history() {
    let server = TestServer::with_config(fast_publishers).await;
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=u").await;
    for i in 1..=3 {
        client.publish_acked("e", &format!("m{i}")).await;
    }
    let subscribed = client
        .subscribe(json!({"type":"subscribe","channel":"e","since":2,"epoch":"from-elsewhere"}))
        .await;
    assert_ne!(subscribed["epoch"], "from-elsewhere");
    for i in 1..=3 {
        assert_eq!(client.recv_type("message").await["offset"], i);
    }
}

#[tokio::test]
async fn presence_counts_a_user_with_two_tabs_once() {
    let server = TestServer::start().await;
    let (mut watcher, _) = ChatClient::connect(server.addr, "/ws?user=watcher&channel=p").await;
    watcher.recv_type("subscribed").await;
    let (mut tab1, _) = ChatClient::connect(server.addr, "/ws?user=carol&channel=p").await;
    tab1.recv_type("subscribed").await;
    assert_eq!(watcher.recv_type("join").await["username"], "carol");
    let (mut tab2, _) = ChatClient::connect(server.addr, "/ws?user=carol&channel=p").await;
    assert_eq!(
        tab2.recv_type("subscribed").await["presence"],
        json!(["carol", "watcher"])
    );
    let (_, presence) = get_json(server.addr, "/api/channels/p/presence").await;
    assert_eq!(presence, json!({"channel":"p","users":["carol","watcher"]}));

    drop(tab1);
    watcher
        .send(json!({"type":"presence","channel":"p","id":9}))
        .await;
    let reply = watcher.recv().await;
    assert_eq!(
        reply["type"], "presence",
        "no leave while a tab remains: {reply}"
    );
    assert_eq!(reply["users"], json!(["carol", "watcher"]));
    drop(tab2);
    let leave = watcher.recv().await;
    assert_eq!(
        (leave["type"].as_str(), leave["username"].as_str()),
        (Some("leave"), Some("carol"))
    );
}

#[tokio::test]
async fn plain_text_is_published_to_the_channel_named_at_connect() {
    let server = TestServer::start().await;
    let (mut client, _) = ChatClient::connect(server.addr, "/ws/dave?channel=lobby").await;
    client.recv_type("subscribed").await;
    client.send_text("hello, plainly").await;
    let message = client.recv_type("message").await;
    assert_eq!(
        (message["msg"].as_str(), message["username"].as_str()),
        (Some("hello, plainly"), Some("dave"))
    );

    let (mut loner, _) = ChatClient::connect(server.addr, "/ws/erin").await;
    loner.send_text("anyone?").await;
    assert_eq!(loner.recv().await["code"], "no_default_channel");
}

#[tokio::test]
async fn bad_requests_get_documented_errors_and_the_connection_stays() {
    let server = TestServer::with_config(|c| c.max_msg_bytes = 16).await;
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=u").await;
    let cases = [
        (
            json!({"type":"subscribe","channel":"bad name","id":1}).to_string(),
            "invalid_channel",
        ),
        (
            json!({"type":"subscribe","channel":"x".repeat(129),"id":2}).to_string(),
            "invalid_channel",
        ),
        (
            json!({"type":"publish","channel":"c","msg":"x".repeat(17),"id":3}).to_string(),
            "message_too_large",
        ),
        (json!({"type":"shout","id":4}).to_string(), "unknown_type"),
        ("{\"type\":\"publish\",".to_owned(), "malformed_json"),
        (
            json!({"type":"publish","channel":"c","id":6}).to_string(),
            "bad_request",
        ),
        (
            json!({"type":"history","channel":"c","limit":1001,"id":7}).to_string(),
            "invalid_limit",
        ),
        (
            json!({"type":"unsubscribe","channel":"c","id":8}).to_string(),
            "not_subscribed",
        ),
    ];
    for (request, code) in cases {
        client.send_text(&request).await;
        let error = client.recv().await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some(code)),
            "{request}"
        );
        assert!(error["reason"].as_str().is_some_and(|r| !r.is_empty()));
        if code != "malformed_json" {
            assert!(error["id"].is_number(), "{error}");
        }
    }
    client.send(json!({"type":"ping","id":"still-here"})).await;
    assert_eq!(
        client.recv().await,
        json!({"type":"pong","id":"still-here"})
    );
    client.send(json!({"type":"subscribe","channel":"c"})).await;
    client.recv_type("subscribed").await;
    client
        .send(json!({"type":"subscribe","channel":"c","id":"again"}))
        .await;
    assert_eq!(
        client.recv_type("error").await["code"],
        "already_subscribed"
    );
}

#[tokio::test]
async fn history_requests_return_stored_messages_ascending() {
    let server = TestServer::with_config(fast_publishers).await;
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=h").await;
    for i in 1..=5 {
        client.publish_acked("h", &format!("m{i}")).await;
    }
    client
        .send(json!({"type":"history","channel":"h","since":2,"limit":2,"id":"q"}))
        .await;
    let page = client.recv_type("history").await;
    assert_eq!(page["id"], "q");
    let offsets = offsets(&page);
    assert_eq!(offsets, [3, 4]);
    client
        .send(json!({"type":"history","channel":"h","limit":2}))
        .await;
    let latest = client.recv_type("history").await;
    let msgs = texts(&latest);
    assert_eq!(msgs, ["m4", "m5"]);
}

#[tokio::test]
async fn binary_frames_are_closed_with_1003_and_publish_floods_are_refused_then_closed_with_1008() {
    let server = TestServer::with_config(|c| {
        c.publish_rate = 1.0;
        c.publish_burst = 3.0;
    })
    .await;
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=b").await;
    use futures_util::SinkExt;
    client
        .ws
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            1, 2, 3,
        ]))
        .await
        .unwrap();
    assert_eq!(u16::from(client.recv_close().await.unwrap().code), 1003);

    // Over the rate, a publish is answered, not stored, and the connection
    // stays: up to a burst's worth (3) of refusals in a row.
    let (mut flooder, _) = ChatClient::connect(server.addr, "/ws?user=f").await;
    for i in 0..6 {
        flooder
            .send(json!({"type":"publish","channel":"f","msg":format!("{i}"),"id":i}))
            .await;
    }
    let mut acked = Vec::new();
    for _ in 0..6 {
        let answer = flooder.recv().await;
        match answer["type"].as_str() {
            Some("ack") => acked.push(answer["id"].as_u64().unwrap()),
            Some("error") => {
                assert_eq!(answer["code"], "rate_limited", "{answer}");
                let retry = answer["retry_after_ms"].as_u64().unwrap();
                assert!((1..=1000).contains(&retry), "{answer}");
            }
            _ => panic!("unexpected {answer}"),
        }
    }
    assert_eq!(acked, [0, 1, 2]);
    let (status, history) = get_json(server.addr, "/api/channels/f/messages").await;
    assert_eq!(status, 200);
    assert_eq!(history["messages"].as_array().unwrap().len(), 3);
    flooder.send(json!({"type":"ping","id":"alive"})).await;
    assert_eq!(flooder.recv_type("pong").await["id"], "alive");

    // Going on regardless closes it.
    flooder
        .send(json!({"type":"publish","channel":"f","msg":"again"}))
        .await;
    let close = flooder.recv_close().await.unwrap();
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("rate limit"), "{}", close.reason);
}

#[tokio::test]
async fn a_stalled_subscriber_is_disconnected_and_the_others_keep_receiving() {
    let server = TestServer::with_config(|c| {
        fast_publishers(c);
        c.max_queued_bytes = 1 << 20;
        c.close_timeout = Duration::from_millis(500);
    })
    .await;
    // Subscribes, then never reads again.
    let small = RawClient::connect_small_buffer(server.addr).await;
    let (mut stalled, _) = RawClient::upgrade_on(small, "/ws?user=stalled&channel=busy", "").await;
    let (mut healthy, _) = ChatClient::connect(server.addr, "/ws?user=healthy&channel=busy").await;
    healthy.recv_type("subscribed").await;
    let (mut publisher, _) = ChatClient::connect(server.addr, "/ws?user=pub").await;
    // More than the stalled socket's kernel buffers and outbox can hold.
    let body = "z".repeat(4000);
    let total = 5000;
    let publish = tokio::spawn(async move {
        for i in 0..total {
            publisher
                .send(json!({"type":"publish","channel":"busy","msg":format!("{i}:{body}")}))
                .await;
            // A window of 100 unacknowledged messages keeps the healthy
            // subscriber's queue well under the limit.
            if i % 100 == 99 {
                for _ in 0..100 {
                    publisher.recv_type("ack").await;
                }
            }
        }
        publisher
    });
    for expected in 1..=total {
        let m = healthy.recv_type("message").await;
        assert_eq!(m["offset"], expected);
    }
    publish.await.unwrap();
    // The stalled connection was dropped from the channel...
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, channels) = get_json(server.addr, "/api/channels").await;
        let busy = channels["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == "busy")
            .cloned();
        if busy.as_ref().map(|c| c["subscribers"].clone()) == Some(json!(1)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still subscribed: {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and its socket ends: reading drains what was sent, then EOF.
    let mut sink = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(WAIT, async {
        while stalled.stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(drained.is_ok(), "the stalled connection was never closed");
}

#[tokio::test]
async fn a_slow_reader_that_pings_gets_every_broadcast_whole_and_every_pong() {
    let server = TestServer::with_config(|c| {
        fast_publishers(c);
        c.max_queued_bytes = 32 << 20;
    })
    .await;
    let small = RawClient::connect_small_buffer(server.addr).await;
    let (mut reader, _) = RawClient::upgrade_on(small, "/ws?user=slow&channel=big", "").await;
    while text_json(&reader.read_frame().await.unwrap())["type"] != "subscribed" {}
    let (mut publisher, _) = ChatClient::connect(server.addr, "/ws?user=pub").await;
    let body = |i: usize| format!("{i}:{}", "y".repeat(6_000 + i % 7 * 5_000));
    let total = 600;
    // While the reader does not read, broadcasts fill the socket's buffers
    // (their send side grows to 4 MiB) and are cut short mid-frame.
    let stalled = 300;
    for i in 0..stalled {
        publisher
            .send(json!({"type":"publish","channel":"big","msg":body(i)}))
            .await;
        publisher.recv_type("ack").await;
    }
    let publishing = tokio::spawn(async move {
        for i in stalled..total {
            publisher
                .send(json!({"type":"publish","channel":"big","msg":body(i)}))
                .await;
            if i % 20 == 19 {
                for _ in 0..20 {
                    publisher.recv_type("ack").await;
                }
            }
        }
    });
    // A ping after every frame: the pongs come from the connection's own
    // task while broadcasts are written around them, and must land between
    // frames, never inside one.
    let (mut messages, mut pongs, mut pings) = (0, Vec::new(), 0);
    while messages < total || pongs.len() < pings {
        if messages < total {
            reader
                .send_frame(0x89, format!("ping {pings}").as_bytes(), true)
                .await;
            pings += 1;
        }
        let frame = reader.read_frame().await.expect("still open");
        match frame.opcode() {
            0xA => pongs.push(String::from_utf8(frame.payload).unwrap()),
            0x1 => {
                let m = text_json(&frame);
                assert_eq!(m["type"], "message", "{m}");
                assert_eq!(m["offset"], messages + 1);
                assert_eq!(m["msg"].as_str(), Some(body(messages).as_str()));
                messages += 1;
            }
            opcode => panic!("unexpected opcode {opcode}"),
        }
    }
    publishing.await.unwrap();
    let sent: Vec<String> = (0..pings).map(|i| format!("ping {i}")).collect();
    assert_eq!(pongs, sent);
}

fn text_json(frame: &RawFrame) -> Value {
    assert_eq!(frame.opcode(), 0x1, "a text frame");
    serde_json::from_slice(&frame.payload).expect("JSON")
}

#[tokio::test]
async fn the_http_api_serves_history_channels_and_presence() {
    let server = TestServer::with_config(fast_publishers).await;
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=api&channel=news").await;
    client.recv_type("subscribed").await;
    for i in 1..=4 {
        client.publish_acked("news", &format!("n{i}")).await;
    }
    let (status, page) = get_json(server.addr, "/api/channels/news/messages?since=1&limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(page["channel"], "news");
    assert!(page["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    let msgs = texts(&page);
    assert_eq!(msgs, ["n2", "n3"]);
    let (_, latest) = get_json(server.addr, "/api/channels/news/messages").await;
    assert_eq!(latest["messages"].as_array().unwrap().len(), 4);
    assert_eq!(latest["messages"][0]["username"], "api");

    let (status, channels) = get_json(server.addr, "/api/channels").await;
    assert_eq!(status, 200);
    assert_eq!(
        channels,
        json!({"channels":[{"channel":"news","subscribers":1,"last_offset":4}]})
    );

    for (path, code) in [
        ("/api/channels/bad%20name/messages", "invalid_channel"),
        ("/api/channels/news/messages?limit=0", "invalid_limit"),
        ("/api/channels/news/messages?limit=5000", "invalid_limit"),
        ("/api/channels/news/messages?since=abc", "bad_request"),
        ("/api/channels/bad%20name/presence", "invalid_channel"),
    ] {
        let (status, body): (u16, Value) = get_json(server.addr, path).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn retention_trims_old_history_in_the_background() {
    let server = TestServer::with_config(|c| {
        fast_publishers(c);
        c.history_max_count = 5;
        c.retention_interval = Duration::from_millis(100);
    })
    .await;
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=r").await;
    for i in 1..=12 {
        client.publish_acked("trim", &format!("m{i}")).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, page) = get_json(server.addr, "/api/channels/trim/messages?since=0").await;
        let offsets = offsets(&page);
        if offsets == (8..=12).collect::<Vec<u64>>() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not trimmed: {offsets:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Offsets keep counting after a trim.
    client
        .send(json!({"type":"publish","channel":"trim","msg":"m13"}))
        .await;
    assert_eq!(client.recv_type("ack").await["offset"], 13);
}
