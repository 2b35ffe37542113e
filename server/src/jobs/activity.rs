//! Persistence of the activity log (when each manifest and tag was last
//! pulled), which retention decides by: a local file, and on shared
//! (object) storage also one record per replica in the storage's shared
//! state (`activity/<replica id>`), rewritten when it changed at most once
//! per `[retention] activity_interval`, that the replica running
//! retention merges ([`SharedActivity`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cove_core::retention::ActivityLog;
use cove_core::{Storage, StorageError};
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;

use crate::config::{parse_duration, Config};

/// The shared-state directory of the replicas' activity records.
pub const ACTIVITY_DIR: &str = "activity";

/// Where the activity log lives: local scratch space even for object storage.
pub fn activity_path(config: &Config) -> PathBuf {
    config.storage.root.join("state").join("activity.json")
}

/// How often a changed activity log is written (`[retention] activity_interval`).
pub fn save_every(config: &Config) -> Duration {
    parse_duration(&config.retention.activity_interval).unwrap_or(Duration::from_secs(60))
}

/// This replica's record id: its name made a valid state name, and a hash
/// of the name and the local root, so two replicas that share a name (two
/// processes on one host) still have a record each, and a restart on the
/// same root finds its own again.
pub fn replica_record_id(config: &Config) -> String {
    let name = config.server.replica_name();
    let mut clean: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .take(40)
        .collect();
    if clean.is_empty() {
        clean.push_str("replica");
    }
    let root = std::fs::canonicalize(&config.storage.root).unwrap_or_else(|_| config.storage.root.clone());
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\0");
    h.update(root.to_string_lossy().as_bytes());
    format!("{clean}-{}", &hex::encode(h.finalize())[..12])
}

/// The activity records of the replicas on one shared storage.
pub struct SharedActivity {
    store: Arc<dyn Storage>,
    /// This replica's record (`activity/<id>`).
    own: String,
    log: Arc<ActivityLog>,
    /// The log generation last written to the record.
    written: Mutex<Option<u64>>,
    /// Store requests made for the records (PUTs, GETs, LISTs), for measurements.
    requests: AtomicU64,
}

impl SharedActivity {
    /// The records on `store`, this replica's being `activity/<id>`
    /// (see [`replica_record_id`]). `None` on the filesystem backend: one
    /// replica owns it and its log file is the record.
    pub fn for_config(config: &Config, store: Arc<dyn Storage>, log: Arc<ActivityLog>) -> Option<Arc<SharedActivity>> {
        config.storage.capabilities().shared.then(|| SharedActivity::new(store, &replica_record_id(config), log))
    }

    /// The records on `store`, this replica's being `activity/<id>`.
    pub fn new(store: Arc<dyn Storage>, id: &str, log: Arc<ActivityLog>) -> Arc<SharedActivity> {
        Arc::new(SharedActivity {
            store,
            own: format!("{ACTIVITY_DIR}/{id}"),
            log,
            written: Mutex::new(None),
            requests: AtomicU64::new(0),
        })
    }

    /// Store requests made for the records so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.requests.fetch_add(n, Ordering::Relaxed);
    }

    /// At start: merges this replica's own record (the local file may be
    /// gone with a fresh scratch directory), so a restart loses at most the
    /// last batch.
    pub async fn restore(&self) {
        self.count(1);
        match self.store.state_get(&self.own).await {
            Ok(Some(raw)) => match self.log.merge_json(&raw) {
                Ok(n) => tracing::info!(record = %self.own, merged = n, "activity record restored from storage"),
                Err(e) => tracing::warn!(record = %self.own, error = %e, "unreadable activity record; ignored"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(record = %self.own, error = %e, "cannot read this replica's activity record"),
        }
    }

    /// Rewrites this replica's record if the log changed since the last
    /// write (one PUT). Returns whether it wrote.
    pub async fn publish(&self) -> Result<bool, StorageError> {
        let generation = self.log.generation();
        if *self.written.lock().unwrap_or_else(|p| p.into_inner()) == Some(generation) {
            return Ok(false);
        }
        let bytes = Bytes::from(self.log.to_json());
        self.count(1);
        self.store.state_put(&self.own, bytes).await?;
        *self.written.lock().unwrap_or_else(|p| p.into_inner()) = Some(generation);
        Ok(true)
    }

    /// Merges every other replica's record into the log (latest time
    /// wins): one LIST and one GET per replica. Failures are logged; the
    /// run goes on with what it has.
    pub async fn merge_all(&self) -> usize {
        self.count(1);
        let names = match self.store.state_list(ACTIVITY_DIR).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the replicas' activity records");
                return 0;
            }
        };
        let mut merged = 0;
        for name in names {
            let record = format!("{ACTIVITY_DIR}/{name}");
            if record == self.own {
                continue;
            }
            self.count(1);
            match self.store.state_get(&record).await {
                Ok(Some(raw)) => match self.log.merge_json(&raw) {
                    Ok(n) => merged += n,
                    Err(e) => tracing::warn!(%record, error = %e, "unreadable activity record; ignored"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(%record, error = %e, "cannot read an activity record"),
            }
        }
        tracing::debug!(merged, "merged the replicas' activity records");
        merged
    }
}

/// Writes the activity log (file, and shared record) every `every` when it changed.
pub fn spawn_activity_saver(
    log: Arc<ActivityLog>,
    shared: Option<Arc<SharedActivity>>,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            save(&log, shared.as_deref()).await;
        }
    })
}

async fn save(log: &ActivityLog, shared: Option<&SharedActivity>) -> bool {
    let file = match log.save().await {
        Ok(wrote) => wrote,
        Err(e) => {
            tracing::warn!(error = %e, "cannot save the activity log");
            false
        }
    };
    let record = match shared {
        Some(s) => match s.publish().await {
            Ok(wrote) => wrote,
            Err(e) => {
                tracing::warn!(error = %e, "cannot write this replica's activity record");
                false
            }
        },
        None => false,
    };
    file || record
}

/// Writes the activity log if it changed (at shutdown).
pub async fn save_at_shutdown(log: &ActivityLog, shared: Option<&SharedActivity>) {
    if save(log, shared).await {
        tracing::info!("activity log saved");
    }
}
