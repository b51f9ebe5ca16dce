//! `GET /sse` and `POST /api/channels/{channel}/messages`, over reqwest, with
//! an event-stream parser written from the HTML standard's rules.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{ChatClient, RawClient, TestServer, WAIT, get_json, post_message};

/// One dispatched event, as `EventSource` would see it.
#[derive(Debug, Clone)]
struct Event {
    /// `event:` (default `message`).
    name: String,
    data: String,
    /// The stream's last event id when this event was dispatched.
    last_event_id: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// An event-stream reader: splits lines on CR, LF or CRLF; `field: value`
/// with one optional space removed; `:` lines are comments; a blank line
/// dispatches the event if it has data; `id` updates the last event id
/// even for blocks that dispatch nothing.
struct SseClient {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
    last_event_id: String,
    retry: Option<u64>,
    comments: Vec<String>,
    pending: VecDeque<Event>,
    /// The ids of blocks that set an id and dispatched nothing.
    id_only_blocks: VecDeque<String>,
    // The event being built.
    name: String,
    data: Vec<String>,
    id_in_block: bool,
}

impl SseClient {
    async fn connect(addr: SocketAddr, query: &str) -> SseClient {
        SseClient::connect_with(addr, query, None).await
    }

    async fn connect_with(addr: SocketAddr, query: &str, last_event_id: Option<&str>) -> SseClient {
        let mut request = reqwest::Client::new().get(format!("http://{addr}/sse?{query}"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        SseClient {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
            last_event_id: String::new(),
            retry: None,
            comments: Vec::new(),
            pending: VecDeque::new(),
            id_only_blocks: VecDeque::new(),
            name: String::new(),
            data: Vec::new(),
            id_in_block: false,
        }
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
    }

    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("no event in time");
            match chunk {
                Some(Ok(bytes)) => self.feed(&bytes),
                Some(Err(e)) => panic!("stream error: {e}"),
                None => return None,
            }
        }
    }

    async fn expect(&mut self) -> Event {
        self.next().await.expect("the stream ended")
    }

    /// The next event named `name`, skipping others.
    async fn next_named(&mut self, name: &str) -> Event {
        loop {
            let event = self.expect().await;
            if event.name == name {
                return event;
            }
        }
    }

    /// The next comment line (`: …`), reading past nothing else: no event
    /// may come first.
    async fn next_comment(&mut self) -> String {
        let seen = self.comments.len();
        while self.comments.len() == seen {
            assert!(self.pending.is_empty(), "an event came first");
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("no comment in time")
                .expect("the stream ended")
                .expect("stream error");
            self.feed(&chunk);
        }
        self.comments[seen].clone()
    }

    /// The id of the next block that sets one and dispatches nothing,
    /// reading past (and keeping) any events before it.
    async fn next_id_only_block(&mut self) -> String {
        loop {
            if let Some(id) = self.id_only_blocks.pop_front() {
                return id;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("no id-only block in time")
                .expect("the stream ended")
                .expect("stream error");
            self.feed(&chunk);
        }
    }

    /// The next `count` message events.
    async fn messages(&mut self, count: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            events.push(self.next_named("message").await);
        }
        events
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line = String::from_utf8(self.buffer[..end].to_vec()).unwrap();
            let crlf = self.buffer[end] == b'\r' && self.buffer.get(end + 1) == Some(&b'\n');
            if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() {
                break; // might be a CRLF split across chunks
            }
            self.buffer.drain(..end + if crlf { 2 } else { 1 });
            self.line(&line);
        }
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            if !self.data.is_empty() {
                let name = std::mem::take(&mut self.name);
                self.pending.push_back(Event {
                    name: if name.is_empty() {
                        "message".into()
                    } else {
                        name
                    },
                    data: self.data.join("\n"),
                    last_event_id: self.last_event_id.clone(),
                });
            } else if self.id_in_block {
                self.id_only_blocks.push_back(self.last_event_id.clone());
            }
            self.name.clear();
            self.data.clear();
            self.id_in_block = false;
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.comments.push(comment.trim().to_owned());
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            "id" if !value.contains('\0') => {
                self.last_event_id = value.to_owned();
                self.id_in_block = true;
            }
            "retry" => self.retry = value.parse().ok(),
            _ => {}
        }
    }
}

