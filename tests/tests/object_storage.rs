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

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cove_testkit::peers::s3::S3Peer;
use cove_testkit::peers::skopeo::skopeo;
use object_store::{ObjectStore as _, ObjectStoreExt as _};

use common::*;

const MIB: usize = 1024 * 1024;
/// The part size the replicas use (S3's minimum), so a few MiB cross parts.
const PART: usize = 5 * MIB;
/// The key prefix the replicas share inside the bucket.
const PREFIX: &str = "reg";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

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

/// PATCHes `chunk` at `offset` to `url`; asserts 202 with the new range and
/// returns the next URL.
async fn patch(s: &Server, url: &str, offset: usize, chunk: &[u8]) -> String {
    let end = offset + chunk.len() - 1;
    let r = s
        .req("PATCH", url)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{offset}-{end}"))
        .body(chunk.to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 202, "{} PATCH {offset}-{end}", s.base);
    assert_eq!(header(&r, "range"), format!("0-{end}"), "{} acknowledged range", s.base);
    s.resolve(&header(&r, "location"))
}

/// A request body that sends `first`, then stalls until the returned sender
/// is dropped (simulating a client still uploading when a server dies).
fn stalled_body(first: Vec<u8>) -> (futures::channel::mpsc::Sender<std::io::Result<Bytes>>, reqwest::Body) {
    let (mut tx, rx) = futures::channel::mpsc::channel::<std::io::Result<Bytes>>(64);
    for piece in first.chunks(256 * 1024) {
        tx.try_send(Ok(Bytes::copy_from_slice(piece))).expect("queue body piece");
    }
    (tx, reqwest::Body::wrap_stream(rx))
}

/// Parses the integers and decimals of a line, in order.
fn numbers(line: &str) -> Vec<f64> {
    line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|t| !t.is_empty() && t.chars().any(|c| c.is_ascii_digit()))
        .filter_map(|t| t.trim_matches('.').parse().ok())
        .collect()
}

/// The summary of `cove storage copy`: (repositories, manifests copied,
/// manifests present, blobs copied, blobs present).
#[derive(Debug, Clone, Copy, PartialEq)]
struct CopySummary {
    repositories: u64,
    manifests_copied: u64,
    manifests_present: u64,
    blobs_copied: u64,
    blobs_present: u64,
}

fn parse_summary(stdout: &str) -> CopySummary {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("copied "))
        .unwrap_or_else(|| panic!("no `copied N repositories:` summary in {stdout:?}"));
    assert!(line.contains(" repositories:"), "summary line: {line}");
    let n = numbers(line);
    // copied R repositories: M manifests copied (MP already present), B blobs
    // copied (X MiB, BP already present, BM not in the source), T tags, F referrers
    assert_eq!(n.len(), 9, "summary numbers of {line:?}: {n:?}");
    CopySummary {
        repositories: n[0] as u64,
        manifests_copied: n[1] as u64,
        manifests_present: n[2] as u64,
        blobs_copied: n[3] as u64,
        blobs_present: n[5] as u64,
    }
}

/// Runs `cove storage copy --from A --to B` to completion; returns stdout.
fn storage_copy(from: &Path, to: &Path) -> String {
    run(Command::new(cove_bin()).args(["storage", "copy", "--from"]).arg(from).arg("--to").arg(to))
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

/// Manifest bytes for a config blob and layers given as (digest, size).
fn manifest_for(config: &[u8], layers: &[(String, u64)]) -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": layers.iter().map(|(d, n)| serde_json::json!({
            "mediaType": OCI_LAYER, "digest": d, "size": n,
        })).collect::<Vec<_>>(),
    }))
    .expect("manifest json")
}

