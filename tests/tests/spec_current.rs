//! What the OCI Distribution Specification requires today (its main
//! branch), beyond the released v1.1.1, through the real `cove` binary:
//! the closing `PUT`'s `Content-Range` held to the upload offset (416,
//! status, resume), tags pushed with a manifest by digest (`?tag=`,
//! `OCI-Tag`, 414, sha512), `digest-algorithm` on upload start, the digest
//! headers on every blob and manifest response, tag list order and `last`,
//! the upload `Range` covering the whole blob so far, and no
//! `OCI-Chunk-Min-Length` (Cove takes chunks of any size), and
//! `OCI-Namespace` for `ns`-scoped requests. The README's API section maps
//! each requirement to these tests. Kept as one file (a little over 500
//! lines) so the requirement-to-test map points at a single place.

mod common;

use common::*;
use sha2::Digest as _;

/// `sha512:<hex>` of `data`.
fn sha512_digest(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

/// Every value of a (possibly repeated, possibly comma-joined) header.
fn header_values(r: &reqwest::Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

async fn patch(s: &Server, url: &str, range: Option<String>, body: &[u8]) -> reqwest::Response {
    let mut req = s.req("PATCH", url).header("content-type", "application/octet-stream");
    if let Some(range) = range {
        req = req.header("content-range", range);
    }
    req.body(body.to_vec()).send().await.expect("PATCH")
}

async fn put_final(s: &Server, url: &str, digest: &str, range: Option<&str>, body: &[u8]) -> reqwest::Response {
    let mut req =
        s.req("PUT", &with_query(url, &format!("digest={digest}"))).header("content-type", "application/octet-stream");
    if let Some(range) = range {
        req = req.header("content-range", range);
    }
    req.body(body.to_vec()).send().await.expect("PUT")
}

/// `GET <blob-push-location>`: asserts 204 and a Location, returns the Range.
async fn upload_range(s: &Server, url: &str) -> String {
    let r = s.req("GET", url).send().await.expect("GET upload status");
    assert_eq!(r.status(), 204, "upload status of {url}");
    assert!(!header(&r, "location").is_empty(), "upload status has a Location");
    header(&r, "range")
}

// ---------------------------------------------------------------------------
// The closing PUT's Content-Range
// ---------------------------------------------------------------------------

#[tokio::test]
async fn final_put_out_of_order_is_416_then_status_then_resume() {
    let s = Server::start().await;
    let data = random_bytes(3000);
    let digest = sha256_digest(&data);
    let url = s.start_upload("ooo/final").await;
    let r = patch(&s, &url, Some("0-999".into()), &data[..1000]).await;
    assert_eq!(r.status(), 202);
    let url = s.resolve(&header(&r, "location"));

    // The final chunk skips ahead of the session (1000 bytes held).
    let r = put_final(&s, &url, &digest, Some("2000-2999"), &data[2000..]).await;
    assert_eq!(header(&r, "range"), "0-999", "416 names what the session holds");
    assert_error(r, 416, "BLOB_UPLOAD_INVALID", "final chunk ahead of the offset").await;
    // ... or overlaps what is held.
    let r = put_final(&s, &url, &digest, Some("0-2999"), &data).await;
    assert_eq!(r.status(), 416, "final chunk overlapping the held bytes");
    assert_eq!(s.head(&format!("/v2/ooo/final/blobs/{digest}")).await.status(), 404, "no blob after a 416");

    // The session survived both: status, then resume from where it stands.
    assert_eq!(upload_range(&s, &url).await, "0-999", "a 416 leaves the session as it was");
    let r = patch(&s, &url, Some("1000-1999".into()), &data[1000..2000]).await;
    assert_eq!(r.status(), 202, "resume after the 416");
    assert_eq!(header(&r, "range"), "0-1999");
    let url = s.resolve(&header(&r, "location"));
    let r = put_final(&s, &url, &digest, Some("2000-2999"), &data[2000..]).await;
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
    let r = put_final(&s, &url, &digest, Some("5000-6023"), &data).await;
    assert_eq!(header(&r, "range"), "0-0", "416 names the empty session");
    assert_error(r, 416, "BLOB_UPLOAD_INVALID", "Content-Range 5000-6023 at offset 0").await;
    assert_eq!(s.head(&format!("/v2/bogus/range/blobs/{digest}")).await.status(), 404, "nothing committed");
    assert_eq!(upload_range(&s, &url).await, "0-0", "session kept");

    // A range whose length disagrees with the body, and one that is not a
    // range at all: refused, session kept.
    let r = put_final(&s, &url, &digest, Some("0-99"), &data).await;
    assert_eq!(r.status(), 416, "Content-Range of 100 bytes with a 1024-byte body");
    for bad in ["bytes=x-y", "10-5", "-"] {
        let r = put_final(&s, &url, &digest, Some(bad), &data).await;
        let status = r.status().as_u16();
        assert!(status == 400 || status == 416, "Content-Range {bad:?}: got {status}");
    }
    // A range but no body at all cannot be a final chunk.
    let r = put_final(&s, &url, &digest, Some("0-1023"), b"").await;
    assert_eq!(r.status(), 416, "Content-Range with an empty body");
    assert_eq!(upload_range(&s, &url).await, "0-0", "session kept after every refusal");

    // The true range completes it.
    let r = put_final(&s, &url, &digest, Some("0-1023"), &data).await;
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
    assert_eq!(put_final(&s, &url, &digest, Some("0-776"), &data).await.status(), 201);
    // The same with the `bytes a-b/total` form some clients send.
    let data = random_bytes(500);
    let digest = sha256_digest(&data);
    let url = s.start_upload("inorder/app").await;
    let r = patch(&s, &url, Some("0-199".into()), &data[..200]).await;
    let url = s.resolve(&header(&r, "location"));
    assert_eq!(put_final(&s, &url, &digest, Some("bytes 200-499/500"), &data[200..]).await.status(), 201);
    // A wrong digest at the right offset is still DIGEST_INVALID.
    let data = random_bytes(64);
    let url = s.start_upload("inorder/app").await;
    let r = put_final(&s, &url, &sha256_digest(b"other"), Some("0-63"), &data).await;
    assert_error(r, 400, "DIGEST_INVALID", "in-order final chunk with a wrong digest").await;
}

// ---------------------------------------------------------------------------
// Tags pushed with a manifest by digest
// ---------------------------------------------------------------------------

/// Pushes the blobs of `img` to `repo`.
async fn push_blobs(s: &Server, repo: &str, img: &Image) {
    s.push_blob(repo, &img.config).await;
    for l in &img.layers {
        s.push_blob(repo, l).await;
    }
}

async fn put_with_tags(s: &Server, repo: &str, digest: &str, tags: &[&str], body: &[u8]) -> reqwest::Response {
    let q: Vec<String> = tags.iter().map(|t| format!("tag={t}")).collect();
    let path = format!("/v2/{repo}/manifests/{digest}?{}", q.join("&"));
    s.req("PUT", &path).header("content-type", OCI_MANIFEST).body(body.to_vec()).send().await.expect("PUT manifest")
}

#[tokio::test]
async fn tags_pushed_with_a_manifest_by_digest() {
    let s = Server::start().await;
    let repo = "multi/tags";
    let img = Image::random(2);
    push_blobs(&s, repo, &img).await;
    let r = put_with_tags(&s, repo, &img.digest, &["1.2.3", "1.2", "latest"], &img.manifest).await;
    assert_eq!(r.status(), 201, "push by digest with three tags");
    assert_eq!(header_values(&r, "oci-tag"), ["1.2.3", "1.2", "latest"], "one OCI-Tag per accepted tag");
    assert_eq!(header(&r, "docker-content-digest"), img.digest);
    assert!(header(&r, "location").ends_with(&format!("/v2/{repo}/manifests/{}", img.digest)));
    for tag in ["1.2.3", "1.2", "latest"] {
        let r = s.manifest("GET", repo, tag).await;
        assert_eq!(r.status(), 200, "GET {tag}");
        assert_eq!(header(&r, "docker-content-digest"), img.digest, "{tag} names the pushed manifest");
        assert!(r.bytes().await.expect("body")[..] == img.manifest[..], "{tag} serves the pushed bytes");
    }
    let tags = json(s.get(&format!("/v2/{repo}/tags/list")).await).await;
    assert_eq!(tags["tags"], serde_json::json!(["1.2", "1.2.3", "latest"]));

    // At least 10 tags in one request, a repeated tag answered once, and a
    // push by tag with extra tags sets all of them.
    let img2 = Image::random(1);
    push_blobs(&s, repo, &img2).await;
    let many: Vec<String> = (0..12).map(|i| format!("v{i}")).collect();
    let mut names: Vec<&str> = many.iter().map(String::as_str).collect();
    names.push("v3");
    let r = put_with_tags(&s, repo, &img2.digest, &names, &img2.manifest).await;
    assert_eq!(r.status(), 201, "push with 13 tag parameters");
    assert_eq!(header_values(&r, "oci-tag"), many, "each tag once, in request order");
    for t in &many {
        assert_eq!(header(&s.manifest("HEAD", repo, t).await, "docker-content-digest"), img2.digest, "{t}");
    }
    let r = put_with_tags(&s, repo, "edge", &["edge-1", "edge-2"], &img2.manifest).await;
    assert_eq!(r.status(), 201, "push by tag with tag parameters");
    for t in ["edge", "edge-1", "edge-2"] {
        assert_eq!(header(&s.manifest("HEAD", repo, t).await, "docker-content-digest"), img2.digest, "{t}");
    }
    // Moving tags: the same push re-points 1.2 and latest at img2.
    let r = put_with_tags(&s, repo, &img2.digest, &["1.2", "latest"], &img2.manifest).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&s.manifest("HEAD", repo, "latest").await, "docker-content-digest"), img2.digest);
    assert_eq!(header(&s.manifest("HEAD", repo, "1.2.3").await, "docker-content-digest"), img.digest);
}

