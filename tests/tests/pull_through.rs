//! End-to-end tests of the pull-through cache (issue 3): the real `cove`
//! binary in front of real upstreams (the CNCF distribution registry, with
//! and without bearer-token auth), a registry server that misbehaves on
//! purpose, and real clients (skopeo, containerd's `ctr`).
//!
//! Upstream requests are counted in distribution's access log or by the
//! misbehaving server itself. A missing peer fails the test with its
//! install hint. Everything stays on loopback.

mod common;
mod pull_through_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;

use common::*;
use cove_testkit::fault::{self, BodyMode, Content, FaultServer, Reply};
use cove_testkit::layout::Layout;
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::skopeo::{skopeo_pull, skopeo_push};
use pull_through_support::{blob_path, cache_status, start_cove, stored_manifests, UpstreamTable};

// ---------------------------------------------------------------- helpers

fn table<'a>(host: &'a str, url: String, extra: &'a str) -> UpstreamTable<'a> {
    UpstreamTable { host, url, extra }
}

/// A request with the Accept header a real client sends for `path`.
async fn send(s: &Server, method: &str, path: &str) -> reqwest::Response {
    s.req(method, path).header("accept", accept_for(path)).send().await.expect("request to cove")
}

/// Reads a whole body; `Err` if the transfer failed.
async fn body_bytes(r: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.map_err(|e| format!("after {} bytes: {e:?}", out.len()))?);
    }
    Ok(out)
}

/// Reads a body and checks it equals `expected` as it arrives (no copy);
/// returns (bytes read, time to first byte, total time) measured from `t0`.
async fn check_body(r: reqwest::Response, expected: &[u8], t0: Instant) -> Result<(usize, Duration, Duration), String> {
    let mut pos = 0usize;
    let mut ttfb = None;
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        let c = c.map_err(|e| format!("after {pos} bytes: {e:?}"))?;
        if ttfb.is_none() && !c.is_empty() {
            ttfb = Some(t0.elapsed());
        }
        if pos + c.len() > expected.len() || c[..] != expected[pos..pos + c.len()] {
            return Err(format!("content differs in bytes {pos}..{}", pos + c.len()));
        }
        pos += c.len();
    }
    Ok((pos, ttfb.unwrap_or_default(), t0.elapsed()))
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------- 1. names

/// skopeo pulls through the origin-path convention byte-exact;
/// `docker.io/app` is `docker.io/library/app`; containerd-style `ns=`
/// requests hit the same cache entry; an unknown `ns` is refused without
/// contacting anyone; `ns=cove.test` means Cove's private repositories; and
/// pushes into an upstream's namespace are denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_upstream_names_ns_routing_and_denied_pushes() {
    let dist = Distribution::start(None, None).await;
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let app = layout.add_image("v1", &[64 * 1024, 300 * 1024]);
    let tool = layout.add_image("t1", &[32 * 1024]);
    skopeo_push(&layout.dir, "v1", &format!("{}/library/app:v1", dist.authority()), None);
    skopeo_push(&layout.dir, "t1", &format!("{}/org/tool:1", dist.authority()), None);
    let cove = start_cove(&[table("docker.io", dist.url(), ""), table("ghcr.io", dist.url(), "")]).await;

    // skopeo through the origin path: identical digests and bytes.
    let out = work.path().join("out");
    skopeo_pull(&format!("{}/docker.io/library/app:v1", cove.addr), &out, "v1", false)
        .unwrap_or_else(|e| panic!("skopeo pull through cove failed: {e}\n{}", cove.logs_tail(4000)));
    assert_eq!(oci_layout_manifest_digest(&out, "v1"), app.manifest.digest);
    assert_eq!(oci_layout_blob(&out, &app.manifest.digest), app.manifest.bytes, "manifest bytes");
    for b in std::iter::once(&app.config).chain(&app.layers) {
        assert_eq!(oci_layout_blob(&out, &b.digest), b.bytes, "blob {}", b.digest);
        assert!(blob_path(&cove.data_dir, &b.digest).is_file(), "{} cached", b.digest);
    }
    assert_eq!(stored_manifests(&cove.data_dir, "docker.io/library/app"), vec![app.manifest.digest.clone()]);
    let out2 = work.path().join("out2");
    skopeo_pull(&format!("{}/ghcr.io/org/tool:1", cove.addr), &out2, "1", false)
        .unwrap_or_else(|e| panic!("skopeo pull of ghcr.io/org/tool failed: {e}"));
    assert_eq!(oci_layout_manifest_digest(&out2, "1"), tool.manifest.digest);
    assert_blobs_verified(&cove.data_dir);

    let upstream_before = dist.count("/v2/");

    // Docker Hub normalisation: same cache entry, no upstream request.
    let r = send(&cove, "GET", "/v2/docker.io/app/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_status(&r), "hit", "docker.io/app is the cached docker.io/library/app");
    assert_eq!(header(&r, "docker-content-digest"), app.manifest.digest);
    assert_eq!(r.bytes().await.expect("body").as_ref(), app.manifest.bytes.as_slice());
    let cat = json(send(&cove, "GET", "/v2/_catalog").await).await;
    let repos: Vec<&str> = cat["repositories"].as_array().expect("list").iter().filter_map(|v| v.as_str()).collect();
    assert!(repos.contains(&"docker.io/library/app"), "catalog {repos:?}");
    assert!(repos.contains(&"ghcr.io/org/tool"), "catalog {repos:?}");
    assert!(!repos.contains(&"docker.io/app"), "catalog lists the normalised name only: {repos:?}");

    // containerd mirror mode: ns=docker.io lands on the same cache entry.
    let m = &app.manifest.digest;
    let layer = &app.layers[1];
    for (method, path) in [
        ("HEAD", "/v2/library/app/manifests/v1?ns=docker.io".to_owned()),
        ("HEAD", "/v2/app/manifests/v1?ns=docker.io".to_owned()),
        ("GET", format!("/v2/library/app/manifests/{m}?ns=docker.io")),
        ("HEAD", format!("/v2/library/app/blobs/{}?ns=docker.io", layer.digest)),
    ] {
        let r = send(&cove, method, &path).await;
        assert_eq!(r.status(), 200, "{method} {path}");
        assert_eq!(cache_status(&r), "hit", "{method} {path}");
        if path.contains("/manifests/") {
            assert_eq!(header(&r, "docker-content-digest"), *m, "{method} {path}");
        }
    }
    let r = send(&cove, "GET", &format!("/v2/library/app/blobs/{}?ns=docker.io", layer.digest)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_status(&r), "hit");
    assert_eq!(r.bytes().await.expect("blob").as_ref(), layer.bytes.as_slice());
    let r = send(&cove, "GET", &format!("/v2/org/tool/manifests/{}?ns=ghcr.io", tool.manifest.digest)).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "hit".to_owned()), "ns=ghcr.io");
    assert_eq!(dist.count("/v2/"), upstream_before, "hits must not reach upstream:\n{}", dist.all_requests());

    // Only configured upstreams are honoured: never an open proxy.
    for ns in ["evil.example.com", "quay.io", "127.0.0.1:1"] {
        let r = send(&cove, "GET", &format!("/v2/library/app/manifests/v1?ns={ns}")).await;
        assert_error(r, 404, "NAME_UNKNOWN", &format!("ns={ns}")).await;
    }
    assert_eq!(dist.count("/v2/"), upstream_before, "an unknown ns contacted upstream");

    // ns naming Cove itself: the private repositories.
    let private = cove.push_image("team/private", "p1", 1).await;
    for path in ["/v2/team/private/manifests/p1?ns=cove.test", "/v2/team/private/manifests/p1?ns=COVE.test"] {
        let r = send(&cove, "GET", path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "docker-content-digest"), private.digest, "{path}");
        assert_eq!(cache_status(&r), "", "{path}: private content is not cache content");
    }

    // Pushes into an upstream's namespace are denied, under either name form.
    let r = cove.req("POST", "/v2/docker.io/library/app/blobs/uploads/").send().await.expect("POST");
    assert_error(r, 403, "DENIED", "upload into docker.io/").await;
    let r = cove.req("POST", "/v2/library/app/blobs/uploads/?ns=docker.io").send().await.expect("POST");
    assert_error(r, 403, "DENIED", "upload with ns=docker.io").await;
    let r = cove.put_manifest("docker.io/library/app", "evil", OCI_MANIFEST, &private.manifest).await;
    assert_error(r, 403, "DENIED", "manifest PUT into docker.io/").await;
    let r = cove.put_manifest("ghcr.io/org/tool", "evil", OCI_MANIFEST, &private.manifest).await;
    assert_error(r, 403, "DENIED", "manifest PUT into ghcr.io/").await;
    assert_eq!(dist.count("manifests/evil"), 0, "a denied push reached upstream");
    let r = send(&cove, "GET", "/v2/docker.io/library/app/manifests/evil").await;
    assert_eq!(r.status(), 404, "nothing was tagged evil");
}

