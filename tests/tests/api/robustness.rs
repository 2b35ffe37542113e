//! Client mistakes are never server errors; concurrent chunks, uploads and
//! tag updates stay consistent; upload sessions stay in their repository.

use super::*;

#[tokio::test]
async fn client_mistakes_never_cause_500() {
    let s = Server::start().await;
    let img = s.push_image("robust", "t", 1).await;
    let d = img.digest.clone();
    let requests: Vec<(&str, String)> = vec![
        ("PUT", "/v2/".into()),
        ("DELETE", "/v2/".into()),
        ("GET", "/v2/robust".into()),
        ("GET", "/v2/robust/".into()),
        ("GET", "/v2/robust/manifests/".into()),
        ("PUT", "/v2/robust/manifests/".into()),
        ("GET", "/v2/robust/blobs/".into()),
        ("GET", "/v2/robust/blobs/uploads".into()),
        ("GET", "/v2/robust/blobs/uploads/".into()),
        ("PATCH", "/v2/robust/blobs/uploads/".into()),
        ("PUT", "/v2/robust/blobs/uploads/".into()),
        ("DELETE", "/v2/robust/blobs/uploads/".into()),
        ("POST", "/v2/robust/manifests/t".into()),
        ("PATCH", "/v2/robust/manifests/t".into()),
        ("PUT", format!("/v2/robust/blobs/{d}")),
        ("POST", format!("/v2/robust/blobs/{d}")),
        ("PATCH", format!("/v2/robust/blobs/{d}")),
        ("POST", "/v2/robust/tags/list".into()),
        ("DELETE", "/v2/robust/tags/list".into()),
        ("GET", "/v2/robust/tags".into()),
        ("GET", "/v2/robust/referrers/".into()),
        ("PUT", format!("/v2/robust/referrers/{d}")),
        ("POST", "/v2/_catalog".into()),
        ("GET", "/v2/_catalog/extra".into()),
        ("GET", "/v2//manifests/t".into()),
        ("GET", "/v2/manifests/t".into()),
        ("GET", "/v2/robust/manifests/t/extra".into()),
        ("GET", "/v3/".into()),
        ("GET", "/".into()),
        ("GET", "/v2/robust/manifests/t?%ZZ=1".into()),
        ("GET", "/v2/robust/blobs/uploads/%ff%fe".into()),
        ("GET", "/v2/%ff/manifests/t".into()),
        ("GET", "/v2/robust/manifests/%00".into()),
        ("POST", "/v2/robust/blobs/uploads/?digest=".into()),
        ("POST", "/v2/robust/blobs/uploads/?mount=".into()),
        ("POST", "/v2/robust/blobs/uploads/?mount=&from=".into()),
        ("GET", "/v2/robust/referrers/sha256:".into()),
        ("GET", "/v2/robust/referrers/sha512:abc".into()),
        ("GET", format!("/v2/{}/manifests/t", "a/".repeat(4000) + "a")),
        ("GET", format!("/v2/robust/tags/list?n=1&last={}", "z".repeat(10_000))),
        ("GET", format!("/v2/robust/manifests/{}", "t".repeat(10_000))),
        ("GET", format!("/v2/robust/blobs/sha256:{}", "a".repeat(10_000))),
        ("GET", "/v2/robust/tags/list?n=18446744073709551615".into()),
        ("GET", "/v2/_catalog?n=18446744073709551615&last=zzz".into()),
    ];
    for (method, path) in &requests {
        let r = s.req(method, path).send().await.expect("request");
        assert_not_5xx(r, &format!("{method} {path}")).await;
    }
    // Known paths with the wrong method are 404 or 405, not a server error,
    // and 405 only where the spec allows it (UNSUPPORTED or no body).
    let r = s.req("POST", "/v2/robust/manifests/t").send().await.expect("r");
    let status = r.status().as_u16();
    assert!(status == 404 || status == 405 || status == 400, "POST to a manifest: {status}");
    // Odd headers.
    let r = s
        .req("GET", &format!("/v2/robust/blobs/{}", sha256_digest(&img.config)))
        .header("range", "bytes=abc")
        .send()
        .await
        .expect("r");
    assert_not_5xx(r, "Range: bytes=abc").await;
    let r = s
        .req("PUT", "/v2/robust/manifests/u")
        .header("content-type", "application/vnd.oci.image.manifest.v1+json; charset=utf-8")
        .body(img.manifest.clone())
        .send()
        .await
        .expect("r");
    assert_not_5xx(r, "manifest with Content-Type parameters").await;
    // A raw request with a garbage request line.
    let status = raw_request(s.addr, b"GARBAGE\r\n\r\n", true);
    assert!(status.is_none_or(|c| c < 500), "garbage request line: {status:?}");
    // The server is still healthy after all of that.
    assert_eq!(s.get("/v2/").await.status(), 200);
    assert!(!s.logs().contains("panicked"), "the server panicked:\n{}", s.logs_tail(4000));
}

