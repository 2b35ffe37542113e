//! Cove on object storage, end to end: the real `cove` binary with
//! `[storage] kind = "s3"` on real S3 servers started by the tests on
//! loopback (s3s-fs, which enforces S3's part-size rules, and Garage, a
//! distributed store that ignores conditional writes), driven by skopeo and
//! raw HTTP.
//!
//! - skopeo push/pull through Cove on s3s-fs, digests identical;
//! - two replicas on one bucket (s3s-fs and Garage): push through A, pull
//!   through B; a chunked upload started on A and finished on B; concurrent
//!   pushes of one tag; SIGKILL of a replica mid-upload;
//! - an upload session abandoned by a killed replica is expired by another
//!   (its objects and its multipart upload);
//! - `cove storage copy` from a filesystem data dir to s3s-fs, interrupted
//!   inside a big blob (`COVE_COPY_BIG_MIB`, default 200), resumed, rerun;
//! - start-up errors of `[storage]` settings;
//! - throughput and peak RSS of a big blob, object store vs filesystem
//!   (`COVE_OBJECT_BENCH_MIB`, default 256; `COVE_OBJECT_BENCH_GARAGE=1`
//!   adds Garage).
//!
//! The S3 peers are cove-testkit's (`peers::s3`); a missing peer binary
//! fails the test and names its install script (scripts/peers/install-*.sh).

#[path = "../common/mod.rs"]
mod common;

mod basics;
mod bench;
mod copy;
mod replicas;
mod tokens;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cove_testkit::peers::s3::S3Peer;
use cove_testkit::peers::skopeo::{skopeo, skopeo_push};
use object_store::{ObjectStore as _, ObjectStoreExt as _};

use common::*;

const MIB: usize = 1024 * 1024;
/// The part size the replicas use (S3's minimum), so a few MiB cross parts.
const PART: usize = 5 * MIB;
/// The key prefix the replicas share inside the bucket.
const PREFIX: &str = "reg";

/// A `cove serve` config storing in `peer`'s bucket under `prefix`.
fn s3_config(peer: &S3Peer, prefix: &str) -> String {
    peer.cove_storage_section(prefix, PART)
}

/// Starts a Cove replica on `peer`'s bucket (shared prefix [`PREFIX`]).
async fn replica(peer: &S3Peer) -> Server {
    Server::start_with(ServerOptions { config: Some(s3_config(peer, PREFIX)), ..Default::default() }).await
}

/// The path (from `/v2/`) of an upload URL, to send it to another replica.
fn v2_path(url: &str) -> String {
    let i = url.find("/v2/").unwrap_or_else(|| panic!("no /v2/ in {url}"));
    url[i..].to_owned()
}

/// Whether the raw bucket holds `key`.
async fn bucket_has(peer: &S3Peer, key: &str) -> bool {
    match peer.raw_s3().head(&object_store::path::Path::from(key)).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => panic!("HEAD {key} on the raw bucket: {e}"),
    }
}

fn blob_key(digest: &str) -> String {
    format!("{PREFIX}/blobs/{}", digest.replacen(':', "/", 1))
}

/// Asserts `s` serves `img` under `repo:tag`: the manifest byte for byte with
/// its digest, and every blob byte for byte.
async fn assert_serves_image(s: &Server, repo: &str, tag: &str, img: &Image) {
    let r = s.manifest("GET", repo, tag).await;
    assert_eq!(r.status(), 200, "{} GET {repo}:{tag}", s.base);
    assert_eq!(header(&r, "docker-content-digest"), img.digest, "{} digest of {repo}:{tag}", s.base);
    assert!(
        r.bytes().await.expect("manifest body")[..] == img.manifest[..],
        "{} manifest bytes of {repo}:{tag}",
        s.base
    );
    for blob in std::iter::once(&img.config).chain(img.layers.iter()) {
        assert_blob(s, repo, blob).await;
    }
}

/// Asserts `s` serves `data` as a blob of `repo`.
async fn assert_blob(s: &Server, repo: &str, data: &[u8]) {
    let d = sha256_digest(data);
    let r = s.get(&format!("/v2/{repo}/blobs/{d}")).await;
    assert_eq!(r.status(), 200, "{} GET blob {d} of {repo}", s.base);
    let body = r.bytes().await.expect("blob body");
    assert_eq!(body.len(), data.len(), "{} length of blob {d}", s.base);
    assert!(body[..] == data[..], "{} bytes of blob {d} differ", s.base);
}

/// Pushes `pattern` as one blob of `repo` the way docker and containerd do:
/// POST, one streamed PATCH, PUT with the digest. Returns how long the
/// POST + PATCH and the final PUT took.
async fn push_pattern(s: &Server, repo: &str, pattern: &Pattern, digest: &str) -> (Duration, Duration) {
    let t = Instant::now();
    let url = s.start_upload(repo).await;
    let r = s
        .req("PATCH", &url)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(pattern.stream_range(0, pattern.total)))
        .send()
        .await
        .expect("PATCH big blob");
    assert_eq!(r.status(), 202, "PATCH big blob");
    assert_eq!(header(&r, "range"), format!("0-{}", pattern.total - 1));
    let url = s.resolve(&header(&r, "location"));
    let patched = t.elapsed();
    let t = Instant::now();
    let r = s.req("PUT", &with_query(&url, &format!("digest={digest}"))).send().await.expect("PUT big blob");
    assert_eq!(r.status(), 201, "PUT big blob");
    (patched, t.elapsed())
}
