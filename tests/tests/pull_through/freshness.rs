//! Tag TTL and HEAD revalidation, and an upstream that is down: stale
//! tags, cached hits, fast failures for the rest.

use super::*;

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
