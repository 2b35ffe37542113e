//! End-to-end tests of what the cache does besides serving images (issue
//! 14): referrers of cached images (from an upstream with the referrers API
//! and from one with only the tag schema), rate-limit headroom, and
//! keep-warm prefetching. Real upstreams: a second Cove (OCI 1.1, referrers
//! API) and the CNCF distribution registry 2.8 (no referrers API); the
//! fault registry for rate-limit headers.

mod common;
mod pull_through_support;

use std::time::Duration;

use common::*;
use cove_testkit::peers::distribution::Distribution;
use pull_through_support::{cache_status, cove_config, start_cove, UpstreamTable};

const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM: &str = "application/spdx+json";

/// A referrer artifact of `subject` (an OCI image manifest with `subject`
/// and `artifactType`, an empty config and one payload layer), pushed to
/// `base`; returns its digest.
async fn push_referrer(base: &str, repo: &str, subject: &Image, artifact_type: &str) -> String {
    let http = http_client();
    let empty = b"{}".to_vec();
    let payload = cove_testkit::util::random_bytes(500);
    for blob in [&empty, &payload] {
        let r = http.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await.expect("POST upload");
        assert_eq!(r.status(), 202, "{base}: upload start");
        let loc = header(&r, "location");
        let url = if loc.starts_with("http") { loc } else { format!("{base}{loc}") };
        let r = http
            .put(with_query(&url, &format!("digest={}", sha256_digest(blob))))
            .body(blob.clone())
            .send()
            .await
            .expect("PUT blob");
        assert_eq!(r.status(), 201, "{base}: referrer blob");
    }
    let subject_desc = cove_testkit::oci::descriptor(OCI_MANIFEST, &subject.manifest);
    let m = cove_testkit::oci::oci_manifest(&empty, &[payload], Some(subject_desc), Some(artifact_type));
    let digest = sha256_digest(&m);
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{digest}"))
        .header("content-type", OCI_MANIFEST)
        .body(m)
        .send()
        .await
        .expect("PUT referrer");
    assert_eq!(r.status(), 201, "{base}: referrer manifest");
    digest
}

/// The referrers index as a registry without the referrers API keeps it:
/// an image index of the referrer descriptors under the `sha256-<hex>` tag
/// of the subject (what oras, cosign and notation push there).
async fn push_fallback_index(base: &str, repo: &str, subject: &Image, referrers: &[(&str, &str)]) {
    let http = http_client();
    let mut manifests = Vec::new();
    for (digest, artifact_type) in referrers {
        let r = http
            .get(format!("{base}/v2/{repo}/manifests/{digest}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET referrer");
        let size = r.bytes().await.expect("body").len();
        manifests.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": digest, "size": size, "artifactType": artifact_type,
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests,
    }))
    .expect("json");
    let tag = format!("sha256-{}", subject.digest.trim_start_matches("sha256:"));
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_INDEX)
        .body(index)
        .send()
        .await
        .expect("PUT fallback index");
    assert_eq!(r.status(), 201, "{base}: fallback index");
}

/// `GET /v2/docker.io/library/img/referrers/<subject>[?artifactType=…]`
/// through Cove: (status, sorted digests, X-Cove-Cache, OCI-Filters-Applied).
async fn referrers(cove: &Server, subject: &str, artifact_type: Option<&str>) -> (u16, Vec<String>, String, String) {
    let mut path = format!("/v2/docker.io/library/img/referrers/{subject}");
    if let Some(a) = artifact_type {
        // As clients send it: `+` percent-encoded (a bare `+` is a space).
        path.push_str(&format!("?artifactType={}", a.replace('+', "%2B")));
    }
    let r = cove.get(&path).await;
    let status = r.status().as_u16();
    let (cache, filters) = (cache_status(&r), header(&r, "oci-filters-applied"));
    if status != 200 {
        return (status, vec![r.text().await.unwrap_or_default()], cache, filters);
    }
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    let v = json(r).await;
    let mut d: Vec<String> = v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["digest"].as_str().expect("digest").to_owned())
        .collect();
    d.sort();
    (status, d, cache, filters)
}

fn sorted(v: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).clone()).collect();
    v.sort();
    v
}

