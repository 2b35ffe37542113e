//! Cache retention per upstream and tag retention per repository (issue 7),
//! end to end: the real `cove` binary in front of a real upstream (the CNCF
//! distribution registry), images pulled through Cove with digest checks,
//! skopeo pulling an evicted image back, `cove retention` and
//! `/admin/retention`, metrics and status, and a race of retention and GC
//! runs against concurrent pulls of cached images and pushes of private
//! ones. Durations are short (`[gc] grace = "1s"`, `max_age = "2s"`).

mod common;
mod pull_through_support;

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

// ---------------------------------------------------------------- helpers

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

// ---------------------------------------------------------------- tests

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

/// keep_last keeps the most recently pushed tags, keep_pulled_within keeps
/// recently pulled ones; a removed tag's manifest goes unless another tag
/// keeps it; repositories outside the pattern are untouched.
#[tokio::test]
async fn tag_retention_keep_last_and_pulled_within() {
    let dist = Distribution::start(None, None).await;
    let s = start(
        &dist,
        "\n[gc]\ngrace = \"1s\"\ninterval = \"1h\"\n[[retention.tags]]\nrepository = \"ci/*\"\n\
         keep_last = 2\nkeep_pulled_within = \"3s\"\n",
    )
    .await;
    let mut imgs = Vec::new();
    for i in 0..4 {
        imgs.push(s.push_image("ci/app", &format!("t{i}"), 1).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // t4 is pushed last and points at t2's manifest.
    assert_eq!(s.put_manifest("ci/app", "t4", OCI_MANIFEST, &imgs[2].manifest).await.status(), 201);
    let other: Vec<Image> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(s.push_image("other/app", &format!("o{i}"), 1).await);
        }
        v
    };
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(s.manifest("GET", "ci/app", "t0").await.status(), 200, "t0 pulled");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let dry = retention(&s, true).await;
    let mut removed: Vec<String> =
        dry["tags_removed"].as_array().expect("tags").iter().filter_map(|t| t.as_str().map(str::to_owned)).collect();
    removed.sort();
    assert_eq!(removed, vec!["ci/app:t1".to_owned(), "ci/app:t2".to_owned()], "{dry}");
    assert_eq!(tags(&s, "ci/app").await, ["t0", "t1", "t2", "t3", "t4"], "dry run removed nothing");

    let (ok, out, err) = cove(&["retention", "--addr", &s.addr.to_string()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("removed tag ci/app:t1"), "{out}");
    assert!(out.contains(&format!("removed manifest ci/app@{}", imgs[1].digest)), "{out}");
    assert!(!out.contains(&format!("manifest ci/app@{}", imgs[2].digest)), "t2's manifest kept by t4: {out}");
    assert_eq!(tags(&s, "ci/app").await, ["t0", "t3", "t4"]);
    assert_eq!(s.manifest("GET", "ci/app", &imgs[1].digest).await.status(), 404, "t1's manifest removed");
    assert!(!blob_path(&s.data_dir, &sha256_digest(&imgs[1].layers[0])).exists(), "t1's layer swept");
    let r = s.manifest("GET", "ci/app", "t4").await;
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.expect("t4")[..], &imgs[2].manifest[..]);
    for (tag, img) in [("t0", &imgs[0]), ("t3", &imgs[3]), ("t4", &imgs[2])] {
        for blob in blobs_of(img) {
            let d = sha256_digest(blob);
            let got = s.get(&format!("/v2/ci/app/blobs/{d}")).await.bytes().await.expect("blob");
            assert_eq!(sha256_digest(&got), d, "blob of {tag}");
        }
    }
    assert_eq!(tags(&s, "other/app").await, ["o0", "o1", "o2"], "other repositories untouched");
    assert_eq!(other.len(), 3);
    let m = scrape(&s).await;
    assert_eq!(m.get("cove_retention_tags_removed_total").copied(), Some(2.0));
}

/// Invalid `[retention]` settings are refused, each naming its key.
#[tokio::test]
async fn invalid_retention_config_is_rejected_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = "[upstreams.\"docker.io\"]\nenabled = false\n[upstreams.\"ghcr.io\"]\nenabled = false\n\
                [upstreams.\"quay.io\"]\nenabled = false\n[upstreams.\"upstream.test\"]\nurl = \"http://127.0.0.1:9\"\n";
    let cases = [
        ("[retention.upstreams.\"nope.example\"]\nmax_age = \"1d\"\n", "retention.upstreams.\"nope.example\""),
        (
            "[retention.upstreams.\"upstream.test\"]\nmax_size = \"12 parsecs\"\n",
            "retention.upstreams.\"upstream.test\".max_size",
        ),
        (
            "[retention.upstreams.\"upstream.test\"]\nmax_age = \"soon\"\n",
            "retention.upstreams.\"upstream.test\".max_age",
        ),
        ("[retention.upstreams.\"upstream.test\"]\n", "set max_size and/or max_age"),
        ("[retention]\ninterval = \"0s\"\n", "retention.interval"),
        ("[[retention.tags]]\nrepository = \"ci/*\"\n", "retention.tags[0]: set keep_last"),
        ("[[retention.tags]]\nrepository = \"CI/**x\"\nkeep_last = 1\n", "retention.tags[0].repository"),
        (
            "[[retention.tags]]\nrepository = \"ci/*\"\nkeep_pulled_within = \"often\"\n",
            "retention.tags[0].keep_pulled_within",
        ),
        ("[retention.upstreams.\"upstream.test\"]\nmax_sise = \"1G\"\n", "max_sise"),
    ];
    for (i, (extra, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, format!("{base}{extra}")).expect("config");
        let (ok, out, err) = cove(&["check-config", "--config", path.to_str().expect("path")]);
        assert!(!ok, "accepted {extra:?}: {out}");
        assert!(err.contains(key), "error for {extra:?} names {key}: {err}");
    }
    // The server refuses to start with one, too.
    let path = dir.path().join("bad0.toml");
    let out = Command::new(cove_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention.upstreams.\"nope.example\""));
    // A valid one passes.
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "{base}[retention]\ninterval = \"30m\"\n[retention.upstreams.\"upstream.test\"]\nmax_size = \"20GiB\"\n\
             max_age = \"30d\"\n[[retention.tags]]\nrepository = \"myorg/ci-*\"\nkeep_last = 10\n\
             keep_pulled_within = \"14d\"\n"
        ),
    )
    .expect("config");
    let (ok, out, err) = cove(&["check-config", "--config", good.to_str().expect("path")]);
    assert!(ok, "{out}{err}");
}