/// Fetching an index caches only the index; a platform manifest and its
/// blobs are fetched and cached only when a client asks for them; HEAD of an
/// uncached blob answers from upstream without caching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_caches_each_platform_only_when_asked() {
    let dist = Distribution::start(None, None).await;
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let idx = layout.add_index("v1", &["amd64", "arm64"], &[40 * 1024, 90 * 1024]);
    skopeo_push(&layout.dir, "v1", &format!("{}/library/multi:v1", dist.authority()), None);
    let cove = start_cove(&[table("docker.io", dist.url(), "")]).await;
    let repo = "docker.io/library/multi";
    let (amd, arm) = (&idx.images[0], &idx.images[1]);
    let upstream_gets = |d: &str| dist.count(&format!("\"GET /v2/library/multi/manifests/{d}"));
    let upstream_blob_gets = || dist.count("\"GET /v2/library/multi/blobs/");

    let r = send(&cove, "GET", &format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_status(&r), "miss");
    assert_eq!(header(&r, "content-type"), OCI_INDEX, "media type is upstream's");
    assert_eq!(header(&r, "docker-content-digest"), idx.index.digest);
    assert_eq!(r.bytes().await.expect("body").as_ref(), idx.index.bytes.as_slice(), "byte-exact index");
    assert_eq!(stored_manifests(&cove.data_dir, repo), vec![idx.index.digest.clone()], "only the index is cached");
    assert!(files_under(&cove.data_dir.join("blobs")).is_empty(), "no blob fetched for an index");
    assert_eq!((upstream_gets(&amd.manifest.digest), upstream_gets(&arm.manifest.digest)), (0, 0));
    assert_eq!(upstream_blob_gets(), 0);

    // The client picks amd64.
    let r = send(&cove, "GET", &format!("/v2/{repo}/manifests/{}", amd.manifest.digest)).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()));
    assert_eq!(r.bytes().await.expect("body").as_ref(), amd.manifest.bytes.as_slice());
    for b in std::iter::once(&amd.config).chain(&amd.layers) {
        let r = send(&cove, "GET", &format!("/v2/{repo}/blobs/{}", b.digest)).await;
        assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()), "{}", b.digest);
        assert_eq!(r.bytes().await.expect("blob").as_ref(), b.bytes.as_slice());
    }
    // HEAD of an uncached arm64 layer: answered from upstream, not cached.
    let r = send(&cove, "HEAD", &format!("/v2/{repo}/blobs/{}", arm.layers[0].digest)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), arm.layers[0].bytes.len().to_string());

    let mut want = vec![idx.index.digest.clone(), amd.manifest.digest.clone()];
    want.sort();
    assert_eq!(stored_manifests(&cove.data_dir, repo), want, "index + the asked platform only");
    wait_until("amd64 blobs are committed", Duration::from_secs(5), || {
        amd.blob_digests().iter().all(|d| blob_path(&cove.data_dir, d).is_file())
    })
    .await;
    for d in arm.blob_digests() {
        assert!(!blob_path(&cove.data_dir, &d).exists(), "arm64 blob {d} was cached without being asked for");
    }
    assert_eq!(assert_blobs_verified(&cove.data_dir), amd.blob_digests().len());
    assert_eq!(upstream_gets(&arm.manifest.digest), 0, "arm64 manifest fetched:\n{}", dist.all_requests());
    assert_eq!(upstream_blob_gets(), amd.blob_digests().len(), "one upstream GET per asked blob");
}

// ---------------------------------------------------------------- 2. TTL

