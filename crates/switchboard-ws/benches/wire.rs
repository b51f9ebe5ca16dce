//! `cargo bench -p switchboard-ws`: the hand-written wire layer against
//! tungstenite, the library it stands in for, on the same bytes in memory
//! (no sockets, so the kernel's share is left out and what remains is each
//! library's own work).
//!
//! - `decode`: a client's masked text frames into validated messages.
//! - `broadcast`: one message to 1,000 connections' send queues: encoded
//!   once and shared, against written into each connection's buffer.
//! - `mask`: unmasking eight bytes at a time against byte by byte.

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::{self, Cursor, Read, Write};

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use switchboard_ws::frame::{self, OpCode};
use switchboard_ws::{DecoderConfig, Message, MessageDecoder};
use tungstenite::protocol::{Role, WebSocket};

const FRAMES: usize = 1_000;
const SIZES: [usize; 3] = [64, 1_024, 16_384];
const SUBSCRIBERS: usize = 1_000;
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// What the server's connection reads per syscall.
const READ_CHUNK: usize = 64 * 1024;

/// `count` masked client text frames of `size` bytes each, back to back.
fn client_frames(size: usize, count: usize) -> Vec<u8> {
    let text: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut wire = BytesMut::new();
    for _ in 0..count {
        let start = wire.len();
        frame::put_header(&mut wire, OpCode::Text, false, size);
        wire[start + 1] |= 0x80; // masked, as every client frame is
        wire.extend_from_slice(&MASK);
        let payload = wire.len();
        wire.extend_from_slice(&text);
        frame::apply_mask(&mut wire[payload..], MASK);
    }
    wire.to_vec()
}

/// As the server's connection reads: 64 KiB at a time from the socket
/// into a shared scratch buffer, appended to the connection's read buffer,
/// every complete message decoded, the buffer released once empty.
fn decode_ours(wire: &[u8]) -> usize {
    let mut decoder = MessageDecoder::new(DecoderConfig {
        max_message_size: 1 << 20,
        deflate: false,
    });
    let mut read_buf = BytesMut::new();
    let mut bytes = 0;
    for chunk in wire.chunks(READ_CHUNK) {
        read_buf.extend_from_slice(chunk);
        while let Some(message) = decoder.decode(&mut read_buf).expect("valid frames") {
            let Message::Text(text) = message else {
                panic!("not text")
            };
            bytes += text.len();
        }
        if read_buf.is_empty() {
            read_buf = BytesMut::new();
        }
    }
    bytes
}

/// As tokio-tungstenite reads: from the stream into the codec's buffer.
fn decode_tungstenite(wire: Vec<u8>, count: usize) -> usize {
    let mut socket = WebSocket::from_raw_socket(Cursor::new(wire), Role::Server, None);
    (0..count)
        .map(|_| match socket.read().expect("valid frames") {
            tungstenite::Message::Text(text) => text.len(),
            other => panic!("not text: {other:?}"),
        })
        .sum()
}

fn decode(c: &mut Criterion) {
    for size in SIZES {
        let wire = client_frames(size, FRAMES);
        assert_eq!(decode_ours(&wire), size * FRAMES);
        assert_eq!(decode_tungstenite(wire.clone(), FRAMES), size * FRAMES);
        let mut group = c.benchmark_group(format!("decode/{size}B"));
        group.throughput(Throughput::Elements(FRAMES as u64));
        // Each copies the bytes once into its own buffer, as a socket read would.
        group.bench_function("switchboard-ws", |b| {
            b.iter(|| decode_ours(black_box(&wire)))
        });
        group.bench_function("tungstenite", |b| {
            b.iter_batched(
                || wire.clone(),
                |wire| decode_tungstenite(wire, FRAMES),
                BatchSize::LargeInput,
            )
        });
        group.finish();
    }
}

/// A connection's socket that takes everything written to it, as an idle
/// subscriber's socket buffer would.
struct Discard;

impl Read for Discard {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn broadcast(c: &mut Criterion) {
    for size in SIZES {
        let text: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let mut group = c.benchmark_group(format!("broadcast/{size}B"));
        group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
        // Encoded once; each connection's queue takes a reference.
        let mut queues: Vec<VecDeque<Bytes>> = vec![VecDeque::new(); SUBSCRIBERS];
        group.bench_function("switchboard-ws", |b| {
            b.iter(|| {
                let frame = frame::encode(OpCode::Text, false, black_box(text.as_bytes()));
                for queue in &mut queues {
                    queue.push_back(frame.clone());
                }
                for queue in &mut queues {
                    queue.clear();
                }
            })
        });
        // The payload shared as `Utf8Bytes`; each connection frames it into
        // its own write buffer and flushes it.
        let mut sockets: Vec<WebSocket<Discard>> = (0..SUBSCRIBERS)
            .map(|_| WebSocket::from_raw_socket(Discard, Role::Server, None))
            .collect();
        let shared = tungstenite::Utf8Bytes::from(text.clone());
        group.bench_function("tungstenite", |b| {
            b.iter(|| {
                for socket in &mut sockets {
                    socket
                        .send(tungstenite::Message::Text(shared.clone()))
                        .expect("discarded");
                }
            })
        });
        group.finish();
    }
}

fn mask_bytewise(buf: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

fn mask(c: &mut Criterion) {
    let mut payload = vec![0x5a_u8; 16_384];
    let mut expected = payload.clone();
    mask_bytewise(&mut expected, MASK);
    frame::apply_mask(&mut payload, MASK);
    assert_eq!(payload, expected);
    let mut group = c.benchmark_group("mask/16384B");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("eight bytes at a time", |b| {
        b.iter(|| frame::apply_mask(black_box(&mut payload), MASK))
    });
    group.bench_function("byte by byte", |b| {
        b.iter(|| mask_bytewise(black_box(&mut payload), MASK))
    });
    group.finish();
}

criterion_group!(benches, decode, broadcast, mask);
criterion_main!(benches);
