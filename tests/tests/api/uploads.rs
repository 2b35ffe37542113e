//! Blob uploads: monolithic, POST then PUT, chunked with and without
//! `Content-Range`, out-of-order and malformed chunks.

use super::*;

#[tokio::test]
async fn monolithic_post_with_digest_and_blob_pull_headers() {
    let s = Server::start().await;
    let data = random_bytes(100_000);
    let digest = sha256_digest(&data);
    let r = s.post_monolithic("mono", &digest, &data).await;
    assert_eq!(r.status(), 201, "monolithic POST");
    assert_blob_location(&s, &r, "mono", &digest);

    let r = s.get(&format!("/v2/mono/blobs/{digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(header(&r, "content-length"), data.len().to_string());
    assert!(!header(&r, "content-type").is_empty(), "blob Content-Type");
    assert!(header(&r, "etag").contains(&digest), "blob ETag should name the digest: {:?}", header(&r, "etag"));
    let body = r.bytes().await.expect("body");
    assert!(body[..] == data[..], "blob body differs");

    let r = s.head(&format!("/v2/mono/blobs/{digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(header(&r, "content-length"), data.len().to_string());
    assert!(r.bytes().await.expect("body").is_empty(), "HEAD has a body");

    // The blob is not visible from another repository.
    let r = s.head(&format!("/v2/other/blobs/{digest}")).await;
    assert_eq!(r.status(), 404, "blob visible in a repo it was not pushed to");
    let r = s.get(&format!("/v2/other/blobs/{digest}")).await;
    assert_error(r, 404, "BLOB_UNKNOWN", "GET blob from another repo").await;
}

#[tokio::test]
async fn post_then_put_upload_with_headers() {
    let s = Server::start().await;
    let data = random_bytes(5000);
    let digest = sha256_digest(&data);
    let r = s.req("POST", "/v2/ns/app/blobs/uploads/").send().await.expect("POST");
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    let url = s.resolve(&loc);
    let path = url.trim_start_matches(&s.base);
    assert!(path.starts_with("/v2/ns/app/blobs/uploads/"), "upload Location {loc:?}");
    let id = path.trim_start_matches("/v2/ns/app/blobs/uploads/").split('?').next().unwrap_or_default().to_owned();
    assert!(!id.is_empty(), "upload Location has no id: {loc:?}");
    assert_eq!(header(&r, "docker-upload-uuid"), id, "Docker-Upload-UUID");

    let r = s.get(path).await;
    assert_eq!(r.status(), 204, "GET upload status of a new session");
    assert_eq!(header(&r, "docker-upload-uuid"), id);
    let range = header(&r, "range");
    assert!(range == "0-0" || range.is_empty(), "empty session Range {range:?}");

    let r = s.put_final(&url, &digest, None, &data).await;
    assert_eq!(r.status(), 201, "PUT completes the upload");
    assert_blob_location(&s, &r, "ns/app", &digest);
    let body = s.get(&format!("/v2/ns/app/blobs/{digest}")).await.bytes().await.expect("body");
    assert!(body[..] == data[..]);

    // The finished session is gone.
    let r = s.get(path).await;
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", "status of a finished upload").await;
}

#[tokio::test]
async fn chunked_upload_with_status_and_final_chunk() {
    let s = Server::start().await;
    let data = random_bytes(3 * 65536 + 123);
    let digest = sha256_digest(&data);
    let parts = [&data[..65536], &data[65536..150_000], &data[150_000..]];
    let mut url = s.start_upload("chunky").await;
    let mut offset = 0usize;
    for part in &parts[..2] {
        let end = offset + part.len() - 1;
        let r = s.patch_chunk(&url, Some(&format!("{offset}-{end}")), part).await;
        assert_eq!(r.status(), 202, "PATCH {offset}-{end}");
        assert_eq!(header(&r, "range"), format!("0-{end}"), "Range after PATCH");
        assert!(!header(&r, "docker-upload-uuid").is_empty());
        url = s.resolve(&header(&r, "location"));
        assert!(url.contains("/v2/chunky/blobs/uploads/"), "PATCH Location {url}");
        offset = end + 1;
        let r = s.req("GET", &url).send().await.expect("GET status");
        assert_eq!(r.status(), 204);
        assert_eq!(header(&r, "range"), format!("0-{end}"), "Range from GET");
    }
    // The last chunk rides on the PUT.
    let r = s.put_final(&url, &digest, None, parts[2]).await;
    assert_eq!(r.status(), 201, "PUT with the final chunk");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let got = s.get(&format!("/v2/chunky/blobs/{digest}")).await.bytes().await.expect("body");
    assert!(got[..] == data[..], "chunked blob differs");
}

#[tokio::test]
async fn chunked_upload_without_content_range_and_empty_put() {
    // Docker-style streamed PATCH (no Content-Range), then PUT with no body.
    let s = Server::start().await;
    let data = random_bytes(70_000);
    let digest = sha256_digest(&data);
    let url = s.start_upload("stream").await;
    let r = s.patch_chunk(&url, None, &data).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), format!("0-{}", data.len() - 1));
    let url = s.resolve(&header(&r, "location"));
    let r = s.req("PUT", &with_query(&url, &format!("digest={digest}"))).send().await.expect("PUT");
    assert_eq!(r.status(), 201);
    let r = s.head(&format!("/v2/stream/blobs/{digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), data.len().to_string());
}

#[tokio::test]
async fn chunk_out_of_order_is_416_with_range_and_session_survives() {
    let s = Server::start().await;
    let data = random_bytes(40);
    let digest = sha256_digest(&data);
    let url = s.start_upload("ooo").await;
    // Starts past the end of an empty upload.
    let r = s.patch_chunk(&url, Some("20-39"), &data[20..]).await;
    assert_eq!(r.status(), 416, "chunk past the end");
    let range = header(&r, "range");
    assert_error(r, 416, "BLOB_UPLOAD_INVALID", "chunk past the end").await;
    assert_eq!(range, "0-0", "Range on 416 for an empty upload");

    let r = s.patch_chunk(&url, Some("0-19"), &data[..20]).await;
    assert_eq!(r.status(), 202);
    let url = s.resolve(&header(&r, "location"));
    // Resending the same chunk (overlap) is out of order too.
    let r = s.patch_chunk(&url, Some("0-19"), &data[..20]).await;
    assert_eq!(r.status(), 416, "overlapping chunk");
    assert_eq!(header(&r, "range"), "0-19", "Range on 416 names what is held");
    let r = s.req("GET", &url).send().await.expect("status");
    assert_eq!(header(&r, "range"), "0-19", "416 must not change the session");
    let r = s.patch_chunk(&url, Some("20-39"), &data[20..]).await;
    assert_eq!(r.status(), 202);
    let url = s.resolve(&header(&r, "location"));
    let r = s.req("PUT", &with_query(&url, &format!("digest={digest}"))).send().await.expect("PUT");
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn bad_content_range_and_length_mismatch_are_client_errors() {
    let s = Server::start().await;
    let url = s.start_upload("badrange").await;
    for (range, body_len) in [
        ("abc", 10usize),
        ("5-2", 4),
        ("0-", 10),
        ("-9", 10),
        ("0-99999999999999999999999", 10),
        // Range says 10 bytes, the body has 5.
        ("0-9", 5),
        // Range says 5 bytes, the body has 10.
        ("0-4", 10),
    ] {
        let r = s.patch_chunk(&url, Some(range), &random_bytes(body_len)).await;
        let status = r.status().as_u16();
        assert!(status == 400 || status == 416, "Content-Range {range:?} with {body_len} bytes: got {status}");
        let v = json(r).await;
        let code = v["errors"][0]["code"].as_str().unwrap_or_default();
        assert!(["BLOB_UPLOAD_INVALID", "SIZE_INVALID"].contains(&code), "Content-Range {range:?}: code {code}");
        // Nothing was appended.
        let r = s.req("GET", &url).send().await.expect("status");
        assert_eq!(r.status(), 204, "session must survive a rejected chunk");
        let range_now = header(&r, "range");
        assert!(range_now == "0-0" || range_now.is_empty(), "after rejected {range:?}: Range {range_now}");
    }
}