/// Within `tag_ttl` a tag is a hit with no upstream request; after it, a
/// HEAD revalidates (no manifest GET); a retag upstream is picked up after
/// the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_ttl_hit_then_head_revalidation_then_new_digest() {
    let dist = Distribution::start(None, None).await;
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let v1 = layout.add_image("v1", &[20 * 1024]);
    let v2 = layout.add_image("v2", &[24 * 1024]);
    skopeo_push(&layout.dir, "v1", &format!("{}/library/app:v1", dist.authority()), None);
    skopeo_push(&layout.dir, "v2", &format!("{}/library/app:next", dist.authority()), None);
    let cove = start_cove(&[table("docker.io", dist.url(), "tag_ttl = \"2s\"")]).await;
    let path = "/v2/docker.io/library/app/manifests/v1";
    let heads = || dist.count("\"HEAD /v2/library/app/manifests/v1 ");
    let gets = || dist.count("\"GET /v2/library/app/manifests/");

    let r = send(&cove, "GET", path).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()));
    assert_eq!(header(&r, "docker-content-digest"), v1.manifest.digest);
    let (h0, g0) = (heads(), gets());
    assert_eq!(g0, 1, "a miss fetches the manifest once:\n{}", dist.all_requests());

    let r = send(&cove, "GET", path).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "hit".to_owned()), "within the TTL");
    let r = send(&cove, "HEAD", "/v2/library/app/manifests/v1?ns=docker.io").await;
    assert_eq!(cache_status(&r), "hit", "ns= form within the TTL");
    assert_eq!((heads(), gets()), (h0, g0), "a hit within the TTL must not contact upstream");

    tokio::time::sleep(Duration::from_millis(2300)).await;
    let r = send(&cove, "GET", path).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "revalidated".to_owned()), "after the TTL");
    assert_eq!(header(&r, "docker-content-digest"), v1.manifest.digest);
    assert_eq!(r.bytes().await.expect("body").as_ref(), v1.manifest.bytes.as_slice());
    assert_eq!(heads(), h0 + 1, "one HEAD revalidates");
    assert_eq!(gets(), g0, "revalidation must not GET the manifest (Docker Hub counts GETs)");

    // Retag upstream: v1 now points at v2's manifest (a PUT of its bytes).
    let r = http_client()
        .put(format!("{}/v2/library/app/manifests/v1", dist.url()))
        .header("content-type", OCI_MANIFEST)
        .body(v2.manifest.bytes.clone())
        .send()
        .await
        .expect("retag");
    assert_eq!(r.status(), 201, "retag upstream");
    let r = send(&cove, "GET", path).await;
    assert_eq!(cache_status(&r), "hit", "still within the TTL of the revalidation");
    assert_eq!(header(&r, "docker-content-digest"), v1.manifest.digest);

    tokio::time::sleep(Duration::from_millis(2300)).await;
    let r = send(&cove, "GET", path).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()), "new digest after the TTL");
    assert_eq!(header(&r, "docker-content-digest"), v2.manifest.digest);
    assert_eq!(r.bytes().await.expect("body").as_ref(), v2.manifest.bytes.as_slice());
    assert_eq!(dist.count(&format!("\"GET /v2/library/app/manifests/{}", v2.manifest.digest)), 1);
    let r = send(&cove, "GET", path).await;
    assert_eq!((cache_status(&r), header(&r, "docker-content-digest")), ("hit".to_owned(), v2.manifest.digest.clone()));
    let out = work.path().join("out");
    skopeo_pull(&format!("{}/docker.io/library/app:v1", cove.addr), &out, "v1", false)
        .unwrap_or_else(|e| panic!("pull of the retagged image: {e}"));
    assert_eq!(oci_layout_manifest_digest(&out, "v1"), v2.manifest.digest);
}

// ---------------------------------------------------------------- 3. offline

