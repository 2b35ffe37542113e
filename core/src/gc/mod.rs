//! Online garbage collection: removes blobs no manifest references,
//! (optionally) untagged manifests, and expired upload sessions, while the
//! registry keeps serving.
//!
//! # Why it is safe while serving
//! Every write path goes through [`GuardedStorage`], which tells the shared
//! [`GcGuard`] about each digest it uses: a digest is *pinned* while an
//! operation that makes it reachable runs (blob write, upload commit, link,
//! manifest put, tag put) and *touched* (timestamped) when it ends; a
//! successful `blob_linked` check (what the engine does before accepting a
//! manifest) touches the digest too. A collection run starting at `t0` deletes
//! a digest only if it is
//! - not reachable from any manifest listed after `t0`,
//! - not pinned, not touched since `t0` and not touched within `grace`,
//! - not in an upstream fetch (the caller's `protect` predicate),
//! - and the process has been up for longer than `grace` (ages of digests
//!   written before the process started are unknown: a restart must not
//!   expose a blob pushed just before it).
//!
//! The check and the claim happen under one lock; a writer touching a digest
//! that is being deleted waits until the deletion finished, and then writes
//! it again. So a manifest that lands during a run either was listed by the
//! mark phase, or pinned/touched its blobs after `t0`.
//!
//! One process must own the storage for this argument to hold: several Cove
//! replicas sharing one bucket run GC one at a time under a lease
//! ([`crate::lease`], checked through [`GcOptions::fence`] before every
//! deletion), but a replica cannot see another's in-flight pushes, so on
//! shared object storage GC stays off by default (see `[gc] enabled`).

mod collect;
mod guard;
mod guarded;
pub(crate) mod inventory;

use std::time::Duration;

use crate::digest::Digest;
use crate::name::RepoName;
use crate::storage::StorageError;

pub use collect::{collect, collect_locked};
pub use guard::{DeletionClaims, GcGuard, PinnedDigests};
pub use guarded::GuardedStorage;

/// What a collection run does.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Nothing touched more recently than this is removed.
    pub grace: Duration,
    /// Also remove manifests that no tag, index or `subject` relation keeps.
    pub untagged: bool,
    /// Remove upload sessions idle for longer than this.
    pub upload_ttl: Option<Duration>,
    /// Report what would be removed without removing anything.
    pub dry_run: bool,
    /// Checked before every deletion: the run stops when it fails (the
    /// replicas' maintenance lease, see [`crate::lease`]).
    pub fence: Option<crate::lease::FenceRef>,
}

/// The outcome of a collection run.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: usize,
    /// Repositories read from the store this run: those written since the
    /// last run, or all of them (`full_listing`) at the first run, once a
    /// day and whenever a change may have gone unseen.
    #[serde(default)]
    pub repositories_listed: usize,
    #[serde(default)]
    pub full_listing: bool,
    pub manifests: usize,
    pub blobs: usize,
    /// Bytes of the distinct blobs still referenced by manifests after the
    /// run (from the manifests' descriptors; blobs kept only because they
    /// are recent are not included).
    #[serde(default)]
    pub bytes_referenced: u64,
    /// Blobs removed (or that would be), with their sizes.
    pub blobs_removed: Vec<(String, u64)>,
    pub bytes_freed: u64,
    /// Unreferenced blobs kept because they were recent or in use.
    pub blobs_kept_recent: usize,
    /// Untagged manifests removed (`repository@digest`).
    pub manifests_removed: Vec<String>,
    /// Upload session ids removed.
    pub uploads_removed: Vec<String>,
    pub duration_ms: u64,
    /// Requests made to an object store during the run (with whatever else
    /// this replica asked of it meanwhile); `None` on a filesystem.
    #[serde(default)]
    pub store_requests: Option<crate::storage::StoreRequests>,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored manifest does not parse: what it references is unknown, so
    /// nothing is removed.
    #[error("manifest {repo}@{digest} cannot be parsed ({reason}); nothing removed")]
    Unparsable { repo: RepoName, digest: Digest, reason: String },
    /// The run's fence failed (its lease was lost): it stopped before the
    /// next deletion.
    #[error("stopped: {0}")]
    Fenced(String),
    /// A listing with more than 4 billion entries (it would not fit in
    /// memory anyway).
    #[error("the listing is too large to hold")]
    ListingTooLarge,
}
