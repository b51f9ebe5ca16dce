//! Retention: the background task that trims history (and forgets
//! idempotency keys past their window) every `--retention-interval`.

use std::time::Duration;

use switchboard_proto::message::now_millis;

use crate::history::{HistoryStore, Retention};

/// Trims `history` every `interval` until the store is dropped.
pub(crate) async fn run_retention(
    history: std::sync::Weak<dyn HistoryStore>,
    retention: Retention,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(history) = history.upgrade() else {
            return;
        };
        match history.trim(retention, now_millis()).await {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "history trimmed"),
            Err(e) => tracing::warn!("history trim failed: {e}"),
        }
    }
}
