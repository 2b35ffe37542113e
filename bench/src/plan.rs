//! How big a run is: the [`Mode`] picked on the command line and the
//! [`Plan`] of sizes and repetitions it stands for.

use std::time::Duration;

use crate::MIB;

/// How big a run is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Smoke,
    Short,
    Full,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Smoke => "smoke",
            Mode::Short => "short",
            Mode::Full => "full",
        }
    }
}

/// Sizes and repetitions of one mode.
pub(crate) struct Plan {
    /// Bytes of random data every blob is cut from.
    pub(crate) pool: usize,
    pub(crate) pairs: usize,
    pub(crate) dur: Duration,
    pub(crate) workers: usize,
    pub(crate) blob_count: usize,
    pub(crate) blob_large_max: u64,
    pub(crate) blob_huge: u64,
    pub(crate) blob_requests: usize,
    pub(crate) push_size: u64,
    pub(crate) push_pairs: usize,
    pub(crate) storm_images: usize,
    pub(crate) mixed_rates: Vec<f64>,
    pub(crate) mixed_dur: Duration,
    pub(crate) mixed_pairs: usize,
    pub(crate) startup_repos: usize,
    pub(crate) startup_pairs: usize,
    /// The blob of the cache miss and hit rows, and the total size of the
    /// 10-layer image of the cold-pull row.
    pub(crate) cache_size: u64,
    pub(crate) cache_pairs: usize,
    /// The blob the concurrent clients pull through the cache at once.
    pub(crate) concurrent_size: u64,
    /// The layer of the single-layer image skopeo pushes and pulls.
    pub(crate) skopeo_size: u64,
    pub(crate) skopeo_pairs: usize,
    pub(crate) disk_bytes: u64,
    /// Repositories of the scale store, and tags of its one big repository.
    pub(crate) scale_repos: usize,
    pub(crate) scale_tags: usize,
    /// The same on object storage (s3s-fs), built by pushing through Cove.
    pub(crate) scale_s3_repos: usize,
    pub(crate) scale_s3_tags: usize,
}

impl Plan {
    pub(crate) fn new(mode: Mode) -> Plan {
        match mode {
            Mode::Smoke => Plan {
                pool: 64 << 20,
                pairs: 1,
                dur: Duration::from_millis(300),
                workers: 4,
                blob_count: 8,
                blob_large_max: 12 * MIB,
                blob_huge: 16 * MIB,
                blob_requests: 16,
                push_size: 16 * MIB,
                push_pairs: 1,
                storm_images: 4,
                mixed_rates: vec![20.0],
                mixed_dur: Duration::from_millis(500),
                mixed_pairs: 1,
                startup_repos: 20,
                startup_pairs: 1,
                cache_size: 8 * MIB,
                cache_pairs: 1,
                concurrent_size: 8 * MIB,
                skopeo_size: 8 * MIB,
                skopeo_pairs: 1,
                disk_bytes: 16 * MIB,
                scale_repos: 300,
                scale_tags: 60,
                scale_s3_repos: 40,
                scale_s3_tags: 20,
            },
            Mode::Short => Plan {
                pool: 1 << 30,
                pairs: 3,
                dur: Duration::from_secs(2),
                workers: 8,
                blob_count: 20,
                blob_large_max: 40 * MIB,
                blob_huge: 160 * MIB,
                blob_requests: 80,
                push_size: 1 << 30,
                push_pairs: 2,
                storm_images: 48,
                mixed_rates: vec![25.0, 100.0, 200.0],
                mixed_dur: Duration::from_secs(3),
                mixed_pairs: 2,
                startup_repos: 10_000,
                startup_pairs: 3,
                cache_size: 64 * MIB,
                cache_pairs: 3,
                concurrent_size: 64 * MIB,
                skopeo_size: 512 * MIB,
                skopeo_pairs: 2,
                disk_bytes: 512 * MIB,
                scale_repos: 100_000,
                scale_tags: 10_000,
                scale_s3_repos: 500,
                scale_s3_tags: 500,
            },
            Mode::Full => Plan {
                pool: 1 << 30,
                pairs: 5,
                dur: Duration::from_secs(5),
                workers: 8,
                blob_count: 40,
                blob_large_max: 100 * MIB,
                blob_huge: 1 << 30,
                blob_requests: 300,
                push_size: 1 << 30,
                push_pairs: 4,
                storm_images: 200,
                mixed_rates: vec![25.0, 50.0, 100.0, 200.0, 400.0],
                mixed_dur: Duration::from_secs(8),
                mixed_pairs: 3,
                startup_repos: 10_000,
                startup_pairs: 5,
                cache_size: 256 * MIB,
                cache_pairs: 5,
                concurrent_size: 200 * MIB,
                skopeo_size: 1 << 30,
                skopeo_pairs: 3,
                disk_bytes: 1 << 30,
                scale_repos: 100_000,
                scale_tags: 10_000,
                scale_s3_repos: 500,
                scale_s3_tags: 500,
            },
        }
    }
}
