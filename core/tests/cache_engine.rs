//! The pull-through engine against testkit's `FakeUpstream` (issue 14):
//! referrers of cached images (from the referrers API, from the tag schema,
//! cached for the tag TTL, served stale when upstream fails, filtered by
//! artifactType), the rate-limit headroom, and prefetching.

use std::sync::Arc;
use std::time::Duration;

use cove_core::cache::{CacheStatus, NameRules, PullThrough, UpstreamRoute};
use cove_core::{Digest, ErrorCode, Registry, RepoName, Storage};
use cove_testkit::fake_upstream::{FakeUpstream, Fault};
use cove_testkit::oci::{descriptor, oci_manifest, Image, OCI_INDEX, OCI_MANIFEST};

const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM: &str = "application/spdx+json";

struct Fixture {
    _dir: tempfile::TempDir,
    registry: Registry,
    up: Arc<FakeUpstream>,
    subject: Digest,
    sig: Digest,
    sbom: Digest,
    repo: RepoName,
}

/// An upstream holding `library/img:v1` and two referrers of it (a
/// signature and an SBOM); Cove caches it with `ttl`.
fn fixture(ttl: Duration) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> = Arc::new(cove_backends::FsStorage::open(dir.path().join("data")).expect("storage"));
    let up = Arc::new(FakeUpstream::new("docker.io"));
    let img = Image::random(1);
    up.add_blob("library/img", img.config.clone());
    for l in &img.layers {
        up.add_blob("library/img", l.clone());
    }
    let subject = up.add_manifest("library/img", OCI_MANIFEST, img.manifest.clone());
    up.tag("library/img", "v1", &subject);
    let referrer = |artifact: &str| {
        let empty = b"{}".to_vec();
        let payload = cove_testkit::util::random_bytes(300);
        up.add_blob("library/img", empty.clone());
        up.add_blob("library/img", payload.clone());
        let m = oci_manifest(&empty, &[payload], Some(descriptor(OCI_MANIFEST, &img.manifest)), Some(artifact));
        up.add_manifest("library/img", OCI_MANIFEST, m)
    };
    let sig = referrer(SIG);
    let sbom = referrer(SBOM);
    let route = UpstreamRoute {
        host: "docker.io".into(),
        upstream: up.clone(),
        tag_ttl: ttl,
        revalidate_wait: Duration::from_millis(500),
        ratelimit_floor: 10,
    };
    let cache = PullThrough::new(vec![route], NameRules::default(), dir.path().join("spool")).expect("cache");
    let registry = Registry::new(storage).with_cache(cache);
    Fixture { _dir: dir, registry, up, subject, sig, sbom, repo: "docker.io/library/img".parse().expect("repo") }
}

fn digests(body: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(body).expect("index json");
    assert_eq!(v["mediaType"], OCI_INDEX);
    let mut d: Vec<String> = v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["digest"].as_str().expect("d").to_owned())
        .collect();
    d.sort();
    d
}

