//! Metrics of retention runs: runs by result, evictions and removed tags,
//! and each upstream's cache size (registered with the others, see `names`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use cove_core::retention::RetentionReport;

use super::labels::{ResultLabels, UpstreamLabels};

/// Metrics of retention runs (registered with the others in `/metrics`).
#[derive(Default)]
pub(super) struct RetentionMetrics {
    pub(super) runs: Family<ResultLabels, Counter>,
    pub(super) evicted_images: Family<UpstreamLabels, Counter>,
    pub(super) evicted_bytes: Family<UpstreamLabels, Counter>,
    pub(super) tags_removed: Counter,
    pub(super) cache_bytes: Family<UpstreamLabels, Gauge>,
}

impl RetentionMetrics {
    pub(super) fn record(&self, result: &Result<RetentionReport, String>) {
        match result {
            Ok(r) if r.dry_run => {
                self.runs.get_or_create(&ResultLabels { result: "dry_run" }).inc();
            }
            Ok(r) => {
                self.runs.get_or_create(&ResultLabels { result: "ok" }).inc();
                for e in &r.evicted {
                    let l = UpstreamLabels { upstream: e.upstream.clone() };
                    self.evicted_images.get_or_create(&l).inc();
                    self.evicted_bytes.get_or_create(&l).inc_by(e.bytes);
                }
                let evicted_tags: usize = r.evicted.iter().map(|e| e.tags.len()).sum();
                self.tags_removed.inc_by(r.tags_removed.len().saturating_sub(evicted_tags) as u64);
                for u in &r.upstreams {
                    let l = UpstreamLabels { upstream: u.host.clone() };
                    self.cache_bytes.get_or_create(&l).set(i64::try_from(u.bytes).unwrap_or(i64::MAX));
                }
            }
            Err(_) => {
                self.runs.get_or_create(&ResultLabels { result: "error" }).inc();
            }
        }
    }
}
