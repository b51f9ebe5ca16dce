//! permessage-deflate negotiation and compressed traffic, checked with an
//! independent zlib stream on the client side.

use std::io::Write;

use flate2::Compression;
use flate2::write::{DeflateDecoder, DeflateEncoder};

use crate::common::{RawClient, TestServer};

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

fn deflate_message(data: &[u8]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.flush().unwrap(); // sync flush: ends with 00 00 ff ff
    let mut out = encoder.get_ref().clone();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate_message(data: &[u8]) -> Vec<u8> {
    let mut decoder = DeflateDecoder::new(Vec::new());
    decoder.write_all(data).unwrap();
    decoder.write_all(&[0, 0, 0xff, 0xff]).unwrap();
    decoder.flush().unwrap();
    decoder.get_ref().clone()
}

#[tokio::test]
async fn negotiates_without_context_takeover_in_either_direction() {
    let server = TestServer::start().await;
    let (_raw, response) = RawClient::upgrade(server.addr, "/echo", OFFER).await;
    assert_eq!(
        response.header("sec-websocket-extensions"),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
}

#[tokio::test]
async fn honours_a_requested_server_window() {
    let server = TestServer::start().await;
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n";
    let (_raw, response) = RawClient::upgrade(server.addr, "/echo", offer).await;
    let ext = response.header("sec-websocket-extensions").unwrap();
    assert!(ext.ends_with("; server_max_window_bits=10"), "{ext}");
}

#[tokio::test]
async fn inflates_compressed_messages_and_compresses_large_replies() {
    let server = TestServer::start().await;
    let (mut raw, _) = RawClient::upgrade(server.addr, "/echo", OFFER).await;
    let text = "all work and no play makes jack a dull boy. ".repeat(50);
    let compressed = deflate_message(text.as_bytes());
    let (first, second) = compressed.split_at(compressed.len() / 2);
    raw.send_frame(0x41, first, true).await; // RSV1 + text, not final
    raw.send_frame(0x80, second, true).await;
    let reply = raw.read_frame().await.unwrap();
    assert_eq!(reply.b0, 0xC1, "FIN + RSV1 + text");
    assert!(reply.payload.len() < text.len() / 4);
    assert_eq!(inflate_message(&reply.payload), text.as_bytes());

    // Small messages are sent plain: deflating them would not pay.
    raw.send_frame(0xC1, &deflate_message(b"hi"), true).await;
    let small = raw.read_frame().await.unwrap();
    assert_eq!((small.b0, small.payload.as_slice()), (0x81, &b"hi"[..]));
}

#[tokio::test]
async fn a_compression_bomb_is_closed_with_1009() {
    let server = TestServer::with_config(|c| c.max_message_size = 64 * 1024).await;
    let (mut raw, _) = RawClient::upgrade(server.addr, "/echo", OFFER).await;
    let bomb = deflate_message(&vec![0u8; 10 << 20]);
    assert!(bomb.len() < 64 * 1024);
    raw.send_frame(0xC2, &bomb, true).await;
    assert_eq!(raw.read_until_close().await.close_code(), Some(1009));
}

#[tokio::test]
async fn no_deflate_turns_the_extension_off() {
    let server = TestServer::with_config(|c| c.no_deflate = true).await;
    let (mut raw, response) = RawClient::upgrade(server.addr, "/echo", OFFER).await;
    assert_eq!(response.header("sec-websocket-extensions"), None);
    raw.send_frame(0xC1, &deflate_message(b"hi"), true).await;
    assert_eq!(raw.read_until_close().await.close_code(), Some(1002));
}
