//! Engine.IO sessions: one per client, carried by HTTP long-polling, by a
//! WebSocket, or by polling and then a WebSocket after an upgrade.
//!
//! A session's outgoing packets wait in its outbox, the same bounded queue
//! every connection has, as plain WebSocket frames: a WebSocket writes them
//! as they are, a poll takes them back out of their frames. The channel
//! layer above (the application, [`EngineApp`]) sees packets only.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use switchboard_core::hub::{ConnectionId, push_or_close};
use switchboard_core::outbox::Outbox;
use switchboard_proto::engineio::{self, PacketType, Version};
use switchboard_ws::frame::{self, OpCode};
use switchboard_ws::{CloseCode, CloseFrame};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::app::AppState;
use crate::app::WsSettings;
use crate::connections::{Registration, Seat};
use crate::metrics::ConnectionKind;
use switchboard_core::metrics::TransportKind;

/// The timings and limits of one endpoint's sessions.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest POSTed payload, announced as `maxPayload`.
    pub max_payload: usize,
    /// How long a client has to connect a namespace.
    pub connect_timeout: Duration,
    pub max_queued_bytes: usize,
    /// The settings of the sessions' WebSockets, shared by all of them.
    pub websocket: Arc<WsSettings>,
}

impl SessionSettings {
    /// An endpoint's settings; its WebSockets take the rest of `ws`.
    pub fn new(
        ws: &WsSettings,
        ping_interval: Duration,
        ping_timeout: Duration,
        max_payload: usize,
        connect_timeout: Duration,
    ) -> Self {
        SessionSettings {
            ping_interval,
            ping_timeout,
            max_payload,
            connect_timeout,
            max_queued_bytes: ws.max_queued_bytes,
            websocket: Arc::new(WsSettings {
                max_message_size: max_payload,
                ping_interval,
                ping_timeout,
                ..ws.clone()
            }),
        }
    }
}

/// What runs on top of a session: the Socket.IO layer, or the echo of the
/// Engine.IO conformance endpoint.
pub trait EngineApp: Send + 'static {
    /// The open packet is queued.
    fn on_open(&mut self, _session: &Session) {}

    /// A message packet from the client. An `Err` closes the session.
    fn on_message(&mut self, message: AppMessage, session: &Session) -> Result<(), Fatal>;

    /// Ready when the app takes another message (its work in flight is
    /// under budget); otherwise wakes `cx` once it is.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }

    /// Whether the client did what it must within the connect timeout
    /// (Socket.IO: connect a namespace).
    fn is_connected(&self) -> bool {
        true
    }

    /// Whether the session is subscribed to something, or otherwise worth
    /// keeping while its client says nothing (see `--idle-timeout`).
    fn is_subscribed(&self) -> bool {
        true
    }

    /// The session is closed as idle in a moment: tell the client, so it
    /// does not reconnect by itself.
    fn on_idle(&mut self, _session: &Session) {}
}

/// A message packet's content.
#[derive(Debug)]
pub enum AppMessage {
    Text(String),
    Binary(Vec<u8>),
}

/// Why a session is closed: malformed or unexpected input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

impl From<engineio::DecodeError> for Fatal {
    fn from(e: engineio::DecodeError) -> Self {
        Fatal(e.to_string())
    }
}

/// Which transport carries the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Polling,
    /// A WebSocket answered the probe; polls get `noop` until it sends
    /// `upgrade`, or until it fails and polling goes on.
    Upgrading,
    WebSocket,
}

/// Who ended a session, which decides what a waiting poll is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// The client sent `close`: a waiting poll gets `noop`.
    Client,
    /// The server (a timeout, bad input, shutdown): a waiting poll gets `close`.
    Server,
}

