//! The maintenance lease: garbage collection and retention runs of all the
//! replicas on one storage happen one at a time, by whichever replica holds
//! the lease (`leases/maintenance` in the storage's shared state; see
//! [`cove_core::lease`] for the protocol). A replica with `[gc] enabled`
//! or `[retention] enabled` contends: it takes the lease when free and
//! renews it while it lives, and its scheduled runs happen only while it
//! holds it. A run asked for on demand on another replica is refused,
//! naming the holder.

use std::sync::Arc;

use cove_core::gc::GcError;
use cove_core::lease::{Fence, FenceRef, Hold, Lease, LeaseError, LeaseKeeper};
use cove_core::Storage;

use crate::config::{lease_timing, Config, GcSettings, RetentionSettings};

/// The shared-state document of the lease.
pub const LEASE_NAME: &str = "leases/maintenance";

/// Why a GC or retention run did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The lease is held by another replica, or could not be taken or kept.
    #[error("not run here: the maintenance lease is {0}")]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Run(#[from] GcError),
}

impl JobError {
    /// Whether another replica holds the lease (nothing went wrong).
    pub fn is_busy(&self) -> bool {
        matches!(self, JobError::Lease(LeaseError::Busy { .. }))
    }
}

/// Whether a replica with `config` contends for the lease.
pub fn contends(config: &Config) -> bool {
    GcSettings::from_config(config).enabled || RetentionSettings::from_config(config).enabled
}

/// The keeper of this replica's maintenance lease on `storage`.
pub fn keeper(config: &Config, storage: Arc<dyn Storage>) -> Arc<LeaseKeeper> {
    let lease = Lease::new(storage, LEASE_NAME, &config.server.replica_name(), lease_timing(config));
    LeaseKeeper::new(lease, contends(config))
}

/// The fence a run checks before each deletion.
pub fn fence(hold: &Arc<Hold>) -> FenceRef {
    FenceRef(hold.clone() as Arc<dyn Fence>)
}