/// The referrers checks shared by both upstream kinds: the whole list
/// (miss), filtered by artifactType from the cached list (hit, with
/// `OCI-Filters-Applied`), the referrer manifest and its blobs through the
/// cache; then, after `stop` took the upstream down and the TTL passed, the
/// cached list served stale (filtered too).
async fn check_referrers(cove: &Server, subject: &Image, sig: &String, sbom: &String, stop: impl FnOnce()) {
    let (status, list, cache, filters) = referrers(cove, &subject.digest, None).await;
    assert_eq!(status, 200, "{list:?}");
    assert_eq!(list, sorted(&[sig, sbom]));
    assert_eq!(cache, "miss");
    assert_eq!(filters, "", "no filter asked, none applied");

    let (status, list, cache, filters) = referrers(cove, &subject.digest, Some(SIG)).await;
    assert_eq!((status, list), (200, vec![sig.clone()]));
    assert_eq!(cache, "hit", "filtered from the cached list");
    assert_eq!(filters, "artifactType");
    let (_, list, _, filters) = referrers(cove, &subject.digest, Some("application/x-nothing")).await;
    assert!(list.is_empty());
    assert_eq!(filters, "artifactType");

    // The signature itself and its blobs, fetched on request and cached.
    let r = cove.manifest("GET", "docker.io/library/img", sig).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_status(&r), "miss");
    let m = json(r).await;
    assert_eq!(m["subject"]["digest"], serde_json::json!(subject.digest));
    let layer = m["layers"][0]["digest"].as_str().expect("layer digest").to_owned();
    let r = cove.get(&format!("/v2/docker.io/library/img/blobs/{layer}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(sha256_digest(&r.bytes().await.expect("blob")), layer);
    assert_eq!(cache_status(&cove.manifest("GET", "docker.io/library/img", sig).await), "hit");

    stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, list, cache, _) = referrers(cove, &subject.digest, None).await;
    assert_eq!(status, 200, "{list:?}");
    assert_eq!(list, sorted(&[sig, sbom]), "the cached list while upstream is down");
    assert_eq!(cache, "stale");
    let (status, list, cache, filters) = referrers(cove, &subject.digest, Some(SBOM)).await;
    assert_eq!((status, list, cache.as_str(), filters.as_str()), (200, vec![sbom.clone()], "stale", "artifactType"));
    // The cached referrer manifest and blob are still served.
    assert_eq!(cove.manifest("GET", "docker.io/library/img", sig).await.status(), 200);
    assert_eq!(cove.get(&format!("/v2/docker.io/library/img/blobs/{layer}")).await.status(), 200);
}

/// Upstream with the referrers API: a second Cove (OCI 1.1). The list comes
/// from its `/referrers/` endpoint; nothing asks for the tag schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_of_cached_images_from_the_referrers_api() {
    let mut upstream =
        Server::start_with(ServerOptions { config: Some(cove_config(&[])), ..ServerOptions::default() }).await;
    let img = Image::random(1);
    push_image_to(&upstream.base, "library/img", "v1", &img).await;
    let sig = push_referrer(&upstream.base, "library/img", &img, SIG).await;
    let sbom = push_referrer(&upstream.base, "library/img", &img, SBOM).await;
    let cove =
        start_cove(&[UpstreamTable { host: "docker.io", url: upstream.base.clone(), extra: "tag_ttl = \"1s\"" }]).await;
    assert_eq!(cove.manifest("GET", "docker.io/library/img", "v1").await.status(), 200);

    check_referrers(&cove, &img, &sig, &sbom, || upstream.kill9()).await;
    let logs = cove.logs();
    assert!(!logs.contains("sha256-"), "no tag-schema lookup against an upstream with the API");
}

/// Upstream without the referrers API: distribution 2.8 answers 404 on
/// `/referrers/`, so the list comes from the `sha256-<hex>` tag's index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_of_cached_images_from_the_tag_schema() {
    let mut dist = Distribution::start(None, None).await;
    let img = Image::random(1);
    push_image_to(&dist.url(), "library/img", "v1", &img).await;
    let sig = push_referrer(&dist.url(), "library/img", &img, SIG).await;
    let sbom = push_referrer(&dist.url(), "library/img", &img, SBOM).await;
    push_fallback_index(&dist.url(), "library/img", &img, &[(&sig, SIG), (&sbom, SBOM)]).await;
    let cove = start_cove(&[UpstreamTable { host: "docker.io", url: dist.url(), extra: "tag_ttl = \"1s\"" }]).await;

    let hex = img.digest.trim_start_matches("sha256:").to_owned();
    let before = dist.count(&format!("/manifests/sha256-{hex}"));
    check_referrers(&cove, &img, &sig, &sbom, || dist.stop()).await;
    assert_eq!(dist.count(&format!("/referrers/{}", img.digest)), 1, "{}", dist.all_requests());
    assert!(dist.count(&format!("/manifests/sha256-{hex}")) > before, "{}", dist.all_requests());
    // A subject Cove knows nothing about while upstream is down: 503.
    let unknown = sha256_digest(b"unknown subject");
    let (status, _, _, _) = referrers(&cove, &unknown, None).await;
    assert_eq!(status, 503);
}