fn sorted(ds: &[&Digest]) -> Vec<String> {
    let mut v: Vec<String> = ds.iter().map(|d| d.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn referrers_api_list_is_cached_filtered_and_served_stale() {
    let f = fixture(Duration::from_millis(300));
    let r = f.registry.referrers(&f.repo, &f.subject, None).await.expect("referrers");
    assert_eq!(digests(&r.body), sorted(&[&f.sig, &f.sbom]));
    assert_eq!(r.cache, Some(CacheStatus::Miss));
    assert!(!r.filtered);
    assert_eq!(f.up.count("referrers"), 1);

    // Within the TTL: from the cache, filtered there, upstream not asked.
    let r = f.registry.referrers(&f.repo, &f.subject, Some(SIG)).await.expect("filtered");
    assert_eq!(digests(&r.body), sorted(&[&f.sig]));
    assert!(r.filtered);
    assert_eq!(r.cache, Some(CacheStatus::Hit));
    let r = f.registry.referrers(&f.repo, &f.subject, Some("application/x-none")).await.expect("filtered");
    assert!(digests(&r.body).is_empty());
    assert_eq!(f.up.count("referrers"), 1, "a fresh list is not asked again");

    // Past the TTL, same list upstream: revalidated.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let r = f.registry.referrers(&f.repo, &f.subject, None).await.expect("revalidated");
    assert_eq!(r.cache, Some(CacheStatus::Revalidated));
    assert_eq!(f.up.count("referrers"), 2);

    // Past the TTL, upstream down: the cached list, stale, filter still applied.
    tokio::time::sleep(Duration::from_millis(350)).await;
    f.up.set_fault(Some(Fault::Status(503)));
    let r = f.registry.referrers(&f.repo, &f.subject, Some(SBOM)).await.expect("stale");
    assert_eq!(r.cache, Some(CacheStatus::Stale));
    assert_eq!(digests(&r.body), sorted(&[&f.sbom]));
    // Meanwhile (the upstream just failed) it is not asked again.
    let asked = f.up.count("referrers");
    let r = f.registry.referrers(&f.repo, &f.subject, None).await.expect("stale again");
    assert_eq!(r.cache, Some(CacheStatus::Stale));
    assert_eq!(digests(&r.body), sorted(&[&f.sig, &f.sbom]));
    assert_eq!(f.up.count("referrers"), asked);

    // A referrer manifest is fetched on request and then served from cache.
    f.up.set_fault(None);
    let sig_ref = cove_core::Reference::Digest(f.sig.clone());
    let (m, status) = f.registry.get_manifest(&f.repo, &sig_ref).await.expect("referrer manifest");
    assert_eq!(m.digest, f.sig);
    assert_eq!(status, Some(CacheStatus::Miss));
    let (_, status) = f.registry.get_manifest(&f.repo, &sig_ref).await.expect("cached referrer");
    assert_eq!(status, Some(CacheStatus::Hit));
}

#[tokio::test]
async fn concurrent_requests_of_one_list_ask_upstream_once() {
    let f = fixture(Duration::from_secs(60));
    let all = futures::future::join_all((0..5).map(|_| f.registry.referrers(&f.repo, &f.subject, None))).await;
    let mut statuses = Vec::new();
    for r in all {
        let r = r.expect("referrers");
        assert_eq!(digests(&r.body).len(), 2);
        statuses.push(r.cache);
    }
    assert_eq!(f.up.count("referrers"), 1, "one upstream request for five clients");
    assert_eq!(statuses.iter().filter(|s| **s == Some(CacheStatus::Miss)).count(), 1, "{statuses:?}");
}

#[tokio::test]
async fn a_referrer_removed_upstream_leaves_the_cached_list() {
    let f = fixture(Duration::ZERO);
    let r = f.registry.referrers(&f.repo, &f.subject, None).await.expect("referrers");
    assert_eq!(digests(&r.body).len(), 2);
    // Upstream now answers the tag schema only, with no referrers tag: the
    // list is empty, and so is the stored copy.
    f.up.set_referrers_api(false);
    let r = f.registry.referrers(&f.repo, &f.subject, None).await.expect("referrers");
    assert!(digests(&r.body).is_empty(), "{:?}", digests(&r.body));
    assert!(f.registry.storage().referrers(&f.repo, &f.subject).await.expect("records").is_empty());
}

#[tokio::test]
async fn tag_schema_fallback_when_upstream_has_no_referrers_api() {
    let f = fixture(Duration::from_secs(60));
    f.up.set_referrers_api(false);
    // The index a client pushed under the fallback tag, listing the signature.
    assert!(f.registry.storage().referrers(&f.repo, &f.subject).await.expect("records").is_empty());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": f.sig.to_string(), "size": 123, "artifactType": SIG}],
    });
    let index = serde_json::to_vec(&index).expect("json");
    let idx = f.up.add_manifest("library/img", OCI_INDEX, index);
    let tag = format!("sha256-{}", f.subject.hex());
    f.up.tag("library/img", &tag, &idx);

    let r = f.registry.referrers(&f.repo, &f.subject, None).await.expect("referrers");
    assert_eq!(digests(&r.body), sorted(&[&f.sig]));
    assert_eq!(r.cache, Some(CacheStatus::Miss));
    let r = f.registry.referrers(&f.repo, &f.subject, Some(SBOM)).await.expect("filtered");
    assert!(digests(&r.body).is_empty());
    assert!(r.filtered);
    let r = f.registry.referrers(&f.repo, &f.subject, Some(SIG)).await.expect("filtered");
    assert_eq!(digests(&r.body), sorted(&[&f.sig]));
    assert_eq!(f.up.count("referrers"), 1, "asked once, then the fresh list is served");
    let asked_tag = f.up.calls().iter().filter(|c| c.what == tag).count();
    assert_eq!(asked_tag, 1, "the fallback tag resolved once: {:?}", f.up.calls());
    // The fallback index is cached as the upstream's tag.
    let t: cove_core::Tag = tag.parse().expect("tag");
    assert_eq!(f.registry.storage().tag_get(&f.repo, &t).await.expect("tag"), Some(idx));
}

#[tokio::test]
async fn nothing_cached_and_upstream_down_is_unavailable() {
    let f = fixture(Duration::from_secs(60));
    f.up.set_fault(Some(Fault::Status(503)));
    let e = f.registry.referrers(&f.repo, &f.subject, None).await.expect_err("nothing cached");
    assert_eq!(e.code, ErrorCode::Unavailable);
    // A subject with no referrers upstream: an empty list, not an error.
    let f = fixture(Duration::from_secs(60));
    let other = Digest::sha256_of(b"no such manifest");
    let r = f.registry.referrers(&f.repo, &other, None).await.expect("empty");
    assert!(digests(&r.body).is_empty());
}

// ---------------------------------------------------------------- headroom

