//! Referrers (the `subject` header and the filter), the tag list and the
//! catalog with pagination.

use super::*;

#[tokio::test]
async fn subject_header_and_referrers_with_and_without_filter() {
    let s = Server::start().await;
    let subject = s.push_image("refs", "base", 1).await;
    let subject_desc = json!({
        "mediaType": OCI_MANIFEST,
        "digest": subject.digest,
        "size": subject.manifest.len(),
    });
    // An empty config ("{}") is the usual artifact config.
    let empty = b"{}".to_vec();
    s.push_blob("refs", &empty).await;
    let sig_layer = random_bytes(64);
    s.push_blob("refs", &sig_layer).await;

    let mut referrers = Vec::new();
    for (artifact, annotations) in [
        ("application/vnd.example.sig", json!({"kind": "sig"})),
        ("application/vnd.example.sbom", json!({"kind": "sbom"})),
    ] {
        let m = oci_manifest(&empty, std::slice::from_ref(&sig_layer), Some(subject_desc.clone()), Some(artifact));
        let mut v: serde_json::Value = serde_json::from_slice(&m).expect("json");
        v["config"]["mediaType"] = json!("application/vnd.oci.empty.v1+json");
        v["annotations"] = annotations;
        let m = serde_json::to_vec(&v).expect("json");
        let d = sha256_digest(&m);
        let r = s.put_manifest("refs", &d, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), 201, "push referrer {artifact}");
        assert_eq!(header(&r, "oci-subject"), subject.digest, "OCI-Subject on a manifest with a subject");
        referrers.push((artifact, d, m.len()));
    }
    // A referrer without artifactType: its config media type counts.
    let cfg = random_bytes(10);
    s.push_blob("refs", &cfg).await;
    let m = oci_manifest(&cfg, &[], Some(subject_desc.clone()), None);
    let d3 = sha256_digest(&m);
    let r = s.put_manifest("refs", &d3, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "oci-subject"), subject.digest);

    let path = format!("/v2/refs/referrers/{}", subject.digest);
    let r = s.get(&path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert!(header(&r, "oci-filters-applied").is_empty(), "unfiltered");
    let v = json(r).await;
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    let list = v["manifests"].as_array().expect("manifests");
    assert_eq!(list.len(), 3, "all referrers: {v}");
    for (artifact, d, size) in &referrers {
        let e = list.iter().find(|e| e["digest"] == json!(d)).unwrap_or_else(|| panic!("referrer {d} missing in {v}"));
        assert_eq!(e["mediaType"], OCI_MANIFEST);
        assert_eq!(e["size"], json!(size));
        assert_eq!(e["artifactType"], json!(artifact));
        assert!(e["annotations"]["kind"].is_string(), "annotations copied: {e}");
    }
    let e3 = list.iter().find(|e| e["digest"] == json!(d3)).expect("config-typed referrer");
    assert_eq!(e3["artifactType"], OCI_CONFIG);

    // Filtered.
    let r = s.get(&format!("{path}?artifactType=application/vnd.example.sbom")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v = json(r).await;
    let list = v["manifests"].as_array().expect("manifests");
    assert_eq!(list.len(), 1, "filtered: {v}");
    assert_eq!(list[0]["digest"], json!(referrers[1].1));
    let r = s.get(&format!("{path}?artifactType=application/vnd.none")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    assert_eq!(json(r).await["manifests"], json!([]));

    // Unknown subject: an empty index, 200.
    let r = s.get(&format!("/v2/refs/referrers/{}", sha256_digest(b"unknown"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    let v = json(r).await;
    assert_eq!(v["manifests"], json!([]));
    assert_eq!(v["schemaVersion"], 2);
    // Malformed digest.
    let r = s.get("/v2/refs/referrers/sha256:xyz").await;
    assert_error(r, 400, "DIGEST_INVALID", "referrers of a malformed digest").await;
    let r = s.get("/v2/refs/referrers/latest").await;
    let status = assert_not_5xx(r, "referrers of a tag").await;
    assert!(status == 400 || status == 404, "referrers/latest: {status}");

    // Deleting a referrer removes it from the list.
    let r = s.delete(&format!("/v2/refs/manifests/{}", referrers[0].1)).await;
    assert_eq!(r.status(), 202);
    let v = json(s.get(&path).await).await;
    let list = v["manifests"].as_array().expect("manifests");
    assert_eq!(list.len(), 2, "after deleting one referrer: {v}");
    assert!(list.iter().all(|e| e["digest"] != json!(referrers[0].1)));

    // A referrer may be pushed before its subject exists.
    let future_subject = json!({
        "mediaType": OCI_MANIFEST,
        "digest": sha256_digest(b"not yet pushed"),
        "size": 14,
    });
    let m = oci_manifest(&empty, &[], Some(future_subject), Some("application/vnd.example.x"));
    let r = s.put_manifest("refs", "early", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201, "referrer before its subject");
    assert_eq!(header(&r, "oci-subject"), sha256_digest(b"not yet pushed"));
    let v = json(s.get(&format!("/v2/refs/referrers/{}", sha256_digest(b"not yet pushed"))).await).await;
    assert_eq!(v["manifests"].as_array().map(Vec::len), Some(1), "{v}");
    // Referrers are per repository.
    let v = json(s.get(&format!("/v2/elsewhere/referrers/{}", subject.digest)).await).await;
    assert_eq!(v["manifests"], json!([]), "referrers leaked across repos");
}

/// Parses `Link: </v2/...?n=N&last=X>; rel="next"`; returns the path.
fn next_link(r: &reqwest::Response) -> Option<String> {
    let link = header(r, "link");
    if link.is_empty() {
        return None;
    }
    assert!(link.contains("rel=\"next\""), "Link {link:?} has no rel=\"next\"");
    let start = link.find('<').expect("Link has <") + 1;
    let end = link.find('>').expect("Link has >");
    Some(link[start..end].to_owned())
}

/// Follows `Link: <…>; rel="next"` from `first` to the end, collecting the
/// `key` array of every page; returns the entries and the number of pages.
/// Asserts 200 for every page, at most `n` entries a page, an end within
/// `max_pages`, and that every Link goes to `prefix` and keeps `n=`; with
/// `link_names_last`, also that its `last=` names the page's last entry.
async fn follow_pages(
    s: &Server,
    first: String,
    key: &str,
    n: usize,
    prefix: &str,
    max_pages: usize,
    link_names_last: bool,
) -> (Vec<String>, usize) {
    let mut got: Vec<String> = Vec::new();
    let mut path = first;
    let mut pages = 0;
    loop {
        let r = s.get(&path).await;
        assert_eq!(r.status(), 200, "{path}");
        let link = next_link(&r);
        let v = json(r).await;
        let page: Vec<String> = serde_json::from_value(v[key].clone()).unwrap_or_default();
        assert!(page.len() <= n, "{path}: {} {key}", page.len());
        got.extend(page.iter().cloned());
        pages += 1;
        assert!(pages <= max_pages, "pagination does not end");
        match link {
            Some(l) => {
                assert!(l.starts_with(prefix), "Link target {l}");
                assert!(l.contains(&format!("n={n}")), "Link keeps n: {l}");
                if link_names_last {
                    assert!(
                        l.contains(&format!("last={}", page.last().expect("non-empty page"))),
                        "Link last= names the page's last entry: {l}"
                    );
                }
                path = l;
            }
            None => break,
        }
    }
    (got, pages)
}

#[tokio::test]
async fn tags_list_and_pagination() {
    let s = Server::start().await;
    let img = s.push_image("paged/repo", "latest", 0).await;
    let mut tags = vec!["latest".to_owned()];
    for t in ["v10", "v2", "A", "_under", "v1.0", "b-1", "z", "v1"] {
        let r = s.put_manifest("paged/repo", t, OCI_MANIFEST, &img.manifest).await;
        assert_eq!(r.status(), 201, "tag {t}");
        tags.push(t.to_owned());
    }
    tags.sort();
    let v = json(s.get("/v2/paged/repo/tags/list").await).await;
    assert_eq!(v["name"], "paged/repo");
    assert_eq!(v["tags"], json!(tags), "all tags in lexical order");

    for n in [1usize, 2, 3, 4, 8, 9] {
        let first = format!("/v2/paged/repo/tags/list?n={n}");
        let (got, pages) = follow_pages(&s, first, "tags", n, "/v2/paged/repo/tags/list?", tags.len() + 1, true).await;
        assert_eq!(got, tags, "pages of {n} put together");
        assert_eq!(pages, tags.len().div_ceil(n).max(1), "number of pages of {n}");
    }
    // last without n; last between tags; last past the end.
    let v = json(s.get("/v2/paged/repo/tags/list?last=v1").await).await;
    let after: Vec<&String> = tags.iter().filter(|t| t.as_str() > "v1").collect();
    assert_eq!(v["tags"], json!(after), "last=v1");
    let v = json(s.get("/v2/paged/repo/tags/list?last=m").await).await;
    let after: Vec<&String> = tags.iter().filter(|t| t.as_str() > "m").collect();
    assert_eq!(v["tags"], json!(after), "last=m (not a tag)");
    let r = s.get("/v2/paged/repo/tags/list?last=zz&n=5").await;
    assert_eq!(r.status(), 200);
    assert!(next_link(&r).is_none(), "no Link after the end");
    let v = json(r).await;
    assert!(v["tags"].as_array().is_none_or(Vec::is_empty), "last past the end: {v}");
    // n=0: an empty page (or a 400), never more.
    let r = s.get("/v2/paged/repo/tags/list?n=0").await;
    let status = r.status().as_u16();
    if status == 200 {
        let v = json(r).await;
        assert!(v["tags"].as_array().is_none_or(Vec::is_empty), "n=0: {v}");
    } else {
        assert_not_5xx(r, "n=0").await;
    }
    for q in ["n=abc", "n=-1", "n=99999999999999999999999", "last="] {
        let r = s.get(&format!("/v2/paged/repo/tags/list?{q}")).await;
        assert_not_5xx(r, &format!("tags/list?{q}")).await;
    }
    // Unknown repository.
    let r = s.get("/v2/never/pushed/tags/list").await;
    assert_error(r, 404, "NAME_UNKNOWN", "tags of an unknown repository").await;

    // The lists above were served from the tag cache: a tag pushed or
    // deleted now shows in the very next list and pages.
    let r = s.put_manifest("paged/repo", "zz-new", OCI_MANIFEST, &img.manifest).await;
    assert_eq!(r.status(), 201, "tag zz-new");
    tags.push("zz-new".to_owned());
    let v = json(s.get("/v2/paged/repo/tags/list").await).await;
    assert_eq!(v["tags"], json!(tags), "a tag pushed after a listing shows at once");
    let v = json(s.get("/v2/paged/repo/tags/list?n=1&last=z").await).await;
    assert_eq!(v["tags"], json!(["zz-new"]), "and in a page after the old last tag");
    assert_eq!(s.delete("/v2/paged/repo/manifests/zz-new").await.status(), 202, "DELETE zz-new");
    tags.pop();
    let v = json(s.get("/v2/paged/repo/tags/list").await).await;
    assert_eq!(v["tags"], json!(tags), "a deleted tag is gone from the next list");
}

#[tokio::test]
async fn catalog_and_pagination() {
    let s = Server::start().await;
    let v = json(s.get("/v2/_catalog").await).await;
    assert_eq!(v["repositories"], json!([]), "empty registry catalog");
    let mut repos = vec![
        "alpha".to_owned(),
        "beta/one".to_owned(),
        "beta/two".to_owned(),
        "gamma".to_owned(),
        "a-b/c.d/e_f".to_owned(),
    ];
    for r in &repos {
        s.push_image(r, "t", 0).await;
    }
    // A repository with only a blob (no manifest) is not listed.
    s.push_blob("blobonly", b"x").await;
    repos.sort();
    let r = s.get("/v2/_catalog").await;
    assert_eq!(r.status(), 200);
    assert!(next_link(&r).is_none());
    let v = json(r).await;
    assert_eq!(v["repositories"], json!(repos));
    for n in [1usize, 2, 4, 5] {
        let first = format!("/v2/_catalog?n={n}");
        let (got, _) = follow_pages(&s, first, "repositories", n, "/v2/_catalog?", repos.len() + 1, false).await;
        assert_eq!(got, repos, "catalog pages of {n}");
    }
    let v = json(s.get("/v2/_catalog?last=beta/one").await).await;
    assert_eq!(v["repositories"], json!(["beta/two", "gamma"]));
    // Deleting the only manifest of a repository removes it from the catalog
    // or keeps it; either way the catalog still answers.
    let r = s.get("/v2/_catalog?n=abc").await;
    assert_not_5xx(r, "_catalog?n=abc").await;
}