/// With the upstream stopped: a cached tag is served `stale`, cached
/// digests and blobs are hits, uncached content fails fast with 503, and
/// skopeo still pulls the cached image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_serves_cache_stale_and_fails_fast_for_the_rest() {
    let mut dist = Distribution::start(None, None).await;
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let app = layout.add_image("v1", &[64 * 1024, 128 * 1024]);
    layout.add_image("o1", &[8 * 1024]);
    skopeo_push(&layout.dir, "v1", &format!("{}/library/app:v1", dist.authority()), None);
    skopeo_push(&layout.dir, "o1", &format!("{}/library/other:v1", dist.authority()), None);
    let cove = start_cove(&[table("docker.io", dist.url(), "tag_ttl = \"1s\"")]).await;
    let src = format!("{}/docker.io/library/app:v1", cove.addr);
    skopeo_pull(&src, &work.path().join("warm"), "v1", false).unwrap_or_else(|e| panic!("warm-up pull: {e}"));

    dist.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await; // the tag is no longer fresh

    let r = send(&cove, "GET", "/v2/docker.io/library/app/manifests/v1").await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "stale".to_owned()), "cached tag, upstream down");
    assert_eq!(r.bytes().await.expect("body").as_ref(), app.manifest.bytes.as_slice());
    let r = send(&cove, "HEAD", "/v2/library/app/manifests/v1?ns=docker.io").await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "stale".to_owned()), "ns= form");
    let r = send(&cove, "GET", &format!("/v2/docker.io/library/app/manifests/{}", app.manifest.digest)).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "hit".to_owned()), "cached digest");
    let r = send(&cove, "GET", &format!("/v2/docker.io/library/app/blobs/{}", app.layers[1].digest)).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "hit".to_owned()), "cached blob");
    assert_eq!(r.bytes().await.expect("blob").as_ref(), app.layers[1].bytes.as_slice());
    let r = send(&cove, "GET", "/v2/docker.io/library/app/tags/list").await;
    assert_eq!(r.status(), 200, "tags/list falls back to the cache");
    let tags = json(r).await;
    assert!(tags["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == "v1")), "{tags}");

    // Uncached: a clear 503, quickly (bounded retries), never a 500.
    let missing_blob = sha256_digest(b"never stored anywhere");
    for path in [
        "/v2/docker.io/library/other/manifests/v1".to_owned(),
        format!("/v2/docker.io/library/other/manifests/{missing_blob}"),
        format!("/v2/docker.io/library/app/blobs/{missing_blob}"),
        "/v2/library/other/manifests/v1?ns=docker.io".to_owned(),
    ] {
        let t0 = Instant::now();
        let r = send(&cove, "GET", &path).await;
        let took = t0.elapsed();
        assert_error(r, 503, "UNAVAILABLE", &path).await;
        assert!(took < Duration::from_secs(5), "{path}: upstream down took {took:?} to report");
    }

    let t0 = Instant::now();
    let out = work.path().join("offline");
    skopeo_pull(&src, &out, "v1", false)
        .unwrap_or_else(|e| panic!("skopeo pull with upstream down failed: {e}\n{}", cove.logs_tail(4000)));
    let took = t0.elapsed();
    assert_eq!(oci_layout_manifest_digest(&out, "v1"), app.manifest.digest);
    for b in app.layers.iter() {
        assert_eq!(oci_layout_blob(&out, &b.digest), b.bytes);
    }
    report(&format!("pull-through: skopeo pull of a cached image with the upstream stopped: {} (ok)", ms(took)));
    assert!(cove.logs().contains("stale"), "stale serving is logged");
}

// ---------------------------------------------------------------- 4. token auth

/// An upstream behind distribution's `auth: token`: Cove answers the
/// challenge with the configured credentials; wrong credentials give the
/// client an error and cache nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_upstream_with_configured_credentials() {
    use base64::Engine as _;
    use cove_testkit::token::{SigningCert, TokenIssuer};
    let cert = SigningCert::generate();
    let issuer = TokenIssuer::start(&cert, Some(("puller", "s3cret-pw")), 300).await;
    let dist = Distribution::start(None, Some(&issuer.auth_config(&cert))).await;
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let app = layout.add_image("v1", &[50 * 1024]);
    skopeo_push(&layout.dir, "v1", &format!("{}/org/app:v1", dist.authority()), Some("puller:s3cret-pw"));
    let anon = http_client().get(format!("{}/v2/org/app/manifests/v1", dist.url())).send().await.expect("anon");
    assert_eq!(anon.status(), 401, "the upstream really requires a token");

    let cove = start_cove(&[
        table("ghcr.io", dist.url(), "username = \"puller\"\npassword = \"s3cret-pw\""),
        table("quay.io", dist.url(), "username = \"puller\"\npassword = \"wrong-pw\""),
    ])
    .await;
    let basic = |p: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("puller:{p}")));
    let before = issuer.authorizations().len();
    let out = work.path().join("out");
    skopeo_pull(&format!("{}/ghcr.io/org/app:v1", cove.addr), &out, "v1", false)
        .unwrap_or_else(|e| panic!("pull through a token-auth upstream failed: {e}\n{}", cove.logs_tail(4000)));
    assert_eq!(oci_layout_manifest_digest(&out, "v1"), app.manifest.digest);
    let seen = &issuer.authorizations()[before..];
    assert!(!seen.is_empty() && seen.iter().all(|a| *a == basic("s3cret-pw")), "issuer saw {seen:?}");
    assert!(!cove.logs().contains("s3cret-pw"), "the password appears in Cove's log");

    // Wrong credentials: an error for the client, nothing cached, and no
    // cross-repository leak of the blob ghcr.io/org/app already cached.
    let before = issuer.authorizations().len();
    for path in [
        "/v2/quay.io/org/app/manifests/v1".to_owned(),
        format!("/v2/quay.io/org/app/manifests/{}", app.manifest.digest),
        format!("/v2/quay.io/org/app/blobs/{}", app.layers[0].digest),
    ] {
        let r = send(&cove, "GET", &path).await;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert!((400..600).contains(&status) && status != 500, "{path}: got {status} {body}");
        assert!(body.contains("\"errors\""), "{path}: OCI error body, got {body}");
    }
    assert!(issuer.authorizations()[before..].contains(&basic("wrong-pw")), "Cove sent the configured credentials");
    assert!(stored_manifests(&cove.data_dir, "quay.io/org/app").is_empty(), "nothing cached for quay.io");
    let err = skopeo_pull(&format!("{}/quay.io/org/app:v1", cove.addr), &work.path().join("bad"), "v1", false);
    assert!(err.is_err(), "pull with wrong upstream credentials succeeded");
    assert!(!cove.logs().contains("wrong-pw"), "the password appears in Cove's log");
}

// ---------------------------------------------------------------- 5. faults

/// A fault server holding one image `library/app:v1`, with `fault` deciding
/// first (None: behave).
async fn fault_upstream(
    img: &Image,
    fault: impl Fn(&fault::Request) -> Option<Reply> + Send + Sync + 'static,
) -> FaultServer {
    let content = Content::shared();
    content.lock().expect("lock").add_image("v1", img);
    FaultServer::start(move |req| fault(req).unwrap_or_else(|| fault::serve(&content, req))).await
}

