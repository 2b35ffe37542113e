//! containerd with Cove as its mirror, and the numbers of first and
//! concurrent pulls (an ignored benchmark).

use super::*;

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
