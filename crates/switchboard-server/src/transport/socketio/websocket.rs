//! A session over a WebSocket: one Engine.IO packet per WebSocket message,
//! either from the start or after taking a polling session over.
//!
//! The upgrade: the new WebSocket sends the ping `probe` and is answered
//! `pong probe` on its own; the polling side is then told `noop` (so the
//! client's poll returns and it stops polling) and finally `upgrade`
//! switches the connection onto the session's outbox, with whatever the
//! last poll left in it, so nothing is lost or sent twice.

use std::sync::Arc;
use std::task::{Context, Poll};

use switchboard_proto::engineio::{self, Packet, PacketType, Version};
use switchboard_ws::{CloseCode, CloseFrame, Message};

use super::session::{ClosedBy, Session, ping_frame};
use crate::transport::websocket::{Keepalive, MessageHandler, Replies};

/// The handler of a WebSocket carrying (or taking over) a session.
pub struct EngineSocket {
    session: Arc<Session>,
    /// Taking a polling session over, until `upgrade` arrives.
    probing: bool,
}

impl EngineSocket {
    /// A WebSocket that carries `session` from its start.
    pub fn carrying(session: Arc<Session>) -> Self {
        EngineSocket {
            session,
            probing: false,
        }
    }

    /// A WebSocket that will take the polling `session` over.
    pub fn upgrading(session: Arc<Session>) -> Self {
        EngineSocket {
            session,
            probing: true,
        }
    }

    fn on_probe_packet(&mut self, packet: Packet, replies: &mut Replies<'_>) -> Result<(), String> {
        match packet {
            Packet::Text {
                kind: PacketType::Ping,
                data,
            } if data == "probe" => {
                replies.send_text("3probe");
                // On the wire before the upgrade that follows can answer a
                // poll: a client reads `3probe` before the poll's 400.
                replies.flush_now();
                self.session.begin_upgrade();
                Ok(())
            }
            Packet::Text {
                kind: PacketType::Upgrade,
                ..
            } => {
                if !self.session.finish_upgrade() {
                    return Err("the session cannot be upgraded".into());
                }
                replies.adopt_outbox(self.session.outbox.clone());
                self.probing = false;
                Ok(())
            }
            Packet::Text {
                kind: PacketType::Noop,
                ..
            } => Ok(()),
            other => Err(format!("unexpected packet while upgrading: {other:?}")),
        }
    }
}

fn decode(version: Version, message: &Message) -> Result<Packet, engineio::DecodeError> {
    match message {
        Message::Binary(bytes) => engineio::decode_binary_packet(version, bytes),
        text => engineio::decode_text_packet(text.as_text().unwrap_or_default()),
    }
}

impl MessageHandler for EngineSocket {
    fn on_message(
        &mut self,
        message: Message,
        replies: &mut Replies<'_>,
    ) -> Result<(), CloseFrame> {
        let refuse = |reason: String| CloseFrame::new(CloseCode::POLICY_VIOLATION, reason);
        let packet = decode(self.session.version, &message).map_err(|e| refuse(e.to_string()))?;
        if self.probing {
            return self.on_probe_packet(packet, replies).map_err(refuse);
        }
        if let Err(fatal) = self.session.on_packet(packet) {
            let frame = refuse(fatal.0.clone());
            self.session.close_for(fatal);
            return Err(frame);
        }
        Ok(())
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.probing {
            return Poll::Ready(());
        }
        self.session.poll_app_ready(cx)
    }

    fn keepalive(&mut self) -> Keepalive {
        if self.probing {
            // The polling side keeps the session alive until the upgrade.
            return Keepalive::Skip;
        }
        if self.session.connect_overdue() {
            self.session.close(ClosedBy::Server);
            return Keepalive::Close(CloseFrame::new(CloseCode::NORMAL, "connect timeout"));
        }
        if self.session.idle_overdue() {
            // The session's outbox closes the connection in a moment.
            self.session.close_idle();
        }
        match self.session.version {
            Version::V4 => Keepalive::Frame(ping_frame()),
            Version::V3 => Keepalive::PeerPings,
        }
    }
}

impl Drop for EngineSocket {
    fn drop(&mut self) {
        if self.probing {
            self.session.cancel_upgrade();
        } else {
            self.session.close(ClosedBy::Server);
        }
    }
}

/// A WebSocket refused after its handshake: it reads nothing into any
/// session while its close goes out.
pub struct Refused;

impl MessageHandler for Refused {
    fn on_message(&mut self, _: Message, _: &mut Replies<'_>) -> Result<(), CloseFrame> {
        Ok(())
    }
}