/// 5xx answers are retried: the client sees only the success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_5xx_then_success_is_retried() {
    let img = Image::random(2);
    let layer = img.layers[0].clone();
    let layer_digest = sha256_digest(&layer);
    let (n_head, n_blob) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (h, b, ld) = (n_head.clone(), n_blob.clone(), layer_digest.clone());
    let up = fault_upstream(&img, move |req| {
        if req.method == "HEAD" && req.path().ends_with("/manifests/v1") && h.fetch_add(1, Ordering::SeqCst) == 0 {
            return Some(Reply::error(503, "UNAVAILABLE"));
        }
        if req.method == "GET" && fault::blob_of(req) == Some(ld.as_str()) && b.fetch_add(1, Ordering::SeqCst) < 2 {
            return Some(Reply::error(502, "UNKNOWN"));
        }
        None
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "")]).await;

    let r = send(&cove, "GET", "/v2/docker.io/library/app/manifests/v1").await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()), "log:\n{}", up.log());
    assert_eq!(r.bytes().await.expect("body").as_ref(), img.manifest.as_slice());
    assert_eq!(up.count("HEAD", "/manifests/v1"), 2, "503 then a retried HEAD:\n{}", up.log());

    let r = send(&cove, "GET", &format!("/v2/docker.io/library/app/blobs/{layer_digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("blob").as_ref(), layer.as_slice());
    assert_eq!(up.count("GET", &layer_digest), 3, "two 502s then success:\n{}", up.log());
    wait_until("the blob is committed", Duration::from_secs(5), || blob_path(&cove.data_dir, &layer_digest).is_file())
        .await;
    assert_blobs_verified(&cove.data_dir);
}

/// 429 with nothing cached: TOOMANYREQUESTS with the upstream's
/// Retry-After, at once (not after waiting it out); with a cached copy:
/// served stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_429_is_toomanyrequests_with_retry_after_or_stale() {
    let img = Image::random(1);
    let limited = Arc::new(AtomicBool::new(true));
    let l = limited.clone();
    let up = fault_upstream(&img, move |req| {
        let api = req.path().contains("/manifests/") || req.path().contains("/blobs/");
        (api && l.load(Ordering::SeqCst)).then(|| Reply::error(429, "TOOMANYREQUESTS").header("Retry-After", "120"))
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "tag_ttl = \"1s\"")]).await;
    let layer = sha256_digest(&img.layers[0]);
    for path in
        ["/v2/docker.io/library/app/manifests/v1".to_owned(), format!("/v2/docker.io/library/app/blobs/{layer}")]
    {
        let t0 = Instant::now();
        let r = send(&cove, "GET", &path).await;
        let took = t0.elapsed();
        let retry_after = header(&r, "retry-after");
        assert_error(r, 429, "TOOMANYREQUESTS", &path).await;
        assert_eq!(retry_after, "120", "{path}: Retry-After passed on");
        assert!(took < Duration::from_secs(3), "{path}: took {took:?}");
    }
    assert!(stored_manifests(&cove.data_dir, "docker.io/library/app").is_empty());
    assert!(files_under(&cove.data_dir.join("blobs")).is_empty());

    // Cache library/cached while the limit is lifted, then hit the limit.
    limited.store(false, Ordering::SeqCst);
    let r = send(&cove, "GET", "/v2/docker.io/library/cached/manifests/v1").await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()));
    assert!(r.headers().get("warning").is_none(), "a fresh copy carries no warning");
    limited.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = send(&cove, "GET", "/v2/docker.io/library/cached/manifests/v1").await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "stale".to_owned()), "429 with a cached copy");
    // The spec's Warning form: warn-code 299, warn-agent "-", no date.
    let warnings: Vec<String> =
        r.headers().get_all("warning").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
    assert_eq!(warnings.len(), 1, "one warning on a stale copy: {warnings:?}");
    assert!(
        warnings[0].starts_with("299 - \"docker.io/library/cached:v1 is a cached copy") && warnings[0].ends_with('"'),
        "Warning {:?}",
        warnings[0]
    );
    assert_eq!(r.bytes().await.expect("body").as_ref(), img.manifest.as_slice());
    // Each 429 is counted (manifest, blob, then the revalidation).
    let status: serde_json::Value = send(&cove, "GET", "/admin/status").await.json().await.expect("status JSON");
    let up = status["upstreams"].as_array().and_then(|a| a.iter().find(|u| u["host"] == "docker.io")).cloned();
    let up = up.expect("docker.io in status");
    assert_eq!(up["rate_limited"], 3, "{up}");
    assert!(up["last_error"].as_str().is_some_and(|e| e.contains("rate limit")), "{up}");
}

/// A truncated upstream body: the client's transfer fails, nothing is
/// committed, and the next request fetches again and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_truncated_blob_is_never_committed() {
    let layer = random_bytes(3 << 20);
    let img = Image::from_layers(vec![layer.clone()]);
    let d = sha256_digest(&layer);
    let n = Arc::new(AtomicUsize::new(0));
    let (n2, d2, layer2) = (n.clone(), d.clone(), Bytes::from(layer.clone()));
    let up = fault_upstream(&img, move |req| {
        if req.method == "GET" && fault::blob_of(req) == Some(d2.as_str()) && n2.fetch_add(1, Ordering::SeqCst) == 0 {
            return Some(fault::blob_reply(&layer2, &d2).mode(BodyMode::Truncate(1 << 20)));
        }
        None
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "")]).await;
    let path = format!("/v2/docker.io/library/app/blobs/{d}");
    let r = send(&cove, "GET", &path).await;
    let got = body_bytes(r).await;
    assert!(got.as_ref().map_or(true, |b| b.len() < layer.len()), "a truncated upstream body was served whole");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!blob_path(&cove.data_dir, &d).exists(), "truncated blob committed");
    assert!(files_under(&cove.data_dir.join("blobs")).is_empty());
    assert!(files_under(&cove.data_dir.join("spool")).is_empty(), "spool file left behind");

    let r = send(&cove, "GET", &path).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()), "fetched again");
    assert_eq!(body_bytes(r).await.expect("second transfer").len(), layer.len());
    assert_eq!(up.count("GET", &d), 2, "{}", up.log());
    wait_until("the blob is committed", Duration::from_secs(5), || blob_path(&cove.data_dir, &d).is_file()).await;
    assert_eq!(std::fs::read(blob_path(&cove.data_dir, &d)).expect("read"), layer);
}

/// Bytes that do not match the digest: never cached, never delivered as a
/// complete response; manifests likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_wrong_digest_is_never_cached_or_served_whole() {
    let layer = random_bytes(2 << 20);
    let img = Image::from_layers(vec![layer.clone()]);
    let d = sha256_digest(&layer);
    let (d2, mdigest) = (d.clone(), img.digest.clone());
    let bad_manifest = {
        let mut m = img.manifest.clone();
        m.push(b'\n');
        m
    };
    let up = fault_upstream(&img, move |req| {
        if fault::blob_of(req) == Some(d2.as_str()) {
            let mut wrong = random_bytes(2 << 20);
            wrong[0] ^= 1;
            return Some(Reply::new(200, wrong).header("Docker-Content-Digest", d2.clone()));
        }
        if req.path().contains("/library/bad/manifests/") {
            // HEAD says mdigest; the GET sends other bytes under that digest.
            return Some(
                Reply::new(200, bad_manifest.clone())
                    .header("Content-Type", OCI_MANIFEST)
                    .header("Docker-Content-Digest", mdigest.clone()),
            );
        }
        None
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "")]).await;
    for _ in 0..2 {
        let r = send(&cove, "GET", &format!("/v2/docker.io/library/app/blobs/{d}")).await;
        if r.status() == 200 {
            let got = body_bytes(r).await;
            assert!(got.as_ref().map_or(true, |b| b.len() < layer.len()), "a wrong-digest body was delivered whole");
        } else {
            assert!(r.status().as_u16() >= 500 && r.status() != 500, "status {}", r.status());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!blob_path(&cove.data_dir, &d).exists(), "wrong-digest blob committed");
    }
    assert_eq!(up.count("GET", &d), 2, "a failed verification is not remembered as a hit:\n{}", up.log());
    assert!(files_under(&cove.data_dir.join("blobs")).is_empty());

    for path in [
        "/v2/docker.io/library/bad/manifests/v1".to_owned(),
        format!("/v2/docker.io/library/bad/manifests/{}", img.digest),
    ] {
        let r = send(&cove, "GET", &path).await;
        let status = r.status().as_u16();
        assert!((502..=504).contains(&status), "{path}: wrong-digest manifest gave {status}");
    }
    assert!(stored_manifests(&cove.data_dir, "docker.io/library/bad").is_empty(), "bad manifest stored");
}