// ---------------------------------------------------------------- rate-limit headroom

/// The fault registry as Docker Hub: every manifest answer carries
/// `ratelimit-limit: 100;w=<window>` and `ratelimit-remaining: <n>;w=<window>`
/// with `n` and the window set by the test. Above the floor (10) cached tags
/// past their TTL are revalidated; once upstream says fewer remain, they are
/// served from the cache (`stale`, counted) without asking it, while a new
/// image still goes through; after the announced window the budget counts
/// as renewed and revalidation resumes. Metrics and `cove status` show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_headroom_stops_revalidation_but_not_new_images() {
    use cove_testkit::fault::{self, Content, FaultServer};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let content = Content::shared();
    let (a, b) = (Image::random(1), Image::random(1));
    content.lock().expect("lock").add_image("a", &a);
    content.lock().expect("lock").add_image("b", &b);
    let remaining = Arc::new(AtomicU64::new(76));
    let window = Arc::new(AtomicU64::new(21600));
    let (c, rem, w) = (content.clone(), remaining.clone(), window.clone());
    let up = FaultServer::start(move |req| {
        let reply = fault::serve(&c, req);
        if !req.path().contains("/manifests/") {
            return reply;
        }
        let w = w.load(Ordering::SeqCst);
        reply
            .header("ratelimit-limit", format!("100;w={w}"))
            .header("ratelimit-remaining", format!("{};w={w}", rem.load(Ordering::SeqCst)))
    })
    .await;
    let cove = start_cove(&[UpstreamTable { host: "docker.io", url: up.url(), extra: "tag_ttl = \"0s\"" }]).await;
    let repo = "docker.io/library/img";
    let heads = || up.count("HEAD", "/manifests/");

    assert_eq!(cache_status(&cove.manifest("GET", repo, "a").await), "miss");
    let h = heads();
    assert_eq!(cache_status(&cove.manifest("GET", repo, "a").await), "revalidated");
    assert_eq!(heads(), h + 1, "above the floor a cached tag is revalidated");
    let m = scrape(&cove).await;
    assert_eq!(m.get("cove_upstream_ratelimit_remaining{upstream=\"docker.io\"}"), Some(&76.0), "{m:?}");
    assert_eq!(m.get("cove_upstream_ratelimit_limit{upstream=\"docker.io\"}"), Some(&100.0));

    // Upstream says 5 left (under the default floor of 10), with a 3 s window.
    remaining.store(5, Ordering::SeqCst);
    window.store(3, Ordering::SeqCst);
    let r = cove.manifest("GET", repo, "b").await;
    assert_eq!((r.status().as_u16(), cache_status(&r).as_str()), (200, "miss"), "a new image still goes through");
    let h = heads();
    for _ in 0..3 {
        let r = cove.manifest("GET", repo, "a").await;
        assert_eq!(r.status(), 200);
        assert_eq!(cache_status(&r), "stale", "under the floor: served from the cache without asking");
        assert_eq!(header(&r, "docker-content-digest"), a.digest);
    }
    assert_eq!(heads(), h, "no revalidation under the floor:\n{}", up.log());
    let m = scrape(&cove).await;
    assert_eq!(m.get("cove_upstream_ratelimit_remaining{upstream=\"docker.io\"}"), Some(&5.0));
    assert_eq!(m.get("cove_cache_headroom_skips_total{upstream=\"docker.io\"}"), Some(&3.0), "{m:?}");
    let status = json(cove.get("/admin/status").await).await;
    let u = &status["upstreams"][0];
    assert_eq!((u["ratelimit"]["remaining"].as_u64(), u["ratelimit"]["limit"].as_u64()), (Some(5), Some(100)), "{u}");
    assert_eq!(u["headroom_low"], true, "{u}");
    assert_eq!(u["ratelimit_floor"], 10);
    assert_eq!(u["headroom_skips"], 3);
    let addr = cove.base.trim_start_matches("http://").to_owned();
    let (ok, table, err) = common::cove(&["status", "--addr", &addr]);
    assert!(ok, "cove status: {err}");
    let row = table.lines().find(|l| l.starts_with("docker.io")).unwrap_or_else(|| panic!("row in\n{table}"));
    assert!(row.contains("5/100 left, LOW"), "{table}");

    // The announced window passed: the budget is renewed, revalidation resumes.
    remaining.store(99, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(cache_status(&cove.manifest("GET", repo, "a").await), "revalidated");
    assert_eq!(heads(), h + 1);
    let status = json(cove.get("/admin/status").await).await;
    assert_eq!(status["upstreams"][0]["headroom_low"], false);
    let (_, table, _) = common::cove(&["status", "--addr", &addr]);
    assert!(table.contains("99/100 left"), "{table}");
}

