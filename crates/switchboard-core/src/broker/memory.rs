//! The single-node broker: hands events straight to the local hub.

use std::sync::{Arc, OnceLock};

use super::{Broker, ChannelEvent, EventSink};

/// In-process delivery; the order of `publish` calls is the order of delivery.
#[derive(Default)]
pub struct MemoryBroker {
    sink: OnceLock<Arc<dyn EventSink>>,
}

impl MemoryBroker {
    /// Connects the broker to the hub it delivers to (set once, at start-up).
    pub fn attach(&self, sink: Arc<dyn EventSink>) {
        if self.sink.set(sink).is_err() {
            tracing::warn!("memory broker attached twice; keeping the first sink");
        }
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, event: ChannelEvent) {
        if let Some(sink) = self.sink.get() {
            sink.deliver(event);
        }
    }

    fn publish_all(&self, events: Vec<ChannelEvent>) {
        if let Some(sink) = self.sink.get() {
            sink.deliver_all(events);
        }
    }
}