#[tokio::test]
async fn an_invalid_tag_parameter_fails_the_whole_push() {
    let s = Server::start().await;
    let repo = "multi/invalid";
    let img = Image::random(1);
    push_blobs(&s, repo, &img).await;
    let long = "a".repeat(129);
    for bad in ["-leading-dash", ".dot", "has%2Fslash", "has:colon", "sp%20ace", long.as_str(), ""] {
        let r = put_with_tags(&s, repo, &img.digest, &["good", bad, "also-good"], &img.manifest).await;
        assert!(r.headers().get("oci-tag").is_none(), "{bad:?}: no OCI-Tag on a refused push");
        assert_error(r, 400, "MANIFEST_INVALID", &format!("tag parameter {bad:?}")).await;
    }
    // Nothing was stored: not the manifest, not the valid tags.
    assert_eq!(s.manifest("GET", repo, &img.digest).await.status(), 404, "manifest not stored");
    assert_eq!(s.manifest("GET", repo, "good").await.status(), 404, "valid tag not stored");
    assert_error(s.get(&format!("/v2/{repo}/tags/list")).await, 404, "NAME_UNKNOWN", "no tags at all").await;

    // A tag that already exists keeps its target when a push naming it fails.
    assert_eq!(put_with_tags(&s, repo, &img.digest, &["stable"], &img.manifest).await.status(), 201);
    let other = Image::random(1);
    push_blobs(&s, repo, &other).await;
    let r = put_with_tags(&s, repo, &other.digest, &["stable", "Bad!"], &other.manifest).await;
    assert_eq!(r.status(), 400);
    assert_eq!(header(&s.manifest("HEAD", repo, "stable").await, "docker-content-digest"), img.digest);
    assert_eq!(s.manifest("HEAD", repo, &other.digest).await.status(), 404);
    // A manifest whose blobs are missing stores no tag either.
    let orphan = Image::random(1);
    let r = put_with_tags(&s, repo, &orphan.digest, &["orphan"], &orphan.manifest).await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "tags with a manifest missing blobs").await;
    assert_eq!(s.manifest("HEAD", repo, "orphan").await.status(), 404);
}

