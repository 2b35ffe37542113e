//! Manifests: push and pull by tag and digest, byte-for-byte storage, blob
//! references, validation, the size cap, media types and deletes.

use super::*;

#[tokio::test]
async fn oci_manifest_put_get_head_by_tag_and_digest() {
    let s = Server::start().await;
    let img = Image::random(2);
    s.push_blob("img", &img.config).await;
    for l in &img.layers {
        s.push_blob("img", l).await;
    }
    let r = s.put_manifest("img", "v1", OCI_MANIFEST, &img.manifest).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest"), img.digest);
    assert!(
        s.resolve(&header(&r, "location")).ends_with(&format!("/v2/img/manifests/{}", img.digest)),
        "manifest Location {:?}",
        header(&r, "location")
    );
    assert!(header(&r, "oci-subject").is_empty(), "no subject, no OCI-Subject");
    assert_manifest_served(&s, "img", "v1", OCI_MANIFEST, &img.manifest).await;
    assert_manifest_served(&s, "img", &img.digest, OCI_MANIFEST, &img.manifest).await;

    // PUT by digest.
    let img2 = Image::from_layers(img.layers.clone());
    s.push_blob("img", &img2.config).await;
    let r = s.put_manifest("img", &img2.digest, OCI_MANIFEST, &img2.manifest).await;
    assert_eq!(r.status(), 201, "PUT by digest");
    assert_eq!(header(&r, "docker-content-digest"), img2.digest);
    assert_manifest_served(&s, "img", &img2.digest, OCI_MANIFEST, &img2.manifest).await;

    // PUT by a digest that is not the body's.
    let r = s.put_manifest("img", &img.digest, OCI_MANIFEST, &img2.manifest).await;
    assert_error(r, 400, "DIGEST_INVALID", "PUT manifest under the wrong digest").await;

    // Re-tagging moves the tag.
    let r = s.put_manifest("img", "v1", OCI_MANIFEST, &img2.manifest).await;
    assert_eq!(r.status(), 201);
    assert_manifest_served(&s, "img", "v1", OCI_MANIFEST, &img2.manifest).await;
    // Pushing the same manifest again is idempotent.
    let r = s.put_manifest("img", "v1", OCI_MANIFEST, &img2.manifest).await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn docker_v2_and_manifest_list_stored_byte_for_byte() {
    let s = Server::start().await;
    let config = random_bytes(200);
    let layer = random_bytes(3000);
    let cd = s.push_blob("dock", &config).await;
    let ld = s.push_blob("dock", &layer).await;
    // Unusual formatting and key order: the digest is over these exact bytes.
    let manifest = format!(
        "{{\n   \"schemaVersion\": 2,\n\t\"mediaType\": \"{DOCKER_MANIFEST}\",\n   \"config\": {{ \
         \"size\": {}, \"mediaType\": \"{DOCKER_CONFIG}\", \"digest\": \"{cd}\" }},\n   \
         \"layers\": [ {{\"digest\":\"{ld}\",\"size\":{},\"mediaType\":\"{DOCKER_LAYER}\"}} ]\n}}\n\n",
        config.len(),
        layer.len()
    )
    .into_bytes();
    let md = sha256_digest(&manifest);
    let r = s.put_manifest("dock", "amd64", DOCKER_MANIFEST, &manifest).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest"), md);
    assert_manifest_served(&s, "dock", "amd64", DOCKER_MANIFEST, &manifest).await;

    let img = Image::random(1);
    s.push_blob("dock", &img.config).await;
    s.push_blob("dock", &img.layers[0]).await;
    assert_eq!(s.put_manifest("dock", &img.digest, OCI_MANIFEST, &img.manifest).await.status(), 201);
    let list = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{DOCKER_LIST}\",\"manifests\":[\
         {{\"mediaType\":\"{DOCKER_MANIFEST}\",\"size\":{},\"digest\":\"{md}\",\
         \"platform\":{{\"architecture\":\"amd64\",\"os\":\"linux\"}}}},\
         {{\"mediaType\":\"{OCI_MANIFEST}\",\"size\":{},\"digest\":\"{}\",\
         \"platform\":{{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}}}}]}}   ",
        manifest.len(),
        img.manifest.len(),
        img.digest
    )
    .into_bytes();
    let r = s.put_manifest("dock", "multi", DOCKER_LIST, &list).await;
    assert_eq!(r.status(), 201, "manifest list");
    assert_manifest_served(&s, "dock", "multi", DOCKER_LIST, &list).await;
    assert_manifest_served(&s, "dock", &sha256_digest(&list), DOCKER_LIST, &list).await;

    // An OCI index of the same children.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "size": manifest.len(), "digest": md},
            {"mediaType": OCI_MANIFEST, "size": img.manifest.len(), "digest": img.digest},
        ],
        "annotations": {"org.example": "x"},
    }))
    .expect("json");
    let r = s.put_manifest("dock", "index", OCI_INDEX, &index).await;
    assert_eq!(r.status(), 201, "OCI index");
    assert_manifest_served(&s, "dock", "index", OCI_INDEX, &index).await;

    // An index whose child is missing.
    let missing = sha256_digest(b"no such manifest");
    let bad_index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "size": 10, "digest": missing}],
    }))
    .expect("json");
    let r = s.put_manifest("dock", "broken", OCI_INDEX, &bad_index).await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "index with a missing child").await;
}

