//! Engine.IO and Socket.IO at the protocol level: raw polling requests
//! (reqwest) and raw WebSocket frames (tokio-tungstenite), for what the
//! official clients never send. The official clients themselves are
//! driven by `e2e/socketio.test.mjs`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{ChatClient, TestServer, WAIT, post_message};

/// One long-polling session, spoken to by hand.
struct Polling {
    http: reqwest::Client,
    url: String,
    sid: String,
}

impl Polling {
    /// Opens a session; returns it and the packets of its first poll.
    async fn open(server: &TestServer, query: &str) -> (Polling, Vec<String>) {
        let http = reqwest::Client::new();
        let base = format!(
            "http://{}/socket.io/?EIO=4&transport=polling{query}",
            server.addr
        );
        let body = http.get(&base).send().await.unwrap().text().await.unwrap();
        let packets = split_v4(&body);
        let open: Value = serde_json::from_str(&packets[0][1..]).unwrap();
        let sid = open["sid"].as_str().unwrap().to_owned();
        let url = format!("{base}&sid={sid}");
        (Polling { http, url, sid }, packets)
    }

    async fn get(&self) -> (u16, String) {
        let response = self.http.get(&self.url).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, String) {
        let response = self.http.post(&self.url).body(body).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Polls until a packet starting with `prefix` arrives; returns it.
    async fn poll_for(&self, prefix: &str) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                let (status, body) = self.get().await;
                assert_eq!(status, 200, "{body}");
                if let Some(packet) = split_v4(&body).into_iter().find(|p| p.starts_with(prefix)) {
                    return packet;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no packet starting with {prefix}"))
    }
}

/// Publishes `msg` to `#switch` over the HTTP API.
async fn publish(server: &TestServer, msg: &str) {
    let (status, _) = post_message(
        server.addr,
        "switch",
        json!({"username": "api", "msg": msg}),
    )
    .await;
    assert_eq!(status, 201);
}

fn split_v4(payload: &str) -> Vec<String> {
    payload.split('\x1e').map(str::to_owned).collect()
}

/// The object of a main-namespace event packet `42["name",{...}]`.
fn event(packet: &str, name: &str) -> Option<Value> {
    let args: Vec<Value> = serde_json::from_str(packet.strip_prefix("42")?).ok()?;
    (args.first()? == name).then(|| args[1].clone())
}

#[tokio::test]
async fn bad_handshakes_and_unknown_sessions_get_the_protocols_answers() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let url = |query: &str| format!("http://{}/socket.io/?{query}", server.addr);
    let cases = [
        ("EIO=4&transport=polling&sid=nope", 1, "Session ID unknown"),
        ("EIO=5&transport=polling", 5, "Unsupported protocol version"),
        ("transport=polling", 5, "Unsupported protocol version"),
        ("EIO=4&transport=carrier-pigeon", 0, "Transport unknown"),
        ("EIO=4&transport=polling&j=0", 3, "Bad request"),
    ];
    for (query, code, message) in cases {
        let response = http.get(url(query)).send().await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (body["code"].as_u64(), body["message"].as_str()),
            (Some(code), Some(message)),
            "{query}"
        );
    }
    let response = http
        .post(url("EIO=4&transport=polling"))
        .body("40")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], 2);
}

