//! RFC 6455 behaviour on `/echo`: echoing, fragmentation, control frames,
//! and the close code for each kind of bad input.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::common::{RawClient, TestServer, WAIT};

async fn next(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("no message in time")
        .expect("stream ended")
        .expect("websocket error")
}

#[tokio::test]
async fn echoes_text_and_binary_unchanged() {
    let server = TestServer::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/echo"))
        .await
        .unwrap();
    ws.send(Message::text("héllo wörld")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("héllo wörld"));
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(blob));
    ws.send(Message::text("")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text(""));
}

#[tokio::test]
async fn many_pipelined_messages_come_back_in_order() {
    let server = TestServer::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/echo"))
        .await
        .unwrap();
    for i in 0..1000 {
        ws.feed(Message::text(format!("message {i}")))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..1000 {
        assert_eq!(next(&mut ws).await, Message::text(format!("message {i}")));
    }
}

#[tokio::test]
async fn reassembles_fragments_and_answers_an_interleaved_ping() {
    let server = TestServer::start().await;
    let (mut raw, _) = RawClient::upgrade(server.addr, "/echo", "").await;
    raw.send_frame(0x01, b"frag", true).await;
    raw.send_frame(0x89, b"ping!", true).await;
    raw.send_frame(0x00, b"men", true).await;
    raw.send_frame(0x80, b"ted", true).await;
    let pong = raw.read_frame().await.unwrap();
    assert_eq!((pong.b0, pong.payload.as_slice()), (0x8A, &b"ping!"[..]));
    let echo = raw.read_frame().await.unwrap();
    assert_eq!(
        (echo.b0, echo.payload.as_slice()),
        (0x81, &b"fragmented"[..])
    );
}

#[tokio::test]
async fn answers_a_close_with_the_same_code() {
    let server = TestServer::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/echo"))
        .await
        .unwrap();
    ws.close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "leaving".into(),
    }))
    .await
    .unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Sends `frames` on a fresh connection and returns the close code received.
async fn close_code_after(server: &TestServer, frames: &[(u8, &[u8], bool)]) -> u16 {
    let (mut raw, _) = RawClient::upgrade(server.addr, "/echo", "").await;
    for (b0, payload, masked) in frames {
        raw.send_frame(*b0, payload, *masked).await;
    }
    let close = raw.read_until_close().await;
    // The server then ends the TCP connection.
    assert_eq!(raw.read_frame().await, None);
    close.close_code().expect("close frame without a code")
}

#[tokio::test]
async fn an_unmasked_frame_is_closed_with_1002() {
    let server = TestServer::start().await;
    assert_eq!(
        close_code_after(&server, &[(0x81, b"hi", false)]).await,
        1002
    );
}

#[tokio::test]
async fn reserved_bits_and_opcodes_are_closed_with_1002() {
    let server = TestServer::start().await;
    assert_eq!(
        close_code_after(&server, &[(0xC1, b"hi", true)]).await,
        1002
    );
    assert_eq!(close_code_after(&server, &[(0x83, b"", true)]).await, 1002);
    assert_eq!(close_code_after(&server, &[(0x8B, b"", true)]).await, 1002);
}

#[tokio::test]
async fn fragmentation_errors_are_closed_with_1002() {
    let server = TestServer::start().await;
    assert_eq!(
        close_code_after(&server, &[(0x80, b"orphan", true)]).await,
        1002
    );
    assert_eq!(
        close_code_after(&server, &[(0x01, b"a", true), (0x81, b"b", true)]).await,
        1002
    );
    assert_eq!(close_code_after(&server, &[(0x09, b"", true)]).await, 1002);
    assert_eq!(
        close_code_after(&server, &[(0x89, &[0; 126], true)]).await,
        1002
    );
}

#[tokio::test]
async fn invalid_utf8_is_closed_with_1007() {
    let server = TestServer::start().await;
    assert_eq!(
        close_code_after(&server, &[(0x81, b"\xce\xba\xff", true)]).await,
        1007
    );
    // Also when the bad byte sits in a later fragment.
    assert_eq!(
        close_code_after(
            &server,
            &[(0x01, b"fine", true), (0x80, b"\xed\xa0\x80", true)]
        )
        .await,
        1007
    );
}

#[tokio::test]
async fn an_oversize_message_is_closed_with_1009() {
    let server = TestServer::with_config(|c| c.max_message_size = 1024).await;
    let exact = vec![b'a'; 1024];
    let (mut raw, _) = RawClient::upgrade(server.addr, "/echo", "").await;
    raw.send_frame(0x82, &exact, true).await;
    assert_eq!(raw.read_frame().await.unwrap().payload, exact);
    assert_eq!(
        close_code_after(&server, &[(0x82, &[0; 1025], true)]).await,
        1009
    );
    assert_eq!(
        close_code_after(&server, &[(0x02, &[0; 600], true), (0x80, &[0; 600], true)]).await,
        1009
    );
}

#[tokio::test]
async fn invalid_close_frames_are_closed_with_1002() {
    let server = TestServer::start().await;
    assert_eq!(
        close_code_after(&server, &[(0x88, b"\x03", true)]).await,
        1002
    );
    assert_eq!(
        close_code_after(&server, &[(0x88, b"\x03\xed", true)]).await,
        1002
    );
    assert_eq!(
        close_code_after(&server, &[(0x88, b"\x03\xe8\xff", true)]).await,
        1007
    );
}

#[tokio::test]
async fn one_bad_connection_does_not_disturb_another() {
    let server = TestServer::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/echo"))
        .await
        .unwrap();
    assert_eq!(
        close_code_after(&server, &[(0x81, b"x", false)]).await,
        1002
    );
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("still here"));
}