#[tokio::test]
async fn manifest_with_missing_blobs_is_manifest_blob_unknown() {
    let s = Server::start().await;
    let img = Image::random(2);
    // Nothing pushed.
    let r = s.put_manifest("miss", "t", OCI_MANIFEST, &img.manifest).await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "nothing pushed").await;
    // Config only.
    s.push_blob("miss", &img.config).await;
    s.push_blob("miss", &img.layers[0]).await;
    let r = s.put_manifest("miss", "t", OCI_MANIFEST, &img.manifest).await;
    let v = assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "one layer missing").await;
    let _ = v; // the detail, when present, may name the digest
               // The missing layer exists, but only in another repository.
    s.push_blob("elsewhere", &img.layers[1]).await;
    let r = s.put_manifest("miss", "t", OCI_MANIFEST, &img.manifest).await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "layer held by another repository only").await;
    // Nothing was stored under the tag or the digest.
    let r = s.get("/v2/miss/manifests/t").await;
    assert_eq!(r.status(), 404);
    let r = s.get(&format!("/v2/miss/manifests/{}", img.digest)).await;
    assert_eq!(r.status(), 404);
    s.push_blob("miss", &img.layers[1]).await;
    let r = s.put_manifest("miss", "t", OCI_MANIFEST, &img.manifest).await;
    assert_eq!(r.status(), 201, "all blobs present now");
}

#[tokio::test]
async fn invalid_manifests_are_manifest_invalid() {
    let s = Server::start().await;
    let img = Image::random(1);
    s.push_blob("inv", &img.config).await;
    s.push_blob("inv", &img.layers[0]).await;
    let schema1 = br#"{"schemaVersion":1,"name":"inv","tag":"t","architecture":"amd64","fsLayers":[{"blobSum":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}],"history":[{"v1Compatibility":"{}"}],"signatures":[]}"#;
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("schema 1 signed", "application/vnd.docker.distribution.manifest.v1+prettyjws".into(), schema1.to_vec()),
        ("schema 1", "application/vnd.docker.distribution.manifest.v1+json".into(), schema1.to_vec()),
        ("schema 1 as json", "application/json".into(), schema1.to_vec()),
        ("not JSON", OCI_MANIFEST.into(), b"this is not json".to_vec()),
        ("empty body", OCI_MANIFEST.into(), Vec::new()),
        (
            "unknown media type",
            "application/vnd.example.unknown+json".into(),
            br#"{"schemaVersion":2,"mediaType":"application/vnd.example.unknown+json"}"#.to_vec(),
        ),
        ("Content-Type contradicts mediaType", DOCKER_MANIFEST.into(), img.manifest.clone()),
        (
            "schemaVersion 3",
            OCI_MANIFEST.into(),
            String::from_utf8_lossy(&img.manifest).replace("\"schemaVersion\": 2", "\"schemaVersion\": 3").into_bytes(),
        ),
        (
            "image manifest without config",
            OCI_MANIFEST.into(),
            serde_json::to_vec(&json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"layers":[]})).expect("json"),
        ),
        (
            "layer descriptor with a malformed digest",
            OCI_MANIFEST.into(),
            String::from_utf8_lossy(&img.manifest).replace(&sha256_digest(&img.layers[0]), "sha256:1234").into_bytes(),
        ),
    ];
    for (what, ct, body) in cases {
        let r = s.put_manifest("inv", "t", &ct, &body).await;
        let status = r.status().as_u16();
        let v = json(r).await;
        let code = v["errors"][0]["code"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{what}: status ({v})");
        assert!(
            code == "MANIFEST_INVALID" || (what.starts_with("layer") && code == "DIGEST_INVALID"),
            "{what}: code {code}"
        );
    }
    let r = s.get("/v2/inv/manifests/t").await;
    assert_eq!(r.status(), 404, "an invalid manifest was stored");
}

