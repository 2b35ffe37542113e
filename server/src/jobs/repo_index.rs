//! Keeping the in-memory repository index ([`cove_core::storage::index`])
//! current: a sweep of the layout at start and every
//! [`index::SWEEP`] ([`index::SWEEP_SHARED`] on a shared store), and on a
//! shared store the other replicas' change records every [`index::POLL`].

use std::time::{Duration, Instant};

use cove_core::storage::index;
use cove_core::Registry;
use tokio::task::JoinHandle;

/// Starts the sweeps (and polls); `None` when the registry keeps no index.
pub fn spawn_repo_index(registry: Registry) -> Option<JoinHandle<()>> {
    let index = registry.repo_index()?.clone();
    let storage = registry.storage().clone();
    Some(tokio::spawn(async move {
        let mut swept: Option<Instant> = None;
        loop {
            if swept.is_none_or(|at| at.elapsed() >= index.sweep_every()) {
                let start = Instant::now();
                match index.sweep(storage.as_ref()).await {
                    Ok(n) => {
                        tracing::info!(
                            repositories = n,
                            ms = start.elapsed().as_millis() as u64,
                            "repository index swept"
                        );
                        swept = Some(Instant::now());
                    }
                    // Until a sweep succeeds, listings walk the store.
                    Err(e) => tracing::warn!(error = %e, "repository index: sweep failed; retrying"),
                }
            }
            if let Err(e) = index.poll(storage.as_ref()).await {
                tracing::warn!(error = %e, "repository index: reading other replicas' changes failed");
            }
            tokio::time::sleep(if swept.is_some() { index::POLL } else { Duration::from_secs(5) }).await;
        }
    }))
}