#[tokio::test]
async fn too_many_tag_parameters_is_414_and_stores_nothing() {
    let s = Server::start().await;
    let repo = "multi/many";
    let img = Image::random(1);
    push_blobs(&s, repo, &img).await;
    let tags: Vec<String> = (0..101).map(|i| format!("t{i:03}")).collect();
    let names: Vec<&str> = tags.iter().map(String::as_str).collect();
    let r = put_with_tags(&s, repo, &img.digest, &names, &img.manifest).await;
    assert_error(r, 414, "UNSUPPORTED", "101 tag parameters").await;
    assert_eq!(s.manifest("HEAD", repo, &img.digest).await.status(), 404, "nothing stored");
    assert_eq!(s.manifest("HEAD", repo, "t000").await.status(), 404, "no tag stored");
    // The limit itself is accepted.
    let r = put_with_tags(&s, repo, &img.digest, &names[..100], &img.manifest).await;
    assert_eq!(r.status(), 201, "100 tag parameters");
    assert_eq!(header_values(&r, "oci-tag").len(), 100);
    let list = json(s.get(&format!("/v2/{repo}/tags/list")).await).await;
    assert_eq!(list["tags"].as_array().map(Vec::len), Some(100));
}

/// An OCI image manifest whose descriptors use `digest_of` (sha256 or sha512).
fn manifest_with(config: &[u8], layers: &[Vec<u8>], digest_of: fn(&[u8]) -> String) -> Vec<u8> {
    let d = |mt: &str, b: &[u8]| serde_json::json!({ "mediaType": mt, "digest": digest_of(b), "size": b.len() });
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": d(OCI_CONFIG, config),
        "layers": layers.iter().map(|l| d(OCI_LAYER, l)).collect::<Vec<_>>(),
    }))
    .expect("manifest json")
}

