//! `--socketio-conformance`: the reference servers of the official
//! Engine.IO and Socket.IO protocol test suites, like `/echo` for Autobahn.
//! `/engine.io/` echoes every message; `/socket.io/` answers `message` with
//! `message-back`, acknowledges `message-with-ack` with its own arguments,
//! and greets each connection to `/` or `/custom` with an `auth` event
//! carrying the handshake's `auth`. No channel is touched.

use bytes::Bytes;
use std::collections::HashMap;

use serde_json::value::RawValue;

use super::namespaces::{Connected, Event, Namespaces, Refusal, ack, emit};
use super::session::{AppMessage, EngineApp, Fatal, Session};

/// `/engine.io/`: every message back to its sender, text or binary.
pub struct EngineEcho;

impl EngineApp for EngineEcho {
    fn on_message(&mut self, message: AppMessage, session: &Session) -> Result<(), Fatal> {
        match message {
            AppMessage::Text(text) => session.send_message(&text),
            AppMessage::Binary(bytes) => session.send_binary(&bytes),
        }
        Ok(())
    }
}

/// `/socket.io/`'s namespaces in conformance mode.
#[derive(Default)]
pub struct ReferenceNamespaces {
    /// Each connected namespace's handshake `auth`, as sent.
    auth: HashMap<String, String>,
}

impl Namespaces for ReferenceNamespaces {
    fn connect(
        &mut self,
        namespace: &str,
        auth: Option<&RawValue>,
        _session: &Session,
    ) -> Result<Connected, Refusal> {
        if namespace != "/" && namespace != "/custom" {
            return Err(Refusal::from("Invalid namespace".to_owned()));
        }
        let auth = auth.map_or_else(|| "{}".to_owned(), |a| a.get().to_owned());
        self.auth.insert(namespace.to_owned(), auth);
        Ok(Connected::default())
    }

    fn connected(&mut self, namespace: &str, session: &Session, reply: Bytes) {
        session.send_frame(reply);
        let auth = &self.auth[namespace];
        emit(session, namespace, "auth", &[auth], &[]);
    }

    fn disconnect(&mut self, namespace: &str) {
        self.auth.remove(namespace);
    }

    fn event(&mut self, event: Event<'_>, session: &Session) -> Result<(), Fatal> {
        let args: Vec<&str> = event.args.iter().map(|a| a.get()).collect();
        match (event.name.as_str(), event.ack) {
            ("message", _) => emit(
                session,
                event.namespace,
                "message-back",
                &args,
                &event.attachments,
            ),
            ("message-with-ack", Some(id)) => {
                ack(session, event.namespace, id, &args, &event.attachments)
            }
            _ => {}
        }
        Ok(())
    }
}