/// A slow upstream body is streamed: the first byte reaches the client about
/// when it leaves the upstream, long before the body ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_slow_body_is_streamed_to_the_client() {
    let layer = random_bytes(4 << 20);
    let img = Image::from_layers(vec![layer.clone()]);
    let d = sha256_digest(&layer);
    let (d2, layer2) = (d.clone(), Bytes::from(layer.clone()));
    let up = fault_upstream(&img, move |req| {
        (req.method == "GET" && fault::blob_of(req) == Some(d2.as_str())).then(|| {
            fault::blob_reply(&layer2, &d2)
                .mode(BodyMode::Throttle { chunk: 256 << 10, every: Duration::from_millis(200) })
        })
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "")]).await;

    // Direct, for comparison.
    let t0 = Instant::now();
    let r = http_client().get(format!("{}/v2/library/app/blobs/{d}", up.url())).send().await.expect("direct");
    let (_, direct_ttfb, direct_total) = check_body(r, &layer, t0).await.expect("direct body");

    let t0 = Instant::now();
    let r = send(&cove, "GET", &format!("/v2/docker.io/library/app/blobs/{d}")).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()));
    assert_eq!(header(&r, "content-length"), layer.len().to_string());
    let (n, ttfb, total) = check_body(r, &layer, t0).await.expect("body through cove");
    assert_eq!(n, layer.len());
    report(&format!(
        "pull-through: slow upstream (4 MiB at 1.25 MiB/s): TTFB direct {} / through Cove {}; total direct {} / through Cove {}",
        ms(direct_ttfb),
        ms(ttfb),
        ms(direct_total),
        ms(total)
    ));
    assert!(total >= Duration::from_secs(2), "the upstream body takes ~3 s, got {total:?}");
    assert!(ttfb < Duration::from_secs(1), "time to first byte {ttfb:?}: Cove waited for the body");
    wait_until("the blob is committed", Duration::from_secs(5), || blob_path(&cove.data_dir, &d).is_file()).await;
}

// ---------------------------------------------------------------- 6. coalescing

/// 20 concurrent GETs of one uncached 50 MiB blob make exactly one upstream
/// GET and all get the right bytes; a client hanging up does not stop the
/// fetch; Range works on cached and in-flight blobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_one_upstream_get_for_20_clients_and_background_completion() {
    let big = Bytes::from(random_bytes(50 << 20));
    let second = Bytes::from(random_bytes(20 << 20));
    let third = Bytes::from(random_bytes(8 << 20));
    let content = Content::shared();
    let (d1, d2, d3) = {
        let mut c = content.lock().expect("lock");
        (c.add_blob(big.clone()), c.add_blob(second.clone()), c.add_blob(third.clone()))
    };
    let c2 = content.clone();
    let up = FaultServer::start(move |req| {
        let r = fault::serve(&c2, req);
        match (req.method.as_str(), r.status, r.body.len()) {
            // Slow enough that every client arrives while the fetch runs.
            ("GET", 200, n) if n > (1 << 20) => {
                r.mode(BodyMode::Throttle { chunk: 1 << 20, every: Duration::from_millis(60) })
            }
            _ => r,
        }
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "")]).await;

    let t0 = Instant::now();
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let (http, url, big) =
                (cove.http.clone(), cove.url(&format!("/v2/docker.io/library/big/blobs/{d1}")), big.clone());
            tokio::spawn(async move {
                let r = http.get(url).send().await.expect("GET");
                let status = (r.status().as_u16(), cache_status(&r));
                (status, check_body(r, &big, Instant::now()).await)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in clients {
        let (status, body) = c.await.expect("client task");
        let (n, _, _) = body.unwrap_or_else(|e| panic!("a coalesced client got wrong bytes: {e}"));
        assert_eq!((status.0, n), (200, big.len()));
        statuses.push(status.1);
    }
    let took = t0.elapsed();
    assert_eq!(up.count("GET", &d1), 1, "20 concurrent clients → exactly one upstream GET:\n{}", up.log());
    report(&format!(
        "pull-through: 20 concurrent GETs of one uncached 50 MiB blob: {} upstream GET, all 20 verified in {} (X-Cove-Cache: {} miss, {} hit)",
        up.count("GET", &d1),
        ms(took),
        statuses.iter().filter(|s| *s == "miss").count(),
        statuses.iter().filter(|s| *s == "hit").count()
    ));
    wait_until("the 50 MiB blob is committed", Duration::from_secs(10), || blob_path(&cove.data_dir, &d1).is_file())
        .await;

    // Range on a cached blob.
    let r = cove
        .req("GET", &format!("/v2/docker.io/library/big/blobs/{d1}"))
        .header("range", "bytes=1000000-1999999")
        .send()
        .await
        .expect("range");
    assert_eq!((r.status().as_u16(), cache_status(&r)), (206, "hit".to_owned()));
    assert_eq!(header(&r, "content-range"), format!("bytes 1000000-1999999/{}", big.len()));
    assert_eq!(r.bytes().await.expect("range body").as_ref(), &big[1_000_000..2_000_000]);

    // A client hangs up after the first bytes: the fetch completes anyway.
    let r = send(&cove, "GET", &format!("/v2/docker.io/library/big/blobs/{d2}")).await;
    assert_eq!(r.status(), 200);
    let mut s = r.bytes_stream();
    let first = s.next().await.expect("a first chunk").expect("chunk");
    assert_eq!(first.as_ref(), &second[..first.len()]);
    drop(s);
    wait_until("the abandoned blob is committed in the background", Duration::from_secs(15), || {
        blob_path(&cove.data_dir, &d2).is_file()
    })
    .await;
    let r = send(&cove, "GET", &format!("/v2/docker.io/library/big/blobs/{d2}")).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "hit".to_owned()), "after a disconnect");
    check_body(r, &second, Instant::now()).await.expect("abandoned blob content");
    assert_eq!(up.count("GET", &d2), 1, "{}", up.log());

    // Range on an in-flight blob: a full reader starts the fetch, ranged
    // readers join it.
    let full = {
        let (http, url, third) =
            (cove.http.clone(), cove.url(&format!("/v2/docker.io/library/big/blobs/{d3}")), third.clone());
        tokio::spawn(async move {
            let r = http.get(url).send().await.expect("GET");
            check_body(r, &third, Instant::now()).await
        })
    };
    wait_until("the fetch of the third blob started", Duration::from_secs(5), || up.count("GET", &d3) == 1).await;
    for (a, b) in [(0usize, 99usize), (5 << 20, (5 << 20) + 4095), (third.len() - 10, third.len() - 1)] {
        let r = cove
            .req("GET", &format!("/v2/docker.io/library/big/blobs/{d3}"))
            .header("range", format!("bytes={a}-{b}"))
            .send()
            .await
            .expect("range");
        let status = r.status().as_u16();
        let body = r.bytes().await.expect("range body");
        // The upstream announced the size, so Cove can answer the range.
        assert_eq!(status, 206, "range {a}-{b} on an in-flight blob");
        assert_eq!(body.as_ref(), &third[a..=b], "in-flight range {a}-{b}");
    }
    full.await.expect("task").expect("full reader of the in-flight blob");
    assert_eq!(up.count("GET", &d3), 1, "ranged readers joined the one fetch:\n{}", up.log());
}

