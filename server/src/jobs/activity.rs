//! Persistence of the activity log (when each manifest and tag was last
//! pulled), which retention decides by.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cove_core::retention::ActivityLog;
use tokio::task::JoinHandle;

use crate::config::Config;

/// How often a changed activity log is written.
const SAVE_EVERY: Duration = Duration::from_secs(60);

/// Where the activity log lives: local scratch space even for object storage.
pub fn activity_path(config: &Config) -> PathBuf {
    config.storage.root.join("state").join("activity.json")
}

/// Writes the activity log every [`SAVE_EVERY`] when it changed.
pub fn spawn_activity_saver(log: Arc<ActivityLog>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SAVE_EVERY).await;
            if let Err(e) = log.save().await {
                tracing::warn!(error = %e, "cannot save the activity log");
            }
        }
    })
}

/// Writes the activity log if it changed (at shutdown).
pub async fn save_at_shutdown(log: &ActivityLog) {
    match log.save().await {
        Ok(true) => tracing::info!("activity log saved"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot save the activity log"),
    }
}
