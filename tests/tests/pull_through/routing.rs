//! Names and routing: the origin-path convention, `docker.io/library`,
//! `ns=` requests, denied pushes into an upstream's namespace, multi-arch
//! images, and an upstream behind bearer-token auth.

use super::*;

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