/// Pushes `data` as a sha512 blob: POST with `digest-algorithm=sha512`, one
/// PATCH, then the closing PUT.
async fn push_blob_sha512(s: &Server, repo: &str, data: &[u8]) -> String {
    let digest = sha512_digest(data);
    let r = s.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest-algorithm=sha512")).send().await.expect("POST");
    assert_eq!(r.status(), 202, "POST digest-algorithm=sha512");
    let url = s.resolve(&header(&r, "location"));
    let r = patch(s, &url, Some(format!("0-{}", data.len() - 1)), data).await;
    assert_eq!(r.status(), 202);
    let url = s.resolve(&header(&r, "location"));
    let r = s.req("PUT", &with_query(&url, &format!("digest={digest}"))).send().await.expect("PUT");
    assert_eq!(r.status(), 201, "close the sha512 upload");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    digest
}

#[tokio::test]
async fn sha512_manifests_with_tags_answer_with_their_own_digest() {
    let s = Server::start().await;
    let repo = "multi/sha512";
    let img = Image::random(2);
    push_blob_sha512(&s, repo, &img.config).await;
    for l in &img.layers {
        push_blob_sha512(&s, repo, l).await;
    }
    let manifest = manifest_with(&img.config, &img.layers, sha512_digest);
    let digest = sha512_digest(&manifest);
    let r = put_with_tags(&s, repo, &digest, &["v1", "latest"], &manifest).await;
    assert_eq!(r.status(), 201, "sha512 manifest with tags");
    assert_eq!(header(&r, "docker-content-digest"), digest, "PUT answers with the sha512 digest");
    assert_eq!(header_values(&r, "oci-tag"), ["v1", "latest"]);
    assert!(header(&r, "location").ends_with(&digest));
    for reference in ["v1", "latest", digest.as_str()] {
        for method in ["GET", "HEAD"] {
            let r = s.manifest(method, repo, reference).await;
            assert_eq!(r.status(), 200, "{method} {reference}");
            assert_eq!(header(&r, "docker-content-digest"), digest, "{method} {reference}: the pushed digest");
            assert_eq!(header(&r, "content-length"), manifest.len().to_string(), "{method} {reference}");
            let body = r.bytes().await.expect("body");
            if method == "GET" {
                assert!(body[..] == manifest[..], "GET {reference} bytes");
            } else {
                assert!(body.is_empty(), "HEAD has no body");
            }
        }
    }
    // The same bytes under sha256 are a different digest that was never pushed.
    assert_eq!(s.manifest("HEAD", repo, &sha256_digest(&manifest)).await.status(), 404);
    // A sha512 URL digest that does not match the bytes stores no tag.
    let wrong = sha512_digest(b"something else");
    let r = put_with_tags(&s, repo, &wrong, &["wrong"], &manifest).await;
    assert_error(r, 400, "DIGEST_INVALID", "sha512 digest not matching").await;
    assert_eq!(s.manifest("HEAD", repo, "wrong").await.status(), 404);
}

// ---------------------------------------------------------------------------
// digest-algorithm on upload start
// ---------------------------------------------------------------------------

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
    let r = put_final(&s, &url, &sha512_digest(b"not this"), None, b"this").await;
    assert_error(r, 400, "DIGEST_INVALID", "wrong sha512 digest").await;
}