/// 20 concurrent pulls of one uncached tag (and of one uncached manifest
/// digest) cost one upstream round trip, not 20: Docker Hub counts manifest
/// GETs against the pull limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_concurrent_manifest_misses() {
    let (img, other) = (Image::random(1), Image::random(1));
    let content = Content::shared();
    {
        let mut c = content.lock().expect("lock");
        c.add_image("v1", &img);
        c.add_image("o1", &other);
    }
    let c2 = content.clone();
    let up = FaultServer::start(move |req| {
        let r = fault::serve(&c2, req);
        // A slow upstream: every client arrives while the first is waiting.
        if req.path().contains("/manifests/") {
            r.delay(Duration::from_millis(300))
        } else {
            r
        }
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "")]).await;
    for (path, digest) in [
        ("/v2/docker.io/library/app/manifests/v1".to_owned(), img.digest.clone()),
        (format!("/v2/docker.io/library/other/manifests/{}", other.digest), other.digest.clone()),
    ] {
        let clients: Vec<_> = (0..20)
            .map(|_| {
                let req = cove.req("GET", &path).header("accept", ACCEPT_ALL);
                tokio::spawn(async move {
                    let r = req.send().await.expect("GET");
                    (r.status().as_u16(), header(&r, "docker-content-digest"))
                })
            })
            .collect();
        for c in clients {
            assert_eq!(c.await.expect("task"), (200, digest.clone()), "{path}");
        }
    }
    let (heads, gets) = (up.count("HEAD", "/manifests/"), up.count("GET", "/manifests/"));
    assert_eq!(
        (heads, gets),
        (1, 2),
        "20 concurrent tag pulls → 1 HEAD + 1 GET; 20 concurrent digest pulls → 1 GET:\n{}",
        up.log()
    );
}

// ---------------------------------------------------------------- 7. containerd

/// containerd pulls `docker.io/library/app:v1` with Cove as its mirror
/// (hosts.toml from `cove mirror-config containerd` when the command exists),
/// which sends `?ns=docker.io` on every request; the origin server is a dead
/// port so nothing can bypass Cove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_cove_as_a_mirror_with_ns() {
    use cove_testkit::peers::containerd::Containerd;
    let dist = Distribution::start(None, None).await;
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let app = layout.add_image("v1", &[48 * 1024, 96 * 1024]);
    skopeo_push(&layout.dir, "v1", &format!("{}/library/app:v1", dist.authority()), None);
    let cove = start_cove(&[table("docker.io", dist.url(), "")]).await;
    let cove_url = cove.base.clone();
    let dead = format!("http://127.0.0.1:{}", free_port());

    let hosts = work.path().join("certs.d");
    let help = run(std::process::Command::new(cove_bin()).arg("--help"));
    let generated = help.contains("mirror-config");
    if generated {
        run(std::process::Command::new(cove_bin())
            .args(["mirror-config", "containerd", "--url", &cove_url, "--config"])
            .arg(cove.tmp.path().join("cove.toml"))
            .arg("--out-dir")
            .arg(&hosts));
    } else {
        let dir = hosts.join("docker.io");
        std::fs::create_dir_all(&dir).expect("hosts dir");
        std::fs::write(
            dir.join("hosts.toml"),
            format!("server = \"{dead}\"\n\n[host.\"{cove_url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        )
        .expect("hosts.toml");
    }
    // Whatever the file says the origin is, point it at a dead port.
    let file = hosts.join("docker.io").join("hosts.toml");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(text.contains(&format!("[host.\"{cove_url}\"]")), "hosts.toml names Cove:\n{text}");
    let text: String = text
        .lines()
        .map(|l| if l.trim_start().starts_with("server") { format!("server = \"{dead}\"") } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&file, text).expect("rewrite hosts.toml");

    let ctd = Containerd::start();
    let t0 = Instant::now();
    let out = ctd.pull(&hosts, "docker.io/library/app:v1");
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "ctr pull through Cove failed:\n{}{}\n--- containerd ---\n{}\n--- cove ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        ctd.logs(),
        cove.logs_tail(4000)
    );
    let ls = ctd.ctr(&["images", "ls"]);
    let ls = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(
        ls.lines().any(|l| l.contains("docker.io/library/app:v1") && l.contains(&app.manifest.digest)),
        "containerd has the image with upstream's digest:\n{ls}"
    );
    // containerd used the mirror form: /v2/library/app/... (+ ns=docker.io),
    // which Cove mapped to docker.io/library/app.
    let logs = cove.logs();
    assert!(logs.contains("/v2/library/app/manifests/v1"), "mirror-style requests in Cove's log:\n{logs}");
    assert!(logs.contains(&format!("/v2/library/app/blobs/{}", app.layers[1].digest)), "blob via the mirror");
    assert_eq!(stored_manifests(&cove.data_dir, "docker.io/library/app"), vec![app.manifest.digest.clone()]);
    for d in std::iter::once(&app.config.digest).chain(app.layers.iter().map(|l| &l.digest)) {
        assert!(blob_path(&cove.data_dir, d).is_file(), "{d} cached under docker.io");
    }
    report(&format!(
        "pull-through: ctr images pull via hosts.toml mirror ({}): {} ok",
        if generated { "from cove mirror-config" } else { "hand-written" },
        ms(took)
    ));

    // Second pull (content removed from containerd): served from Cove's cache.
    let rm = ctd.ctr(&["images", "rm", "--sync", "docker.io/library/app:v1"]);
    assert!(rm.status.success(), "ctr images rm: {}", String::from_utf8_lossy(&rm.stderr));
    let before = dist.count("\"GET /v2/library/app/blobs/");
    let out = ctd.pull(&hosts, "docker.io/library/app:v1");
    assert!(out.status.success(), "second ctr pull: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(dist.count("\"GET /v2/library/app/blobs/"), before, "second pull's blobs came from the cache");
}

