//! Uploads: the closing `PUT`'s `Content-Range` held to the upload offset
//! (416, status, resume), `digest-algorithm` on upload start, and the upload
//! `Range` covering the whole blob with no minimum chunk length.

use super::*;

#[tokio::test]
async fn final_put_out_of_order_is_416_then_status_then_resume() {
    let s = Server::start().await;
    let data = random_bytes(3000);
    let digest = sha256_digest(&data);
    let url = s.start_upload("ooo/final").await;
    let r = s.patch_chunk(&url, Some("0-999"), &data[..1000]).await;
    assert_eq!(r.status(), 202);
    let url = s.resolve(&header(&r, "location"));

    // The final chunk skips ahead of the session (1000 bytes held).
    let r = s.put_final(&url, &digest, Some("2000-2999"), &data[2000..]).await;
    assert_eq!(header(&r, "range"), "0-999", "416 names what the session holds");
    assert_error(r, 416, "BLOB_UPLOAD_INVALID", "final chunk ahead of the offset").await;
    // ... or overlaps what is held.
    let r = s.put_final(&url, &digest, Some("0-2999"), &data).await;
    assert_eq!(r.status(), 416, "final chunk overlapping the held bytes");
    assert_eq!(s.head(&format!("/v2/ooo/final/blobs/{digest}")).await.status(), 404, "no blob after a 416");

    // The session survived both: status, then resume from where it stands.
    assert_eq!(upload_range(&s, &url).await, "0-999", "a 416 leaves the session as it was");
    let r = s.patch_chunk(&url, Some("1000-1999"), &data[1000..2000]).await;
    assert_eq!(r.status(), 202, "resume after the 416");
    assert_eq!(header(&r, "range"), "0-1999");
    let url = s.resolve(&header(&r, "location"));
    let r = s.put_final(&url, &digest, Some("2000-2999"), &data[2000..]).await;
    assert_eq!(r.status(), 201, "the final chunk in order");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let got = s.req("GET", &s.resolve(&header(&r, "location"))).send().await.expect("GET").bytes().await.expect("blob");
    assert!(got[..] == data[..], "resumed blob differs");
}

#[tokio::test]
async fn final_put_with_bogus_content_range_is_refused_even_if_bytes_hash_right() {
    let s = Server::start().await;
    let data = random_bytes(1024);
    let digest = sha256_digest(&data);
    let url = s.start_upload("bogus/range").await;
    // The bytes are the whole blob and hash right, but the range is a lie.
    let r = s.put_final(&url, &digest, Some("5000-6023"), &data).await;
    assert_eq!(header(&r, "range"), "0-0", "416 names the empty session");
    assert_error(r, 416, "BLOB_UPLOAD_INVALID", "Content-Range 5000-6023 at offset 0").await;
    assert_eq!(s.head(&format!("/v2/bogus/range/blobs/{digest}")).await.status(), 404, "nothing committed");
    assert_eq!(upload_range(&s, &url).await, "0-0", "session kept");

    // A range whose length disagrees with the body, and one that is not a
    // range at all: refused, session kept.
    let r = s.put_final(&url, &digest, Some("0-99"), &data).await;
    assert_eq!(r.status(), 416, "Content-Range of 100 bytes with a 1024-byte body");
    for bad in ["bytes=x-y", "10-5", "-"] {
        let r = s.put_final(&url, &digest, Some(bad), &data).await;
        let status = r.status().as_u16();
        assert!(status == 400 || status == 416, "Content-Range {bad:?}: got {status}");
    }
    // A range but no body at all cannot be a final chunk.
    let r = s.put_final(&url, &digest, Some("0-1023"), b"").await;
    assert_eq!(r.status(), 416, "Content-Range with an empty body");
    assert_eq!(upload_range(&s, &url).await, "0-0", "session kept after every refusal");

    // The true range completes it.
    let r = s.put_final(&url, &digest, Some("0-1023"), &data).await;
    assert_eq!(r.status(), 201, "the honest final chunk");
    assert_eq!(s.head(&format!("/v2/bogus/range/blobs/{digest}")).await.status(), 200);
}