#[derive(Debug)]
struct State {
    transport: Transport,
    /// A poll (GET) is waiting for packets.
    polling: bool,
    /// A POST is being handled.
    posting: bool,
    /// Polling, version 4: a ping was sent and no pong has come back by
    /// this deadline.
    awaiting_pong: Option<Instant>,
    /// Polling, version 3: the client pinged since the last check.
    pinged: bool,
    /// Polling: the session is over if the client is not heard from (a
    /// pong in version 4, a ping in version 3) by then. Checked by every
    /// request, so the session ends on time however late the heartbeat's
    /// own timer fires on a busy machine.
    heard_by: Instant,
    /// When the client last sent a message (or the session opened).
    last_message: Instant,
    /// Told it is idle; closed a moment later.
    idled: bool,
    closed: Option<ClosedBy>,
    /// Closed by the client with no poll waiting: the next poll still gets
    /// its `noop` (the client may have sent its poll before its `close`).
    farewell_pending: bool,
}

/// How long an idle session, told so, stays for its client to hear it.
const IDLE_GRACE: Duration = Duration::from_secs(1);

/// How long a session closed by its client stays known for the poll that
/// may be on its way.
const FAREWELL_GRACE: Duration = Duration::from_secs(10);

/// One Engine.IO session.
pub struct Session {
    pub sid: RandomId,
    pub version: Version,
    pub outbox: Arc<Outbox>,
    pub settings: Arc<SessionSettings>,
    state: Mutex<State>,
    /// Taken out (and dropped, which leaves every channel) on close.
    app: Mutex<Option<Box<dyn EngineApp>>>,
    /// Wakes a waiting poll when an upgrade starts.
    poll_wake: Notify,
    /// Wakes the heartbeat when a pong arrives.
    pong: Notify,
    opened: Instant,
    registration: Registration,
    /// Where the session is counted once a WebSocket carries it.
    upgraded_gauge: prometheus::IntGauge,
    sessions: Arc<Sessions>,
}

/// The first bytes of every session id a node hands out: which node holds
/// the session, for a poll that reaches another (`--engine redis`).
pub type NodeTag = [u8; 4];

/// The sessions a poll or an upgrade may name by `sid`.
pub struct Sessions {
    /// Read by every poll and POST, written at open and close: polls on
    /// every thread look up at once.
    by_sid: RwLock<HashMap<RandomId, Arc<Session>>>,
    /// This node's tag, random per start.
    pub tag: NodeTag,
}

impl Default for Sessions {
    fn default() -> Self {
        let mut tag = [0u8; 4];
        getrandom::fill(&mut tag).expect("the system's random source works");
        Sessions {
            by_sid: RwLock::default(),
            tag,
        }
    }
}

impl Sessions {
    pub fn get(&self, sid: &str) -> Option<Arc<Session>> {
        let sid = RandomId::parse(sid)?;
        self.by_sid.read().get(&sid).cloned()
    }

    /// A new session id, tagged with this node.
    fn new_sid(&self) -> RandomId {
        let mut sid = RandomId::random();
        sid.0[..4].copy_from_slice(&self.tag);
        sid
    }
}

/// A random id (a session's `sid`, a socket's, a recovery `pid`): 15
/// bytes, written as 20 URL-safe base64 characters, kept as the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RandomId([u8; 15]);

impl RandomId {
    pub fn random() -> RandomId {
        let mut bytes = [0u8; 15];
        getrandom::fill(&mut bytes).expect("the system's random source works");
        RandomId(bytes)
    }

    /// The node tag a session id starts with.
    pub fn node_tag(&self) -> NodeTag {
        [self.0[0], self.0[1], self.0[2], self.0[3]]
    }

    /// An id a client sent back; `None` if this server never wrote it.
    pub fn parse(text: &str) -> Option<RandomId> {
        if text.len() != 20 {
            return None;
        }
        let mut bytes = [0u8; 15];
        let written = URL_SAFE_NO_PAD.decode_slice(text, &mut bytes).ok()?;
        (written == 15).then_some(RandomId(bytes))
    }
}

