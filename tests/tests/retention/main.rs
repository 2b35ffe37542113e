//! Cache retention per upstream and tag retention per repository (issue 7),
//! end to end: the real `cove` binary in front of a real upstream (the CNCF
//! distribution registry), images pulled through Cove with digest checks,
//! skopeo pulling an evicted image back, `cove retention` and
//! `/admin/retention`, metrics and status, and a race of retention and GC
//! runs against concurrent pulls of cached images and pushes of private
//! ones. Durations are short (`[gc] grace = "1s"`, `max_age = "2s"`).

#[path = "../common/mod.rs"]
mod common;
#[path = "../pull_through_support/mod.rs"]
mod pull_through_support;

mod cache;
mod race;
mod tags;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use cove_testkit::layout::Layout;
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::skopeo::{skopeo_pull, skopeo_push};
use pull_through_support::{blob_path, cache_status, cove_config, manifest_path, UpstreamTable};

const HOST: &str = "upstream.test";

/// Starts Cove with the distribution registry as upstream `upstream.test`
/// and `extra` appended to the config.
async fn start(dist: &Distribution, extra: &str) -> Server {
    let mut cfg = cove_config(&[UpstreamTable { host: HOST, url: dist.url(), extra: "tag_ttl = \"1h\"" }]);
    cfg.push_str(extra);
    Server::start_with(ServerOptions { config: Some(cfg), ..Default::default() }).await
}

fn blobs_of(img: &Image) -> Vec<&Vec<u8>> {
    std::iter::once(&img.config).chain(img.layers.iter()).collect()
}

/// Manifest + config + layer bytes: what an image occupies in the cache.
fn image_bytes(img: &Image) -> u64 {
    (img.manifest.len() + blobs_of(img).iter().map(|b| b.len()).sum::<usize>()) as u64
}

/// Pulls `repo:reference` and every blob through Cove, checking digests.
/// Returns the manifest's cache status.
async fn pull(s: &Server, repo: &str, reference: &str, img: &Image) -> String {
    let r = s.manifest("GET", repo, reference).await;
    assert_eq!(r.status(), 200, "manifest {repo}:{reference}");
    let status = cache_status(&r);
    let body = r.bytes().await.expect("manifest body");
    assert_eq!(&body[..], &img.manifest[..], "manifest bytes of {repo}:{reference}");
    for blob in blobs_of(img) {
        let d = sha256_digest(blob);
        let r = s.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(r.status(), 200, "blob {d} of {repo}:{reference}");
        let got = r.bytes().await.expect("blob body");
        assert_eq!(sha256_digest(&got), d, "blob {d} of {repo}:{reference} verifies");
    }
    status
}

/// Waits until every blob of `img` is committed to Cove's storage (a fetch
/// commits just after the last byte went out).
async fn wait_cached(s: &Server, img: &Image) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for blob in blobs_of(img) {
        let p = blob_path(&s.data_dir, &sha256_digest(blob));
        while !p.exists() {
            assert!(Instant::now() < deadline, "blob {} not cached", p.display());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn retention(s: &Server, dry_run: bool) -> serde_json::Value {
    let r = s.req("POST", &format!("/admin/retention?dry_run={dry_run}")).send().await.expect("retention");
    assert_eq!(r.status(), 200, "retention run");
    json(r).await
}

fn evicted_repos(report: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = report["evicted"]
        .as_array()
        .expect("evicted")
        .iter()
        .map(|e| e["repository"].as_str().unwrap_or_default().to_owned())
        .collect();
    v.sort();
    v
}

async fn tags(s: &Server, repo: &str) -> Vec<String> {
    let r = s.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(r.status(), 200, "tags of {repo}");
    let v = json(r).await;
    let mut t: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    t.sort();
    t
}

const AGE_CONFIG: &str = "\n[gc]\ngrace = \"1s\"\ninterval = \"1h\"\n[retention]\ninterval = \"1h\"\n\
                          [retention.upstreams.\"upstream.test\"]\nmax_age = \"2s\"\n";