/// Retention (evicting everything idle, max_size = 1 byte) and GC run over
/// and over while clients pull cached images and push private ones sharing
/// layers with them; every pull succeeds with verified digests, and at the
/// end everything pulls back complete.
#[tokio::test]
async fn retention_and_gc_race_pulls_and_pushes() {
    let dist = Distribution::start(None, None).await;
    let base_layer = random_bytes(32 * 1024);
    let mut cached = Vec::new();
    for i in 0..6 {
        let img = Image::from_layers(vec![base_layer.clone(), random_bytes(16 * 1024 + i * 512)]);
        push_image_to(&dist.url(), &format!("lib/r{i}"), "v1", &img).await;
        cached.push((format!("{HOST}/lib/r{i}"), img));
    }
    let s = Arc::new(
        start(
            &dist,
            "\n[gc]\ngrace = \"1s\"\ninterval = \"1h\"\n[retention.upstreams.\"upstream.test\"]\nmax_size = \"1\"\n",
        )
        .await,
    );
    let cached = Arc::new(cached);
    let stop = Arc::new(AtomicBool::new(false));
    let (runs, evicted, gc_runs) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let ret_task = {
        let (s, stop, runs, evicted) = (s.clone(), stop.clone(), runs.clone(), evicted.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let v = retention(&s, false).await;
                evicted.fetch_add(v["evicted"].as_array().map_or(0, |a| a.len()), Ordering::Relaxed);
                runs.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let gc_task = {
        let (s, stop, gc_runs) = (s.clone(), stop.clone(), gc_runs.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(s.req("POST", "/admin/gc").send().await.expect("gc").status(), 200);
                gc_runs.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(45)).await;
            }
        })
    };
    let mut pullers = Vec::new();
    for w in 0..3usize {
        let (s, cached) = (s.clone(), cached.clone());
        pullers.push(tokio::spawn(async move {
            let mut n = 0;
            for i in 0..14usize {
                let (repo, img) = &cached[(w * 5 + i * 7) % cached.len()];
                let reference = if i % 3 == 0 { img.digest.clone() } else { "v1".to_owned() };
                pull(&s, repo, &reference, img).await;
                n += 1;
                // Some pauses are longer than the grace period: evictable.
                tokio::time::sleep(Duration::from_millis(if i % 4 == 3 { 1300 } else { 60 })).await;
            }
            n
        }));
    }
    let mut pushers = Vec::new();
    for w in 0..2usize {
        let s = s.clone();
        let base_layer = base_layer.clone();
        pushers.push(tokio::spawn(async move {
            let mut pushed: Vec<(String, String, Image)> = Vec::new();
            for i in 0..10usize {
                let repo = format!("private/w{w}");
                let tag = format!("t{i}");
                let layers = vec![base_layer.clone(), random_bytes(4096 + i)];
                let img = Image::from_layers(layers);
                for blob in blobs_of(&img) {
                    let d = sha256_digest(blob);
                    if s.head(&format!("/v2/{repo}/blobs/{d}")).await.status() != 200 || i % 2 == 0 {
                        s.push_blob(&repo, blob).await;
                    }
                }
                let r = s.put_manifest(&repo, &tag, OCI_MANIFEST, &img.manifest).await;
                assert_eq!(r.status(), 201, "push {repo}:{tag}: {}", r.text().await.unwrap_or_default());
                if let Some((prepo, ptag, pimg)) = pushed.get(i / 2) {
                    pull(&s, prepo, ptag, pimg).await;
                }
                pushed.push((repo, tag, img));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            pushed
        }));
    }
    let mut pulls = 0;
    for p in pullers {
        pulls += p.await.expect("puller");
    }
    let mut private = Vec::new();
    for p in pushers {
        private.extend(p.await.expect("pusher"));
    }
    stop.store(true, Ordering::Relaxed);
    ret_task.await.expect("retention task");
    gc_task.await.expect("gc task");
    // Settle, run both once more, then pull everything back.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    retention(&s, false).await;
    assert_eq!(s.req("POST", "/admin/gc").send().await.expect("gc").status(), 200);
    for (repo, tag, img) in &private {
        pull(&s, repo, tag, img).await;
    }
    for (repo, img) in cached.iter() {
        pull(&s, repo, "v1", img).await;
    }
    let (runs, evicted, gc_runs) =
        (runs.load(Ordering::Relaxed), evicted.load(Ordering::Relaxed), gc_runs.load(Ordering::Relaxed));
    report(&format!(
        "retention race: {pulls} cached pulls, {} private images, {runs} retention runs ({evicted} evictions), {gc_runs} gc runs",
        private.len()
    ));
    assert!(runs >= 10, "retention ran repeatedly ({runs})");
    assert!(evicted >= 3, "images were evicted during the race ({evicted})");
    assert!(s.logs().contains("retention finished"), "runs logged");
}
