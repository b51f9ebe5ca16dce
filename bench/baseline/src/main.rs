//! The benchmark baseline: a broadcast server as a competent developer would
//! write it with tokio-tungstenite. One reader task and one writer task per
//! connection, the writer fed by a bounded channel; a broadcast message is
//! serialized once and shared (`Utf8Bytes` is reference-counted), in the
//! envelope switchboard sends (same fields, order and size). It keeps no
//! history and writes nothing to disk.
//!
//! It speaks the part of switchboard's protocol the load tool uses:
//! `/echo`; `/ws?user=U&channel=C` answers `subscribed`, then `message`s;
//! `{"type":"publish","channel","msg"}` gets an `ack`.

// The handshake callback's error type is tungstenite's, large by its design.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// Frames one connection may have waiting; a subscriber past it is dropped.
/// About switchboard's default bound (`--max-queued-bytes`, 4 MiB) in
/// frames of the load tool's ~200 bytes.
const QUEUE: usize = 20_000;

/// A channel: its latest offset and its subscribers (connection id and
/// writer queue).
#[derive(Default)]
struct Channel {
    offset: u64,
    subscribers: Vec<(u64, mpsc::Sender<Message>)>,
}

#[derive(Default)]
struct State {
    channels: Mutex<HashMap<String, Channel>>,
    next_id: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args()
        .skip_while(|a| a != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into())
        .parse()?;
    let listener = TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let state = Arc::new(State::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(handle(stream, state.clone()));
    }
}

async fn handle(stream: TcpStream, state: Arc<State>) {
    let mut uri = None;
    let callback = |request: &Request, response: Response| {
        uri = Some(request.uri().clone());
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let Some(uri) = uri else { return };
    let query: HashMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(more).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let user = query
        .get("user")
        .cloned()
        .unwrap_or_else(|| format!("guest-{id}"));
    let echo = uri.path() == "/echo";
    if let Some(channel) = query.get("channel") {
        state
            .channels
            .lock()
            .unwrap()
            .entry(channel.clone())
            .or_default()
            .subscribers
            .push((id, tx.clone()));
        let subscribed = json!({"type":"subscribed","channel":channel,"presence":[user]});
        let _ = tx.send(Message::text(subscribed.to_string())).await;
    }
    while let Some(Ok(message)) = stream.next().await {
        if echo && (message.is_text() || message.is_binary()) {
            if tx.send(message).await.is_err() {
                break;
            }
            continue;
        }
        match message {
            Message::Text(text) => {
                let Ok(request) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if request["type"] == "publish" {
                    let channel = request["channel"].as_str().unwrap_or_default().to_owned();
                    let msg = request["msg"].as_str().unwrap_or_default();
                    let offset = broadcast(&state, &channel, &user, msg);
                    let ack = json!({"type":"ack","channel":channel,"offset":offset});
                    let _ = tx.send(Message::text(ack.to_string())).await;
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    for channel in state.channels.lock().unwrap().values_mut() {
        channel.subscribers.retain(|(sub, _)| *sub != id);
    }
    drop(tx);
    let _ = writer.await;
}

/// A message as switchboard frames it: the same fields in the same order,
/// time included, so both servers send frames of one size and shape.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    offset: u64,
    username: &'a str,
    msg: &'a str,
    #[serde(serialize_with = "serialize_display")]
    time: humantime::Rfc3339Timestamp,
}

fn serialize_display<S: serde::Serializer>(
    value: &impl std::fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Serializes once and queues the shared text for every subscriber. The
/// offset is taken under the lock that queues the message, so messages of
/// concurrent publishers reach every subscriber in offset order.
fn broadcast(state: &State, channel: &str, user: &str, msg: &str) -> u64 {
    let mut channels = state.channels.lock().unwrap();
    let entry = channels.entry(channel.to_owned()).or_default();
    entry.offset += 1;
    let offset = entry.offset;
    let text = serde_json::to_string(&Envelope {
        kind: "message",
        channel,
        offset,
        username: user,
        msg,
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()),
    })
    .expect("serializes");
    let message = Message::text(text);
    // A subscriber that cannot keep up is dropped, as in switchboard.
    entry
        .subscribers
        .retain(|(_, tx)| tx.try_send(message.clone()).is_ok());
    offset
}