#[tokio::test]
async fn manifest_size_cap_is_4_mib() {
    let s = Server::start().await;
    let img = Image::random(1);
    s.push_blob("cap", &img.config).await;
    s.push_blob("cap", &img.layers[0]).await;
    const CAP: usize = 4 * 1024 * 1024;
    // A valid manifest padded (via an annotation) to exactly the cap.
    let build = |pad: usize| -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&img.manifest).expect("manifest json");
        v["annotations"] = json!({ "pad": "x".repeat(pad) });
        serde_json::to_vec(&v).expect("json")
    };
    let base = build(0).len();
    let exact = build(CAP - base);
    assert_eq!(exact.len(), CAP);
    let r = s.put_manifest("cap", "exact", OCI_MANIFEST, &exact).await;
    assert_eq!(r.status(), 201, "a 4 MiB manifest is accepted");
    assert_manifest_served(&s, "cap", "exact", OCI_MANIFEST, &exact).await;

    // Oversized bodies: the server may answer before reading the body, so
    // send it from another thread and read the answer meanwhile.
    for (tag, body) in [("over", build(CAP - base + 1)), ("huge", build(3 * CAP))] {
        let head = format!(
            "PUT /v2/cap/manifests/{tag} HTTP/1.1\r\nHost: {}\r\nContent-Type: {OCI_MANIFEST}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            s.addr,
            body.len()
        );
        let (status, text) = raw_exchange(s.addr, head, body);
        assert_eq!(status, 413, "{tag}: {text}");
        assert!(text.contains("MANIFEST_INVALID"), "{tag}: 413 body must be a MANIFEST_INVALID error: {text:?}");
    }
    // Chunked transfer encoding (no Content-Length) is capped too.
    let over = build(CAP - base + 1);
    let head = format!(
        "PUT /v2/cap/manifests/over HTTP/1.1\r\nHost: {}\r\nContent-Type: {OCI_MANIFEST}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        s.addr
    );
    let mut chunked = Vec::new();
    for piece in over.chunks(1 << 20) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw_exchange(s.addr, head, chunked);
    assert_eq!(status, 413, "chunked oversize manifest: {text}");
    assert_eq!(s.get("/v2/cap/manifests/over").await.status(), 404);
}