#[tokio::test]
async fn low_headroom_serves_cached_tags_without_revalidating() {
    let f = fixture(Duration::ZERO);
    let v1 = cove_core::Reference::Tag("v1".parse().expect("tag"));
    let (_, status) = f.registry.get_manifest(&f.repo, &v1).await.expect("miss");
    assert_eq!(status, Some(CacheStatus::Miss));
    f.up.set_rate_limit(Some((100, 50)));
    let (_, status) = f.registry.get_manifest(&f.repo, &v1).await.expect("revalidated");
    assert_eq!(status, Some(CacheStatus::Revalidated), "50 left: above the floor of 10");
    f.up.set_rate_limit(Some((100, 9)));
    let heads = f.up.count("head_manifest");
    for _ in 0..2 {
        let (m, status) = f.registry.get_manifest(&f.repo, &v1).await.expect("stale");
        assert_eq!(status, Some(CacheStatus::Stale));
        assert_eq!(m.digest, f.subject);
    }
    assert_eq!(f.up.count("head_manifest"), heads, "not revalidated under the floor");
    let cache = f.registry.cache().expect("cache");
    let c = cache.counters().get("docker.io").cloned().expect("counters");
    assert_eq!((c.headroom_skips, c.stale), (2, 2));
    // Referrers: the cached list, not asked.
    f.up.set_rate_limit(None);
    f.registry.referrers(&f.repo, &f.subject, None).await.expect("referrers");
    f.up.set_rate_limit(Some((100, 0)));
    let asked = f.up.count("referrers");
    let r = f.registry.referrers(&f.repo, &f.subject, None).await.expect("stale referrers");
    assert_eq!(r.cache, Some(CacheStatus::Stale));
    assert_eq!(digests(&r.body).len(), 2);
    assert_eq!(f.up.count("referrers"), asked);
    // A tag not cached still goes upstream.
    f.up.tag("library/img", "v2", &f.subject);
    let v2 = cove_core::Reference::Tag("v2".parse().expect("tag"));
    let (_, status) = f.registry.get_manifest(&f.repo, &v2).await.expect("new tag");
    assert_eq!(status, Some(CacheStatus::Miss));
}

// ---------------------------------------------------------------- prefetch

#[tokio::test]
async fn prefetch_fetches_the_platforms_asked_for_and_pauses_without_headroom() {
    use cove_core::registry::prefetch::{PrefetchRequest, PrefetchTarget};
    let f = fixture(Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("tmp");
    let mut layout = cove_testkit::layout::Layout::new(dir.path());
    let idx = layout.add_index("multi", &["amd64", "arm64"], &[2048]);
    f.up.add_index("library/img", "multi", &idx);
    let events = std::sync::Mutex::new(Vec::new());
    let progress = |e| events.lock().expect("lock").push(e);
    let req = PrefetchRequest {
        repo: f.repo.clone(),
        target: PrefetchTarget::Reference(cove_core::Reference::Tag("multi".parse().expect("tag"))),
        platforms: vec!["linux/arm64".parse().expect("platform")],
    };
    let r = f.registry.prefetch(&req, &progress).await.expect("prefetch");
    assert_eq!((r.images, r.manifests, r.blobs_fetched, r.blobs_cached, r.errors), (1, 2, 2, 0, 0), "{r:?}");
    let arm = &idx.images[1];
    let fetched: Vec<String> = f.up.calls().iter().filter(|c| c.op == "get_blob").map(|c| c.what.clone()).collect();
    let mut want = vec![arm.config.digest.clone(), arm.layers[0].digest.clone()];
    want.sort();
    let mut got = fetched.clone();
    got.sort();
    assert_eq!(got, want, "only linux/arm64's blobs");
    let amd = &idx.images[0];
    let amd_digest: Digest = amd.manifest.digest.parse().expect("digest");
    assert!(f.registry.storage().manifest_get(&f.repo, &amd_digest).await.expect("get").is_none());
    assert_eq!(events.lock().expect("lock").len(), 4, "two manifests, two blobs");
    // Again: all cached, nothing fetched.
    let r = f.registry.prefetch(&req, &progress).await.expect("again");
    assert_eq!((r.blobs_fetched, r.blobs_cached), (0, 2));
    // Tag patterns, and no headroom: paused before asking anything.
    f.up.set_rate_limit(Some((100, 1)));
    let calls = f.up.calls().len();
    let req = PrefetchRequest {
        repo: f.repo.clone(),
        target: PrefetchTarget::Tags(Box::new(|t| t.starts_with('v'))),
        platforms: vec![],
    };
    let r = f.registry.prefetch(&req, &progress).await.expect("paused");
    assert!(r.paused);
    assert_eq!(f.up.calls().len(), calls, "nothing asked under the floor");
    f.up.set_rate_limit(None);
    let r = f.registry.prefetch(&req, &progress).await.expect("tags");
    assert_eq!((r.images, r.errors, r.paused), (1, 0, false), "v1 only: {r:?}");
    // Private repositories cannot be prefetched.
    let private = PrefetchRequest {
        repo: "myorg/app".parse().expect("repo"),
        target: PrefetchTarget::Tags(Box::new(|_| true)),
        platforms: vec![],
    };
    assert!(f.registry.prefetch(&private, &progress).await.is_err());
}