impl std::fmt::Display for RandomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl Session {
    /// Opens a session carried by `transport` (polling or a WebSocket):
    /// queues the open packet, starts `app`, and for polling the
    /// heartbeat. Only polling sessions can be found by `sid`.
    pub fn open(
        sessions: &Arc<Sessions>,
        state: &AppState,
        version: Version,
        transport: Transport,
        settings: Arc<SessionSettings>,
        app: Box<dyn EngineApp>,
        seat: Seat,
    ) -> Arc<Session> {
        let metrics = &state.metrics;
        let slow = metrics.slow_consumers(TransportKind::SocketIo);
        let outbox = Arc::new(Outbox::new(settings.max_queued_bytes).counting_slow_consumers(slow));
        let counted_as = match transport {
            Transport::Polling | Transport::Upgrading => ConnectionKind::SocketIoPolling,
            Transport::WebSocket => ConnectionKind::SocketIoWebSocket,
        };
        let gauge = metrics.connections(counted_as).clone();
        let registration = state.connections.register(outbox.clone(), seat, gauge);
        let heard_by = Instant::now() + settings.ping_interval + settings.ping_timeout;
        let session = Arc::new(Session {
            sid: sessions.new_sid(),
            version,
            outbox,
            settings,
            state: Mutex::new(State {
                transport,
                polling: false,
                posting: false,
                awaiting_pong: None,
                pinged: false,
                heard_by,
                last_message: Instant::now(),
                idled: false,
                closed: None,
                farewell_pending: false,
            }),
            app: Mutex::new(Some(app)),
            poll_wake: Notify::new(),
            pong: Notify::new(),
            opened: Instant::now(),
            registration,
            upgraded_gauge: metrics
                .connections(ConnectionKind::SocketIoWebSocket)
                .clone(),
            sessions: sessions.clone(),
        });
        let upgrades: &[&str] = match transport {
            Transport::Polling => &["websocket"],
            _ => &[],
        };
        let sid = session.sid.to_string();
        let handshake = engineio::Handshake {
            sid: &sid,
            upgrades,
            ping_interval: session.settings.ping_interval.as_millis() as u64,
            ping_timeout: session.settings.ping_timeout.as_millis() as u64,
            max_payload: (version == Version::V4).then_some(session.settings.max_payload),
        };
        session.send_text(&handshake.packet());
        if transport == Transport::Polling {
            sessions.by_sid.write().insert(session.sid, session.clone());
            state.connections.tasks.spawn(heartbeat(session.clone()));
        }
        session.with_app(|app, session| {
            app.on_open(session);
            Ok(())
        });
        session
    }

    /// The connection number the hub knows this session by.
    pub fn id(&self) -> ConnectionId {
        self.registration.id
    }

    /// Queues a whole Engine.IO text packet (type digit included). A
    /// session too far behind is closed as a slow consumer.
    pub fn send_text(&self, packet: &str) {
        push_or_close(
            &self.outbox,
            frame::encode(OpCode::Text, false, packet.as_bytes()),
        );
    }

    /// Queues a message packet: `4` and `data`.
    pub fn send_message(&self, data: &str) {
        self.send_frame(self.message_frame(data));
    }

    /// A message packet as the frame [`Session::send_message`] would queue.
    pub fn message_frame(&self, data: &str) -> Bytes {
        let mut packet = String::with_capacity(data.len() + 1);
        packet.push(PacketType::Message.digit());
        packet.push_str(data);
        frame::encode(OpCode::Text, false, packet.as_bytes())
    }

    /// Queues a frame made by [`Session::message_frame`].
    pub fn send_frame(&self, frame: Bytes) {
        push_or_close(&self.outbox, frame);
    }

    /// Queues a binary message packet.
    pub fn send_binary(&self, bytes: &[u8]) {
        let payload = engineio::binary_frame_payload(self.version, bytes);
        push_or_close(&self.outbox, frame::encode(OpCode::Binary, false, &payload));
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed.is_some()
    }