#[tokio::test]
async fn unknown_and_malformed_manifest_references() {
    let s = Server::start().await;
    s.push_image("known", "t", 1).await;
    for (path, code) in [
        ("/v2/known/manifests/nope", "MANIFEST_UNKNOWN"),
        (&format!("/v2/known/manifests/{}", sha256_digest(b"nope")) as &str, "MANIFEST_UNKNOWN"),
    ] {
        let r = s.get(path).await;
        assert_error(r, 404, code, &format!("GET {path}")).await;
        let r = s.head(path).await;
        assert_eq!(r.status(), 404, "HEAD {path}");
        assert!(r.bytes().await.expect("body").is_empty());
    }
    // An unknown repository.
    let r = s.get("/v2/unknown/repo/manifests/latest").await;
    let status = r.status().as_u16();
    let v = json(r).await;
    let code = v["errors"][0]["code"].as_str().unwrap_or_default();
    assert_eq!(status, 404);
    assert!(code == "MANIFEST_UNKNOWN" || code == "NAME_UNKNOWN", "{code}");

    // Malformed references: digests are DIGEST_INVALID; bad tags are a 4xx.
    for reference in ["sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e"] {
        let r = s.get(&format!("/v2/known/manifests/{reference}")).await;
        assert_error(r, 400, "DIGEST_INVALID", &format!("GET manifest {reference}")).await;
        let r = s.put_manifest("known", reference, OCI_MANIFEST, b"{}").await;
        let status = assert_not_5xx(r, &format!("PUT manifest {reference}")).await;
        assert_eq!(status, 400, "PUT manifest {reference}");
        let r = s.delete(&format!("/v2/known/manifests/{reference}")).await;
        assert_not_5xx(r, &format!("DELETE manifest {reference}")).await;
    }
    let long_tag = "t".repeat(129);
    for reference in ["-dash", ".dot", "a*b", "%20", long_tag.as_str()] {
        let r = s.get(&format!("/v2/known/manifests/{reference}")).await;
        let status = assert_not_5xx(r, &format!("GET manifest {reference:?}")).await;
        assert!(status == 400 || status == 404, "GET manifest {reference:?}: {status}");
        let img = Image::random(0);
        let r = s.put_manifest("known", reference, OCI_MANIFEST, &img.manifest).await;
        let status = assert_not_5xx(r, &format!("PUT manifest {reference:?}")).await;
        assert_eq!(status, 400, "PUT manifest tag {reference:?}");
    }
    // The longest valid tag works.
    let tag = format!("_{}", "x".repeat(127));
    let img = s.push_image("known", &tag, 0).await;
    assert_manifest_served(&s, "known", &tag, OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn delete_tag_keeps_manifest_and_delete_digest_removes_tags() {
    let s = Server::start().await;
    let img = s.push_image("deleting", "one", 1).await;
    for t in ["two", "three"] {
        let r = s.put_manifest("deleting", t, OCI_MANIFEST, &img.manifest).await;
        assert_eq!(r.status(), 201);
    }
    let other = s.push_image("deleting", "other", 1).await;

    // Delete a tag: the manifest and the other tags stay.
    let r = s.delete("/v2/deleting/manifests/one").await;
    assert_eq!(r.status(), 202, "DELETE by tag");
    let r = s.get("/v2/deleting/manifests/one").await;
    assert_error(r, 404, "MANIFEST_UNKNOWN", "GET deleted tag").await;
    assert_eq!(
        s.get(&format!("/v2/deleting/manifests/{}", img.digest)).await.status(),
        200,
        "tag delete must keep the manifest"
    );
    assert_eq!(s.get("/v2/deleting/manifests/two").await.status(), 200);
    let tags = json(s.get("/v2/deleting/tags/list").await).await;
    assert_eq!(tags["tags"], json!(["other", "three", "two"]));
    let r = s.delete("/v2/deleting/manifests/one").await;
    assert_error(r, 404, "MANIFEST_UNKNOWN", "DELETE a deleted tag").await;

    // Delete by digest: every tag pointing at it goes too.
    let r = s.delete(&format!("/v2/deleting/manifests/{}", img.digest)).await;
    assert_eq!(r.status(), 202, "DELETE by digest");
    for reference in ["two", "three", img.digest.as_str()] {
        let r = s.get(&format!("/v2/deleting/manifests/{reference}")).await;
        assert_error(r, 404, "MANIFEST_UNKNOWN", &format!("GET {reference} after delete")).await;
    }
    let tags = json(s.get("/v2/deleting/tags/list").await).await;
    assert_eq!(tags["tags"], json!(["other"]), "tags after digest delete");
    assert_manifest_served(&s, "deleting", "other", OCI_MANIFEST, &other.manifest).await;
    let r = s.delete(&format!("/v2/deleting/manifests/{}", img.digest)).await;
    assert_error(r, 404, "MANIFEST_UNKNOWN", "DELETE a deleted digest").await;
    // The blobs of a deleted manifest are still there until deleted themselves.
    assert_eq!(s.head(&format!("/v2/deleting/blobs/{}", sha256_digest(&img.config))).await.status(), 200);
}

#[tokio::test]
async fn manifest_media_type_from_body_or_header() {
    let s = Server::start().await;
    let img = Image::random(1);
    s.push_blob("mt", &img.config).await;
    s.push_blob("mt", &img.layers[0]).await;
    // No Content-Type: the body's mediaType decides.
    let r = s.req("PUT", "/v2/mt/manifests/nohdr").body(img.manifest.clone()).send().await.expect("PUT");
    assert_eq!(r.status(), 201, "manifest PUT without Content-Type");
    assert_manifest_served(&s, "mt", "nohdr", OCI_MANIFEST, &img.manifest).await;
    // No mediaType in the body: the Content-Type decides.
    let mut v: serde_json::Value = serde_json::from_slice(&img.manifest).expect("json");
    v.as_object_mut().expect("object").remove("mediaType");
    let bare = serde_json::to_vec(&v).expect("json");
    let r = s.put_manifest("mt", "bare", OCI_MANIFEST, &bare).await;
    assert_eq!(r.status(), 201, "manifest without mediaType");
    assert_manifest_served(&s, "mt", "bare", OCI_MANIFEST, &bare).await;
}

#[tokio::test]
async fn deleted_blobs_and_foreign_layers_in_manifests() {
    let s = Server::start().await;
    let img = Image::random(1);
    s.push_blob("gone", &img.config).await;
    let layer = s.push_blob("gone", &img.layers[0]).await;
    assert_eq!(s.delete(&format!("/v2/gone/blobs/{layer}")).await.status(), 202);
    let r = s.put_manifest("gone", "t", OCI_MANIFEST, &img.manifest).await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "manifest naming a deleted blob").await;

    // A non-distributable layer with `urls` need not be in the registry.
    let foreign = random_bytes(100);
    let mut v: serde_json::Value = serde_json::from_slice(&img.manifest).expect("json");
    v["layers"] = json!([{
        "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "digest": sha256_digest(&foreign),
        "size": foreign.len(),
        "urls": ["https://example.com/layer.tar.gz"],
    }]);
    let m = serde_json::to_vec(&v).expect("json");
    let r = s.put_manifest("gone", "foreign", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201, "foreign layer with urls");
    assert_manifest_served(&s, "gone", "foreign", OCI_MANIFEST, &m).await;
}