// ---------------------------------------------------------------- keep-warm

/// `[[prefetch]]` pulls an image into the cache at start (only the platform
/// asked for), `cove prefetch` pulls another at once with progress, a
/// retention run evicts the unpinned one and keeps the pinned one, and with
/// the upstream stopped skopeo still pulls the prefetched image from Cove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_keeps_images_warm_through_an_upstream_outage() {
    use cove_testkit::layout::Layout;
    use cove_testkit::peers::skopeo::{skopeo_pull, skopeo_push};

    let mut dist = Distribution::start(None, None).await;
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let warm = layout.add_index("v1", &["amd64", "arm64"], &[64 * 1024]);
    let other = layout.add_image("v2", &[32 * 1024]);
    skopeo_push(&layout.dir, "v1", &format!("{}/library/warm:v1", dist.authority()), None);
    skopeo_push(&layout.dir, "v2", &format!("{}/library/other:v2", dist.authority()), None);
    let before = dist.count("GET /v2/library/");

    let mut cfg = cove_config(&[UpstreamTable { host: "docker.io", url: dist.url(), extra: "" }]);
    cfg.push_str(
        "\n[gc]\ngrace = \"1s\"\ninterval = \"1h\"\n[retention]\ninterval = \"1h\"\n\
         [retention.upstreams.\"docker.io\"]\nmax_age = \"2s\"\n\
         [[prefetch]]\nimage = \"docker.io/warm:v1\"\nplatforms = [\"linux/amd64\"]\npin = true\ninterval = \"1s\"\n",
    );
    let cove = Server::start_with(ServerOptions { config: Some(cfg), ..ServerOptions::default() }).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cove.logs().contains("prefetch finished") {
        assert!(std::time::Instant::now() < deadline, "no prefetch within 20 s:\n{}", cove.logs_tail(3000));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cove.logs().contains("errors=0"), "{}", cove.logs_tail(3000));
    let (amd64, arm64) = (&warm.images[0], &warm.images[1]);
    assert_eq!(
        dist.count(&format!("GET /v2/library/warm/blobs/{}", amd64.layers[0].digest)),
        1,
        "{}",
        dist.all_requests()
    );
    assert_eq!(dist.count(&format!("GET /v2/library/warm/blobs/{}", arm64.layers[0].digest)), 0, "only linux/amd64");
    assert_eq!(dist.count(&format!("GET /v2/library/warm/manifests/{}", arm64.manifest.digest)), 0);
    assert!(dist.count("GET /v2/library/") > before);
    let status = json(cove.get("/admin/status").await).await;
    let last = &status["last_prefetch"];
    assert_eq!((last["images"].as_u64(), last["errors"].as_u64()), (Some(1), Some(0)), "{status}");
    assert!(last["at"].is_string(), "{last}");

    // One-off, with progress lines; a second run finds everything cached.
    let addr = cove.base.trim_start_matches("http://").to_owned();
    let (ok, out, err) = common::cove(&["prefetch", "--addr", &addr, "docker.io/library/other:v2"]);
    assert!(ok, "cove prefetch: {out}\n{err}");
    assert!(out.contains(&format!("docker.io/library/other:v2 -> {} (miss)", other.manifest.digest)), "{out}");
    assert!(out.contains(&format!("blob {}", other.layers[0].digest)) && out.contains("fetched"), "{out}");
    assert!(out.contains("prefetch: 1 images, 1 manifests, 2 blobs fetched"), "{out}");
    let (ok, out, _) = common::cove(&["prefetch", "--addr", &addr, "docker.io/library/other:v2"]);
    assert!(ok && out.contains("0 blobs fetched") && out.contains("2 already cached"), "{out}");
    let (ok, out, _) = common::cove(&["prefetch", "--addr", &addr, "docker.io/library/missing:v9"]);
    assert!(!ok, "a missing image fails: {out}");
    assert!(out.contains("FAILED docker.io/library/missing v9"), "{out}");
    let r = cove.req("POST", "/admin/prefetch?ref=Not%20An%20Image").send().await.expect("prefetch");
    assert_error(r, 400, "NAME_INVALID", "bad reference").await;

    // Retention: the pinned image stays however idle, the other goes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = json(cove.req("POST", "/admin/retention").send().await.expect("retention")).await;
    let evicted: Vec<&str> =
        r["evicted"].as_array().expect("evicted").iter().filter_map(|e| e["repository"].as_str()).collect();
    assert_eq!(evicted, vec!["docker.io/library/other"], "{r}");

    // On schedule (interval = 1s): more rounds ran meanwhile, finding it all cached.
    assert!(cove.logs().matches("prefetch finished").count() >= 2, "{}", cove.logs_tail(3000));
    assert!(cove.logs().contains("blobs_fetched=0 "), "a later round fetches nothing: {}", cove.logs_tail(3000));

    // Upstream down: the kept-warm image is still pulled whole from Cove.
    dist.stop();
    let out = work.path().join("out");
    skopeo_pull(&format!("{}/docker.io/library/warm:v1", cove.addr), &out, "v1", false).unwrap_or_else(|e| {
        panic!("skopeo pull of the prefetched image with upstream down: {e}\n{}", cove.logs_tail(3000))
    });
    assert_eq!(oci_layout_manifest_digest(&out, "v1"), amd64.manifest.digest);
    assert_eq!(oci_layout_blob(&out, &amd64.layers[0].digest), amd64.layers[0].bytes);
}

