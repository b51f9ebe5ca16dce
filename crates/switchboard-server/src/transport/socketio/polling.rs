//! HTTP long-polling: a GET waits for the session's packets and takes them
//! all as one payload; a POST brings the client's.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use switchboard_proto::engineio::{self, PacketType, PayloadWriter, Version};
use switchboard_ws::frame::OpCode;

use super::session::{ClosedBy, PollRefused, PollStart, Session};

/// What a poll or a POST is answered.
#[derive(Debug)]
pub enum PollAnswer {
    /// 200 with this payload (`text/plain`, UTF-8), or `ok` to a POST.
    Payload(Vec<u8>),
    /// 400 `{"code":3,"message":"Bad request"}`, the protocol's answer to
    /// a request it cannot take (the session may be closed by it).
    BadRequest,
    /// 413: a POST over `maxPayload`; the session goes on.
    TooLarge,
}

/// A GET: everything queued, or the first packets to come.
pub async fn poll(session: Arc<Session>) -> PollAnswer {
    match session.start_poll() {
        Ok(PollStart::Noop) => {
            let mut payload = PayloadWriter::new(session.version);
            payload.text(&noop());
            return PollAnswer::Payload(payload.finish());
        }
        Ok(PollStart::Wait) => {}
        Err(PollRefused::Overlap | PollRefused::NotPolling) => return PollAnswer::BadRequest,
    }
    // Cleared however this ends, the client going away included.
    let _polling = scopeguard(&session);
    let mut frames = VecDeque::new();
    // Packets already queued go at once, with nothing to wait on.
    let queued =
        session
            .outbox
            .poll_take(&mut Context::from_waker(Waker::noop()), &mut frames, true);
    let taken = match queued {
        Poll::Ready(taken) => Some(taken),
        Poll::Pending => tokio::select! {
            taken = poll_fn(|cx| session.outbox.poll_take(cx, &mut frames, true)) => Some(taken),
            _ = session.upgrade_started() => None,
        },
    };
    let mut payload =
        PayloadWriter::with_capacity(session.version, frames.iter().map(|f| f.len()).sum());
    for frame in &frames {
        write_frames(&mut payload, session.version, frame);
    }
    match taken {
        // An upgrade started: the client is told to stop polling.
        None if payload.is_empty() => {
            if session.closed_by().is_some() {
                payload.text(farewell(&session));
            } else {
                payload.text(&noop());
            }
        }
        // The outbox closed: the session is over (closed here, or by
        // shutdown or as a slow consumer).
        Some(taken) if taken.close.is_some() => {
            session.close(ClosedBy::Server);
            payload.text(farewell(&session));
        }
        None | Some(_) => {}
    }
    PollAnswer::Payload(payload.finish())
}

/// The last packet a waiting poll gets when its session ends.
fn farewell(session: &Session) -> &'static str {
    match session.closed_by() {
        Some(ClosedBy::Client) => "6",
        _ => "1",
    }
}

fn noop() -> String {
    PacketType::Noop.digit().to_string()
}

/// Clears the session's "a poll is waiting" on drop.
struct PollGuard<'a>(&'a Session);

fn scopeguard(session: &Session) -> PollGuard<'_> {
    PollGuard(session)
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.end_poll();
    }
}

/// Adds every packet of `bytes` (one or more whole WebSocket frames, as
/// the outbox holds them) to the payload.
fn write_frames(payload: &mut PayloadWriter, version: Version, mut bytes: &[u8]) {
    while let Some((opcode, data, rest)) = split_frame(bytes) {
        match opcode {
            OpCode::Binary => {
                // Version 3 binary frames start with the message type byte.
                let data = match version {
                    Version::V3 => data.get(1..).unwrap_or_default(),
                    Version::V4 => data,
                };
                payload.binary(data);
            }
            // This server's own text frames: UTF-8 already.
            _ => payload.text_utf8(data),
        }
        bytes = rest;
    }
}

/// The first unmasked, unfragmented server frame of `bytes`: its opcode,
/// its payload and what follows it.
fn split_frame(bytes: &[u8]) -> Option<(OpCode, &[u8], &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    let (&second, rest) = rest.split_first()?;
    let opcode = match first & 0x0f {
        0x2 => OpCode::Binary,
        _ => OpCode::Text,
    };
    let (len, rest) = match second & 0x7f {
        126 => {
            let (len, rest) = rest.split_at_checked(2)?;
            (usize::from(u16::from_be_bytes([len[0], len[1]])), rest)
        }
        127 => {
            let (len, rest) = rest.split_at_checked(8)?;
            (u64::from_be_bytes(len.try_into().ok()?) as usize, rest)
        }
        len => (usize::from(len), rest),
    };
    let (data, rest) = rest.split_at_checked(len)?;
    Some((opcode, data, rest))
}

/// A POST: the client's packets, handled in order.
pub async fn post(session: Arc<Session>, body: Body) -> PollAnswer {
    if session.start_post().is_err() {
        return PollAnswer::BadRequest;
    }
    let answer = handle_post(&session, body).await;
    session.end_post();
    answer
}

async fn handle_post(session: &Arc<Session>, body: Body) -> PollAnswer {
    let limit = session.settings.max_payload;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return PollAnswer::TooLarge;
    };
    let packets = match engineio::decode_payload(session.version, &bytes) {
        Ok(packets) => packets,
        Err(e) => {
            session.close_for(e.into());
            return PollAnswer::BadRequest;
        }
    };
    for packet in packets {
        // A client sending requests faster than they are answered waits.
        poll_fn(|cx| session.poll_app_ready(cx)).await;
        if let Err(fatal) = session.on_packet(packet) {
            session.close_for(fatal);
            return PollAnswer::BadRequest;
        }
        if session.is_closed() {
            break;
        }
    }
    PollAnswer::Payload(b"ok".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use switchboard_ws::frame;

    #[test]
    fn frames_of_every_length_class_come_back_out_as_packets() {
        let long = "4".to_owned() + &"x".repeat(70_000);
        let medium = "4".to_owned() + &"y".repeat(300);
        let mut bytes = Vec::new();
        for text in ["2", medium.as_str(), long.as_str()] {
            bytes.extend_from_slice(&frame::encode(OpCode::Text, false, text.as_bytes()));
        }
        bytes.extend_from_slice(&frame::encode(OpCode::Binary, false, &[1, 2, 3, 4]));
        let mut payload = PayloadWriter::new(Version::V4);
        write_frames(&mut payload, Version::V4, &Bytes::from(bytes));
        let expected = format!("2\x1e{medium}\x1e{long}\x1ebAQIDBA==");
        assert_eq!(payload.finish(), expected.into_bytes());
    }
}
