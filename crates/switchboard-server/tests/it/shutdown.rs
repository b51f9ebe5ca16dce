//! Graceful shutdown: clients get 1001, the server finishes in bounded time,
//! and the binary exits 0 on SIGTERM.

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::common::{ServerProcess, TestServer, WAIT};

async fn expect_going_away(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    let message = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match message {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_sends_1001_to_every_client_and_finishes() {
    let server = TestServer::start().await;
    let url = server.ws_url("/echo");
    let (mut a, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let addr = server.addr;
    let finished = server.shut_down();
    expect_going_away(&mut a).await;
    expect_going_away(&mut b).await;
    // Drive both clients to the end of their close handshakes.
    while a.next().await.is_some() {}
    while b.next().await.is_some() {}
    tokio::time::timeout(WAIT, finished)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test]
async fn the_binary_exits_0_on_sigterm_after_closing_clients() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let url = format!("ws://{}/echo", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    server.signal("-TERM");
    expect_going_away(&mut ws).await;
    while ws.next().await.is_some() {}
    assert_eq!(server.wait().await.code(), Some(0));
}