/// `cove prefetch` with no server answering works on the storage directly;
/// the server started afterwards on that storage serves the image with the
/// upstream down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_without_a_running_server_fills_the_storage() {
    let mut dist = Distribution::start(None, None).await;
    let img = Image::random(2);
    push_image_to(&dist.url(), "library/cold", "v1", &img).await;
    let mut cfg = cove_config(&[UpstreamTable { host: "docker.io", url: dist.url(), extra: "" }]);
    cfg.push_str("\n[storage]\nroot = \"@DATA@\"\n");
    let mut cove = Server::start_with(ServerOptions { config: Some(cfg), ..ServerOptions::default() }).await;
    cove.kill9();
    let config = cove.tmp.path().join("cove.toml");
    let config = config.to_str().expect("utf8 path");
    // Port 1: nothing answers there, so the command works offline.
    let (ok, out, err) =
        common::cove(&["prefetch", "--config", config, "--addr", "127.0.0.1:1", "docker.io/library/cold:v1"]);
    assert!(ok, "offline prefetch: {out}\n{err}");
    assert!(err.contains("working on") && err.contains("directly"), "{err}");
    assert!(out.contains("prefetch: 1 images, 1 manifests, 3 blobs fetched"), "{out}");

    dist.stop();
    cove.restart().await;
    let r = cove.manifest("GET", "docker.io/library/cold", "v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_status(&r), "stale", "cached, upstream down");
    assert_eq!(header(&r, "docker-content-digest"), img.digest);
    for l in &img.layers {
        let r = cove.get(&format!("/v2/docker.io/library/cold/blobs/{}", sha256_digest(l))).await;
        assert_eq!((r.status().as_u16(), cache_status(&r).as_str()), (200, "hit"));
    }
}

/// `[[prefetch]]` added by a config reload is pulled at once (the schedule
/// wakes for it), and the reload reports the section as changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_entries_added_by_a_reload_are_pulled_at_once() {
    let dist = Distribution::start(None, None).await;
    let img = Image::random(1);
    push_image_to(&dist.url(), "library/late", "v1", &img).await;
    let cfg = cove_config(&[UpstreamTable { host: "docker.io", url: dist.url(), extra: "" }]);
    let cove = Server::start_with(ServerOptions { config: Some(cfg.clone()), ..ServerOptions::default() }).await;
    let with_entry = format!("{cfg}\n[[prefetch]]\nimage = \"docker.io/library/late:v1\"\n");
    std::fs::write(cove.tmp.path().join("cove.toml"), with_entry).expect("rewrite config");
    let r = json(cove.req("POST", "/admin/reload").send().await.expect("reload")).await;
    assert!(r["changed"].as_array().is_some_and(|c| c.iter().any(|x| x == "prefetch")), "{r}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let layer = sha256_digest(&img.layers[0]);
    while dist.count(&format!("GET /v2/library/late/blobs/{layer}")) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "not prefetched 10 s after the reload:\n{}",
            cove.logs_tail(3000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