// ---------------------------------------------------------------------------
// Digest headers on every blob and manifest response
// ---------------------------------------------------------------------------

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
        let r = put_final(&s, &url, &other_digest, None, &other).await;
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

// ---------------------------------------------------------------------------
// Tag list order and `last`
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tag_list_is_asciibetical_and_last_is_exclusive() {
    let s = Server::start().await;
    let repo = "order/app";
    let img = Image::random(1);
    push_blobs(&s, repo, &img).await;
    // No two differ only by case, so case-insensitive file systems hold them all.
    let pushed = ["beta", "Alpha", "_under", "1.0", "Zulu", "alpha2", "a-b", "10", "9"];
    assert_eq!(put_with_tags(&s, repo, &img.digest, &pushed, &img.manifest).await.status(), 201);
    // Go's sort.Strings: byte order, digits < upper case < '_' < lower case.
    let expected = ["1.0", "10", "9", "Alpha", "Zulu", "_under", "a-b", "alpha2", "beta"];
    let mut by_bytes: Vec<&str> = pushed.to_vec();
    by_bytes.sort_unstable();
    assert_eq!(by_bytes, expected, "the expectation is byte order");
    let s = &s;
    let list = |q: &str| {
        let path = format!("/v2/{repo}/tags/list{q}");
        async move { s.get(&path).await }
    };
    let tags = |v: serde_json::Value| -> Vec<String> {
        v["tags"].as_array().expect("tags").iter().map(|t| t.as_str().expect("tag").to_owned()).collect()
    };
    let r = list("").await;
    assert_eq!(header(&r, "content-type"), "application/json");
    assert_eq!(tags(json(r).await), expected);
    // `last` is exclusive, whether or not it names an existing tag.
    assert_eq!(tags(json(list("?last=Zulu").await).await), ["_under", "a-b", "alpha2", "beta"]);
    assert_eq!(tags(json(list("?last=Zz").await).await), ["_under", "a-b", "alpha2", "beta"]);
    assert_eq!(tags(json(list("?last=9").await).await), ["Alpha", "Zulu", "_under", "a-b", "alpha2", "beta"]);
    let r = list("?last=beta").await;
    assert!(header(&r, "link").is_empty(), "nothing after the last tag: no Link");
    assert!(tags(json(r).await).is_empty());
    // `n` pages, following Link, see every tag once in order.
    let mut seen = Vec::new();
    let mut next = format!("/v2/{repo}/tags/list?n=4");
    loop {
        let r = s.get(&next).await;
        let link = header(&r, "link");
        let page = tags(json(r).await);
        assert!(page.len() <= 4);
        seen.extend(page);
        if link.is_empty() {
            break;
        }
        assert!(link.ends_with("; rel=\"next\""), "Link {link:?}");
        next = link.trim_start_matches('<').split('>').next().expect("link target").to_owned();
    }
    assert_eq!(seen, expected, "pages via Link");
    // n=0: an empty list and no Link.
    let r = list("?n=0").await;
    assert!(header(&r, "link").is_empty(), "n=0 has no Link");
    assert!(tags(json(r).await).is_empty(), "n=0 lists nothing");
}

// ---------------------------------------------------------------------------
// Range on upload responses, and no minimum chunk length
// ---------------------------------------------------------------------------

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
        let r = patch(&s, &url, Some(format!("{offset}-{end}")), &data[offset..=end]).await;
        assert_eq!(r.status(), 202, "chunk {offset}-{end}");
        assert_eq!(header(&r, "range"), format!("0-{end}"), "PATCH Range is the whole blob so far");
        url = s.resolve(&header(&r, "location"));
        assert_eq!(upload_range(&s, &url).await, format!("0-{end}"), "GET status Range");
        offset = end + 1;
    }
    // A streamed chunk (no Content-Range) continues it the same way.
    let r = patch(&s, &url, None, &data[offset..]).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), format!("0-{}", data.len() - 1));
    url = s.resolve(&header(&r, "location"));
    let r = put_final(&s, &url, &digest, None, b"").await;
    assert_eq!(r.status(), 201);
    let got = s.get(&format!("/v2/{repo}/blobs/{digest}")).await.bytes().await.expect("blob");
    assert!(got[..] == data[..], "blob from tiny chunks");
}

// ---------------------------------------------------------------------------
// Proxying: the `ns` a request was scoped by comes back as OCI-Namespace
// ---------------------------------------------------------------------------

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
