//! Per-upstream counters: what the cache served, what upstream cost, and
//! the last upstream failure (for `/admin/status` and metrics).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::upstream::UpstreamError;

/// The counters of one upstream.
#[derive(Debug, Default, Clone)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    pub revalidated: u64,
    pub stale: u64,
    pub upstream_errors: u64,
    /// Upstream answers of 429 Too Many Requests (part of `upstream_errors`).
    pub rate_limited: u64,
    /// The last upstream failure and when it happened.
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// Blob bytes served from the cache without asking upstream for them.
    pub bytes_saved: u64,
    /// Blob bytes fetched from upstream, verified and cached.
    pub bytes_fetched: u64,
    /// Blob misses streamed to their clients but not cached: storage had
    /// no room to spool them (disk full, or below `storage.min_free`).
    pub uncached: u64,
    /// Cached tags served without revalidation (counted as `stale` too)
    /// because the upstream's rate-limit headroom was below the floor.
    pub headroom_skips: u64,
}

/// The counters of every upstream, by host; shared with fetch tasks.
#[derive(Default)]
pub(crate) struct UpstreamCounters {
    by_host: Mutex<HashMap<String, CacheCounters>>,
}

impl UpstreamCounters {
    /// Updates the counters of `host`.
    pub(crate) fn count(&self, host: &str, f: impl FnOnce(&mut CacheCounters)) {
        if let Ok(mut c) = self.by_host.lock() {
            f(c.entry(host.to_owned()).or_default());
        }
    }

    /// Counts one failed upstream request of `host` (a 404 is not a failure).
    pub(crate) fn upstream_failed(&self, host: &str, e: &UpstreamError) {
        if matches!(e, UpstreamError::NotFound) {
            return;
        }
        self.failure(host, e.to_string(), matches!(e, UpstreamError::TooManyRequests { .. }));
    }

    /// Counts one upstream failure described by `message`.
    pub(crate) fn failure(&self, host: &str, message: String, rate_limited: bool) {
        self.count(host, |c| {
            c.upstream_errors += 1;
            c.rate_limited += u64::from(rate_limited);
            c.last_error = Some(message);
            c.last_error_at = Some(SystemTime::now());
        });
    }

    pub(crate) fn snapshot(&self) -> HashMap<String, CacheCounters> {
        self.by_host.lock().map(|c| c.clone()).unwrap_or_default()
    }
}
