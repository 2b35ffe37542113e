//! Response headers: the digest headers on every blob and manifest
//! response, and `OCI-Namespace` for `ns`-scoped requests.

use super::*;

#[tokio::test]
async fn digest_headers_on_every_blob_and_manifest_response() {
    let s = Server::start().await;
    let repo = "hdr/app";
    for digest_of in [sha256_digest as fn(&[u8]) -> String, sha512_digest] {
        let data = random_bytes(2048);
        let digest = digest_of(&data);
        // Single POST.
        let r = s
            .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
            .body(data.clone())
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "docker-content-digest"), digest, "single POST");
        // POST then PUT.
        let other = random_bytes(300);
        let other_digest = digest_of(&other);
        let url = s.start_upload(repo).await;
        let r = s.put_final(&url, &other_digest, None, &other).await;
        assert_eq!(header(&r, "docker-content-digest"), other_digest, "POST then PUT");
        // Mount into another repository.
        let r = s
            .req("POST", &format!("/v2/hdr/mounted/blobs/uploads/?mount={digest}&from={repo}"))
            .send()
            .await
            .expect("mount");
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "docker-content-digest"), digest, "mount");
        // GET, HEAD, ranged GET.
        for method in ["GET", "HEAD"] {
            let r = s.req(method, &format!("/v2/{repo}/blobs/{digest}")).send().await.expect("blob");
            assert_eq!(r.status(), 200, "{method} blob");
            assert_eq!(header(&r, "docker-content-digest"), digest, "{method} blob");
            assert_eq!(header(&r, "content-length"), "2048", "{method} blob Content-Length");
            let body = r.bytes().await.expect("body");
            assert_eq!(body.len(), if method == "GET" { 2048 } else { 0 }, "{method} body");
            if method == "GET" {
                assert_eq!(digest_of(&body), digest, "the header matches the body");
            }
        }
        let r = s.req("GET", &format!("/v2/{repo}/blobs/{digest}")).header("range", "bytes=500-1499").send().await;
        let r = r.expect("ranged GET");
        assert_eq!(r.status(), 206);
        assert_eq!(header(&r, "docker-content-digest"), digest, "ranged GET names the whole blob");

        // Manifests: PUT by digest and by tag, GET and HEAD by both.
        let config = random_bytes(200);
        s.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={}", digest_of(&config)))
            .body(config.clone())
            .send()
            .await
            .expect("config");
        let manifest = manifest_with(&config, std::slice::from_ref(&data), digest_of);
        let mdigest = digest_of(&manifest);
        let r = s.put_manifest(repo, &mdigest, OCI_MANIFEST, &manifest).await;
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "docker-content-digest"), mdigest, "manifest PUT by digest");
        let tag = if mdigest.starts_with("sha512") { "five-twelve" } else { "two-five-six" };
        let r = put_with_tags(&s, repo, &mdigest, &[tag], &manifest).await;
        assert_eq!(header(&r, "docker-content-digest"), mdigest, "manifest PUT with tag parameter");
        for reference in [mdigest.as_str(), tag] {
            for method in ["GET", "HEAD"] {
                let r = s.manifest(method, repo, reference).await;
                assert_eq!(header(&r, "docker-content-digest"), mdigest, "{method} manifest {reference}");
                assert_eq!(header(&r, "content-length"), manifest.len().to_string(), "{method} {reference}");
                assert_eq!(header(&r, "content-type"), OCI_MANIFEST, "{method} {reference}");
            }
        }
    }
    // A push by tag (no digest in the URL) is hashed with sha256.
    let img = Image::random(1);
    push_blobs(&s, repo, &img).await;
    let r = s.put_manifest(repo, "by-tag", OCI_MANIFEST, &img.manifest).await;
    assert_eq!(header(&r, "docker-content-digest"), img.digest, "manifest PUT by tag");
}

// Proxying: the `ns` a request was scoped by comes back as OCI-Namespace.
#[tokio::test]
async fn ns_scoped_requests_answer_with_oci_namespace() {
    let s = Server::start_with(ServerOptions {
        config: Some("[server]\nhostnames = [\"cove.test\"]\n".into()),
        ..ServerOptions::default()
    })
    .await;
    let img = s.push_image("myorg/app", "v1", 1).await;
    let r = s.manifest("GET", "myorg/app", "v1?ns=cove.test").await;
    assert_eq!(r.status(), 200, "ns naming Cove itself is its private repositories");
    assert_eq!(header(&r, "oci-namespace"), "cove.test");
    assert_eq!(header(&r, "docker-content-digest"), img.digest);
    let r = s.manifest("GET", "myorg/app", "v1").await;
    assert!(r.headers().get("oci-namespace").is_none(), "no ns, no OCI-Namespace");
    // An ns Cove does not serve is refused, and not echoed.
    let r = s.manifest("GET", "myorg/app", "v1?ns=elsewhere.example").await;
    assert!(r.headers().get("oci-namespace").is_none());
    assert_error(r, 404, "NAME_UNKNOWN", "unknown ns").await;
}
