//! Blobs: digest and name validation, upload sessions, truncated bodies,
//! the empty blob, ranges, cross-repository mounts and deletes.

use super::*;

#[tokio::test]
async fn digest_mismatch_on_put_and_post_stores_nothing() {
    let s = Server::start().await;
    let data = random_bytes(1000);
    let wrong = sha256_digest(b"something else");

    let url = s.start_upload("mismatch").await;
    let r = s.put_final(&url, &wrong, None, &data).await;
    assert_error(r, 400, "DIGEST_INVALID", "PUT with the wrong digest").await;
    let r = s.post_monolithic("mismatch", &wrong, &data).await;
    assert_error(r, 400, "DIGEST_INVALID", "monolithic POST with the wrong digest").await;

    for d in [wrong.clone(), sha256_digest(&data)] {
        let r = s.head(&format!("/v2/mismatch/blobs/{d}")).await;
        assert_eq!(r.status(), 404, "{d} must not exist after a mismatch");
    }
    assert_eq!(assert_blobs_verified(&s.data_dir), 0, "no blob file may be left by a failed upload");
}

#[tokio::test]
async fn malformed_digests_are_digest_invalid() {
    let s = Server::start().await;
    let data = random_bytes(10);
    let bad = [
        "sha256:xyz",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256",
        "nonsense",
    ];
    for d in bad {
        let r = s.get(&format!("/v2/digests/blobs/{d}")).await;
        let status = r.status().as_u16();
        if d.contains(':') {
            assert_error(r, 400, "DIGEST_INVALID", &format!("GET blob {d}")).await;
        } else {
            assert!(status == 400 || status == 404, "GET blob {d}: {status}");
        }
        let url = s.start_upload("digests").await;
        let r = s.req("PUT", &with_query(&url, &format!("digest={d}"))).body(data.clone()).send().await.expect("PUT");
        assert_error(r, 400, "DIGEST_INVALID", &format!("PUT ?digest={d}")).await;
        let r = s
            .req("POST", &format!("/v2/digests/blobs/uploads/?digest={d}"))
            .body(data.clone())
            .send()
            .await
            .expect("POST");
        assert_error(r, 400, "DIGEST_INVALID", &format!("POST ?digest={d}")).await;
        let r = s.delete(&format!("/v2/digests/blobs/{d}")).await;
        assert_not_5xx(r, &format!("DELETE blob {d}")).await;
    }
    // PUT without any digest cannot complete an upload.
    let url = s.start_upload("digests").await;
    let r = s.req("PUT", &url).body(data).send().await.expect("PUT");
    let status = assert_not_5xx(r, "PUT without ?digest").await;
    assert_eq!(status, 400, "PUT without ?digest");
}

#[tokio::test]
async fn malformed_names_are_name_invalid() {
    let s = Server::start().await;
    let long = vec!["a"; 130].join("/"); // 259 characters
    let names = ["UPPER", "a//b", "-a", "a-", "a/.b", "a___b", long.as_str()];
    for name in names {
        for (method, path) in [
            ("GET", format!("/v2/{name}/manifests/x")),
            ("HEAD", format!("/v2/{name}/manifests/x")),
            ("GET", format!("/v2/{name}/tags/list")),
            ("POST", format!("/v2/{name}/blobs/uploads/")),
            ("GET", format!("/v2/{name}/blobs/{EMPTY_SHA256}")),
            ("GET", format!("/v2/{name}/referrers/{EMPTY_SHA256}")),
        ] {
            let r = s.req(method, &path).send().await.expect("request");
            let what = format!("{method} {path}");
            if method == "HEAD" {
                assert_eq!(r.status(), 400, "{what}");
            } else {
                assert_error(r, 400, "NAME_INVALID", &what).await;
            }
        }
    }
    // The longest valid name is accepted.
    let longest = format!("{}/{}", "a".repeat(127), "b".repeat(127));
    assert_eq!(longest.len(), 255);
    let r = s.req("POST", &format!("/v2/{longest}/blobs/uploads/")).send().await.expect("POST");
    assert_eq!(r.status(), 202, "255-character name");
}