    /// Runs `f` on the app, unless the session is closed; an `Err` closes
    /// it. Returns whether the session is still open.
    pub fn with_app(
        &self,
        f: impl FnOnce(&mut dyn EngineApp, &Session) -> Result<(), Fatal>,
    ) -> bool {
        let mut app = self.app.lock();
        let Some(running) = app.as_mut() else {
            return false;
        };
        if let Err(fatal) = f(running.as_mut(), self) {
            drop(app);
            self.close_for(fatal);
            return false;
        }
        if self.is_closed() {
            // Closed meanwhile from elsewhere, while the app was busy here.
            let finished = app.take();
            drop(app);
            drop(finished);
            return false;
        }
        true
    }

    /// Ready when the app takes another message.
    pub fn poll_app_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self.app.lock().as_mut() {
            Some(app) => app.poll_ready(cx),
            None => Poll::Ready(()),
        }
    }

    /// Handles one packet from the client, whichever transport brought it
    /// (the upgrade's own packets are the WebSocket's to handle).
    pub fn on_packet(&self, packet: engineio::Packet) -> Result<(), Fatal> {
        match packet {
            engineio::Packet::Binary(bytes) => {
                self.heard_message();
                self.dispatch(AppMessage::Binary(bytes));
            }
            engineio::Packet::Text { kind, data } => match kind {
                PacketType::Message => {
                    self.heard_message();
                    self.dispatch(AppMessage::Text(data));
                }
                PacketType::Ping => {
                    // Version 3 clients ping; the answer echoes the data.
                    let mut state = self.state.lock();
                    state.pinged = true;
                    state.heard_by = self.next_heard_by();
                    drop(state);
                    self.send_text(&format!("{}{data}", PacketType::Pong.digit()));
                }
                PacketType::Pong => {
                    let mut state = self.state.lock();
                    state.awaiting_pong = None;
                    state.heard_by = self.next_heard_by();
                    drop(state);
                    self.pong.notify_one();
                }
                PacketType::Close => self.close(ClosedBy::Client),
                PacketType::Noop => {}
                PacketType::Open | PacketType::Upgrade => {
                    return Err(Fatal(format!("unexpected packet type {kind:?}")));
                }
            },
        }
        Ok(())
    }

    /// Heard from now: the next ping is due an interval from now (v4 pings
    /// an interval after the pong), its answer a timeout after that.
    fn next_heard_by(&self) -> Instant {
        Instant::now() + self.settings.ping_interval + self.settings.ping_timeout
    }

    fn dispatch(&self, message: AppMessage) {
        self.with_app(|app, session| app.on_message(message, session));
    }

    fn heard_message(&self) {
        self.state.lock().last_message = Instant::now();
    }

    /// Whether the session has gone `--idle-timeout` without a message
    /// from its client while subscribed to nothing.
    pub fn idle_overdue(&self) -> bool {
        let Some(timeout) = self.settings.websocket.idle_timeout else {
            return false;
        };
        {
            let state = self.state.lock();
            if state.idled || state.closed.is_some() || state.last_message.elapsed() < timeout {
                return false;
            }
        }
        // An app busy with a message is not idle.
        self.app
            .try_lock()
            .is_some_and(|app| app.as_ref().is_some_and(|app| !app.is_subscribed()))
    }

    /// Closes an idle session: the app tells its client first, and the
    /// session ends a moment later (a long poll takes the news only if the
    /// session is still there when it comes back).
    pub fn close_idle(self: &Arc<Self>) {
        self.state.lock().idled = true;
        self.settings.websocket.idled.inc();
        self.with_app(|app, session| {
            app.on_idle(session);
            Ok(())
        });
        let session = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(IDLE_GRACE).await;
            let idle = CloseFrame::new(CloseCode::NORMAL, "idle timeout: no subscription");
            session.close_with(ClosedBy::Server, idle);
        });
    }

    /// Whether the client took too long to connect.
    pub fn connect_overdue(&self) -> bool {
        self.opened.elapsed() >= self.settings.connect_timeout
            && self
                .app
                .lock()
                .as_ref()
                .is_some_and(|app| !app.is_connected())
    }

    /// Ends the session: forgets its sid, closes its transport and leaves
    /// its channels. Only the first call does anything.
    pub fn close(&self, by: ClosedBy) {
        self.close_with(by, CloseFrame::new(CloseCode::NORMAL, "session closed"));
    }

    /// Closes the session for bad input; a WebSocket carrying it gets 1008
    /// with the reason.
    pub fn close_for(&self, fatal: Fatal) {
        tracing::debug!(sid = %self.sid, "socket.io session closed: {fatal}");
        self.close_with(
            ClosedBy::Server,
            CloseFrame::new(CloseCode::POLICY_VIOLATION, fatal.0),
        );
    }

    fn close_with(&self, by: ClosedBy, frame: CloseFrame) {
        let keep_for_farewell = {
            let mut state = self.state.lock();
            if state.closed.is_some() {
                return;
            }
            state.closed = Some(by);
            state.farewell_pending =
                by == ClosedBy::Client && !state.polling && state.transport != Transport::WebSocket;
            state.farewell_pending
        };
        if keep_for_farewell {
            let sessions = self.sessions.clone();
            let sid = self.sid;
            tokio::spawn(async move {
                tokio::time::sleep(FAREWELL_GRACE).await;
                sessions.by_sid.write().remove(&sid);
            });
        } else {
            self.sessions.by_sid.write().remove(&self.sid);
        }
        self.outbox.close(frame);
        self.poll_wake.notify_one();
        // Busy (a message being handled) means the handler drops it.
        if let Some(mut app) = self.app.try_lock() {
            let finished = app.take();
            drop(app);
            drop(finished);
        }
    }

    pub fn closed_by(&self) -> Option<ClosedBy> {
        self.state.lock().closed
    }

    /// Closes the session if its pong is overdue, however late the
    /// heartbeat's own timer fires. Returns whether it is closed.
    pub fn expire_if_overdue(&self) -> bool {
        let overdue = {
            let state = self.state.lock();
            if state.closed.is_some() {
                return !state.farewell_pending;
            }
            let now = Instant::now();
            let polling = state.transport != Transport::WebSocket;
            state.awaiting_pong.is_some_and(|deadline| now >= deadline)
                || (polling && now >= state.heard_by)
        };
        if overdue {
            tracing::debug!(sid = %self.sid, "socket.io session: ping timeout");
            self.close(ClosedBy::Server);
        }
        overdue
    }

    /// A poll arrives: `Err` if another is waiting (both fail and the
    /// session is closed, as the protocol says) or the session is not
    /// polling.
    pub fn start_poll(&self) -> Result<PollStart, PollRefused> {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            if !std::mem::take(&mut state.farewell_pending) {
                return Err(PollRefused::NotPolling);
            }
            drop(state);
            self.sessions.by_sid.write().remove(&self.sid);
            return Ok(PollStart::Noop);
        }
        match state.transport {
            Transport::WebSocket => return Err(PollRefused::NotPolling),
            Transport::Upgrading => return Ok(PollStart::Noop),
            Transport::Polling => {}
        }
        if state.polling {
            drop(state);
            self.close(ClosedBy::Server);
            return Err(PollRefused::Overlap);
        }
        state.polling = true;
        Ok(PollStart::Wait)
    }

    pub fn end_poll(&self) {
        self.state.lock().polling = false;
    }

    /// Resolves when an upgrade starts or the session closes.
    pub async fn upgrade_started(&self) {
        self.poll_wake.notified().await
    }

    /// A POST arrives: `Err` if another is being handled or the session is
    /// not polling.
    pub fn start_post(&self) -> Result<(), PollRefused> {
        let mut state = self.state.lock();
        if state.transport == Transport::WebSocket || state.closed.is_some() {
            return Err(PollRefused::NotPolling);
        }
        if state.posting {
            drop(state);
            self.close(ClosedBy::Server);
            return Err(PollRefused::Overlap);
        }
        state.posting = true;
        Ok(())
    }

    pub fn end_post(&self) {
        self.state.lock().posting = false;
    }

    /// A WebSocket asks to take the session over: only a polling session
    /// not already being upgraded can be.
    pub fn can_upgrade(&self) -> bool {
        let state = self.state.lock();
        state.transport == Transport::Polling && state.closed.is_none()
    }

    /// The probe was answered: a waiting poll gets `noop`, and so does any
    /// poll until the upgrade ends.
    pub fn begin_upgrade(&self) {
        let mut state = self.state.lock();
        if state.transport == Transport::Polling {
            state.transport = Transport::Upgrading;
            drop(state);
            self.poll_wake.notify_one();
        }
    }

    /// The WebSocket sent `upgrade`: it carries the session from now on.
    /// Its sid stays known until it closes: a poll or another WebSocket
    /// naming it is refused as the protocol says, not as unknown.
    pub fn finish_upgrade(&self) -> bool {
        let mut state = self.state.lock();
        if state.closed.is_some() || state.transport == Transport::WebSocket {
            return false;
        }
        state.transport = Transport::WebSocket;
        drop(state);
        self.registration.count_as(self.upgraded_gauge.clone());
        true
    }

    /// The probing WebSocket went away before `upgrade`: polling goes on.
    pub fn cancel_upgrade(&self) {
        let mut state = self.state.lock();
        if state.transport == Transport::Upgrading {
            state.transport = Transport::Polling;
        }
    }
}

