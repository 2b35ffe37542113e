//! `cove storage copy` from a filesystem data dir to s3s-fs: interrupted
//! inside a big blob (`COVE_COPY_BIG_MIB`, default 200), resumed, rerun.

use super::*;

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
