//! The Socket.IO layer over a session: connecting namespaces, events with
//! their binary attachments, and acknowledgements. What a namespace does
//! with events is its [`Namespaces`] implementation's.

use bytes::Bytes;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde_json::value::RawValue;
use switchboard_proto::engineio::Version;
use switchboard_proto::socketio::{self, PacketType};

use super::session::{AppMessage, EngineApp, Fatal, RandomId, Session};

/// What a server's namespaces do.
pub trait Namespaces: Send + 'static {
    /// Accepts a connection to `namespace` with the handshake's `auth`, or
    /// refuses it with a `CONNECT_ERROR`.
    fn connect(
        &mut self,
        namespace: &str,
        auth: Option<&RawValue>,
        session: &Session,
    ) -> Result<Connected, Refusal>;

    /// The namespace is connected: `reply` is its CONNECT packet (a frame),
    /// which must go before any of its events. Sent at once unless the
    /// namespace sends it itself, later.
    fn connected(&mut self, _namespace: &str, session: &Session, reply: Bytes) {
        session.send_frame(reply);
    }

    /// The client left `namespace` (or the session ended).
    fn disconnect(&mut self, namespace: &str);

    /// An event from the client to a connected namespace.
    fn event(&mut self, event: Event<'_>, session: &Session) -> Result<(), Fatal>;

    /// Ready when another event may be taken.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }

    /// Whether the connection holds subscriptions (see `--idle-timeout`).
    fn is_subscribed(&self) -> bool {
        true
    }
}

/// What the reply to a connection says besides the socket's `sid`.
#[derive(Debug, Default)]
pub struct Connected {
    /// The private session id of connection-state recovery: a client sends
    /// it back, with its last event's offset, when it reconnects.
    pub pid: Option<Arc<str>>,
}

/// Why a namespace refused a connection: the `CONNECT_ERROR`'s message,
/// and its `data` (version 4) for clients to match on.
#[derive(Debug)]
pub struct Refusal {
    pub message: String,
    pub data: Option<serde_json::Value>,
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Refusal {
            message,
            data: None,
        }
    }
}

/// One event, its attachments gathered.
#[derive(Debug)]
pub struct Event<'a> {
    pub namespace: &'a str,
    pub name: String,
    /// The arguments after the name, as raw JSON.
    pub args: Vec<&'a RawValue>,
    /// Set when the client waits for an acknowledgement.
    pub ack: Option<u64>,
    pub attachments: Vec<Vec<u8>>,
}

/// A packet whose binary attachments are still arriving.
struct Gathering {
    packet: socketio::Packet,
    attachments: Vec<Vec<u8>>,
}

/// The namespaces a session is connected to: `/` alone, mostly, which
/// costs a flag, not an allocation.
#[derive(Default)]
struct ConnectedNamespaces {
    main: bool,
    others: Vec<Box<str>>,
}

impl ConnectedNamespaces {
    fn contains(&self, namespace: &str) -> bool {
        match namespace {
            "/" => self.main,
            other => self.others.iter().any(|n| **n == *other),
        }
    }

    fn add(&mut self, namespace: &str) {
        match namespace {
            "/" => self.main = true,
            other => self.others.push(other.into()),
        }
    }

    /// Whether it was connected.
    fn remove(&mut self, namespace: &str) -> bool {
        match namespace {
            "/" => std::mem::take(&mut self.main),
            other => {
                let before = self.others.len();
                self.others.retain(|n| **n != *other);
                self.others.len() < before
            }
        }
    }
}

/// The Socket.IO protocol on one session.
pub struct SocketLayer<N> {
    namespaces: N,
    version: Version,
    /// Namespaces this session is connected to.
    connected: ConnectedNamespaces,
    /// Some namespace was connected once (the connect timeout is met).
    ever_connected: bool,
    /// Boxed: an idle session holds a word for it, not a whole packet.
    gathering: Option<Box<Gathering>>,
}

impl<N: Namespaces> SocketLayer<N> {
    pub fn new(namespaces: N, version: Version) -> Self {
        SocketLayer {
            namespaces,
            version,
            connected: ConnectedNamespaces::default(),
            ever_connected: false,
            gathering: None,
        }
    }

    fn on_packet(&mut self, packet: socketio::Packet, session: &Session) -> Result<(), Fatal> {
        match packet.kind {
            PacketType::Connect => {
                let auth = packet.data.as_deref();
                self.connect(&packet.namespace, auth, session);
                Ok(())
            }
            PacketType::Disconnect => {
                if self.connected.remove(&packet.namespace) {
                    self.namespaces.disconnect(&packet.namespace);
                }
                Ok(())
            }
            PacketType::Event | PacketType::BinaryEvent | PacketType::BinaryAck
                if packet.attachments > 0 =>
            {
                self.gathering = Some(Box::new(Gathering {
                    packet,
                    attachments: Vec::new(),
                }));
                Ok(())
            }
            PacketType::Event | PacketType::BinaryEvent => {
                self.dispatch(&packet, Vec::new(), session)
            }
            // The server asks no acknowledgements of its own.
            PacketType::Ack | PacketType::BinaryAck => Ok(()),
            PacketType::ConnectError => Err(Fatal("a client cannot send CONNECT_ERROR".into())),
        }
    }

