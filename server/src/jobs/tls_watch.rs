//! The certificate watcher: new connections get a changed certificate
//! without a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::tls::{log_outcome, CertStore};

/// How often the certificate and key files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Polls the store's files every [`POLL_INTERVAL`] and reloads them when
/// they changed (a bad new pair is logged and the running one kept).
pub fn spawn_cert_watcher(store: Arc<CertStore>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = store.clone();
            let outcome = tokio::task::spawn_blocking(move || s.reload_if_changed()).await.ok().flatten();
            log_outcome(outcome, "file change");
        }
    })
}