#[tokio::test]
async fn final_put_content_range_variants_that_are_in_order_succeed() {
    let s = Server::start().await;
    // Monolithic POST then PUT naming the whole blob as its range.
    let data = random_bytes(777);
    let digest = sha256_digest(&data);
    let url = s.start_upload("inorder/app").await;
    assert_eq!(s.put_final(&url, &digest, Some("0-776"), &data).await.status(), 201);
    // The same with the `bytes a-b/total` form some clients send.
    let data = random_bytes(500);
    let digest = sha256_digest(&data);
    let url = s.start_upload("inorder/app").await;
    let r = s.patch_chunk(&url, Some("0-199"), &data[..200]).await;
    let url = s.resolve(&header(&r, "location"));
    assert_eq!(s.put_final(&url, &digest, Some("bytes 200-499/500"), &data[200..]).await.status(), 201);
    // A wrong digest at the right offset is still DIGEST_INVALID.
    let data = random_bytes(64);
    let url = s.start_upload("inorder/app").await;
    let r = s.put_final(&url, &sha256_digest(b"other"), Some("0-63"), &data).await;
    assert_error(r, 400, "DIGEST_INVALID", "in-order final chunk with a wrong digest").await;
}

#[tokio::test]
async fn digest_algorithm_on_upload_start() {
    let s = Server::start().await;
    let repo = "alg/app";
    let data = random_bytes(5000);
    // sha512 declared, chunked, closed with the sha512 digest.
    let d512 = push_blob_sha512(&s, repo, &data).await;
    let r = s.get(&format!("/v2/{repo}/blobs/{d512}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), d512);
    assert!(r.bytes().await.expect("body")[..] == data[..]);
    // sha256 declared explicitly works as the default does.
    let r = s.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest-algorithm=sha256")).send().await.expect("POST");
    assert_eq!(r.status(), 202);
    // Monolithic POST with both: consistent is fine, contradictory is 400.
    let small = random_bytes(100);
    let r = s
        .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest-algorithm=sha512&digest={}", sha512_digest(&small)))
        .body(small.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201, "monolithic sha512 with digest-algorithm=sha512");
    assert_eq!(header(&r, "docker-content-digest"), sha512_digest(&small));
    let r = s
        .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest-algorithm=sha512&digest={}", sha256_digest(&small)))
        .body(small.clone())
        .send()
        .await
        .expect("POST");
    assert_error(r, 400, "DIGEST_INVALID", "sha256 digest with digest-algorithm=sha512").await;
    // Unsupported algorithms are refused before any byte is sent.
    for bad in ["md5", "sha384", "SHA512", "", "blake3"] {
        let r = s.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest-algorithm={bad}")).send().await.expect("POST");
        assert_error(r, 400, "DIGEST_INVALID", &format!("digest-algorithm={bad}")).await;
    }
    // A sha512 session closed with a wrong sha512 digest is DIGEST_INVALID.
    let r = s.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest-algorithm=sha512")).send().await.expect("POST");
    let url = s.resolve(&header(&r, "location"));
    let r = s.put_final(&url, &sha512_digest(b"not this"), None, b"this").await;
    assert_error(r, 400, "DIGEST_INVALID", "wrong sha512 digest").await;
}

#[tokio::test]
async fn upload_range_covers_the_whole_blob_and_chunks_have_no_minimum() {
    let s = Server::start().await;
    let repo = "range/app";
    let data = random_bytes(1506);
    let digest = sha256_digest(&data);
    let r = s.req("POST", &format!("/v2/{repo}/blobs/uploads/")).header("content-length", "0").send().await;
    let r = r.expect("POST");
    assert_eq!(r.status(), 202);
    assert!(r.headers().get("oci-chunk-min-length").is_none(), "Cove has no minimum chunk length to advertise");
    let mut url = s.resolve(&header(&r, "location"));
    // A 1-byte chunk, a 1000-byte one, a 5-byte one: each answer covers
    // everything received so far, from byte 0.
    let mut offset = 0;
    for len in [1usize, 1000, 5] {
        let end = offset + len - 1;
        let r = s.patch_chunk(&url, Some(&format!("{offset}-{end}")), &data[offset..=end]).await;
        assert_eq!(r.status(), 202, "chunk {offset}-{end}");
        assert_eq!(header(&r, "range"), format!("0-{end}"), "PATCH Range is the whole blob so far");
        url = s.resolve(&header(&r, "location"));
        assert_eq!(upload_range(&s, &url).await, format!("0-{end}"), "GET status Range");
        offset = end + 1;
    }
    // A streamed chunk (no Content-Range) continues it the same way.
    let r = s.patch_chunk(&url, None, &data[offset..]).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), format!("0-{}", data.len() - 1));
    url = s.resolve(&header(&r, "location"));
    let r = s.put_final(&url, &digest, None, b"").await;
    assert_eq!(r.status(), 201);
    let got = s.get(&format!("/v2/{repo}/blobs/{digest}")).await.bytes().await.expect("blob");
    assert!(got[..] == data[..], "blob from tiny chunks");
}
