//! Expiry of idle upload sessions.

use std::time::Duration;

use cove_core::Registry;
use tokio::task::JoinHandle;

/// Removes upload sessions idle for longer than `ttl`, sweeping at least
/// twice per TTL so a session never outlives it by much.
pub fn spawn_upload_expiry(registry: Registry, ttl: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let period = (ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(600));
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            match registry.expire_uploads(ttl).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "removed idle upload sessions"),
                Err(e) => tracing::warn!(error = %e, "upload expiry failed"),
            }
        }
    })
}
