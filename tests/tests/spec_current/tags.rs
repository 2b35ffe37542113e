//! Tags: pushed with a manifest by digest (`?tag=`, `OCI-Tag`, 414,
//! sha512), and the tag list in byte order with an exclusive `last`.

use super::*;

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