// ---------------------------------------------------------------------------
// 1. skopeo through Cove on s3s-fs
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_and_pull_through_cove_on_s3s_fs() {
    let peer = S3Peer::s3s_fs();
    let a = replica(&peer).await;
    let b = replica(&peer).await;
    let work = tempfile::tempdir().expect("tmp");
    let src = work.path().join("src");
    // One layer spans several 5 MiB parts, one is far below a part.
    let img = Image::from_layers(vec![random_bytes(12 * MIB + 4321), random_bytes(3000)]);
    write_oci_layout(&src, &img, "v1");

    run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{}/s3/app:v1", a.addr),
    ]));
    // Pulled back out through the other replica: identical digests and bytes.
    let dst = work.path().join("dst");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{}/s3/app:v1", b.addr),
        &format!("oci:{}:back", dst.display()),
    ]));
    assert_eq!(oci_layout_manifest_digest(&dst, "back"), img.digest, "manifest digest changed on the round trip");
    assert_eq!(oci_layout_blob(&dst, &img.digest), img.manifest);
    assert_eq!(oci_layout_blob(&dst, &sha256_digest(&img.config)), img.config);
    for l in &img.layers {
        assert!(oci_layout_blob(&dst, &sha256_digest(l)) == *l, "layer {} differs", sha256_digest(l));
    }
    // A Cove on another prefix of the same bucket is a separate registry.
    let other =
        Server::start_with(ServerOptions { config: Some(s3_config(&peer, "other")), ..Default::default() }).await;
    assert_eq!(json(other.get("/v2/_catalog").await).await["repositories"], serde_json::json!([]));
    assert_eq!(other.manifest("HEAD", "s3/app", "v1").await.status(), 404, "prefixes are isolated");
    let out = run(skopeo().args(["inspect", "--tls-verify=false", &format!("docker://{}/s3/app:v1", b.addr)]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
    assert_eq!(v["Digest"], serde_json::json!(img.digest), "inspect: {v}");
    // The bytes are in the bucket, not in either replica's scratch dir.
    assert!(bucket_has(&peer, &blob_key(&sha256_digest(&img.layers[0]))).await, "layer not in the bucket");
    for s in [&a, &b] {
        assert!(
            !files_under(&s.data_dir).iter().any(|f| f.metadata().is_ok_and(|m| m.len() >= MIB as u64)),
            "{}: blob bytes stored in the local data dir",
            s.base
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Several replicas on one bucket
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_bucket_on_s3s_fs() {
    let peer = S3Peer::s3s_fs();
    replicas_suite(&peer, "s3s-fs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_bucket_on_garage() {
    let peer = S3Peer::garage();
    replicas_suite(&peer, "garage").await;
}

async fn replicas_suite(peer: &S3Peer, label: &str) {
    let mut a = replica(peer).await;
    let b = replica(peer).await;
    push_on_one_pull_on_other(&a, &b).await;
    chunked_upload_moves_between_replicas(&a, &b).await;
    concurrent_tag_pushes_stay_consistent(&a, &b, label).await;
    killed_replica_loses_nothing_acknowledged(peer, &mut a, &b).await;
}

async fn push_on_one_pull_on_other(a: &Server, b: &Server) {
    let img = a.push_image("multi/app", "v1", 3).await;
    let other = a.push_image("multi/other", "latest", 1).await;
    assert_serves_image(b, "multi/app", "v1", &img).await;
    assert_serves_image(b, "multi/other", "latest", &other).await;
    let r = b.manifest("GET", "multi/app", &img.digest).await;
    assert_eq!(r.status(), 200, "B: manifest by digest");
    let tags = json(b.get("/v2/multi/app/tags/list").await).await;
    assert_eq!(tags["tags"], serde_json::json!(["v1"]), "B: tags list");
    let catalog = json(b.get("/v2/_catalog").await).await;
    let repos = catalog["repositories"].as_array().expect("catalog array");
    for name in ["multi/app", "multi/other"] {
        assert!(repos.contains(&serde_json::json!(name)), "B: catalog {catalog} lacks {name}");
    }
    // A single-request upload (POST ?digest= with the body) larger than a
    // part, on A; B serves it, also by range.
    let mono = random_bytes(11 * MIB + 99);
    let d = sha256_digest(&mono);
    let r = a
        .req("POST", &format!("/v2/multi/app/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(mono.clone())
        .send()
        .await
        .expect("POST blob");
    assert_eq!(r.status(), 201, "A: single-request upload");
    assert_blob(b, "multi/app", &mono).await;
    let r = b
        .req("GET", &format!("/v2/multi/app/blobs/{d}"))
        .header("range", "bytes=5242000-6000000")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 206, "B: ranged blob GET");
    assert!(r.bytes().await.expect("body")[..] == mono[5_242_000..=6_000_000], "B: ranged bytes differ");
    // A blob pushed on A mounts into another repository on B.
    let layer = sha256_digest(&img.layers[0]);
    let r = b
        .req("POST", &format!("/v2/multi/mounted/blobs/uploads/?mount={layer}&from=multi/app"))
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), 201, "B: cross-repository mount of a blob pushed on A");
    assert_blob(a, "multi/mounted", &img.layers[0]).await;
    // A tag moved on B is seen by A; a manifest deleted on B is gone on A.
    let r = b.put_manifest("multi/app", "v2", OCI_MANIFEST, &other.manifest).await;
    assert_eq!(r.status(), 400, "B: manifest whose blobs multi/app lacks");
    let img2 = b.push_image("multi/app", "v1", 2).await;
    assert_serves_image(a, "multi/app", "v1", &img2).await;
    let r = b.delete(&format!("/v2/multi/app/manifests/{}", img.digest)).await;
    assert_eq!(r.status(), 202, "B: delete manifest");
    assert_eq!(a.manifest("GET", "multi/app", &img.digest).await.status(), 404, "A: deleted manifest");
}

async fn chunked_upload_moves_between_replicas(a: &Server, b: &Server) {
    let repo = "multi/chunked";
    let data = random_bytes(13 * MIB + 12345);
    let digest = sha256_digest(&data);
    // POST and two PATCHes on A: a 3 MiB tail, then 6 MiB crossing a part.
    let url = a.start_upload(repo).await;
    let url = patch(a, &url, 0, &data[..3 * MIB]).await;
    let url = patch(a, &url, 3 * MIB, &data[3 * MIB..9 * MIB]).await;
    // B sees the session's state and continues it.
    let on_b = b.url(&v2_path(&url));
    let r = b.req("GET", &on_b).send().await.expect("status on B");
    assert_eq!(r.status(), 204, "B: upload status");
    assert_eq!(header(&r, "range"), format!("0-{}", 9 * MIB - 1), "B: acknowledged range");
    // An out-of-order chunk on B is refused with the real offset.
    let r = b
        .req("PATCH", &on_b)
        .header("content-range", format!("{}-{}", 3 * MIB, 4 * MIB - 1))
        .body(data[3 * MIB..4 * MIB].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 416, "B: chunk at a stale offset");
    let url = patch(b, &on_b, 9 * MIB, &data[9 * MIB..11 * MIB]).await;
    assert!(url.starts_with(&b.base), "B answers with its own Location: {url}");
    // The final chunk goes with the PUT, on B.
    let r = b
        .req("PUT", &with_query(&url, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data[11 * MIB..].to_vec())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201, "B: complete upload");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    for s in [a, b] {
        assert_blob(s, repo, &data).await;
        let r = s.head(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(header(&r, "content-length"), data.len().to_string(), "{} HEAD length", s.base);
    }
    // The session is gone on both.
    assert_eq!(a.req("GET", &url).send().await.expect("status").status(), 404, "B: finished session");
    assert_eq!(a.req("GET", &a.url(&v2_path(&url))).send().await.expect("status").status(), 404, "A: finished session");
    // And an image over it, pushed on A, pulls on B.
    let img = Image::from_layers(vec![data]);
    a.push_blob(repo, &img.config).await;
    assert_eq!(a.put_manifest(repo, "big", OCI_MANIFEST, &img.manifest).await.status(), 201);
    assert_serves_image(b, repo, "big", &img).await;
}

async fn concurrent_tag_pushes_stay_consistent(a: &Server, b: &Server, label: &str) {
    let repo = "multi/race";
    let mut wins = [0usize; 2];
    for round in 0..10 {
        // Odd rounds: both images share a 6 MiB base layer (more than a part),
        // committed by both replicas at once.
        let (ia, ib) = if round % 2 == 0 {
            (Image::random(2), Image::random(2))
        } else {
            let base = random_bytes(6 * MIB + round);
            (
                Image::from_layers(vec![base.clone(), random_bytes(2000)]),
                Image::from_layers(vec![base, random_bytes(3000)]),
            )
        };
        if round % 2 == 0 {
            // Blobs first, then both manifest PUTs at the same moment.
            for l in std::iter::once(&ia.config).chain(&ia.layers) {
                a.push_blob(repo, l).await;
            }
            for l in std::iter::once(&ib.config).chain(&ib.layers) {
                b.push_blob(repo, l).await;
            }
            let (ra, rb) = tokio::join!(
                a.put_manifest(repo, "race", OCI_MANIFEST, &ia.manifest),
                b.put_manifest(repo, "race", OCI_MANIFEST, &ib.manifest)
            );
            assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (201, 201), "round {round}: both pushes succeed");
        } else {
            // Whole image pushes racing from start to end.
            let (ra, rb) = tokio::join!(push_whole(a, repo, "race", &ia), push_whole(b, repo, "race", &ib));
            assert_eq!((ra, rb), (201, 201), "round {round}: both pushes succeed");
        }
        let da = header(&a.manifest("HEAD", repo, "race").await, "docker-content-digest");
        let db = header(&b.manifest("HEAD", repo, "race").await, "docker-content-digest");
        assert_eq!(da, db, "round {round}: the replicas disagree on {repo}:race");
        let winner = if da == ia.digest {
            wins[0] += 1;
            &ia
        } else if da == ib.digest {
            wins[1] += 1;
            &ib
        } else {
            panic!("round {round}: {repo}:race is {da:?}, neither pushed manifest");
        };
        // The tagged manifest is complete on both replicas.
        assert_serves_image(a, repo, "race", winner).await;
        assert_serves_image(b, repo, "race", winner).await;
        // The loser is still stored by digest (nothing half-written).
        let loser = if std::ptr::eq(winner, &ia) { &ib } else { &ia };
        assert_eq!(a.manifest("HEAD", repo, &loser.digest).await.status(), 200, "round {round}: losing manifest");
    }
    let tags = json(b.get(&format!("/v2/{repo}/tags/list")).await).await;
    assert_eq!(tags["tags"], serde_json::json!(["race"]), "tags list after the races");
    report(&format!(
        "object storage ({label}): concurrent tag pushes, 10 rounds: A won {}, B won {}",
        wins[0], wins[1]
    ));
}

/// Pushes every blob of `img`, then its manifest as `repo:tag`; returns
/// the manifest PUT's status.
async fn push_whole(s: &Server, repo: &str, tag: &str, img: &Image) -> u16 {
    for l in std::iter::once(&img.config).chain(&img.layers) {
        s.push_blob(repo, l).await;
    }
    s.put_manifest(repo, tag, OCI_MANIFEST, &img.manifest).await.status().as_u16()
}

async fn killed_replica_loses_nothing_acknowledged(peer: &S3Peer, a: &mut Server, b: &Server) {
    let repo = "multi/crash";
    // Chunked: 6 MiB (one part and a tail) and 1 MiB acknowledged by A.
    let chunked = random_bytes(16 * MIB + 777);
    let chunked_digest = sha256_digest(&chunked);
    let url = a.start_upload(repo).await;
    let url = patch(a, &url, 0, &chunked[..6 * MIB]).await;
    let url = patch(a, &url, 6 * MIB, &chunked[6 * MIB..7 * MIB]).await;
    let acked = 7 * MIB;
    // Then a PATCH whose body stalls after 7 more MiB (enough for A to have
    // put another part that no session records).
    let (tx_chunk, body) = stalled_body(chunked[acked..acked + 7 * MIB].to_vec());
    let inflight_patch = a.req("PATCH", &url).header("content-type", "application/octet-stream").body(body).send();
    let inflight_patch = tokio::spawn(inflight_patch);

    // Monolithic, single request: POST ?digest= with a 12 MiB body, stalled halfway.
    let mono = random_bytes(12 * MIB);
    let mono_digest = sha256_digest(&mono);
    let (tx_mono, body) = stalled_body(mono[..7 * MIB].to_vec());
    let inflight_mono = tokio::spawn(
        a.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={mono_digest}"))
            .header("content-type", "application/octet-stream")
            .header("content-length", mono.len().to_string())
            .body(body)
            .send(),
    );
    // Monolithic over a session: POST, then PUT ?digest= with the body, stalled.
    let put_data = random_bytes(9 * MIB);
    let put_digest = sha256_digest(&put_data);
    let put_url = a.start_upload(repo).await;
    let (tx_put, body) = stalled_body(put_data[..6 * MIB].to_vec());
    let inflight_put = tokio::spawn(
        a.req("PUT", &with_query(&put_url, &format!("digest={put_digest}")))
            .header("content-type", "application/octet-stream")
            .header("content-length", put_data.len().to_string())
            .body(body)
            .send(),
    );
    // Let A receive the bytes and write parts, then kill it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!inflight_patch.is_finished() && !inflight_mono.is_finished() && !inflight_put.is_finished());
    a.kill9();
    drop((tx_chunk, tx_mono, tx_put));
    for h in [inflight_patch, inflight_mono, inflight_put] {
        let r = h.await.expect("join");
        assert!(r.is_err() || r.as_ref().is_ok_and(|r| !r.status().is_success()), "in-flight request succeeded: {r:?}");
    }

    // Nothing of the monolithic uploads is visible, on B or in the bucket.
    for d in [&mono_digest, &put_digest] {
        assert_eq!(b.head(&format!("/v2/{repo}/blobs/{d}")).await.status(), 404, "B: half-uploaded blob {d}");
        assert!(!bucket_has(peer, &blob_key(d)).await, "half-uploaded blob {d} is in the bucket");
    }
    let r = b.req("GET", &b.url(&v2_path(&put_url))).send().await.expect("status");
    assert_eq!(r.status(), 204, "B: the monolithic upload's session");
    assert_eq!(header(&r, "range"), "0-0", "B: the stalled PUT body must not count as received");

    // The chunked session resumes on B at exactly the acknowledged offset.
    let on_b = b.url(&v2_path(&url));
    let r = b.req("GET", &on_b).send().await.expect("status on B");
    assert_eq!(r.status(), 204, "B: session of the killed replica");
    assert_eq!(header(&r, "range"), format!("0-{}", acked - 1), "B: acknowledged bytes after the kill");
    let next = patch(b, &on_b, acked, &chunked[acked..acked + 6 * MIB]).await;
    let r = b
        .req("PUT", &with_query(&next, &format!("digest={chunked_digest}")))
        .body(chunked[acked + 6 * MIB..].to_vec())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201, "B: completing the session of the killed replica");
    assert_blob(b, repo, &chunked).await;

    // A comes back (no local state to recover) and agrees.
    a.restart().await;
    assert_blob(a, repo, &chunked).await;
    for d in [&mono_digest, &put_digest] {
        assert_eq!(a.head(&format!("/v2/{repo}/blobs/{d}")).await.status(), 404, "A: half-uploaded blob {d}");
    }
    // The monolithic uploads can simply be redone.
    assert_eq!(a.push_blob(repo, &mono).await, mono_digest);
    assert_blob(b, repo, &mono).await;
}

/// A session abandoned by a killed replica (a multipart upload with a part,
/// and a tail) is removed by another replica's expiry: its objects and its
/// multipart upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_upload_of_a_killed_replica_is_cleaned_up_by_another() {
    let peer = S3Peer::s3s_fs();
    let mut a = replica(&peer).await;
    let repo = "multi/abandoned";
    let data = random_bytes(7 * MIB);
    let url = a.start_upload(repo).await;
    patch(&a, &url, 0, &data).await;
    a.kill9();
    let id = v2_path(&url).rsplit('/').next().expect("upload id").to_owned();
    let session_key = format!("{PREFIX}/uploads/{id}/session.json");
    let raw = peer.raw_s3();
    let session: serde_json::Value = serde_json::from_slice(
        &raw.get(&object_store::path::Path::from(session_key.as_str()))
            .await
            .expect("session object")
            .bytes()
            .await
            .expect("session bytes"),
    )
    .expect("session json");
    let upload_id = session["multipart"]["upload_id"].as_str().expect("a multipart upload holds the part").to_owned();
    let dir = format!("{PREFIX}/uploads/{id}");
    let keys = |raw: &object_store::aws::AmazonS3| {
        let raw = raw.clone();
        let dir = dir.clone();
        async move {
            use futures::TryStreamExt as _;
            raw.list(Some(&object_store::path::Path::from(dir.as_str())))
                .map_ok(|m| m.location.to_string())
                .try_collect::<Vec<_>>()
                .await
                .expect("list")
        }
    };
    assert!(keys(&raw).await.len() >= 2, "session and tail objects exist");

    // B sweeps sessions idle for more than 2 s.
    let config = s3_config(&peer, PREFIX).replace("[storage]\n", "[storage]\nupload_ttl = \"2s\"\n");
    let b = Server::start_with(ServerOptions { config: Some(config), ..Default::default() }).await;
    let on_b = b.url(&v2_path(&url));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = b.req("GET", &on_b).send().await.expect("status").status();
        if st == 404 {
            break;
        }
        assert_eq!(st, 204, "B: status of the abandoned session");
        assert!(Instant::now() < deadline, "the abandoned session was not expired within 20 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let left = keys(&raw).await;
    assert!(left.is_empty(), "objects of the expired session remain: {left:?}");
    let data_key = object_store::path::Path::from(format!("{PREFIX}/uploads/{id}/data"));
    let late = object_store::multipart::MultipartStore::put_part(
        &raw,
        &data_key,
        &upload_id,
        5,
        object_store::PutPayload::from_static(b"late"),
    )
    .await;
    assert!(late.is_err(), "the expired session's multipart upload was not aborted");
    assert!(b.logs().contains("removed idle upload sessions"), "B logs the expiry");
}

// ---------------------------------------------------------------------------
// 3. cove storage copy: filesystem -> s3s-fs
// ---------------------------------------------------------------------------

/// What a registry serves: catalog, tags, and each tag's manifest.
#[derive(Debug, PartialEq)]
struct Served {
    catalog: serde_json::Value,
    tags: Vec<(String, serde_json::Value)>,
    manifests: Vec<(String, String, String, Vec<u8>)>,
}

async fn served(s: &Server) -> Served {
    let catalog = json(s.get("/v2/_catalog").await).await;
    let mut tags = Vec::new();
    let mut manifests = Vec::new();
    for repo in catalog["repositories"].as_array().expect("repositories") {
        let repo = repo.as_str().expect("name");
        let t = json(s.get(&format!("/v2/{repo}/tags/list")).await).await;
        for tag in t["tags"].as_array().expect("tags") {
            let tag = tag.as_str().expect("tag");
            let r = s.manifest("GET", repo, tag).await;
            assert_eq!(r.status(), 200, "{repo}:{tag}");
            let d = header(&r, "docker-content-digest");
            manifests.push((repo.to_owned(), tag.to_owned(), d, r.bytes().await.expect("body").to_vec()));
        }
        tags.push((repo.to_owned(), t));
    }
    Served { catalog, tags, manifests }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_copy_moves_a_filesystem_registry_to_s3s_fs() {
    let big_mib: u64 = std::env::var("COVE_COPY_BIG_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let peer = S3Peer::s3s_fs();
    let mut fs = Server::start().await;
    // Repositories sort alpha/…, beta, mmm/big, zeta/…: the copy is killed
    // inside mmm/big, after the first ones and before the last.
    let app = fs.push_image("alpha/app", "1.0", 3).await;
    assert_eq!(fs.put_manifest("alpha/app", "latest", OCI_MANIFEST, &app.manifest).await.status(), 201);
    let beta = fs.push_image("beta", "v1", 1).await;
    let big = Pattern::new(big_mib * MIB as u64);
    let big_digest = big.digest();
    let big_config = Image::random(0).config;
    fs.push_blob("mmm/big", &big_config).await;
    push_pattern(&fs, "mmm/big", &big, &big_digest).await;
    let big_manifest = manifest_for(&big_config, &[(big_digest.clone(), big.total)]);
    assert_eq!(fs.put_manifest("mmm/big", "v1", OCI_MANIFEST, &big_manifest).await.status(), 201);
    let tool1 = fs.push_image("zeta/tool", "v1", 2).await;
    let tool2 = fs.push_image("zeta/tool", "v2", 2).await;
    // A referrer (signature-like artifact) of tool1.
    let sig_config = br#"{"sig":true}"#.to_vec();
    let sig_layer = random_bytes(500);
    fs.push_blob("zeta/tool", &sig_config).await;
    fs.push_blob("zeta/tool", &sig_layer).await;
    let subject = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": tool1.digest, "size": tool1.manifest.len()});
    let sig = oci_manifest(&sig_config, std::slice::from_ref(&sig_layer), Some(subject), Some("application/x.sig"));
    let sig_digest = sha256_digest(&sig);
    assert_eq!(fs.put_manifest("zeta/tool", &sig_digest, OCI_MANIFEST, &sig).await.status(), 201);
    let expected = served(&fs).await;
    assert_eq!(expected.manifests.len(), 6, "{expected:?}");
    fs.terminate(Duration::from_secs(10)).expect("filesystem cove stops");

    let work = tempfile::tempdir().expect("tmp");
    let from = work.path().join("from.toml");
    let to = work.path().join("to.toml");
    std::fs::write(&from, format!("[storage]\nroot = {:?}\n", fs.data_dir.display().to_string())).expect("write");
    let scratch = work.path().join("scratch");
    std::fs::write(&to, s3_config(&peer, PREFIX).replace("@DATA@", &scratch.display().to_string())).expect("write");

    // Interrupted: killed while the big blob streams.
    let mut child = Command::new(cove_bin())
        .args(["storage", "copy", "--from"])
        .arg(&from)
        .arg("--to")
        .arg(&to)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cove storage copy");
    let stderr = child.stderr.take().expect("stderr");
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let pid = child.id();
    let killed_at = loop {
        assert!(Instant::now() < deadline, "copy never reached the big blob: {seen:?}");
        if let Ok(Some(st)) = child.try_wait() {
            panic!("copy ended ({st}) before it could be interrupted; raise COVE_COPY_BIG_MIB. stderr: {seen:?}");
        }
        while let Ok(l) = line_rx.try_recv() {
            seen.push(l);
        }
        // The big repository's config blob is done: the big layer is next.
        let in_big = seen.iter().any(|l| l.contains("mmm/big"));
        // Linux: wait until a good part of the big blob was read.
        let read = read_bytes_of(pid);
        if in_big && read.is_none_or(|r| r > big.total / 3) {
            break read;
        }
        std::thread::sleep(Duration::from_millis(if in_big { 5 } else { 20 }));
    };
    child.kill().expect("kill copy");
    let _ = child.wait();
    assert!(!bucket_has(&peer, &blob_key(&big_digest)).await, "the big blob was complete before the kill");
    assert!(
        bucket_has(&peer, &blob_key(&sha256_digest(&beta.layers[0]))).await,
        "repositories before the kill were copied"
    );
    eprintln!("copy killed after reading {killed_at:?} bytes; progress so far: {seen:?}");

    // Rerun: completes, copying only what was missing.
    let out = storage_copy(&from, &to);
    let resumed = parse_summary(&out);
    assert_eq!(resumed.repositories, 4, "{out}");
    assert!(resumed.blobs_copied >= 1 + 4 + 2, "big + zeta's blobs: {out}");
    assert!(resumed.blobs_present >= 4 + 2, "alpha's and beta's blobs were already there: {out}");
    // Again: nothing left to copy.
    let out = storage_copy(&from, &to);
    let again = parse_summary(&out);
    assert_eq!((again.blobs_copied, again.manifests_copied), (0, 0), "second rerun copies nothing: {out}");
    assert_eq!(again.manifests_present, resumed.manifests_copied + resumed.manifests_present, "{out}");
    assert!(out.contains(" 0 blobs copied (0.0 MiB"), "{out}");

    // A Cove on the bucket serves every image byte for byte.
    let s3 = replica(&peer).await;
    let got = served(&s3).await;
    assert_eq!(got, expected, "the bucket-backed Cove serves something else");
    for (repo, img) in [("alpha/app", &app), ("beta", &beta), ("zeta/tool", &tool1), ("zeta/tool", &tool2)] {
        for blob in std::iter::once(&img.config).chain(img.layers.iter()) {
            assert_blob(&s3, repo, blob).await;
        }
    }
    assert_blob(&s3, "zeta/tool", &sig_layer).await;
    assert_blob(&s3, "mmm/big", &big_config).await;
    let r = s3.get(&format!("/v2/mmm/big/blobs/{big_digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(verify_stream_equals(r, &big, 0).await, big.total, "big blob length");
    let refs = json(s3.get(&format!("/v2/zeta/tool/referrers/{}", tool1.digest)).await).await;
    let listed: Vec<&str> =
        refs["manifests"].as_array().expect("referrers").iter().filter_map(|m| m["digest"].as_str()).collect();
    assert_eq!(listed, vec![sig_digest.as_str()], "referrers of tool1: {refs}");
    // And back: bucket -> a fresh filesystem data dir serves the same.
    let back = work.path().join("back.toml");
    let back_root = work.path().join("back-data");
    std::fs::write(&back, format!("[storage]\nroot = {:?}\n", back_root.display().to_string())).expect("write");
    let out = storage_copy(&to, &back);
    let reverse = parse_summary(&out);
    assert_eq!((reverse.repositories, reverse.manifests_copied), (4, 6), "{out}");
    let fs_back = Server::start_with(ServerOptions {
        config: Some(format!("[storage]\nroot = {:?}\n", back_root.display().to_string())),
        no_flags: false,
        omit_data_dir: true,
        ..Default::default()
    })
    .await;
    assert_eq!(served(&fs_back).await, expected, "bucket -> filesystem copy serves something else");
    let r = fs_back.get(&format!("/v2/mmm/big/blobs/{big_digest}")).await;
    assert_eq!(verify_stream_equals(r, &big, 0).await, big.total, "big blob copied back");
    assert_eq!(assert_blobs_verified(&back_root), assert_blobs_verified(&fs.data_dir), "blob files copied back");
    // The copy also verified the bytes: a skopeo pull of the big image works.
    let dst = work.path().join("pulled");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{}/mmm/big:v1", s3.addr),
        &format!("oci:{}:v1", dst.display()),
    ]));
    assert_eq!(oci_layout_manifest_digest(&dst, "v1"), sha256_digest(&big_manifest));
}

/// Bytes a process has read so far (Linux `/proc/<pid>/io`, `rchar`).
fn read_bytes_of(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|l| l.strip_prefix("rchar:")).and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------
// 4. Start-up errors
// ---------------------------------------------------------------------------

/// Runs `cove serve` with `config`; asserts it exits non-zero within 20 s
/// and returns its stderr.
fn serve_must_fail(config: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("cove.toml");
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(cove_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cove");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "cove kept running with an unusable [storage]:\n{config}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!status.success(), "cove exited successfully with:\n{config}");
    stderr
}

#[tokio::test]
async fn bad_object_storage_settings_stop_start_up_naming_the_key() {
    let peer = S3Peer::s3s_fs();
    let good = s3_config(&peer, PREFIX).replace("root = \"@DATA@\"\n", "");
    let with = |from: &str, to: &str| {
        assert!(good.contains(from), "{from:?} not in the config");
        good.replace(from, to)
    };
    let bucket_line = format!("bucket = \"{}\"\n", peer.bucket);
    let endpoint_line = format!("endpoint = \"{}\"\n", peer.endpoint);
    let cases: Vec<(String, Vec<&str>)> = vec![
        (with(&bucket_line, ""), vec!["storage.bucket"]),
        (with(&endpoint_line, "endpoint = \"ftp://127.0.0.1:9\"\n"), vec!["storage.endpoint"]),
        (with(&endpoint_line, "endpoint = \"127.0.0.1:9000\"\n"), vec!["storage.endpoint"]),
        (with("allow_http = true\n", ""), vec!["storage.allow_http"]),
        (with("part_size = 5242880\n", "part_size = 1024\n"), vec!["storage.part_size"]),
        (with("secret_access_key", "#secret_access_key"), vec!["storage.secret_access_key"]),
        (with(&bucket_line, "bukket = \"cove\"\n"), vec!["bukket"]),
        (with("prefix = \"reg\"", "prefix = \"../up\""), vec!["storage.prefix"]),
        // Every problem is reported at once.
        (
            with(&bucket_line, "").replace("part_size = 5242880", "part_size = 1"),
            vec!["storage.bucket", "storage.part_size"],
        ),
    ];
    for (config, keys) in &cases {
        let stderr = serve_must_fail(config);
        for key in keys {
            assert!(stderr.contains(key), "stderr does not name {key}:\n{stderr}\nconfig:\n{config}");
        }
    }
    // And the good config does start.
    let s = Server::start_with(ServerOptions { config: Some(s3_config(&peer, PREFIX)), ..Default::default() }).await;
    assert_eq!(s.get("/v2/").await.status(), 200);
}

/// Settings that are well formed but unusable (nothing listens at the
/// endpoint, wrong credentials, a bucket that does not exist): Cove must
/// stop at start-up naming the settings, not start serving 500s. The missing
/// bucket runs on Garage: s3s-fs creates buckets on first write.
#[tokio::test]
async fn unusable_object_storage_stops_start_up() {
    let peer = S3Peer::s3s_fs();
    let good = s3_config(&peer, PREFIX).replace("root = \"@DATA@\"\n", "");
    let closed = good.replace(&peer.endpoint, &format!("http://127.0.0.1:{}", free_port()));
    let stderr = serve_must_fail(&closed);
    assert!(stderr.contains("storage.endpoint"), "nothing listens at the endpoint: stderr does not name it:\n{stderr}");
    let wrong = good.replace(&peer.secret_key, "wrong-secret");
    assert_ne!(wrong, good);
    let stderr = serve_must_fail(&wrong);
    assert!(stderr.contains("storage.secret_access_key"), "wrong credentials: stderr does not name them:\n{stderr}");

    let garage = S3Peer::garage();
    let good = s3_config(&garage, PREFIX).replace("root = \"@DATA@\"\n", "");
    let missing = good.replace(&format!("bucket = \"{}\"", garage.bucket), "bucket = \"no-such-bucket\"");
    assert_ne!(missing, good);
    let stderr = serve_must_fail(&missing);
    assert!(stderr.contains("storage.bucket"), "missing bucket: stderr does not name it:\n{stderr}");
    // The same settings with the real bucket start.
    let s = Server::start_with(ServerOptions { config: Some(s3_config(&garage, PREFIX)), ..Default::default() }).await;
    assert_eq!(s.get("/v2/").await.status(), 200);
}

// ---------------------------------------------------------------------------
// 5. Throughput and memory of a big blob
// ---------------------------------------------------------------------------

/// Resets the peak RSS (VmHWM) of `pid` (Linux ≥ 4.0); false elsewhere.
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_blob_throughput_and_memory_object_vs_filesystem() {
    let mib: u64 = std::env::var("COVE_OBJECT_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let garage = std::env::var_os("COVE_OBJECT_BENCH_GARAGE").is_some_and(|v| v == "1");
    let pattern = Pattern::new(mib * MIB as u64);
    let digest = pattern.digest();
    let s3s = S3Peer::s3s_fs();
    let garage_peer = garage.then(S3Peer::garage);
    let mut backends: Vec<(&str, Option<&S3Peer>)> = vec![("filesystem", None), ("s3s-fs", Some(&s3s))];
    if let Some(g) = &garage_peer {
        backends.push(("garage", Some(g)));
    }
    report(&format!("object storage: {mib} MiB blob, binary {}", cove_bin().display()));
    for (label, peer) in backends {
        // Default part size (8 MiB), as a user would run it.
        let config = peer.map(|p| s3_config(p, PREFIX).replace(&format!("part_size = {PART}\n"), ""));
        let s = Server::start_with(ServerOptions { config, ..Default::default() }).await;
        let idle = s.memory();
        let (patch, put) = push_pattern(&s, "bench/big", &pattern, &digest).await;
        let push = patch + put;
        let after_push = s.memory();
        let reset = reset_peak_rss(s.pid());
        let t = Instant::now();
        let r = s.get(&format!("/v2/bench/big/blobs/{digest}")).await;
        assert_eq!(r.status(), 200, "{label}: GET big blob");
        assert_eq!(verify_stream_equals(r, &pattern, 0).await, pattern.total, "{label}: pulled length");
        let pull = t.elapsed();
        let after_pull = s.memory();
        let rate = |d: Duration| mib as f64 / d.as_secs_f64();
        report(&format!(
            "object storage: {label:<10} push {:6.1} MiB/s ({:.2} s: PATCH {:.2} s + final PUT {:.2} s), \
             pull {:6.1} MiB/s ({:.2} s); RSS idle {} MiB, after push {} MiB, peak during push {} MiB, \
             peak during pull {} MiB{}",
            rate(push),
            push.as_secs_f64(),
            patch.as_secs_f64(),
            put.as_secs_f64(),
            rate(pull),
            pull.as_secs_f64(),
            idle.rss_kib / 1024,
            after_push.rss_kib / 1024,
            after_push.peak_kib / 1024,
            after_pull.peak_kib / 1024,
            if reset { "" } else { " (pull peak includes the push: VmHWM not resettable here)" }
        ));
        // Memory stays flat whatever the size: a few parts, never the blob.
        let bound_mib = 200;
        assert!(
            after_push.peak_kib / 1024 < bound_mib && after_pull.peak_kib / 1024 < bound_mib,
            "{label}: peak RSS {} / {} MiB for a {mib} MiB blob (bound {bound_mib} MiB)",
            after_push.peak_kib / 1024,
            after_pull.peak_kib / 1024
        );
    }
}

// ---------------------------------------------------------------------------
// 4. Token signing keys shared through the bucket (issue 20)
// ---------------------------------------------------------------------------

const ALICE_PW: &str = "alice-Pw-4c2e91d7";

/// A replica config with htpasswd logins; `realm` overrides the token realm
/// (to send clients of one replica to another's `/token`).
fn auth_config(peer: &S3Peer, prefix: &str, htpasswd: &Path, realm: Option<&str>) -> String {
    let realm = realm.map(|r| format!("[auth.token]\nrealm = \"{r}\"\n")).unwrap_or_default();
    format!(
        "[server]\npublic_url = \"http://@LISTEN@\"\n\n{}\n[auth]\nkind = \"htpasswd\"\nhtpasswd_file = \"{}\"\n{realm}\n\
         [[access]]\nrepository = \"team/**\"\nactions = [\"pull\", \"push\", \"delete\"]\nusers = [\"alice\"]\n",
        s3_config(peer, prefix),
        htpasswd.display()
    )
}

/// `GET /token` on `s` as alice for pull+push on `repo`.
async fn alice_token(s: &Server, repo: &str) -> String {
    password_token(s, "alice", ALICE_PW, repo).await
}

/// The `kid` header of a JWT.
fn kid_of(token: &str) -> String {
    jwt_kid(token)
}

/// Pushes `img` to `s` as `repo:tag` with a bearer token; every status is
/// returned (the first non-success stops the push).
async fn push_with_token(s: &Server, token: &str, repo: &str, tag: &str, img: &Image) -> u16 {
    let bearer = format!("Bearer {token}");
    for blob in std::iter::once(&img.config).chain(img.layers.iter()) {
        let r = s
            .req("POST", &format!("/v2/{repo}/blobs/uploads/"))
            .header("authorization", &bearer)
            .send()
            .await
            .expect("POST");
        if r.status() != 202 {
            return r.status().as_u16();
        }
        let url = with_query(&s.resolve(&header(&r, "location")), &format!("digest={}", sha256_digest(blob)));
        let r = s.req("PUT", &url).header("authorization", &bearer).body(blob.clone()).send().await.expect("PUT");
        if r.status() != 201 {
            return r.status().as_u16();
        }
    }
    let r = s
        .req("PUT", &format!("/v2/{repo}/manifests/{tag}"))
        .header("authorization", &bearer)
        .header("content-type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await
        .expect("PUT manifest");
    r.status().as_u16()
}

/// GET `repo:tag` on `s` with a bearer token: the status.
async fn pull_status(s: &Server, token: &str, repo: &str, tag: &str) -> u16 {
    s.req("GET", &format!("/v2/{repo}/manifests/{tag}"))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("GET manifest")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_accept_each_others_tokens_on_s3s_fs() {
    tokens_across_replicas(&S3Peer::s3s_fs()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_accept_each_others_tokens_on_garage() {
    tokens_across_replicas(&S3Peer::garage()).await;
}

/// Two htpasswd replicas on `peer`'s bucket: one key in the bucket, tokens
/// of each accepted by the other (HTTP and skopeo sent to the other's
/// /token), a restart keeps the key, other key sets and tampered tokens
/// are refused, the secret never logged.
async fn tokens_across_replicas(peer: &S3Peer) {
    let work = tempfile::tempdir().expect("tmp");
    let htpasswd = work.path().join("htpasswd");
    let line =
        run(Command::new(require_tool("htpasswd", "apache2-utils")).args(["-nbB", "-C", "4", "alice", ALICE_PW]));
    std::fs::write(&htpasswd, line).expect("write htpasswd");

    // A creates the key set on the empty bucket; B, whose challenges send
    // clients to A's /token (a load balancer's worst case), loads it.
    let mut a = Server::start_with(ServerOptions {
        config: Some(auth_config(peer, PREFIX, &htpasswd, None)),
        ..Default::default()
    })
    .await;
    let realm = format!("{}/token", a.base);
    let b = Server::start_with(ServerOptions {
        config: Some(auth_config(peer, PREFIX, &htpasswd, Some(&realm))),
        ..Default::default()
    })
    .await;
    let keys = key_ids(peer).await;
    assert_eq!(keys.len(), 1, "one signing key in the bucket: {keys:?}");
    let key_id = keys[0].clone();
    assert!(a.logs().contains("created a token signing key in storage"), "A created the key");
    assert!(b.logs().contains("loaded the token signing keys from storage"), "B loaded it");

    // A token from A works on B (push and pull), and one from B on A.
    let from_a = alice_token(&a, "team/app").await;
    assert_eq!(kid_of(&from_a), key_id, "tokens name the shared key");
    let img = Image::random(2);
    assert_eq!(push_with_token(&b, &from_a, "team/app", "v1", &img).await, 201, "push on B with A's token");
    assert_eq!(pull_status(&b, &from_a, "team/app", "v1").await, 200, "pull on B with A's token");
    let from_b = alice_token(&b, "team/app").await;
    assert_eq!(pull_status(&a, &from_b, "team/app", "v1").await, 200, "pull on A with B's token");
    // Without a token both refuse.
    assert_eq!(b.manifest("GET", "team/app", "v1").await.status(), 401);

    // skopeo logs in against B, is sent to A for the token, uses it on B.
    let src = work.path().join("src");
    let img2 = Image::random(2);
    write_oci_layout(&src, &img2, "v2");
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds", &format!("alice:{ALICE_PW}")])
        .arg(format!("oci:{}:v2", src.display()))
        .arg(format!("docker://{}/team/app:v2", b.addr)));
    let out = work.path().join("out");
    run(skopeo()
        .args(["copy", "--src-tls-verify=false", "--preserve-digests", "--src-creds", &format!("alice:{ALICE_PW}")])
        .arg(format!("docker://{}/team/app:v2", b.addr))
        .arg(format!("oci:{}:v2", out.display())));
    assert_eq!(oci_layout_manifest_digest(&out, "v2"), img2.digest, "skopeo round trip through both replicas");
    assert!(a.logs().contains("/token"), "skopeo fetched its tokens from A");

    // A web-interface session started on A is valid on B (its key is
    // derived from the shared signing key), and on A after a restart.
    let cookie = ui_login(&a).await;
    assert!(ui_signed_in(&b, &cookie).await, "A's web session on B");
    assert!(!ui_signed_in(&b, "cove_session=forged.forged").await, "a forged session cookie");

    // A restart keeps the key: the old token still works, no key is added.
    a.restart().await;
    assert_eq!(pull_status(&a, &from_a, "team/app", "v1").await, 200, "A's old token after A's restart");
    assert!(ui_signed_in(&a, &cookie).await, "the web session after A's restart");
    assert_eq!(key_ids(peer).await, vec![key_id.clone()], "a restart creates no key");

    // A Cove on another prefix has its own key set: its tokens are refused.
    let other = Server::start_with(ServerOptions {
        config: Some(auth_config(peer, "elsewhere", &htpasswd, None)),
        ..Default::default()
    })
    .await;
    let foreign = alice_token(&other, "team/app").await;
    assert_ne!(kid_of(&foreign), key_id);
    assert_eq!(pull_status(&a, &foreign, "team/app", "v1").await, 401, "a token of another key set");
    // A tampered token naming the shared key is refused too.
    let mut forged = from_a.clone();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == 'Q' { 'w' } else { 'Q' });
    assert_eq!(pull_status(&b, &forged, "team/app", "v1").await, 401, "a tampered token");

    // The secret is in the bucket only, never in a log.
    let doc = peer
        .raw_s3()
        .get(&object_store::path::Path::from(format!("{PREFIX}/_shared/keys/{key_id}")))
        .await
        .expect("key doc")
        .bytes()
        .await
        .expect("key bytes");
    let doc: serde_json::Value = serde_json::from_slice(&doc).expect("key json");
    let secret = doc["secret"].as_str().expect("secret").to_owned();
    assert_eq!(secret.len(), 64, "a 32-byte secret");
    for s in [&a, &b, &other] {
        assert!(!s.logs().contains(&secret), "{}: the signing secret is in the log", s.base);
    }
}

/// Signs alice in to `s`'s web interface over plain HTTP (login page,
/// CSRF token, same-origin POST); returns the session cookie.
async fn ui_login(s: &Server) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let r = http.get(s.url("/ui/login")).send().await.expect("login page");
    assert_eq!(r.status(), 200, "{}: login page", s.base);
    let anon = header(&r, "set-cookie").split(';').next().unwrap_or_default().to_owned();
    let page = r.text().await.expect("page");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|v| v.split('"').next()).expect("csrf").to_owned();
    let r = http
        .post(s.url("/ui/login"))
        .header("cookie", &anon)
        .header("origin", &s.base)
        .form(&[("username", "alice"), ("password", ALICE_PW), ("csrf", &csrf), ("next", "/")])
        .send()
        .await
        .expect("POST login");
    assert!(r.status().is_redirection(), "{}: sign-in answered {}", s.base, r.status());
    header(&r, "set-cookie").split(';').next().unwrap_or_default().to_owned()
}

/// Whether `s`'s web interface takes `cookie` as alice's session (the
/// repository list instead of a redirect to the login page).
async fn ui_signed_in(s: &Server, cookie: &str) -> bool {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let r = http.get(s.url("/")).header("cookie", cookie).header("accept", "text/html").send().await.expect("GET /");
    r.status() == 200 && r.text().await.expect("page").contains("alice")
}

/// The ids of the signing keys in the bucket (under [`PREFIX`]).
async fn key_ids(peer: &S3Peer) -> Vec<String> {
    peer.list_names(&format!("{PREFIX}/_shared/keys")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_on_an_empty_bucket_agree_on_the_key() {
    let peer = S3Peer::s3s_fs();
    let work = tempfile::tempdir().expect("tmp");
    let htpasswd = work.path().join("htpasswd");
    let line =
        run(Command::new(require_tool("htpasswd", "apache2-utils")).args(["-nbB", "-C", "4", "alice", ALICE_PW]));
    std::fs::write(&htpasswd, line).expect("write htpasswd");
    let opts = || ServerOptions { config: Some(auth_config(&peer, PREFIX, &htpasswd, None)), ..Default::default() };
    let (a, b) = tokio::join!(Server::start_with(opts()), Server::start_with(opts()));
    let keys = key_ids(&peer).await;
    report(&format!("replicas started together on an empty bucket wrote {} signing key(s)", keys.len()));
    assert!((1..=2).contains(&keys.len()), "{keys:?}");
    let img = Image::random(1);
    let ta = alice_token(&a, "team/app").await;
    assert_eq!(push_with_token(&a, &ta, "team/app", "v1", &img).await, 201);
    // Right away, whichever key each signed with, each accepts the other's.
    let tb = alice_token(&b, "team/app").await;
    assert_eq!(pull_status(&b, &ta, "team/app", "v1").await, 200, "A's token on B");
    assert_eq!(pull_status(&a, &tb, "team/app", "v1").await, 200, "B's token on A");
    // Having seen each other's key, both now sign with the smallest id.
    let (ta, tb) = (alice_token(&a, "team/app").await, alice_token(&b, "team/app").await);
    assert_eq!(kid_of(&ta), keys[0], "A signs with the smallest id");
    assert_eq!(kid_of(&tb), keys[0], "B signs with the smallest id");
}