// ---------------------------------------------------------------- 8. numbers

/// Pushes `pattern` as a blob of `repo` to a registry (POST, streamed PATCH,
/// PUT).
async fn push_pattern(base: &str, repo: &str, pattern: &Pattern) -> String {
    let http = http_client();
    let digest = pattern.digest();
    let r = http.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await.expect("POST");
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    let loc = if loc.starts_with("http") { loc } else { format!("{base}{loc}") };
    let body = reqwest::Body::wrap_stream(pattern.stream_range(0, pattern.total));
    let r = http.patch(&loc).header("content-type", "application/octet-stream").body(body).send().await.expect("PATCH");
    assert_eq!(r.status(), 202, "PATCH");
    let loc = header(&r, "location");
    let loc = if loc.starts_with("http") { loc } else { format!("{base}{loc}") };
    let r = http.put(with_query(&loc, &format!("digest={digest}"))).send().await.expect("PUT");
    assert_eq!(r.status(), 201, "PUT {digest}");
    digest
}

/// Measures for the closing note (run: `cargo test -p cove-tests --test
/// pull_through -- --ignored --nocapture`, ideally with
/// `COVE_BIN=target/release/cove`): first pull and TTFB of a 200 MiB layer
/// through Cove vs direct, and upstream requests for 20 concurrent pulls of
/// one uncached image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: 200 MiB transfers and 20 skopeo processes; run with --ignored"]
async fn measure_first_pull_and_concurrent_pulls() {
    let dist = Distribution::start(None, None).await;
    let cove = start_cove(&[table("docker.io", dist.url(), "")]).await;
    let build = if cove_bin().components().any(|c| c.as_os_str() == "release") { "release" } else { "debug" };
    let pattern = Pattern::new(200 << 20);
    let digest = push_pattern(&dist.url(), "library/big", &pattern).await;

    let t0 = Instant::now();
    let r = http_client().get(format!("{}/v2/library/big/blobs/{digest}", dist.url())).send().await.expect("direct");
    assert_eq!(r.status(), 200);
    let direct_ttfb = t0.elapsed();
    assert_eq!(verify_stream_equals(r, &pattern, 0).await, pattern.total);
    let direct_total = t0.elapsed();

    let url = cove.url(&format!("/v2/docker.io/library/big/blobs/{digest}"));
    let t0 = Instant::now();
    let r = cove.http.get(&url).send().await.expect("through cove");
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()));
    let cove_ttfb = t0.elapsed();
    assert_eq!(verify_stream_equals(r, &pattern, 0).await, pattern.total);
    let cove_total = t0.elapsed();
    wait_until("the 200 MiB blob is committed", Duration::from_secs(120), || {
        blob_path(&cove.data_dir, &digest).is_file()
    })
    .await;
    let t0 = Instant::now();
    let r = cove.http.get(&url).send().await.expect("hit");
    assert_eq!(cache_status(&r), "hit");
    let hit_ttfb = t0.elapsed();
    assert_eq!(verify_stream_equals(r, &pattern, 0).await, pattern.total);
    let hit_total = t0.elapsed();
    assert_eq!(dist.count(&format!("\"GET /v2/library/big/blobs/{digest}")), 2, "one direct GET + one by Cove");
    report(&format!(
        "pull-through ({build} cove): 200 MiB layer: direct from distribution TTFB {} total {}; through Cove (miss) TTFB {} total {}; Cove hit TTFB {} total {}",
        ms(direct_ttfb), ms(direct_total), ms(cove_ttfb), ms(cove_total), ms(hit_ttfb), ms(hit_total)
    ));

    // 20 concurrent skopeo pulls of one uncached image.
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let img = layout.add_image("v1", &[4 << 20, 2 << 20, 1 << 20]);
    skopeo_push(&layout.dir, "v1", &format!("{}/library/conc:v1", dist.authority()), None);
    let base = |m: &str| dist.count(&format!("\"{m} /v2/library/conc/"));
    let (h0, g0) = (base("HEAD"), base("GET"));
    let src = format!("{}/docker.io/library/conc:v1", cove.addr);
    let t0 = Instant::now();
    let pulls: Vec<_> = (0..20)
        .map(|i| {
            let (src, dir) = (src.clone(), work.path().join(format!("out{i}")));
            std::thread::spawn(move || skopeo_pull(&src, &dir, "v1", false).map(|_| dir))
        })
        .collect();
    for p in pulls {
        let dir = p.join().expect("thread").unwrap_or_else(|e| panic!("concurrent pull failed: {e}"));
        assert_eq!(oci_layout_manifest_digest(&dir, "v1"), img.manifest.digest);
    }
    let took = t0.elapsed();
    let blob_gets: Vec<usize> =
        img.blob_digests().iter().map(|d| dist.count(&format!("\"GET /v2/library/conc/blobs/{d}"))).collect();
    let (heads, gets) = (base("HEAD") - h0, base("GET") - g0);
    report(&format!(
        "pull-through ({build} cove): 20 concurrent skopeo pulls of one uncached image (config + 3 layers) in {}: \
         {} upstream requests ({heads} HEAD, {gets} GET; blob GETs per blob {blob_gets:?}, manifest GETs {})",
        ms(took),
        heads + gets,
        dist.count(&format!("\"GET /v2/library/conc/manifests/{}", img.manifest.digest)),
    ));
    assert!(blob_gets.iter().all(|&n| n == 1), "each blob fetched once upstream: {blob_gets:?}");
    assert_eq!(
        (heads, gets),
        (1, 1 + blob_gets.len()),
        "20 pulls → one tag HEAD, one manifest GET, one GET per blob:\n{}",
        dist.requests("/library/conc/").join("\n")
    );
}
