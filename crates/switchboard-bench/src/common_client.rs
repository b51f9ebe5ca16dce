//! The fan-out generator as an application developer would write it, for
//! figures that do not depend on this tool's own lean client: every
//! connection is a tokio-tungstenite `WebSocketStream`, every frame is
//! parsed with serde_json, a publisher sends each message with its own
//! `send` (one write), and counters are shared atomics updated per message.
//! A server whose figures hold under both generators owes them to itself.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::SharedLatency;
use crate::fanout::SubscriberStats;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The fields of a server frame the generator reads.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    offset: Option<u64>,
    #[serde(borrow)]
    msg: Option<Cow<'a, str>>,
}

pub async fn connect(server: SocketAddr, path: &str) -> anyhow::Result<Socket> {
    let url = format!("ws://{server}{path}");
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("connect")?;
    Ok(socket)
}

/// A subscriber, connected once its `subscribed` reply has arrived.
pub async fn subscribe(server: SocketAddr, user: usize, channel: &str) -> anyhow::Result<Socket> {
    let mut socket = connect(server, &format!("/ws?user=sub{user}&channel={channel}")).await?;
    while let Some(message) = socket.next().await {
        if let Message::Text(text) = message? {
            let frame: Frame = serde_json::from_str(&text)?;
            if frame.kind == "subscribed" {
                return Ok(socket);
            }
        }
    }
    bail!("connection closed before `subscribed`")
}

/// Reads `message` frames until `stop`, counting each as it arrives.
pub async fn receive(
    mut socket: Socket,
    base: Instant,
    deliveries: Arc<AtomicU64>,
    latency: Arc<SharedLatency>,
    mut stop: watch::Receiver<bool>,
) -> SubscriberStats {
    let mut counted = SubscriberStats::default();
    let mut last_offset = 0;
    loop {
        let message = tokio::select! {
            message = socket.next() => message,
            _ = stop.changed() => break,
        };
        let Some(Ok(message)) = message else { break };
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            continue;
        };
        if frame.kind != "message" {
            continue;
        }
        counted.received += 1;
        counted.bytes += text.len() as u64;
        deliveries.fetch_add(1, Ordering::Relaxed);
        if let Some(offset) = frame.offset {
            if offset <= last_offset {
                counted.duplicates += 1;
            } else if last_offset != 0 && offset != last_offset + 1 {
                counted.gaps += 1;
            }
            last_offset = last_offset.max(offset);
        }
        if let Some(sent) = frame.msg.as_deref().and_then(sent_at) {
            let now = base.elapsed().as_micros() as u64;
            let _ = latency.local().record(now.saturating_sub(sent).max(1));
        }
    }
    counted
}

/// The send time a publisher wrote into `msg` (`t=<µs>;…`).
fn sent_at(msg: &str) -> Option<u64> {
    msg.strip_prefix("t=")?.split(';').next()?.parse().ok()
}

/// A publisher: sends while the window has room, until `deadline`; its
/// reader counts `ack`s and refills the window. Returns how many it sent
/// and the socket's sending half, kept open until the acks are in.
pub async fn publish(
    socket: Socket,
    request: impl Fn() -> String,
    window: Arc<Semaphore>,
    acked: Arc<AtomicU64>,
    deadline: Instant,
) -> anyhow::Result<(u64, impl Sized)> {
    let (mut sink, mut stream) = socket.split();
    let acks = window.clone();
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            match serde_json::from_str::<Frame>(&text) {
                Ok(frame) if frame.kind == "ack" => {
                    acked.fetch_add(1, Ordering::Relaxed);
                    acks.add_permits(1);
                }
                Ok(frame) if frame.kind == "error" => eprintln!("publisher error: {text}"),
                _ => {}
            }
        }
    });
    let mut sent = 0;
    while Instant::now() < deadline {
        window.acquire().await?.forget();
        sink.send(Message::text(request())).await?;
        sent += 1;
    }
    Ok((sent, sink))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_send_time_from_a_msg() {
        assert_eq!(super::sent_at("t=123;xxxx"), Some(123));
        assert_eq!(super::sent_at("hello"), None);
    }
}
