//! Cache retention per upstream: `max_age` and `max_size` evictions, the
//! activity log across restarts, indexes with their platform manifests, and
//! blobs shared with private images.

use super::*;

/// An image not pulled for longer than max_age is evicted (dry run first:
/// listed, nothing removed); a recently pulled one and a private image
/// stay; metrics and status show the run; the evicted image pulls again
/// from upstream (skopeo, digests preserved).
#[tokio::test]
async fn max_age_evicts_unpulled_images_only() {
    let dist = Distribution::start(None, None).await;
    let (a, b) = (Image::random(2), Image::random(2));
    push_image_to(&dist.url(), "lib/a", "v1", &a).await;
    push_image_to(&dist.url(), "lib/b", "v1", &b).await;
    let s = start(&dist, AGE_CONFIG).await;
    let (ra, rb) = (format!("{HOST}/lib/a"), format!("{HOST}/lib/b"));
    let private = s.push_image("private/app", "v1", 2).await;
    assert_eq!(pull(&s, &ra, "v1", &a).await, "miss");
    assert_eq!(pull(&s, &rb, "v1", &b).await, "miss");
    wait_cached(&s, &a).await;
    wait_cached(&s, &b).await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(s.manifest("GET", &ra, "v1").await.status(), 200, "a pulled again");
    let before = scrape(&s).await;

    let (ok, out, err) = cove(&["retention", "--dry-run", "--addr", &s.addr.to_string()]);
    assert!(ok, "dry run: {out}{err}");
    assert!(out.contains(&format!("would evict {rb}@{}", b.digest)), "{out}");
    assert!(!out.contains(&ra), "a listed: {out}");
    assert!(!out.contains("private/app"), "private listed: {out}");
    assert!(manifest_path(&s.data_dir, &rb, &b.digest).exists(), "dry run removed nothing");

    let report = retention(&s, false).await;
    assert_eq!(evicted_repos(&report), vec![rb.clone()], "{report}");
    assert_eq!(report["evicted"][0]["reason"], "max_age");
    assert_eq!(report["evicted"][0]["tags"], serde_json::json!(["v1"]));
    assert_eq!(report["evicted"][0]["bytes"], image_bytes(&b), "{report}");
    let swept: Vec<String> = report["gc"]["blobs_removed"]
        .as_array()
        .expect("swept")
        .iter()
        .map(|e| e[0].as_str().unwrap_or_default().to_owned())
        .collect();
    for blob in blobs_of(&b) {
        let d = sha256_digest(blob);
        assert!(swept.contains(&d), "blob {d} of b swept: {report}");
        assert!(!blob_path(&s.data_dir, &d).exists(), "blob of b gone");
    }
    assert!(!manifest_path(&s.data_dir, &rb, &b.digest).exists(), "manifest of b gone");
    for blob in blobs_of(&a).into_iter().chain(blobs_of(&private)) {
        assert!(blob_path(&s.data_dir, &sha256_digest(blob)).exists(), "blobs of a and of the private image stay");
    }
    assert_eq!(pull(&s, &ra, "v1", &a).await, "hit", "a still cached");
    let r = s.manifest("GET", "private/app", "v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.expect("private manifest")[..], &private.manifest[..]);
    for blob in blobs_of(&private) {
        let d = sha256_digest(blob);
        let got = s.get(&format!("/v2/private/app/blobs/{d}")).await.bytes().await.expect("private blob");
        assert_eq!(sha256_digest(&got), d);
    }

    // Metrics and status after the known runs (one dry, one real).
    let after = scrape(&s).await;
    let d = |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    assert_eq!(d("cove_retention_runs_total{result=\"dry_run\"}"), 1.0);
    assert_eq!(d("cove_retention_runs_total{result=\"ok\"}"), 1.0);
    assert_eq!(d("cove_retention_evicted_images_total{upstream=\"upstream.test\"}"), 1.0);
    assert_eq!(d("cove_retention_evicted_bytes_total{upstream=\"upstream.test\"}"), image_bytes(&b) as f64);
    assert_eq!(after.get("cove_cache_bytes{upstream=\"upstream.test\"}").copied(), Some(image_bytes(&a) as f64));
    let status = json(s.get("/admin/status").await).await;
    let up = status["upstreams"].as_array().expect("upstreams").iter().find(|u| u["host"] == HOST).cloned();
    let up = up.expect("upstream in status");
    assert_eq!(up["cache_bytes"], image_bytes(&a), "{status}");
    assert_eq!(up["cached_images"], 1);
    assert_eq!(status["last_retention"]["ok"], true, "{status}");
    assert_eq!(status["last_retention"]["evicted_images"], 1);

    // The evicted image comes back from upstream, whole, with a real client.
    let dir = s.tmp.path().join("skopeo-b");
    skopeo_pull(&format!("{}/{rb}:v1", s.addr), &dir, "v1", false).expect("skopeo pulls the evicted image");
    assert_eq!(oci_layout_manifest_digest(&dir, "v1"), b.digest, "digest preserved");
    for blob in blobs_of(&b) {
        assert_eq!(&oci_layout_blob(&dir, &sha256_digest(blob)), blob, "blob content");
    }
    assert!(manifest_path(&s.data_dir, &rb, &b.digest).exists(), "b cached again");
}

/// The activity log is written at shutdown and read at start: an image
/// last pulled before a restart keeps its age (without the log it would
/// count as seen at the first run after the restart, and stay).
#[tokio::test]
async fn activity_log_survives_restart() {
    let dist = Distribution::start(None, None).await;
    let img = Image::random(1);
    push_image_to(&dist.url(), "lib/old", "v1", &img).await;
    let mut s = start(&dist, AGE_CONFIG).await;
    let repo = format!("{HOST}/lib/old");
    pull(&s, &repo, "v1", &img).await;
    wait_cached(&s, &img).await;
    let log = s.data_dir.join("state").join("activity.json");
    assert!(!log.exists(), "nothing written yet (saved every minute, at runs and at shutdown)");
    s.terminate(Duration::from_secs(10));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&log).expect("activity log written at shutdown"))
            .expect("activity log is JSON");
    let entry = saved["manifests"].as_array().expect("manifests").iter().find(|m| m["digest"] == img.digest).cloned();
    let entry = entry.expect("the pulled manifest is in the log");
    assert_eq!(entry["repository"], repo);
    assert!(saved["tags"].as_array().expect("tags").iter().any(|t| t["repository"] == repo && t["tag"] == "v1"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.restart().await;
    // Past the grace period after start (nothing is removed before).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let report = retention(&s, false).await;
    assert_eq!(evicted_repos(&report), vec![repo.clone()], "age kept across the restart: {report}");
    assert!(report["evicted"][0]["idle_seconds"].as_u64().expect("idle") >= 2, "{report}");
}

/// A multi-platform index (pushed upstream with skopeo) is one image: a
/// recent pull of one platform manifest keeps the whole index; once idle,
/// the index and its platform manifests go together.
#[tokio::test]
async fn an_index_is_evicted_with_its_platform_manifests() {
    let dist = Distribution::start(None, None).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(&tmp.path().join("oci"));
    let idx = layout.add_index("v1", &["amd64", "arm64"], &[4096]);
    skopeo_push(&layout.dir, "v1", &format!("{}/lib/multi:v1", dist.authority()), None);
    let s = start(&dist, AGE_CONFIG).await;
    let repo = format!("{HOST}/lib/multi");
    let r = s.manifest("GET", &repo, "v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.expect("index")[..], &idx.index.bytes[..]);
    for img in &idx.images {
        let r = s.manifest("GET", &repo, &img.manifest.digest).await;
        assert_eq!(r.status(), 200, "platform manifest");
        assert_eq!(&r.bytes().await.expect("manifest")[..], &img.manifest.bytes[..]);
        for d in img.blob_digests() {
            let got = s.get(&format!("/v2/{repo}/blobs/{d}")).await.bytes().await.expect("blob");
            assert_eq!(sha256_digest(&got), d);
        }
    }
    tokio::time::sleep(Duration::from_millis(2300)).await;
    // Only the arm64 manifest, by digest: the whole index counts as pulled.
    assert_eq!(s.manifest("GET", &repo, &idx.images[1].manifest.digest).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = retention(&s, false).await;
    assert_eq!(evicted_repos(&report), Vec::<String>::new(), "kept by its child's pull: {report}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let report = retention(&s, false).await;
    assert_eq!(evicted_repos(&report), vec![repo.clone()], "{report}");
    assert_eq!(report["evicted"][0]["digest"], idx.index.digest);
    assert_eq!(report["evicted"][0]["manifests"], 3, "index and both platform manifests: {report}");
    for digest in std::iter::once(&idx.index.digest).chain(idx.images.iter().map(|i| &i.manifest.digest)) {
        assert!(!manifest_path(&s.data_dir, &repo, digest).exists(), "{digest} removed");
    }
    // And it comes back whole.
    let r = s.manifest("GET", &repo, "v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.expect("index")[..], &idx.index.bytes[..]);
}

/// max_size evicts the least recently pulled images until the cache fits.
#[tokio::test]
async fn max_size_evicts_least_recently_pulled_first() {
    let dist = Distribution::start(None, None).await;
    let imgs: Vec<Image> = (0..3).map(|_| Image::from_layers(vec![random_bytes(100 * 1024)])).collect();
    for (i, img) in imgs.iter().enumerate() {
        push_image_to(&dist.url(), &format!("lib/c{i}"), "v1", img).await;
    }
    // c0 and c2 fit; c1 is pulled least recently.
    let limit = image_bytes(&imgs[0]) + image_bytes(&imgs[2]) + 64;
    let s = start(
        &dist,
        &format!(
            "\n[gc]\ngrace = \"1s\"\ninterval = \"1h\"\n[retention.upstreams.\"upstream.test\"]\nmax_size = \"{limit}\"\n"
        ),
    )
    .await;
    let repo = |i: usize| format!("{HOST}/lib/c{i}");
    for (i, img) in imgs.iter().enumerate() {
        pull(&s, &repo(i), "v1", img).await;
        wait_cached(&s, img).await;
    }
    for i in [1usize, 2, 0] {
        assert_eq!(s.manifest("GET", &repo(i), "v1").await.status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let dry = retention(&s, true).await;
    assert_eq!(evicted_repos(&dry), vec![repo(1)], "{dry}");
    let report = retention(&s, false).await;
    assert_eq!(evicted_repos(&report), vec![repo(1)], "{report}");
    assert_eq!(report["evicted"][0]["reason"], "max_size");
    let up = &report["upstreams"][0];
    assert_eq!(up["bytes_before"], imgs.iter().map(image_bytes).sum::<u64>(), "{report}");
    assert_eq!(up["bytes"], image_bytes(&imgs[0]) + image_bytes(&imgs[2]), "{report}");
    assert_eq!(up["images"], 2);
    let m = scrape(&s).await;
    assert_eq!(
        m.get("cove_cache_bytes{upstream=\"upstream.test\"}").copied(),
        Some((image_bytes(&imgs[0]) + image_bytes(&imgs[2])) as f64)
    );
    for i in [0usize, 2] {
        assert_eq!(pull(&s, &repo(i), "v1", &imgs[i]).await, "hit", "c{i} kept");
    }
    assert!(!blob_path(&s.data_dir, &sha256_digest(&imgs[1].layers[0])).exists(), "c1's layer swept");
    // Fits now: a second run evicts nothing.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(evicted_repos(&retention(&s, false).await), Vec::<String>::new());
    // c1 pulls again from upstream.
    assert_eq!(pull(&s, &repo(1), "v1", &imgs[1]).await, "miss");
}

/// A layer shared by an evicted cached image and a private image stays;
/// the private image pulls back verified; the freed bytes exclude it.
#[tokio::test]
async fn shared_blob_with_private_image_stays() {
    let dist = Distribution::start(None, None).await;
    let shared = random_bytes(50 * 1024);
    let cached = Image::from_layers(vec![shared.clone(), random_bytes(10 * 1024)]);
    push_image_to(&dist.url(), "lib/shared", "v1", &cached).await;
    let s = start(&dist, AGE_CONFIG).await;
    let repo = format!("{HOST}/lib/shared");
    pull(&s, &repo, "v1", &cached).await;
    wait_cached(&s, &cached).await;
    // The private image is pushed through the API with the same layer.
    let private = Image::from_layers(vec![shared.clone()]);
    for blob in blobs_of(&private) {
        s.push_blob("team/base", blob).await;
    }
    assert_eq!(s.put_manifest("team/base", "v1", OCI_MANIFEST, &private.manifest).await.status(), 201);
    tokio::time::sleep(Duration::from_millis(2300)).await;

    let report = retention(&s, false).await;
    assert_eq!(evicted_repos(&report), vec![repo.clone()], "{report}");
    let expected = image_bytes(&cached) - shared.len() as u64;
    assert_eq!(report["evicted"][0]["bytes"], expected, "shared layer not counted as freed: {report}");
    let shared_digest = sha256_digest(&shared);
    assert!(blob_path(&s.data_dir, &shared_digest).exists(), "shared layer stays");
    assert!(!blob_path(&s.data_dir, &sha256_digest(&cached.layers[1])).exists(), "exclusive layer swept");
    assert!(!blob_path(&s.data_dir, &sha256_digest(&cached.config)).exists(), "config swept");
    let r = s.manifest("GET", "team/base", "v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.expect("manifest")[..], &private.manifest[..]);
    for blob in blobs_of(&private) {
        let d = sha256_digest(blob);
        let r = s.get(&format!("/v2/team/base/blobs/{d}")).await;
        assert_eq!(r.status(), 200, "private blob {d}");
        assert_eq!(sha256_digest(&r.bytes().await.expect("blob")), d, "private blob verifies");
    }
    // GC later still keeps it (referenced by the private manifest).
    assert_eq!(s.req("POST", "/admin/gc").send().await.expect("gc").status(), 200);
    assert!(blob_path(&s.data_dir, &shared_digest).exists());
}
