//! `OciUpstream` against the real CNCF distribution registry, loaded by
//! skopeo with images this test builds.

mod common;

use common::upstream_from_toml;
use cove_core::upstream::UpstreamError;
use cove_core::Upstream;
use cove_testkit::layout::Layout;
use cove_testkit::oci::{OCI_INDEX, OCI_MANIFEST};
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::skopeo::skopeo_push;
use cove_testkit::token::SigningCert;
use cove_testkit::util::{digest, reference, repo, sha256_digest, try_read_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_method_against_distribution() {
    let reg = Distribution::start(None, None).await;
    let work = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(&work.path().join("layout"));
    let image = layout.add_image("v1", &[300_000]);
    let index = layout.add_index("multi", &["amd64", "arm64"], &[50_000]);
    let dest = format!("{}/library/app", reg.authority());
    skopeo_push(&layout.dir, "v1", &format!("{dest}:v1"), None);
    skopeo_push(&layout.dir, "multi", &format!("{dest}:multi"), None);

    // The docker.io preset pointed at the local registry, as tests of the
    // cache will do.
    let up = upstream_from_toml("docker.io", &format!("url = \"{}\"", reg.url()));
    assert_eq!(up.host(), "docker.io");
    let app = repo("library/app");

    // Manifest by tag: HEAD then GET, byte for byte.
    let head = up.head_manifest(&app, &reference("v1")).await.expect("HEAD v1");
    assert_eq!(head.digest.to_string(), image.manifest.digest);
    assert_eq!(head.media_type, OCI_MANIFEST);
    assert_eq!(head.size, image.manifest.bytes.len() as u64);
    assert!(head.bytes.is_none());
    let get = up.get_manifest(&app, &reference("v1")).await.expect("GET v1");
    assert_eq!(get.bytes.as_deref(), Some(&image.manifest.bytes[..]));
    assert_eq!(get.digest.to_string(), image.manifest.digest);
    assert_eq!(get.media_type, OCI_MANIFEST);
    assert_eq!(get.size, image.manifest.bytes.len() as u64);

    // Manifest by digest.
    let by_digest = up.get_manifest(&app, &reference(&image.manifest.digest)).await.expect("GET by digest");
    assert_eq!(by_digest.bytes.as_deref(), Some(&image.manifest.bytes[..]));

    // The index and each platform manifest.
    let idx = up.get_manifest(&app, &reference("multi")).await.expect("GET index");
    assert_eq!(idx.media_type, OCI_INDEX);
    assert_eq!(idx.digest.to_string(), index.index.digest);
    assert_eq!(idx.bytes.as_deref(), Some(&index.index.bytes[..]));
    let idx_head = up.head_manifest(&app, &reference("multi")).await.expect("HEAD index");
    assert_eq!(idx_head.digest.to_string(), index.index.digest);
    assert_eq!(idx_head.media_type, OCI_INDEX);
    for img in &index.images {
        let m = up.get_manifest(&app, &reference(&img.manifest.digest)).await.expect("platform manifest");
        assert_eq!(m.bytes.as_deref(), Some(&img.manifest.bytes[..]));
        assert_eq!(m.media_type, OCI_MANIFEST);
        let h = up.head_manifest(&app, &reference(&img.manifest.digest)).await.expect("HEAD platform manifest");
        assert_eq!(h.digest.to_string(), img.manifest.digest);
        assert_eq!(h.size, img.manifest.bytes.len() as u64);
    }

    // Blobs: HEAD sizes and streamed bytes, layer and config.
    for blob in image.layers.iter().chain([&image.config]) {
        let d = digest(&blob.digest);
        let size = up.head_blob(&app, &d).await.expect("HEAD blob");
        assert_eq!(size, blob.bytes.len() as u64);
        let b = up.get_blob(&app, &d).await.expect("GET blob");
        assert_eq!(b.size, Some(blob.bytes.len() as u64));
        let got = try_read_all(b.stream).await.expect("blob body");
        assert_eq!(sha256_digest(&got), blob.digest);
        assert_eq!(got, blob.bytes);
    }

    // Tags.
    let mut tags = up.tags(&app).await.expect("tags");
    tags.sort();
    assert_eq!(tags, ["multi", "v1"]);

    // 404s.
    let missing_digest = digest(&sha256_digest(b"not pushed"));
    assert!(matches!(up.head_manifest(&app, &reference("nope")).await, Err(UpstreamError::NotFound)));
    assert!(matches!(up.get_manifest(&app, &reference("nope")).await, Err(UpstreamError::NotFound)));
    assert!(matches!(
        up.get_manifest(&app, &cove_core::Reference::Digest(missing_digest.clone())).await,
        Err(UpstreamError::NotFound)
    ));
    assert!(matches!(up.head_blob(&app, &missing_digest).await, Err(UpstreamError::NotFound)));
    assert!(matches!(up.get_blob(&app, &missing_digest).await, Err(UpstreamError::NotFound)));
    let other = repo("library/absent");
    assert!(matches!(up.get_manifest(&other, &reference("v1")).await, Err(UpstreamError::NotFound)));
    assert!(matches!(up.tags(&other).await, Err(UpstreamError::NotFound)));

    // Each HEAD reached distribution as a HEAD (no fallback GETs).
    assert!(reg.count("\"HEAD /v2/library/app/manifests/v1") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_and_tls_verify() {
    let cert = SigningCert::generate();
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("storage");
    let mut layout = Layout::new(&work.path().join("layout"));
    let image = layout.add_image("v1", &[10_000]);
    {
        let open = Distribution::start(Some(&root), None).await;
        skopeo_push(&layout.dir, "v1", &format!("{}/library/app:v1", open.authority()), None);
    }
    let reg = Distribution::start_with(Some(&root), None, Some((&cert.cert_pem_path, &cert.key_pem_path))).await;
    let url = format!("https://127.0.0.1:{}", reg.port);
    let app = repo("library/app");

    // A self-signed certificate is refused by default...
    let strict = upstream_from_toml("ghcr.io", &format!("url = \"{url}\"\nretries = 0"));
    match strict.head_manifest(&app, &reference("v1")).await {
        Err(UpstreamError::Unavailable(m)) => assert!(m.contains("connection failed"), "{m}"),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    // ...and accepted with tls_verify = false.
    let lax = upstream_from_toml("ghcr.io", &format!("url = \"{url}\"\ntls_verify = false"));
    let m = lax.get_manifest(&app, &reference("v1")).await.expect("over TLS");
    assert_eq!(m.bytes.as_deref(), Some(&image.manifest.bytes[..]));
    assert_eq!(m.digest.to_string(), image.manifest.digest);
}