#[tokio::test]
async fn upload_sessions_cancel_and_unknown_ids() {
    let s = Server::start().await;
    let url = s.start_upload("cancel").await;
    let r = s.patch_chunk(&url, None, &random_bytes(100)).await;
    assert_eq!(r.status(), 202);
    let url = s.resolve(&header(&r, "location"));
    let r = s.req("DELETE", &url).send().await.expect("DELETE");
    assert_eq!(r.status(), 204, "cancel upload");
    for method in ["GET", "PATCH", "PUT", "DELETE"] {
        let target = if method == "PUT" { with_query(&url, &format!("digest={EMPTY_SHA256}")) } else { url.clone() };
        let r = s.req(method, &target).send().await.expect("request");
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", &format!("{method} a cancelled upload")).await;
    }
    for id in ["deadbeef", "00000000-0000-0000-0000-000000000000", "..%2f..%2fetc", "UPPER", &"a".repeat(300)] {
        let r = s.get(&format!("/v2/cancel/blobs/uploads/{id}")).await;
        let status = r.status().as_u16();
        let v = json(r).await;
        assert!(status == 404 || status == 400, "upload id {id:?}: status {status}");
        let code = v["errors"][0]["code"].as_str().unwrap_or_default();
        assert!(code == "BLOB_UPLOAD_UNKNOWN" || code == "BLOB_UPLOAD_INVALID", "upload id {id:?}: code {code}");
    }
    // A session belongs to its repository.
    let url = s.start_upload("owner").await;
    let id = url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default().to_owned();
    let r = s.get(&format!("/v2/intruder/blobs/uploads/{id}")).await;
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", "upload read through another repo").await;
    let r = s.req("GET", &url).send().await.expect("status");
    assert_eq!(r.status(), 204, "owner still sees the session");
}

#[tokio::test]
async fn truncated_bodies_leave_nothing_behind() {
    let s = Server::start().await;
    let data = random_bytes(100_000);
    let digest = sha256_digest(&data);
    // Monolithic POST whose body stops halfway, then the client hangs up.
    let mut req = format!(
        "POST /v2/trunc/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        s.addr,
        data.len()
    )
    .into_bytes();
    req.extend_from_slice(&data[..50_000]);
    let status = raw_request(s.addr, &req, true);
    assert!(status.is_none_or(|c| (400..500).contains(&c)), "truncated POST answered {status:?}");
    // A PATCH whose body stops early.
    let url = s.start_upload("trunc").await;
    let path = url.trim_start_matches(&s.base).to_owned();
    let mut req = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Range: 0-99999\r\nContent-Length: 100000\r\n\r\n",
        s.addr
    )
    .into_bytes();
    req.extend_from_slice(&data[..30_000]);
    let status = raw_request(s.addr, &req, true);
    assert!(status.is_none_or(|c| (400..500).contains(&c)), "truncated PATCH answered {status:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = s.head(&format!("/v2/trunc/blobs/{digest}")).await;
    assert_eq!(r.status(), 404, "a truncated body made a blob visible");
    let r = s.req("GET", &url).send().await.expect("status");
    assert_eq!(r.status(), 204);
    let range = header(&r, "range");
    assert!(range == "0-0" || range.is_empty(), "a failed PATCH must leave the session at its old size, Range {range}");
    // And the session still works.
    let r = s.req("PUT", &with_query(&url, &format!("digest={digest}"))).body(data.clone()).send().await.expect("PUT");
    assert_eq!(r.status(), 201);
    assert_eq!(assert_blobs_verified(&s.data_dir), 1);
}