/// How a poll starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStart {
    /// It waits for packets.
    Wait,
    /// It is answered `noop` at once: an upgrade is under way, or the
    /// client closed the session just before.
    Noop,
}

/// Why a poll or a POST was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollRefused {
    /// Another request of the same kind was under way.
    Overlap,
    /// The session moved to a WebSocket.
    NotPolling,
}

/// Keeps a polling session alive, and ends it when the client goes quiet:
/// version 4 pings every interval and expects a pong within the timeout;
/// version 3 expects the client's ping within interval plus timeout. Ends
/// once a WebSocket carries the session (its connection does the same).
async fn heartbeat(session: Arc<Session>) {
    let settings = session.settings.clone();
    loop {
        let wait = match session.version {
            Version::V4 => settings.ping_interval,
            Version::V3 => settings.ping_interval + settings.ping_timeout,
        };
        if !session.sleep_while_polling(wait).await {
            return;
        }
        if session.connect_overdue() {
            session.close(ClosedBy::Server);
            return;
        }
        if session.idle_overdue() {
            session.close_idle();
            return;
        }
        match session.version {
            Version::V4 => {
                let deadline = Instant::now() + settings.ping_timeout;
                session.state.lock().awaiting_pong = Some(deadline);
                session.send_text(&PacketType::Ping.digit().to_string());
                // The next ping is an interval after the pong.
                let pong = session.pong.notified();
                tokio::select! {
                    _ = pong => continue,
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                if !session.still_polling() {
                    return;
                }
                if session.state.lock().awaiting_pong.is_some() {
                    tracing::debug!(sid = %session.sid, "socket.io session: ping timeout");
                    session.close(ClosedBy::Server);
                    return;
                }
            }
            Version::V3 => {
                if !std::mem::take(&mut session.state.lock().pinged) {
                    tracing::debug!(sid = %session.sid, "socket.io session: ping timeout");
                    session.close(ClosedBy::Server);
                    return;
                }
            }
        }
    }
}

impl Session {
    /// Sleeps for `duration`; false if meanwhile the session closed (from
    /// here or from outside: shutdown, a slow consumer) or a WebSocket
    /// took it over.
    async fn sleep_while_polling(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = self.outbox.closing() => {
                self.close(ClosedBy::Server);
                return false;
            }
        }
        self.still_polling()
    }

    fn still_polling(&self) -> bool {
        let state = self.state.lock();
        state.closed.is_none() && state.transport != Transport::WebSocket
    }
}

/// The ping frame a WebSocket session sends (version 4).
pub fn ping_frame() -> Bytes {
    frame::encode(OpCode::Text, false, b"2")
}
