//! A peer for the benchmarks: the Socket.IO server an application would
//! write with socketioxide, speaking switchboard's event contract as far as
//! the load tool uses it. Clients `join {channel}` (ack `{channel, offset}`)
//! and `publish {channel, msg}` (ack `{channel, offset}`); every member of
//! the channel's room gets `message {channel, offset, username, msg, time}`,
//! offsets counted per channel in memory (no history).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef, State};

/// Each channel's last offset. An async lock: held while a message is
/// broadcast, so concurrent publishers cannot reorder a channel.
#[derive(Clone, Default)]
struct Offsets(Arc<tokio::sync::Mutex<HashMap<String, u64>>>);

#[derive(Deserialize)]
struct Join {
    channel: String,
}

#[derive(Deserialize)]
struct Publish {
    channel: String,
    msg: String,
}

#[derive(Serialize)]
struct Ack<'a> {
    channel: &'a str,
    offset: u64,
}

#[derive(Serialize)]
struct Message<'a> {
    channel: &'a str,
    offset: u64,
    username: &'a str,
    msg: &'a str,
    time: String,
}

fn now_rfc3339() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis)).to_string()
}

async fn on_connect(socket: SocketRef, Data(auth): Data<Value>) {
    let user: Arc<str> = auth
        .get("user")
        .and_then(Value::as_str)
        .unwrap_or("guest")
        .into();
    socket.on(
        "join",
        async |socket: SocketRef,
               Data(join): Data<Join>,
               ack: AckSender,
               State(offsets): State<Offsets>| {
            socket.join(join.channel.clone());
            let offset = offsets
                .0
                .lock()
                .await
                .get(&join.channel)
                .copied()
                .unwrap_or(0);
            let _ = ack.send(&Ack {
                channel: &join.channel,
                offset,
            });
        },
    );
    socket.on(
        "publish",
        async move |Data(publish): Data<Publish>,
                    ack: AckSender,
                    State(offsets): State<Offsets>,
                    io: SocketIo| {
            let offset = {
                let mut offsets = offsets.0.lock().await;
                let offset = offsets.entry(publish.channel.clone()).or_insert(0);
                *offset += 1;
                let message = Message {
                    channel: &publish.channel,
                    offset: *offset,
                    username: &user,
                    msg: &publish.msg,
                    time: now_rfc3339(),
                };
                let _ = io
                    .to(publish.channel.clone())
                    .emit("message", &message)
                    .await;
                *offset
            };
            let _ = ack.send(&Ack {
                channel: &publish.channel,
                offset,
            });
        },
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args()
        .skip_while(|a| a != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()?;
    let (layer, io) = SocketIo::builder()
        .with_state(Offsets::default())
        .build_layer();
    io.ns("/", on_connect);
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