async fn publish(addr: SocketAddr, channel: &str, msg: &str) -> u64 {
    let (status, body) = post_message(addr, channel, json!({"username":"api","msg":msg})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["offset"].as_u64().unwrap()
}

fn offsets(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.json()["offset"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_stream_has_event_stream_headers_retry_and_heartbeats() {
    let server = TestServer::with_config(|c| {
        c.sse_retry = Duration::from_millis(1500);
        c.sse_heartbeat = Duration::from_millis(200);
    })
    .await;
    let mut stream = SseClient::connect(server.addr, "channel=lobby").await;
    assert_eq!(stream.status, StatusCode::OK);
    assert_eq!(stream.header("content-type"), "text/event-stream");
    assert_eq!(stream.header("cache-control"), "no-cache");
    assert_eq!(stream.header("x-accel-buffering"), "no");
    let presence = stream.next_named("presence").await;
    assert_eq!(stream.retry, Some(1500));
    assert_eq!(
        presence.json(),
        json!({"type":"presence","channel":"lobby","users":[],"offset":0})
    );
    // The starting position is the stream's last event id before any message.
    assert_eq!(presence.last_event_id, "0");
    // Silence is filled with `: ping` comments, and the stream goes on.
    publish(server.addr, "lobby", "first").await;
    let first = stream.messages(1).await;
    assert_eq!(stream.next_comment().await, "ping");
    publish(server.addr, "lobby", "second").await;
    let second = stream.messages(1).await;
    assert_eq!(offsets(&first), [1]);
    assert_eq!(offsets(&second), [2]);
}

#[tokio::test]
async fn no_heartbeat_while_events_flow_and_one_after_a_silence() {
    let heartbeat = Duration::from_millis(400);
    let server = TestServer::with_config(|c| c.sse_heartbeat = heartbeat).await;
    let mut stream = SseClient::connect(server.addr, "channel=busy").await;
    stream.next_named("presence").await;
    // Three heartbeat intervals of events 50 ms apart: never a silence.
    let started = Instant::now();
    let mut published = 0;
    while started.elapsed() < 3 * heartbeat {
        publish(server.addr, "busy", "tick").await;
        published += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stream.messages(published).await;
    assert!(stream.comments.is_empty(), "{:?}", stream.comments);
    // Then silence: a heartbeat about one interval after the last event.
    let silent_from = Instant::now();
    assert_eq!(stream.next_comment().await, "ping");
    let silence = silent_from.elapsed();
    assert!(silence < 3 * heartbeat, "{silence:?}");
}

#[tokio::test]
async fn an_http_publish_reaches_websocket_and_sse_subscribers_alike() {
    let server = TestServer::start().await;
    let (mut ws, _) = ChatClient::connect(server.addr, "/ws?user=wendy").await;
    ws.subscribe(json!({"type":"subscribe","channel":"news"}))
        .await;
    let mut stream = SseClient::connect(server.addr, "channel=news").await;
    stream.next_named("presence").await;

    let (status, body) = post_message(
        server.addr,
        "news",
        json!({"username":"backend","msg":"deploy done"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["channel"], "news");
    assert_eq!(body["offset"], 1);
    assert!(body["time"].as_str().unwrap().ends_with('Z'));

    let over_ws = ws.recv_type("message").await;
    let over_sse = stream.next_named("message").await;
    assert_eq!(
        over_sse.json(),
        over_ws,
        "the same object on both transports"
    );
    assert_eq!(over_sse.last_event_id, "1");
    assert_eq!(over_ws["username"], "backend");
    assert_eq!(over_ws["msg"], "deploy done");
    assert_eq!(over_ws["time"], body["time"]);

    // And what a WebSocket client publishes reaches the stream.
    let offset = ws.publish_acked("news", "from the socket").await;
    let event = stream.next_named("message").await;
    assert_eq!(event.json()["offset"], offset);
    assert_eq!(event.json()["username"], "wendy");
}

#[tokio::test]
async fn events_arrive_in_offset_order() {
    let server = TestServer::with_config(|c| c.publish_rate = 10_000.0).await;
    let mut stream = SseClient::connect(server.addr, "channel=ticks").await;
    stream.next_named("presence").await;
    let (mut ws, _) = ChatClient::connect(server.addr, "/ws?user=ticker").await;
    for i in 0..150 {
        ws.send(json!({"type":"publish","channel":"ticks","msg":format!("t{i}")}))
            .await;
    }
    let events = stream.messages(150).await;
    assert_eq!(offsets(&events), (1..=150).collect::<Vec<_>>());
    let ids: Vec<_> = events.iter().map(|e| e.last_event_id.clone()).collect();
    assert_eq!(ids, (1..=150).map(|o| o.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn last_event_id_resumes_with_no_gap_and_no_duplicate() {
    let server = TestServer::start().await;
    for i in 1..=3 {
        publish(server.addr, "feed", &format!("old {i}")).await;
    }
    let mut stream = SseClient::connect(server.addr, "channel=feed").await;
    stream.next_named("presence").await;
    for i in 1..=4 {
        publish(server.addr, "feed", &format!("seen {i}")).await;
    }
    let seen = stream.messages(4).await;
    assert_eq!(offsets(&seen), [4, 5, 6, 7], "a new stream starts now");
    let last = seen.last().unwrap().last_event_id.clone();
    drop(stream);

    for i in 1..=5 {
        publish(server.addr, "feed", &format!("missed {i}")).await;
    }
    let mut resumed =
        SseClient::connect_with(server.addr, "channel=feed&since=1", Some(&last)).await;
    let replayed = resumed.messages(5).await;
    assert_eq!(
        offsets(&replayed),
        [8, 9, 10, 11, 12],
        "Last-Event-ID wins over since"
    );
    publish(server.addr, "feed", "live").await;
    let live = resumed.next_named("message").await;
    assert_eq!(live.json()["offset"], 13);
    assert_eq!(live.json()["msg"], "live");

    // `?since=` alone resumes the same way.
    let mut from_query = SseClient::connect(server.addr, "channel=feed&since=11").await;
    assert_eq!(offsets(&from_query.messages(2).await), [12, 13]);
}

#[tokio::test]
async fn a_stream_of_several_channels_resumes_every_channel() {
    let server = TestServer::start().await;
    publish(server.addr, "alpha", "a1").await;
    let mut stream = SseClient::connect(server.addr, "channel=alpha&channel=beta").await;
    assert_eq!(
        stream.next_named("presence").await.last_event_id,
        "alpha:1,beta:0"
    );
    // Both channels live (each has its presence) before what follows, whose
    // order across the two channels is then the order of publishing.
    stream.next_named("presence").await;
    publish(server.addr, "beta", "b1").await;
    publish(server.addr, "alpha", "a2").await;
    let events = stream.messages(2).await;
    assert_eq!(events[0].json()["channel"], "beta");
    assert_eq!(
        events[0].last_event_id, "beta:1",
        "message ids are CHANNEL:OFFSET"
    );
    assert_eq!(events[1].last_event_id, "alpha:2");
    // After each message, an id-only block records every channel.
    assert_eq!(stream.next_id_only_block().await, "alpha:1,beta:0");
    assert_eq!(stream.next_id_only_block().await, "alpha:1,beta:1");
    assert_eq!(stream.next_id_only_block().await, "alpha:2,beta:1");
    publish(server.addr, "beta", "b2").await;
    let b2 = stream.next_named("message").await;
    assert_eq!(b2.last_event_id, "beta:2");
    drop(stream);

    publish(server.addr, "alpha", "a3").await;
    publish(server.addr, "beta", "b3").await;
    let cursor = "alpha:2,beta:2";
    let mut resumed =
        SseClient::connect_with(server.addr, "channel=alpha&channel=beta", Some(cursor)).await;
    let replayed = resumed.messages(2).await;
    let got: Vec<_> = replayed
        .iter()
        .map(|e| {
            (
                e.json()["channel"].as_str().unwrap().to_owned(),
                e.json()["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("alpha".to_owned(), 3), ("beta".to_owned(), 3)]);
}

#[tokio::test]
async fn the_id_only_block_carries_every_channel_position() {
    let server = TestServer::start().await;
    let mut stream = SseClient::connect(server.addr, "channel=x&channel=y").await;
    // The stream opens with the position of every channel.
    assert_eq!(stream.next_id_only_block().await, "x:0,y:0");
    publish(server.addr, "x", "one").await;
    let x = stream.next_named("message").await;
    assert_eq!(x.last_event_id, "x:1");
    // Each message is followed by an id-only block: every channel's position.
    assert_eq!(stream.next_id_only_block().await, "x:1,y:0");
    publish(server.addr, "y", "two").await;
    let y = stream.next_named("message").await;
    assert_eq!(y.last_event_id, "y:1");
    let kept = stream.next_id_only_block().await;
    assert_eq!(kept, "x:1,y:1");
    assert_eq!(
        stream.last_event_id, kept,
        "what EventSource would send back"
    );
    drop(stream);
    // Resuming from the id the stream left behind gets exactly what came since.
    publish(server.addr, "x", "three").await;
    publish(server.addr, "y", "four").await;
    let mut resumed =
        SseClient::connect_with(server.addr, "channel=x&channel=y", Some(&kept)).await;
    let events = resumed.messages(2).await;
    let seen: Vec<(Value, Value)> = events
        .iter()
        .map(|e| (e.json()["channel"].clone(), e.json()["offset"].clone()))
        .collect();
    assert_eq!(seen, [(json!("x"), json!(2)), (json!("y"), json!(2))]);
}

#[tokio::test]
async fn a_resume_point_older_than_history_gets_a_reset_then_what_is_kept() {
    let server = TestServer::with_config(|c| {
        c.history_max_count = 5;
        c.retention_interval = Duration::from_millis(50);
    })
    .await;
    for i in 1..=20 {
        publish(server.addr, "short", &format!("m{i}")).await;
    }
    // Wait for retention to trim to the newest five.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, page) = get_json(server.addr, "/api/channels/short/messages?since=0").await;
        if page["messages"][0]["offset"] == 16 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut stream = SseClient::connect(server.addr, "channel=short&since=3").await;
    let reset = stream.next_named("reset").await;
    assert_eq!(
        reset.json(),
        json!({"type":"reset","channel":"short","since":3,"first_offset":16,"last_offset":20,
               "epoch":reset.json()["epoch"].clone()})
    );
    assert_eq!(offsets(&stream.messages(5).await), [16, 17, 18, 19, 20]);

    // Within history: no reset.
    let mut recent = SseClient::connect(server.addr, "channel=short&since=17").await;
    let first = recent.next().await.unwrap();
    assert_eq!(first.name, "presence");
    let next = recent.next().await.unwrap();
    assert_eq!(next.name, "message");
    assert_eq!(next.json()["offset"], 18);

    // Beyond the latest offset (the channel was reset): reset, then all kept.
    let mut ahead = SseClient::connect(server.addr, "channel=short&since=99").await;
    let reset = ahead.next_named("reset").await;
    assert_eq!(reset.json()["since"], 99);
    assert_eq!(offsets(&ahead.messages(5).await), [16, 17, 18, 19, 20]);
}

#[tokio::test]
async fn a_named_stream_counts_in_presence_an_anonymous_one_does_not() {
    let server = TestServer::start().await;
    let (mut ws, _) = ChatClient::connect(server.addr, "/ws?user=wendy").await;
    ws.subscribe(json!({"type":"subscribe","channel":"room"}))
        .await;

    let anonymous = SseClient::connect(server.addr, "channel=room").await;
    let mut ann = SseClient::connect(server.addr, "channel=room&user=ann").await;
    let joined = ws.recv_type("join").await;
    assert_eq!(joined["username"], "ann", "only the named stream joins");
    let presence = ann.next_named("presence").await.json();
    assert_eq!(presence["users"], json!(["ann", "wendy"]));
    let (_, api) = get_json(server.addr, "/api/channels/room/presence").await;
    assert_eq!(api["users"], json!(["ann", "wendy"]));

    // The stream hears others come and go.
    let (mut bob, _) = ChatClient::connect(server.addr, "/ws?user=bob").await;
    bob.subscribe(json!({"type":"subscribe","channel":"room"}))
        .await;
    let join = ann.next_named("join").await;
    assert_eq!(
        join.json(),
        json!({"type":"join","channel":"room","username":"bob"})
    );
    drop(bob);
    assert_eq!(ann.next_named("leave").await.json()["username"], "bob");

    assert_eq!(ws.recv_type("leave").await["username"], "bob");
    drop(ann);
    assert_eq!(ws.recv_type("leave").await["username"], "ann");
    drop(anonymous);
}

#[tokio::test]
async fn two_hundred_streams_all_receive_a_burst_of_one_hundred() {
    let server = TestServer::with_config(|c| c.publish_rate = 10_000.0).await;
    let mut streams = Vec::new();
    for _ in 0..200 {
        streams.push(SseClient::connect(server.addr, "channel=burst").await);
    }
    for stream in &mut streams {
        stream.next_named("presence").await;
    }
    let (mut ws, _) = ChatClient::connect(server.addr, "/ws?user=burster").await;
    for i in 0..100 {
        ws.send(json!({"type":"publish","channel":"burst","msg":format!("b{i}")}))
            .await;
    }
    let received =
        futures_util::future::join_all(streams.iter_mut().map(|s| s.messages(100))).await;
    for events in received {
        assert_eq!(offsets(&events), (1..=100).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_stream_that_stops_reading_is_dropped_and_the_rest_go_on() {
    stalled_stream_is_dropped("channel=flood").await;
}

#[tokio::test]
async fn a_stream_of_several_channels_that_stops_reading_is_dropped_too() {
    stalled_stream_is_dropped("channel=flood&channel=quiet").await;
}

/// A stream (`query`, which includes `channel=flood`) whose client never
/// reads is closed as slow and its connection dropped, while a stream that
/// reads gets every message.
async fn stalled_stream_is_dropped(query: &str) {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::with_config(|c| {
        c.max_queued_bytes = 256 * 1024;
        c.close_timeout = Duration::from_millis(200);
        c.publish_rate = 10_000.0;
    })
    .await;
    // A client with a tiny receive buffer that never reads its response.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr).await.unwrap();
    stalled
        .write_all(format!("GET /sse?{query} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut healthy = SseClient::connect(server.addr, "channel=flood").await;
    healthy.next_named("presence").await;
    let subscribers = || async {
        let (_, list) = get_json(server.addr, "/api/channels").await;
        list["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == "flood")
            .map_or(0, |c| c["subscribers"].as_u64().unwrap())
    };
    assert_eq!(subscribers().await, 2);

    let (mut ws, _) = ChatClient::connect(server.addr, "/ws?user=flooder").await;
    // Paced by acks, so a reader that keeps reading keeps up; the stalled
    // one fills its socket, the server's buffers and then its outbox.
    let big = "x".repeat(16_000);
    for offset in 1..=400 {
        assert_eq!(ws.publish_acked("flood", &big).await, offset);
        let event = healthy.next_named("message").await;
        assert_eq!(event.json()["offset"], offset);
    }

    let deadline = tokio::time::Instant::now() + WAIT;
    while subscribers().await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled stream was kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its connection is gone too: reading drains what was sent, then ends.
    let mut sink = Vec::new();
    let drained = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut stalled, &mut sink),
    )
    .await;
    assert!(drained.is_ok(), "the server kept the connection open");
}

#[tokio::test]
async fn bad_stream_requests_get_json_errors() {
    let server = TestServer::start().await;
    // Past --max-subscriptions (100 by default).
    let too_many: Vec<String> = (0..101).map(|i| format!("channel=c{i}")).collect();
    let too_many = too_many.join("&");
    for (query, last_id, code) in [
        (too_many.as_str(), None, "too_many_subscriptions"),
        ("", None, "missing_channel"),
        ("channel=bad%20name", None, "invalid_channel"),
        ("channel=a&user=%20padded", None, "invalid_username"),
        ("channel=a&since=ten", None, "invalid_event_id"),
        ("channel=a", Some("a:b:c"), "invalid_event_id"),
        ("channel=a&chanel=b", None, "bad_request"),
    ] {
        let stream = SseClient::connect_with(server.addr, query, last_id).await;
        assert_eq!(stream.status, StatusCode::BAD_REQUEST, "{query}");
        let body: Value =
            serde_json::from_slice(&stream.body.map(|c| c.unwrap().to_vec()).concat().await)
                .unwrap();
        assert_eq!(body["error"]["code"], code, "{query}");
    }
}

#[tokio::test]
async fn bad_publish_requests_get_json_errors() {
    let server = TestServer::with_config(|c| c.max_msg_bytes = 100).await;
    let url = format!("http://{}/api/channels/room/messages", server.addr);
    let client = reqwest::Client::new();
    let send = |body: String, content_type: &'static str| {
        client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let json_type = "application/json";
    for (body, content_type, status, code) in [
        (
            "{\"username\":".to_owned(),
            json_type,
            400,
            "malformed_json",
        ),
        (
            "{\"username\":\"a\"}".to_owned(),
            json_type,
            400,
            "bad_request",
        ),
        ("{\"msg\":\"hi\"}".to_owned(), json_type, 400, "bad_request"),
        (
            "{\"username\":\"a\",\"msg\":\"hi\",\"x\":1}".to_owned(),
            json_type,
            400,
            "bad_request",
        ),
        (
            "{\"username\":\"a\",\"msg\":7}".to_owned(),
            json_type,
            400,
            "bad_request",
        ),
        (
            "{\"username\":\"\",\"msg\":\"hi\"}".to_owned(),
            json_type,
            400,
            "invalid_username",
        ),
        (
            "{\"username\":\"a\",\"msg\":\"hi\"}".to_owned(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            json!({"username":"a","msg":"x".repeat(101)}).to_string(),
            json_type,
            413,
            "message_too_large",
        ),
        (
            json!({"username":"a","msg":"x".repeat(20_000)}).to_string(),
            json_type,
            413,
            "payload_too_large",
        ),
    ] {
        let response = send(body.clone(), content_type).await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            status,
            "{}",
            &body[..body.len().min(60)]
        );
        let error: Value = response.json().await.unwrap();
        assert_eq!(
            error["error"]["code"],
            code,
            "{}",
            &body[..body.len().min(60)]
        );
    }
    let (status, error) = post_message(
        server.addr,
        "no%20spaces",
        json!({"username":"a","msg":"hi"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["code"], "invalid_channel");
    // Nothing was stored by any of them.
    let (_, page) = get_json(server.addr, "/api/channels/room/messages").await;
    assert_eq!(page["messages"], json!([]));
    // A message of exactly the limit is fine.
    let (status, _) = post_message(
        server.addr,
        "room",
        json!({"username":"a","msg":"x".repeat(100)}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let mut stream = SseClient::connect(addr, "channel=bye").await;
    stream.next_named("presence").await;
    let finished = server.shut_down();
    while stream.next().await.is_some() {}
    tokio::time::timeout(WAIT, finished)
        .await
        .expect("shutdown waited for the stream")
        .unwrap()
        .unwrap();
}

/// The `id:` values in an event-stream body, in order.
fn ids_in(body: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .map(|id| id.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_stream_of_one_channel_is_well_formed_chunked_http_to_its_last_chunk() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let mut client = RawClient::connect(addr).await;
    // Another response first on the same connection: the stream's head
    // follows it.
    let listing = client
        .request(&format!(
            "GET /api/channels HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        ))
        .await;
    assert_eq!(listing.status, 200);
    let head = client
        .request(&format!(
            "GET /sse?channel=raw HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        ))
        .await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    let mut body = Vec::new();
    let has = |body: &[u8], marker: &[u8]| body.windows(marker.len()).any(|w| w == marker);
    while !has(&body, b"event: presence") {
        body.extend(client.read_chunk().await.expect("a chunk"));
    }
    // One at a time, then a burst that commits several together.
    for i in 1..=3 {
        publish(addr, "raw", &format!("one at a time {i}")).await;
    }
    let burst: Vec<String> = (0..20).map(|i| format!("burst {i}")).collect();
    futures_util::future::join_all(burst.iter().map(|msg| publish(addr, "raw", msg))).await;
    while !has(&body, b"id: 23\n") {
        body.extend(client.read_chunk().await.expect("a chunk"));
    }
    let finished = server.shut_down();
    while let Some(chunk) = client.read_chunk().await {
        body.extend(chunk);
    }
    assert!(client.at_eof().await, "nothing after the last chunk");
    finished.await.unwrap().unwrap();
    assert!(
        body.starts_with(b"retry: "),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let expected: Vec<u64> = (0..=23).collect();
    assert_eq!(
        ids_in(&body),
        expected,
        "the start, then every message once, in order"
    );
}

#[tokio::test]
async fn http_1_0_gets_a_plain_stream_and_head_gets_no_body() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let mut old = RawClient::connect(addr).await;
    let head = old.request("GET /sse?channel=old HTTP/1.0\r\n\r\n").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), None);
    publish(addr, "old", "hello").await;
    let body = old.read_until(b"hello").await;
    assert!(
        body.starts_with(b"retry: "),
        "an HTTP/1.0 body has no chunk framing: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(ids_in(&body), [0, 1]);

    let mut probe = RawClient::connect(addr).await;
    let response = probe
        .request(&format!(
            "HEAD /sse?channel=old HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        ))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    publish(addr, "old", "again").await;
    assert_eq!(probe.read_within(Duration::from_millis(300)).await, b"");
}

/// The outbox's stress test, run against the SSE body that writes itself:
/// small commits written through from the writer thread, the body's own
/// writes (what did not fit, heartbeats) claiming the socket in between, a
/// reader that pauses, and every message must arrive once, in order,
/// inside well-formed chunks. (Frames left half written through are the
/// core outbox test's: it can shrink the sending socket's buffer.)
#[tokio::test]
async fn a_self_writing_stream_under_broadcasts_heartbeats_and_a_slow_reader_loses_nothing() {
    const MESSAGES: u64 = 3_000;
    let server = TestServer::with_config(|c| {
        c.publish_rate = 1e9;
        c.publish_burst = 1e9;
        c.sse_heartbeat = Duration::from_millis(2);
        c.max_queued_bytes = 64 << 20;
    })
    .await;
    let addr = server.addr;
    let mut reader = RawClient::connect_small_buffer(addr).await;
    let head = reader
        .request(&format!(
            "GET /sse?channel=stress HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        ))
        .await;
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    let contains = |chunk: &[u8], marker: &[u8]| chunk.windows(marker.len()).any(|w| w == marker);
    let mut body = Vec::new();
    loop {
        let chunk = reader.read_chunk().await.expect("a chunk");
        body.extend_from_slice(&chunk);
        if contains(&chunk, b"event: presence") {
            break;
        }
    }

    // A publisher with a few messages in flight at a time, so that each
    // commit is small enough to be written through from the writer thread.
    let publisher = tokio::spawn(async move {
        let (mut ws, _) = ChatClient::connect(addr, "/ws?user=stress").await;
        let mut rng = fastrand::Rng::with_seed(7);
        for i in 1..=MESSAGES {
            let msg = format!("{i}:{}", "x".repeat(rng.usize(1..3_000)));
            ws.send(json!({"type":"publish","channel":"stress","msg":msg}))
                .await;
            if i % 4 == 0 {
                for _ in 0..4 {
                    ws.recv_type("ack").await;
                }
            }
        }
        ws
    });
    // Read in short bursts with pauses, so the socket fills and empties.
    // (An event is never split across chunks, so the last id is found in
    // the chunk that carries it.)
    let last = format!("id: {MESSAGES}\n");
    let mut chunks = 0u64;
    loop {
        let chunk = reader.read_chunk().await.expect("a chunk");
        body.extend_from_slice(&chunk);
        if contains(&chunk, last.as_bytes()) {
            break;
        }
        chunks += 1;
        if chunks % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    drop(publisher.await.unwrap());
    let expected: Vec<u64> = (0..=MESSAGES).collect();
    assert_eq!(ids_in(&body), expected, "every message once, in order");
    // Each message's text names its own offset: nothing was cut or spliced.
    let text = String::from_utf8(body).unwrap();
    for block in text.split("\n\n").filter(|b| b.contains("event: message")) {
        let id: u64 = block.lines().next().unwrap()["id: ".len()..]
            .parse()
            .unwrap();
        let data = block
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        let message: Value = serde_json::from_str(data).unwrap();
        let msg = message["msg"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("{id}:")),
            "event {id} carries {msg:.20}"
        );
        assert!(msg[msg.find(':').unwrap() + 1..].bytes().all(|b| b == b'x'));
    }
}