    fn connect(&mut self, namespace: &str, auth: Option<&RawValue>, session: &Session) {
        if self.connected.contains(namespace) {
            return;
        }
        match self.namespaces.connect(namespace, auth, session) {
            Ok(connected) => {
                let data = match (self.version, connected.pid) {
                    (Version::V4, Some(pid)) => Some(format!(
                        r#"{{"sid":"{}","pid":"{pid}"}}"#,
                        RandomId::random()
                    )),
                    (Version::V4, None) => Some(format!(r#"{{"sid":"{}"}}"#, RandomId::random())),
                    (Version::V3, _) => None,
                };
                let reply = session.message_frame(&socketio::encode(
                    PacketType::Connect,
                    namespace,
                    0,
                    None,
                    data.as_deref(),
                ));
                self.connected.add(namespace);
                self.ever_connected = true;
                self.namespaces.connected(namespace, session, reply);
            }
            Err(Refusal { message, data }) => {
                let data = match (self.version, data) {
                    (Version::V4, Some(data)) => {
                        serde_json::json!({ "message": message, "data": data }).to_string()
                    }
                    (Version::V4, None) => serde_json::json!({ "message": message }).to_string(),
                    (Version::V3, _) => serde_json::Value::from(message).to_string(),
                };
                session.send_message(&socketio::encode(
                    PacketType::ConnectError,
                    namespace,
                    0,
                    None,
                    Some(&data),
                ));
            }
        }
    }

    fn dispatch(
        &mut self,
        packet: &socketio::Packet,
        attachments: Vec<Vec<u8>>,
        session: &Session,
    ) -> Result<(), Fatal> {
        if packet.kind == PacketType::BinaryAck {
            return Ok(());
        }
        // Events to a namespace not connected are ignored, as the
        // reference server does.
        if !self.connected.contains(&packet.namespace) {
            return Ok(());
        }
        let (name, args) = packet
            .event()
            .ok_or_else(|| Fatal("an event without a name".into()))?;
        let event = Event {
            namespace: &packet.namespace,
            name,
            args,
            ack: packet.ack_id,
            attachments,
        };
        self.namespaces.event(event, session)
    }
}

impl<N: Namespaces> EngineApp for SocketLayer<N> {
    fn is_subscribed(&self) -> bool {
        self.namespaces.is_subscribed()
    }

    /// Every connected namespace is disconnected by the server: the client
    /// does not reconnect by itself.
    fn on_idle(&mut self, session: &Session) {
        let ConnectedNamespaces { main, others } = std::mem::take(&mut self.connected);
        let main = main.then_some("/");
        for namespace in main.into_iter().chain(others.iter().map(|n| &**n)) {
            let packet = socketio::encode(PacketType::Disconnect, namespace, 0, None, None);
            session.send_message(&packet);
            self.namespaces.disconnect(namespace);
        }
    }

    /// Version 3 connects the main namespace without being asked.
    fn on_open(&mut self, session: &Session) {
        if self.version == Version::V3 {
            self.connect("/", None, session);
        }
    }

    fn on_message(&mut self, message: AppMessage, session: &Session) -> Result<(), Fatal> {
        match message {
            AppMessage::Text(text) => {
                if self.gathering.is_some() {
                    return Err(Fatal(
                        "a text packet before the attachments it awaits".into(),
                    ));
                }
                let packet = socketio::Packet::decode(&text)
                    .map_err(|e| Fatal(format!("malformed Socket.IO packet: {e}")))?;
                self.on_packet(packet, session)
            }
            AppMessage::Binary(bytes) => {
                let Some(gathering) = self.gathering.as_mut() else {
                    return Err(Fatal("a binary packet no event awaits".into()));
                };
                gathering.attachments.push(bytes);
                if gathering.attachments.len() < gathering.packet.attachments {
                    return Ok(());
                }
                let Gathering {
                    packet,
                    attachments,
                } = *self.gathering.take().expect("gathering");
                self.dispatch(&packet, attachments, session)
            }
        }
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.namespaces.poll_ready(cx)
    }

    fn is_connected(&self) -> bool {
        self.ever_connected
    }
}

/// Sends event `name` with `args` (raw JSON) and binary `attachments` to
/// `namespace`.
pub fn emit(
    session: &Session,
    namespace: &str,
    name: &str,
    args: &[&str],
    attachments: &[Vec<u8>],
) {
    let data = socketio::event_data(name, args.iter().copied());
    send_with_attachments(
        session,
        PacketType::Event,
        namespace,
        None,
        &data,
        attachments,
    );
}

/// Acknowledges event `id` of `namespace` with `args`.
pub fn ack(session: &Session, namespace: &str, id: u64, args: &[&str], attachments: &[Vec<u8>]) {
    let data = socketio::ack_data(args.iter().copied());
    send_with_attachments(
        session,
        PacketType::Ack,
        namespace,
        Some(id),
        &data,
        attachments,
    );
}

fn send_with_attachments(
    session: &Session,
    kind: PacketType,
    namespace: &str,
    id: Option<u64>,
    data: &str,
    attachments: &[Vec<u8>],
) {
    let kind = match (kind, attachments.is_empty()) {
        (PacketType::Event, false) => PacketType::BinaryEvent,
        (PacketType::Ack, false) => PacketType::BinaryAck,
        (kind, _) => kind,
    };
    session.send_message(&socketio::encode(
        kind,
        namespace,
        attachments.len(),
        id,
        Some(data),
    ));
    for attachment in attachments {
        session.send_binary(attachment);
    }
}