#[tokio::test]
async fn concurrent_chunks_at_the_same_offset_do_not_interleave() {
    let s = Server::start().await;
    for round in 0..5 {
        let url = s.start_upload("race").await;
        let a = random_bytes(2 << 20);
        let b = random_bytes(2 << 20);
        let send = |data: Vec<u8>| {
            let req = s
                .req("PATCH", &url)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("0-{}", data.len() - 1))
                .body(data);
            async move { req.send().await.expect("PATCH").status().as_u16() }
        };
        let (sa, sb) = tokio::join!(send(a.clone()), send(b.clone()));
        let mut statuses = [sa, sb];
        statuses.sort();
        assert!(
            statuses == [202, 416] || statuses == [202, 409] || statuses == [202, 400],
            "round {round}: two PATCHes at offset 0 gave {statuses:?}; exactly one may win"
        );
        let r = s.req("GET", &url).send().await.expect("status");
        assert_eq!(header(&r, "range"), format!("0-{}", a.len() - 1), "round {round}");
        let winner = if sa == 202 { &a } else { &b };
        let r =
            s.req("PUT", &with_query(&url, &format!("digest={}", sha256_digest(winner)))).send().await.expect("PUT");
        assert_eq!(r.status(), 201, "round {round}: the session must hold exactly the winning chunk");
    }
}

#[tokio::test]
async fn concurrent_uploads_of_one_blob_and_tag_updates_stay_consistent() {
    let s = Server::start().await;
    let data = random_bytes(8 << 20);
    let digest = sha256_digest(&data);
    let pushes = (0..4).map(|i| {
        let repo = format!("same/r{}", i % 2);
        let data = data.clone();
        let digest = digest.clone();
        let s = &s;
        async move {
            let r = s.post_monolithic(&repo, &digest, &data).await;
            r.status().as_u16()
        }
    });
    let statuses = futures::future::join_all(pushes).await;
    assert!(statuses.iter().all(|s| *s == 201), "concurrent pushes of one blob: {statuses:?}");
    for repo in ["same/r0", "same/r1"] {
        let body = s.get(&format!("/v2/{repo}/blobs/{digest}")).await.bytes().await.expect("body");
        assert!(body[..] == data[..], "{repo}: blob differs");
    }
    assert_eq!(assert_blobs_verified(&s.data_dir), 1, "one file per digest");

    // Racing tag updates: the tag ends on one of the manifests, and what GET
    // serves matches its Docker-Content-Digest.
    let imgs: Vec<Image> = (0..6).map(|_| Image::random(0)).collect();
    for img in &imgs {
        s.push_blob("same/r0", &img.config).await;
    }
    let puts = imgs.iter().map(|img| s.put_manifest("same/r0", "racy", OCI_MANIFEST, &img.manifest));
    for r in futures::future::join_all(puts).await {
        assert_eq!(r.status(), 201);
    }
    let r = s.get("/v2/same/r0/manifests/racy").await;
    assert_eq!(r.status(), 200);
    let d = header(&r, "docker-content-digest");
    let body = r.bytes().await.expect("body");
    assert_eq!(sha256_digest(&body), d, "served bytes do not match Docker-Content-Digest");
    assert!(imgs.iter().any(|i| i.digest == d), "tag points at a manifest never pushed to it");
}

#[tokio::test]
async fn upload_sessions_cannot_be_used_through_another_repository() {
    let s = Server::start().await;
    let url = s.start_upload("owner/repo").await;
    let intruder = url.replace("/v2/owner/repo/", "/v2/intruder/");
    assert_ne!(intruder, url);
    let data = random_bytes(100);
    let r = s.patch_chunk(&intruder, None, &data).await;
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", "PATCH through another repo").await;
    let r = s
        .req("PUT", &with_query(&intruder, &format!("digest={}", sha256_digest(&data))))
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", "PUT through another repo").await;
    let r = s.req("DELETE", &intruder).send().await.expect("DELETE");
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", "DELETE through another repo").await;
    assert_eq!(s.head(&format!("/v2/intruder/blobs/{}", sha256_digest(&data))).await.status(), 404);
    // The owner's session is intact.
    let r = s.req("GET", &url).send().await.expect("status");
    assert_eq!(r.status(), 204);
    let range = header(&r, "range");
    assert!(range == "0-0" || range.is_empty(), "intruder changed the session: {range}");
}