#[tokio::test]
async fn a_malformed_payload_closes_its_own_session_and_no_other() {
    let server = TestServer::start().await;
    let (broken, _) = Polling::open(&server, "&user=mallory").await;
    let (healthy, _) = Polling::open(&server, "&user=alice").await;
    assert_eq!(healthy.post("40").await.0, 200);
    healthy.poll_for("40").await;

    assert_eq!(broken.post("abc").await.0, 400);
    assert_eq!(broken.get().await.0, 400, "the session is gone");
    assert_eq!(broken.post("40").await.0, 400, "a POST to a closed session");

    assert_eq!(
        healthy
            .post(r#"421["publish",{"channel":"calm","msg":"still here"}]"#)
            .await
            .0,
        200
    );
    let ack = healthy.poll_for("431").await;
    assert!(ack.contains(r#""offset":1"#), "{ack}");
}

#[tokio::test]
async fn an_oversize_post_gets_413_and_the_session_goes_on() {
    let server = TestServer::with_config(|c| c.max_message_size = 1000).await;
    let (session, packets) = Polling::open(&server, "").await;
    assert!(packets[0].contains(r#""maxPayload":1000"#), "{packets:?}");
    let (status, _) = session.post(format!("4{}", "x".repeat(2000))).await;
    assert_eq!(status, 413);
    assert_eq!(session.post("40").await.0, 200);
    let connected = session.poll_for("40").await;
    assert!(connected.starts_with(r#"40{"sid":"#), "{connected}");
}

#[tokio::test]
async fn a_second_poll_closes_the_session_and_the_first_is_told() {
    let server = TestServer::start().await;
    let (session, _) = Polling::open(&server, "").await;
    let (other, _) = Polling::open(&server, "").await;
    let first = {
        let http = session.http.clone();
        let url = session.url.clone();
        tokio::spawn(async move { http.get(url).send().await.unwrap().text().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = session.get().await;
    assert_eq!(status, 400);
    assert_eq!(first.await.unwrap(), "1", "the waiting poll gets close");
    assert_eq!(session.get().await.0, 400);
    // Another session is not disturbed.
    assert_eq!(other.post("40").await.0, 200);
    other.poll_for("40").await;
}

#[tokio::test]
async fn an_unknown_namespace_is_refused_and_the_session_stays() {
    let server = TestServer::start().await;
    let (session, _) = Polling::open(&server, "").await;
    assert_eq!(session.post("40/admin,").await.0, 200);
    let refused = session.poll_for("44/admin,").await;
    let body: Value = serde_json::from_str(refused.strip_prefix("44/admin,").unwrap()).unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("does not exist"),
        "{refused}"
    );
    assert_eq!(session.post("40").await.0, 200);
    session.poll_for("40{").await;
}

#[tokio::test]
async fn v3_polling_counts_lengths_in_utf16_code_units() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let base = format!(
        "http://{}/socket.io/?EIO=3&transport=polling&user=zoe&channel=unicode",
        server.addr
    );
    let mut first = http.get(&base).send().await.unwrap().text().await.unwrap();
    // The open packet (no maxPayload in v3), then the main namespace's
    // connect, which v3 sends unasked, once the channel's subscription has
    // its start (in this poll or the next).
    let open_len = first.split(':').next().unwrap().to_owned();
    let open = first[open_len.len() + 1..][..open_len.parse().unwrap()].to_owned();
    assert!(!open.contains("maxPayload"), "{open}");
    let sid = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{base}&sid={sid}");
    if !first.ends_with("2:40") {
        first = http.get(&url).send().await.unwrap().text().await.unwrap();
    }
    assert!(first.ends_with("2:40"), "{first}");

    let text = "é ✓ 😀";
    let packet = format!(r#"427["publish",{{"channel":"unicode","msg":"{text}"}}]"#);
    let units = packet.encode_utf16().count();
    assert_ne!(
        units,
        packet.len(),
        "the lengths differ in bytes and in units"
    );
    let body = format!("{units}:{packet}");
    let status = http.post(&url).body(body).send().await.unwrap().status();
    assert_eq!(status, 200);

    let mut seen = String::new();
    tokio::time::timeout(WAIT, async {
        while !(seen.contains("437[") && seen.contains(text)) {
            seen += &http.get(&url).send().await.unwrap().text().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no ack and message in {seen:?}"));
    // Every packet's length prefix counts UTF-16 code units.
    let mut rest = seen.as_str();
    while !rest.is_empty() {
        let (len, tail) = rest.split_once(':').unwrap();
        let len: usize = len.parse().unwrap();
        let mut units = 0;
        let end = tail
            .char_indices()
            .find_map(|(i, c)| {
                let at = (units == len).then_some(i);
                units += c.len_utf16();
                at
            })
            .unwrap_or(tail.len());
        let packet = &tail[..end];
        assert_eq!(packet.encode_utf16().count(), len, "{packet}");
        if let Some(message) = event(packet, "message") {
            assert_eq!(message["msg"], text);
            assert_eq!(message["username"], "zoe");
        }
        rest = &tail[end..];
    }
}

#[tokio::test]
async fn the_upgrade_to_websocket_loses_and_repeats_nothing() {
    let server = TestServer::start().await;
    let (session, _) = Polling::open(&server, "&user=ulla&channel=switch").await;
    assert_eq!(session.post("40").await.0, 200);
    session.poll_for("40").await;
    // Wait until the subscription is live: the first message arrives.
    publish(&server, "m1").await;
    let mut offsets = Vec::new();
    let first = session.poll_for("42").await;
    offsets.push(
        event(&first, "message").unwrap()["offset"]
            .as_u64()
            .unwrap(),
    );

    for i in 2..=10 {
        publish(&server, &format!("m{i}")).await;
    }
    // Some are taken by polls, the rest wait for the WebSocket.
    let (_, body) = session.get().await;
    offsets.extend(
        split_v4(&body)
            .iter()
            .filter_map(|p| event(p, "message"))
            .map(|m| m["offset"].as_u64().unwrap()),
    );

    let ws_url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        server.addr, session.sid
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    ws.send(Message::text("2probe")).await.unwrap();
    let probe = ws.next().await.unwrap().unwrap();
    assert_eq!(probe.into_text().unwrap().as_str(), "3probe");
    let (status, body) = session.get().await;
    assert_eq!(
        (status, body.as_str()),
        (200, "6"),
        "polling is told to stop"
    );
    for i in 11..=20 {
        publish(&server, &format!("m{i}")).await;
    }
    ws.send(Message::text("5")).await.unwrap();
    assert_eq!(session.get().await.0, 400, "polls end with the upgrade");
    tokio::time::timeout(WAIT, async {
        while offsets.len() < 20 {
            let frame = ws.next().await.unwrap().unwrap();
            if let Some(message) = event(frame.to_text().unwrap(), "message") {
                offsets.push(message["offset"].as_u64().unwrap());
            }
        }
    })
    .await
    .expect("every message arrives");
    assert_eq!(offsets, (1..=20).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_malformed_packet_over_websocket_closes_that_session() {
    let server = TestServer::start().await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let open = ws.next().await.unwrap().unwrap();
    assert!(open.to_text().unwrap().starts_with("0{"));
    ws.send(Message::text("42{}")).await.unwrap();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1008));
}

#[tokio::test]
async fn a_session_that_stops_answering_pings_expires_and_leaves_presence() {
    let server = TestServer::with_config(|c| {
        c.ping_interval = Duration::from_millis(200);
        c.ping_timeout = Duration::from_millis(100);
    })
    .await;
    let (ghost, _) = Polling::open(&server, "&user=ghost&channel=haunted").await;
    assert_eq!(ghost.post("40").await.0, 200);
    ghost.poll_for("40").await;
    let (mut bob, _) = ChatClient::connect(server.addr, "/ws?user=bob").await;
    let subscribed = bob
        .subscribe(json!({"type": "subscribe", "channel": "haunted"}))
        .await;
    assert_eq!(subscribed["presence"], json!(["bob", "ghost"]));
    // The ghost neither polls nor pongs from here on.
    let leave = tokio::time::timeout(WAIT, bob.recv_type("leave"))
        .await
        .unwrap();
    assert_eq!(leave["username"], "ghost");
    assert_eq!(ghost.get().await.0, 400);
}

#[tokio::test]
async fn origins_the_server_does_not_allow_are_refused_and_allowed_ones_get_cors() {
    let server = TestServer::with_config(|c| {
        c.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/socket.io/?EIO=4&transport=polling", server.addr);
    let open = |origin: &str| http.get(&url).header("Origin", origin).send();

    let refused = open("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"]["code"],
        "origin_not_allowed"
    );

    for origin in ["https://app.example", &format!("http://{}", server.addr)] {
        let allowed = open(origin).await.unwrap();
        assert_eq!(allowed.status(), 200, "{origin}");
        let headers = allowed.headers();
        assert_eq!(headers["access-control-allow-origin"], origin);
        assert_eq!(headers["access-control-allow-credentials"], "true");
    }
    // No Origin: not a browser, allowed, no CORS headers.
    let plain = http.get(&url).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("access-control-allow-origin").is_none());

    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "content-type"
    );

    // Without --socketio-client there is no browser client to serve.
    let client = http
        .get(format!("http://{}/socket.io/socket.io.js", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(client.status(), 404);
    let body: Value = client.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--socketio-client")
    );
}
