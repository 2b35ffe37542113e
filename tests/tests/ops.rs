//! Operations end to end: health/readiness, Prometheus metrics after a known
//! sequence of requests (private and pull-through), online garbage
//! collection (grace period, dry run, offline run, a race with concurrent
//! pushes and pulls) and scrub of a blob corrupted on disk.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn val(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    val(after, key) - val(before, key)
}

fn blob_file(data: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    data.join("blobs").join("sha256").join(&hex[..2]).join(hex)
}

/// A config with presets disabled (nothing may reach the internet).
fn config(extra: &str) -> String {
    format!(
        "[upstreams.\"docker.io\"]\nenabled = false\n[upstreams.\"ghcr.io\"]\nenabled = false\n\
         [upstreams.\"quay.io\"]\nenabled = false\n{extra}\n"
    )
}

async fn start(extra: &str) -> Server {
    Server::start_with(ServerOptions { config: Some(config(extra)), ..Default::default() }).await
}

/// Pulls an image back by tag and checks every blob against its digest.
async fn pull_verify(s: &Server, repo: &str, tag: &str, img: &Image) {
    let r = s.manifest("GET", repo, tag).await;
    assert_eq!(r.status(), 200, "manifest {repo}:{tag}");
    let body = r.bytes().await.expect("manifest body");
    assert_eq!(&body[..], &img.manifest[..], "manifest bytes of {repo}:{tag}");
    for blob in std::iter::once(&img.config).chain(img.layers.iter()) {
        let digest = sha256_digest(blob);
        let r = s.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(r.status(), 200, "blob {digest} of {repo}:{tag}");
        let got = r.bytes().await.expect("blob body");
        assert_eq!(sha256_digest(&got), digest, "blob {digest} of {repo}:{tag} verifies");
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let s = start("").await;
    let r = s.get("/healthz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.get("/readyz").await.status(), 200);
    // Storage gone: not ready, still live.
    let moved = s.data_dir.with_file_name("repositories-away");
    std::fs::rename(s.data_dir.join("repositories"), &moved).expect("move repositories away");
    assert_eq!(s.get("/readyz").await.status(), 503, "readyz with storage broken");
    assert_eq!(s.get("/healthz").await.status(), 200, "healthz with storage broken");
    std::fs::rename(&moved, s.data_dir.join("repositories")).expect("move back");
    assert_eq!(s.get("/readyz").await.status(), 200, "readyz after repair");
    // Admin endpoints refuse a request that came through a proxy.
    let r = s.req("GET", "/admin/status").header("x-forwarded-for", "10.0.0.1").send().await.expect("status");
    assert_eq!(r.status(), 403);
    let r = s.get("/admin/status").await;
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(v["storage"], "filesystem");
}

/// Every replica names itself (`server.replica`, default the host name)
/// in `/admin/status`, `cove status` and `cove_replica_info`.
#[tokio::test]
async fn replicas_name_themselves_in_status_and_metrics() {
    let named = start("[server]\nreplica = \"edge-1\"\n").await;
    let status = json(named.get("/admin/status").await).await;
    assert_eq!(status["replica"], "edge-1", "{status}");
    let metrics = scrape(&named).await;
    assert_eq!(val(&metrics, "cove_replica_info{replica=\"edge-1\"}"), 1.0);
    assert_eq!(metrics.keys().filter(|k| k.starts_with("cove_replica_info")).count(), 1, "one series");
    let (ok, table, err) = cove(&["status", "--addr", &named.addr.to_string()]);
    assert!(ok, "cove status: {err}");
    assert!(table.starts_with("edge-1: up "), "the summary line names the replica:\n{table}");

    let unnamed = start("").await;
    let out = std::process::Command::new("uname").arg("-n").output().expect("uname -n");
    let host = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!host.is_empty());
    let status = json(unnamed.get("/admin/status").await).await;
    assert_eq!(status["replica"], host.as_str(), "defaults to the host name: {status}");
    let metrics = scrape(&unnamed).await;
    assert_eq!(val(&metrics, &format!("cove_replica_info{{replica=\"{host}\"}}")), 1.0);
}

#[tokio::test]
async fn metrics_after_known_requests() {
    let s = start("").await;
    let before = scrape(&s).await;
    let img = Image::random(1);
    let repo = "metrics/app";
    for _ in 0..2 {
        assert_eq!(s.get("/v2/").await.status(), 200);
    }
    s.push_blob(repo, &img.config).await;
    s.push_blob(repo, &img.layers[0]).await;
    assert_eq!(s.put_manifest(repo, "v1", OCI_MANIFEST, &img.manifest).await.status(), 201);
    assert_eq!(s.manifest("GET", repo, "v1").await.status(), 200);
    let layer = sha256_digest(&img.layers[0]);
    let r = s.get(&format!("/v2/{repo}/blobs/{layer}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("layer").len(), img.layers[0].len());
    let missing = sha256_digest(b"nothing here");
    assert_eq!(s.head(&format!("/v2/{repo}/blobs/{missing}")).await.status(), 404);
    // An upload left open.
    let _open = s.start_upload(repo).await;
    let after = scrape(&s).await;

    let req = |e: &str, m: &str, st: u16| {
        format!("cove_http_requests_total{{endpoint=\"{e}\",method=\"{m}\",status=\"{st}\"}}")
    };
    assert_eq!(delta(&before, &after, &req("base", "GET", 200)), 2.0);
    assert_eq!(delta(&before, &after, &req("upload", "POST", 202)), 3.0);
    assert_eq!(delta(&before, &after, &req("upload", "PUT", 201)), 2.0);
    assert_eq!(delta(&before, &after, &req("manifest", "PUT", 201)), 1.0);
    assert_eq!(delta(&before, &after, &req("manifest", "GET", 200)), 1.0);
    assert_eq!(delta(&before, &after, &req("blob", "GET", 200)), 1.0);
    assert_eq!(delta(&before, &after, &req("blob", "HEAD", 404)), 1.0);
    assert_eq!(
        delta(&before, &after, "cove_http_request_bytes_total{endpoint=\"upload\"}"),
        (img.config.len() + img.layers[0].len()) as f64,
        "upload bytes in"
    );
    assert_eq!(
        delta(&before, &after, "cove_http_request_bytes_total{endpoint=\"manifest\"}"),
        img.manifest.len() as f64
    );
    assert_eq!(
        delta(&before, &after, "cove_http_response_bytes_total{endpoint=\"blob\"}"),
        img.layers[0].len() as f64,
        "blob bytes out (the HEAD 404 has no body)"
    );
    assert_eq!(
        delta(&before, &after, "cove_http_response_bytes_total{endpoint=\"manifest\"}"),
        img.manifest.len() as f64
    );
    assert_eq!(delta(&before, &after, "cove_http_request_duration_seconds_count{endpoint=\"manifest\"}"), 2.0);
    assert!(val(&after, "cove_http_request_duration_seconds_bucket{endpoint=\"manifest\",le=\"+Inf\"}") >= 2.0);
    assert_eq!(val(&after, "cove_uploads_in_progress"), 1.0, "one open upload session");
}

#[tokio::test]
async fn cache_metrics_per_upstream() {
    // A second Cove is the upstream (a real registry speaking the protocol).
    let upstream = start("").await;
    let img = upstream.push_image("lib/app", "v1", 1).await;
    let cache = start(&format!("[upstreams.\"upstream.test\"]\nurl = \"{}\"\ntag_ttl = \"1s\"\n", upstream.base)).await;
    let repo = "upstream.test/lib/app";
    let before = scrape(&cache).await;
    assert_eq!(header(&cache.manifest("GET", repo, "v1").await, "x-cove-cache"), "miss");
    assert_eq!(header(&cache.manifest("GET", repo, "v1").await, "x-cove-cache"), "hit");
    let layer = sha256_digest(&img.layers[0]);
    let link = cache
        .data_dir
        .join("repositories/upstream.test/lib/app/_links/sha256")
        .join(layer.trim_start_matches("sha256:"));
    for expect in ["miss", "hit"] {
        let r = cache.get(&format!("/v2/{repo}/blobs/{layer}")).await;
        assert_eq!(header(&r, "x-cove-cache"), expect);
        assert_eq!(sha256_digest(&r.bytes().await.expect("blob")), layer);
        // The fetch commits and links the blob just after the last byte went
        // out; until then a second GET joins the fetch (a miss).
        for _ in 0..200 {
            if link.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(header(&cache.manifest("GET", repo, "v1").await, "x-cove-cache"), "revalidated");
    // While the upstream runs, status probes it as reachable.
    let addr = cache.base.trim_start_matches("http://").to_owned();
    let (ok, table, err) = cove(&["status", "--addr", &addr]);
    assert!(ok, "cove status: {err}");
    let row = table.lines().find(|l| l.starts_with("upstream.test")).unwrap_or_else(|| panic!("row in\n{table}"));
    assert!(row.contains("yes ("), "reachable while up: {row}");
    let upstream_addr = upstream.base.clone();
    drop(upstream);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(header(&cache.manifest("GET", repo, "v1").await, "x-cove-cache"), "stale");
    let after = scrape(&cache).await;
    let c = |r: &str| format!("cove_cache_requests_total{{upstream=\"upstream.test\",result=\"{r}\"}}");
    assert_eq!(delta(&before, &after, &c("miss")), 2.0, "manifest + blob miss");
    assert_eq!(delta(&before, &after, &c("hit")), 2.0, "manifest + blob hit");
    assert_eq!(delta(&before, &after, &c("revalidated")), 1.0);
    assert_eq!(delta(&before, &after, &c("stale")), 1.0);
    assert!(delta(&before, &after, "cove_upstream_errors_total{upstream=\"upstream.test\"}") >= 1.0);
    // One blob GET was served from the cache; one was fetched (and cached).
    let layer_len = img.layers[0].len() as f64;
    assert_eq!(delta(&before, &after, "cove_cache_bytes_saved_total{upstream=\"upstream.test\"}"), layer_len);
    assert_eq!(delta(&before, &after, "cove_upstream_bytes_fetched_total{upstream=\"upstream.test\"}"), layer_len);
    assert_eq!(delta(&before, &after, "cove_upstream_rate_limited_total{upstream=\"upstream.test\"}"), 0.0);
    let status = json(cache.get("/admin/status").await).await;
    let up = status["upstreams"].as_array().expect("upstreams").iter().find(|u| u["host"] == "upstream.test").cloned();
    let up = up.expect("upstream.test in status");
    assert!(up["last_error"].is_string(), "{up}");
    assert!(up["last_error_at"].is_string(), "{up}");
    assert_eq!(up["hits"], 2);
    assert_eq!(up["bytes_saved"], img.layers[0].len());
    assert_eq!(up["reachable"], false, "upstream stopped: {up}");
    let (ok, table, err) = cove(&["status", "--addr", &addr]);
    assert!(ok, "cove status: {err}");
    let row = table.lines().find(|l| l.starts_with("upstream.test")).unwrap_or_else(|| panic!("row in\n{table}"));
    assert!(row.contains("NO: "), "unreachable once stopped ({upstream_addr}): {row}");
    assert!(row.contains("50.0%"), "(2 hits + 1 revalidated) of 6 answers: {row}");
    // A retention run measures every upstream's cache, policy or not, and
    // evicts nothing without one: the manifest and the one layer fetched.
    let r = cache.req("POST", "/admin/retention").send().await.expect("retention");
    assert_eq!(r.status(), 200);
    let run = json(r).await;
    assert_eq!(run["evicted"].as_array().map(Vec::len), Some(0), "{run}");
    let status = json(cache.get("/admin/status").await).await;
    let up = status["upstreams"].as_array().and_then(|a| a.iter().find(|u| u["host"] == "upstream.test")).cloned();
    let up = up.expect("upstream.test in status");
    assert_eq!(up["cache_bytes"], img.manifest.len() + img.layers[0].len(), "{up}");
    assert_eq!(up["cached_images"], 1, "{up}");
    let after = scrape(&cache).await;
    assert_eq!(
        val(&after, "cove_cache_bytes{upstream=\"upstream.test\"}"),
        (img.manifest.len() + img.layers[0].len()) as f64
    );
}

#[tokio::test]
async fn gc_removes_old_orphans_only_and_dry_run_removes_nothing() {
    let s = start("[gc]\ngrace = \"2s\"\ninterval = \"1h\"\n").await;
    let addr = s.addr.to_string();
    let img = s.push_image("gc/app", "v1", 2).await;
    let old_orphan = s.push_blob("gc/app", &random_bytes(3000)).await;
    // A manifest pushed by digest only stays ([gc] untagged is off).
    let untagged = Image::random(1);
    for b in std::iter::once(&untagged.config).chain(untagged.layers.iter()) {
        s.push_blob("gc/app", b).await;
    }
    let untagged_digest = sha256_digest(&untagged.manifest);
    assert_eq!(s.put_manifest("gc/app", &untagged_digest, OCI_MANIFEST, &untagged.manifest).await.status(), 201);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let young_orphan = s.push_blob("gc/app", &random_bytes(2000)).await;

    let (ok, out, err) = cove(&["gc", "--addr", &addr, "--dry-run"]);
    assert!(ok, "dry run: {out}{err}");
    assert!(out.contains(&format!("would remove blob {old_orphan}")), "{out}");
    assert!(!out.contains(&young_orphan), "young orphan listed: {out}");
    assert!(blob_file(&s.data_dir, &old_orphan).exists(), "dry run removed nothing");

    let (ok, out, err) = cove(&["gc", "--addr", &addr]);
    assert!(ok, "gc: {out}{err}");
    assert!(out.contains(&format!("removed blob {old_orphan}")), "{out}");
    assert_eq!(out.matches("removed blob").count(), 1, "only the old orphan: {out}");
    assert!(!blob_file(&s.data_dir, &old_orphan).exists(), "old orphan gone");
    assert_eq!(s.head(&format!("/v2/gc/app/blobs/{old_orphan}")).await.status(), 404);
    assert!(blob_file(&s.data_dir, &young_orphan).exists(), "young orphan kept");
    pull_verify(&s, "gc/app", "v1", &img).await;
    assert_eq!(s.manifest("GET", "gc/app", &untagged_digest).await.status(), 200, "untagged manifest kept");
    for b in std::iter::once(&untagged.config).chain(untagged.layers.iter()) {
        assert!(blob_file(&s.data_dir, &sha256_digest(b)).exists(), "blob of untagged manifest kept");
    }
    let m = scrape(&s).await;
    assert_eq!(val(&m, "cove_gc_blobs_removed_total"), 1.0);
    assert_eq!(val(&m, "cove_gc_runs_total{result=\"ok\"}"), 1.0);
    assert_eq!(val(&m, "cove_gc_runs_total{result=\"dry_run\"}"), 1.0);
}

#[tokio::test]
async fn gc_untagged_manifests_when_enabled() {
    let s = start("[gc]\ngrace = \"1s\"\ninterval = \"1h\"\nuntagged = true\n").await;
    let tagged = s.push_image("gc/u", "keep", 1).await;
    let loose = Image::random(1);
    for b in std::iter::once(&loose.config).chain(loose.layers.iter()) {
        s.push_blob("gc/u", b).await;
    }
    let loose_digest = sha256_digest(&loose.manifest);
    assert_eq!(s.put_manifest("gc/u", &loose_digest, OCI_MANIFEST, &loose.manifest).await.status(), 201);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, out, err) = cove(&["gc", "--addr", &s.addr.to_string()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("removed manifest gc/u@{loose_digest}")), "{out}");
    assert_eq!(s.manifest("GET", "gc/u", &loose_digest).await.status(), 404);
    let loose_layer = sha256_digest(&loose.layers[0]);
    assert!(!blob_file(&s.data_dir, &loose_layer).exists(), "its layer went in the same run");
    pull_verify(&s, "gc/u", "keep", &tagged).await;
}

#[tokio::test]
async fn gc_offline_with_server_stopped() {
    let mut s = start("[gc]\ngrace = \"1h\"\n").await;
    let img = s.push_image("off/app", "v1", 1).await;
    let orphan = s.push_blob("off/app", &random_bytes(1000)).await;
    let cfg_path = s.tmp.path().join("cove.toml");
    // Same config, pointed at the data directory, on a port nobody uses.
    let text = format!(
        "{}\n[server]\nlisten = \"127.0.0.1:{}\"\n[storage]\nroot = \"{}\"\n",
        config("[gc]\ngrace = \"1h\"\n"),
        free_port(),
        s.data_dir.display()
    );
    std::fs::write(&cfg_path, text).expect("config");
    s.terminate(Duration::from_secs(10));
    let (ok, out, err) = cove(&["gc", "--config", cfg_path.to_str().expect("path")]);
    assert!(ok, "{out}{err}");
    assert!(err.contains("directly"), "ran offline: {err}");
    assert!(out.contains(&format!("removed blob {orphan}")), "{out}");
    assert!(!blob_file(&s.data_dir, &orphan).exists());
    s.restart().await;
    pull_verify(&s, "off/app", "v1", &img).await;
}

/// Pushes (including re-pushes of blobs GC may be removing, and HEAD-then-
/// skip uploads like real clients), pulls and GC runs all race; afterwards
/// every pushed image pulls back complete and verified, and GC did remove
/// orphans meanwhile.
#[tokio::test]
async fn gc_races_pushes_and_pulls() {
    let s = Arc::new(start("[gc]\ngrace = \"2s\"\ninterval = \"1h\"\n").await);
    // Orphans that become old during the race; some are re-used as layers.
    let mut shared = Vec::new();
    for _ in 0..8 {
        let data = random_bytes(4096);
        s.push_blob("race/seed", &data).await;
        shared.push(data);
    }
    let shared = Arc::new(shared);
    let stop = Arc::new(AtomicBool::new(false));
    let gc_runs = Arc::new(AtomicUsize::new(0));
    let removed = Arc::new(AtomicUsize::new(0));

    let gc_task = {
        let (s, stop, gc_runs, removed) = (s.clone(), stop.clone(), gc_runs.clone(), removed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = s.req("POST", "/admin/gc").send().await.expect("gc");
                assert_eq!(r.status(), 200, "gc run");
                let v = json(r).await;
                removed.fetch_add(v["blobs_removed"].as_array().map_or(0, |a| a.len()), Ordering::Relaxed);
                gc_runs.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let orphan_task = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                s.push_blob("race/junk", &random_bytes(512)).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut pushers = Vec::new();
    for w in 0..4usize {
        let (s, shared) = (s.clone(), shared.clone());
        pushers.push(tokio::spawn(async move {
            let mut pushed: Vec<(String, String, Image)> = Vec::new();
            for i in 0..12usize {
                let repo = format!("race/w{w}");
                let tag = format!("t{i}");
                // One fresh layer and one shared (possibly old, unreferenced) layer.
                let layers = vec![random_bytes(8192), shared[(w + i) % shared.len()].clone()];
                let img = Image::from_layers(layers);
                for b in std::iter::once(&img.config).chain(img.layers.iter()) {
                    let d = sha256_digest(b);
                    // Like skopeo: skip the upload when the blob is there.
                    let exists = s.head(&format!("/v2/{repo}/blobs/{d}")).await.status() == 200;
                    if !exists || i % 2 == 0 {
                        s.push_blob(&repo, b).await;
                    }
                }
                let r = s.put_manifest(&repo, &tag, OCI_MANIFEST, &img.manifest).await;
                assert_eq!(r.status(), 201, "push {repo}:{tag}: {}", r.text().await.unwrap_or_default());
                // Pull something pushed earlier while GC runs.
                if let Some((prepo, ptag, pimg)) = pushed.get(i / 2) {
                    pull_verify(&s, prepo, ptag, pimg).await;
                }
                pushed.push((repo, tag, img));
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            pushed
        }));
    }
    let mut all = Vec::new();
    for p in pushers {
        all.extend(p.await.expect("pusher"));
    }
    stop.store(true, Ordering::Relaxed);
    gc_task.await.expect("gc task");
    orphan_task.await.expect("orphan task");
    // A final run after everything settled, then pull everything back.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(s.req("POST", "/admin/gc").send().await.expect("gc").status(), 200);
    for (repo, tag, img) in &all {
        pull_verify(&s, repo, tag, img).await;
    }
    assert_blobs_verified(&s.data_dir);
    let runs = gc_runs.load(Ordering::Relaxed);
    report(&format!(
        "gc race: {} images, {runs} gc runs, {} blobs removed meanwhile",
        all.len(),
        removed.load(Ordering::Relaxed)
    ));
    assert!(runs >= 10, "gc ran repeatedly ({runs})");
    assert!(removed.load(Ordering::Relaxed) > 0, "gc removed orphans during the race");
}

#[tokio::test]
async fn scrub_finds_and_quarantines_a_corrupt_blob() {
    let mut s = start("").await;
    let img = s.push_image("scrub/app", "v1", 2).await;
    let (ok, out, _) = cove(&["scrub", "--addr", &s.addr.to_string()]);
    assert!(ok, "clean store scrubs clean: {out}");
    assert!(out.contains("0 corrupt"), "{out}");
    let victim = sha256_digest(&img.layers[1]);
    let path = blob_file(&s.data_dir, &victim);
    let mut bytes = std::fs::read(&path).expect("read blob");
    bytes[10] ^= 0xff;
    std::fs::write(&path, &bytes).expect("corrupt blob");

    // Online, through the running server.
    let (ok, out, err) = cove(&["scrub", "--addr", &s.addr.to_string()]);
    assert!(!ok, "scrub must fail on corruption: {out}{err}");
    assert!(out.contains(&format!("CORRUPT blob {victim}")), "{out}");
    assert!(out.contains("1 corrupt"), "{out}");

    // Offline, with quarantine.
    let cfg = s.tmp.path().join("scrub.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = \"127.0.0.1:{}\"\n[storage]\nroot = \"{}\"\n", free_port(), s.data_dir.display()),
    )
    .expect("config");
    s.terminate(Duration::from_secs(10));
    let (ok, out, err) = cove(&["scrub", "--config", cfg.to_str().expect("path"), "--quarantine"]);
    assert!(!ok, "{out}{err}");
    assert!(out.contains(&format!("CORRUPT blob {victim}")), "{out}");
    assert!(err.contains("objects"), "progress on stderr: {err}");
    assert!(!path.exists(), "corrupt blob moved out of blobs/");
    let hex = victim.trim_start_matches("sha256:");
    let q = s.data_dir.join("quarantine").join(format!("blob-sha256-{hex}"));
    assert_eq!(std::fs::read(&q).expect("quarantined copy"), bytes, "quarantined bytes kept");
    let (ok, out, _) = cove(&["scrub", "--config", cfg.to_str().expect("path")]);
    assert!(ok, "after quarantine the store is clean: {out}");
}
