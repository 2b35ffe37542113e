//! What the OCI Distribution Specification requires today (its main
//! branch), beyond the released v1.1.1, through the real `cove` binary:
//! the closing `PUT`'s `Content-Range` held to the upload offset (416,
//! status, resume), tags pushed with a manifest by digest (`?tag=`,
//! `OCI-Tag`, 414, sha512), `digest-algorithm` on upload start, the digest
//! headers on every blob and manifest response, tag list order and `last`,
//! the upload `Range` covering the whole blob so far, and no
//! `OCI-Chunk-Min-Length` (Cove takes chunks of any size), and
//! `OCI-Namespace` for `ns`-scoped requests. The README's API section maps
//! each requirement to these tests (one target, `--test spec_current`;
//! modules `uploads`, `tags`, `headers`).

#[path = "../common/mod.rs"]
mod common;

mod headers;
mod tags;
mod uploads;

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

/// `GET <blob-push-location>`: asserts 204 and a Location, returns the Range.
async fn upload_range(s: &Server, url: &str) -> String {
    let r = s.req("GET", url).send().await.expect("GET upload status");
    assert_eq!(r.status(), 204, "upload status of {url}");
    assert!(!header(&r, "location").is_empty(), "upload status has a Location");
    header(&r, "range")
}

// ---------------------------------------------------------------------------
// Tags pushed with a manifest by digest, and sha512
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
    let r = s.patch_chunk(&url, Some(&format!("0-{}", data.len() - 1)), data).await;
    assert_eq!(r.status(), 202);
    let url = s.resolve(&header(&r, "location"));
    let r = s.req("PUT", &with_query(&url, &format!("digest={digest}"))).send().await.expect("PUT");
    assert_eq!(r.status(), 201, "close the sha512 upload");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    digest
}
