//! Server-initiated pings and the closing of peers that stop answering.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{RawClient, TestServer, WAIT};

fn fast_pings(config: &mut switchboard_server::Config) {
    config.ping_interval = Duration::from_millis(100);
    config.ping_timeout = Duration::from_millis(200);
}

#[tokio::test]
async fn pings_a_silent_client_and_closes_it_when_it_never_answers() {
    let server = TestServer::with_config(fast_pings).await;
    let (mut raw, _) = RawClient::upgrade(server.addr, "/echo", "").await;
    let ping = raw.read_frame().await.unwrap();
    assert_eq!(ping.opcode(), 0x9);
    let close = raw.read_until_close().await;
    assert_eq!(close.close_code(), Some(1001));
    assert_eq!(&close.payload[2..], b"ping timeout");
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let server = TestServer::with_config(fast_pings).await;
    // tungstenite answers pings by itself while we read.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/echo"))
        .await
        .unwrap();
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1000);
    while let Ok(message) = tokio::time::timeout_at(deadline, ws.next()).await {
        match message.unwrap().unwrap() {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 3, "only {pings} pings in a second");
    ws.send(Message::text("alive")).await.unwrap();
    let echoed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Ping(_) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(echoed, Message::text("alive"));
}