#[tokio::test]
async fn empty_blob_round_trips() {
    let s = Server::start().await;
    let r = s.post_monolithic("empty", EMPTY_SHA256, &[]).await;
    assert_eq!(r.status(), 201, "empty monolithic blob");
    let r = s.get(&format!("/v2/empty/blobs/{EMPTY_SHA256}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), "0");
    assert!(r.bytes().await.expect("body").is_empty());
    // Range on an empty blob cannot be satisfied.
    let r = s
        .req("GET", &format!("/v2/empty/blobs/{EMPTY_SHA256}"))
        .header("range", "bytes=0-0")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range"), "bytes */0");
}

#[tokio::test]
async fn blob_range_requests() {
    let s = Server::start().await;
    let data = random_bytes(1000);
    let digest = s.push_blob("ranges", &data).await;
    let path = format!("/v2/ranges/blobs/{digest}");
    for (range, start, end) in [
        ("bytes=0-9", 0usize, 9usize),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=500-5000", 500, 999),
        ("bytes=999-999", 999, 999),
    ] {
        let r = s.req("GET", &path).header("range", range).send().await.expect("GET");
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(header(&r, "content-range"), format!("bytes {start}-{end}/1000"), "{range}");
        assert_eq!(header(&r, "content-length"), (end - start + 1).to_string(), "{range}");
        let body = r.bytes().await.expect("body");
        assert!(body[..] == data[start..=end], "{range} body");
    }
    for range in ["bytes=1000-", "bytes=5-2", "bytes=2000-3000", "bytes=-0"] {
        let r = s.req("GET", &path).header("range", range).send().await.expect("GET");
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(header(&r, "content-range"), "bytes */1000", "{range}");
    }
    // A HEAD with a range is never a server error.
    let r = s.req("HEAD", &path).header("range", "bytes=0-9").send().await.expect("HEAD");
    assert!(r.status() == 200 || r.status() == 206, "HEAD with Range: {}", r.status());
}

#[tokio::test]
async fn cross_repository_mount_both_ways() {
    let s = Server::start().await;
    let data = random_bytes(4096);
    let digest = s.push_blob("src/repo", &data).await;

    // Mounted: the source repository holds the blob.
    let r = s
        .req("POST", &format!("/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo"))
        .send()
        .await
        .expect("POST mount");
    assert_eq!(r.status(), 201, "mount from a repo holding the blob");
    assert_blob_location(&s, &r, "dst/repo", &digest);
    let body = s.get(&format!("/v2/dst/repo/blobs/{digest}")).await.bytes().await.expect("body");
    assert!(body[..] == data[..]);

    // And back the other way, after deleting it from the source.
    let r = s.delete(&format!("/v2/src/repo/blobs/{digest}")).await;
    assert_eq!(r.status(), 202);
    let r = s
        .req("POST", &format!("/v2/src/repo/blobs/uploads/?mount={digest}&from=dst/repo"))
        .send()
        .await
        .expect("POST mount back");
    assert_eq!(r.status(), 201, "mount back into the source");
    assert_eq!(s.head(&format!("/v2/src/repo/blobs/{digest}")).await.status(), 200);

    // Not mounted: the source does not hold it -> an ordinary upload session.
    let other = random_bytes(2048);
    let other_digest = sha256_digest(&other);
    for from in ["src/repo", "nowhere"] {
        let r = s
            .req("POST", &format!("/v2/dst/repo/blobs/uploads/?mount={other_digest}&from={from}"))
            .send()
            .await
            .expect("POST mount");
        assert_eq!(r.status(), 202, "mount of a blob {from} does not hold");
        let url = s.resolve(&header(&r, "location"));
        assert!(url.contains("/v2/dst/repo/blobs/uploads/"), "{url}");
        assert!(!header(&r, "docker-upload-uuid").is_empty());
        let r = s
            .req("PUT", &with_query(&url, &format!("digest={other_digest}")))
            .body(other.clone())
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), 201, "finishing the fallback session");
    }
    // A blob pushed to one repo cannot be mounted from a repo that never had it
    // even when it exists in the registry.
    let r =
        s.req("POST", &format!("/v2/third/blobs/uploads/?mount={digest}&from=unrelated")).send().await.expect("POST");
    assert_eq!(r.status(), 202, "mount from a repo without the blob");
    assert_eq!(
        s.head(&format!("/v2/third/blobs/{digest}")).await.status(),
        404,
        "the blob leaked into a repo through a failed mount"
    );
    // Malformed mount parameters never make a server error.
    for q in ["mount=sha256:xyz&from=src/repo", "mount={digest}&from=BAD//name"] {
        let q = q.replace("{digest}", &digest);
        let r = s.req("POST", &format!("/v2/dst/repo/blobs/uploads/?{q}")).send().await.expect("POST");
        let status = assert_not_5xx(r, &format!("POST ?{q}")).await;
        assert!(status == 400 || status == 202, "POST ?{q}: {status}");
    }
}

#[tokio::test]
async fn blob_delete() {
    let s = Server::start().await;
    let digest = s.push_blob("del", &random_bytes(300)).await;
    let r = s.delete(&format!("/v2/del/blobs/{digest}")).await;
    assert_eq!(r.status(), 202, "blob DELETE");
    assert_eq!(s.head(&format!("/v2/del/blobs/{digest}")).await.status(), 404);
    let r = s.get(&format!("/v2/del/blobs/{digest}")).await;
    assert_error(r, 404, "BLOB_UNKNOWN", "GET deleted blob").await;
    let r = s.delete(&format!("/v2/del/blobs/{digest}")).await;
    assert_error(r, 404, "BLOB_UNKNOWN", "DELETE deleted blob").await;
    let r = s.delete(&format!("/v2/del/blobs/{EMPTY_SHA256}")).await;
    assert_error(r, 404, "BLOB_UNKNOWN", "DELETE never-pushed blob").await;
}
