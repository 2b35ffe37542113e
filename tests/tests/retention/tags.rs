//! Tag retention per repository (`keep_last`, `keep_pulled_within`), and
//! invalid `[retention]` settings refused by name.

use super::*;

/// keep_last keeps the most recently pushed tags, keep_pulled_within keeps
/// recently pulled ones; a removed tag's manifest goes unless another tag
/// keeps it; repositories outside the pattern are untouched.
#[tokio::test]
async fn tag_retention_keep_last_and_pulled_within() {
    let dist = Distribution::start(None, None).await;
    let s = start(
        &dist,
        "\n[gc]\ngrace = \"1s\"\ninterval = \"1h\"\n[[retention.tags]]\nrepository = \"ci/*\"\n\
         keep_last = 2\nkeep_pulled_within = \"3s\"\n",
    )
    .await;
    let mut imgs = Vec::new();
    for i in 0..4 {
        imgs.push(s.push_image("ci/app", &format!("t{i}"), 1).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // t4 is pushed last and points at t2's manifest.
    assert_eq!(s.put_manifest("ci/app", "t4", OCI_MANIFEST, &imgs[2].manifest).await.status(), 201);
    let other: Vec<Image> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(s.push_image("other/app", &format!("o{i}"), 1).await);
        }
        v
    };
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(s.manifest("GET", "ci/app", "t0").await.status(), 200, "t0 pulled");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let dry = retention(&s, true).await;
    let mut removed: Vec<String> =
        dry["tags_removed"].as_array().expect("tags").iter().filter_map(|t| t.as_str().map(str::to_owned)).collect();
    removed.sort();
    assert_eq!(removed, vec!["ci/app:t1".to_owned(), "ci/app:t2".to_owned()], "{dry}");
    assert_eq!(tags(&s, "ci/app").await, ["t0", "t1", "t2", "t3", "t4"], "dry run removed nothing");

    let (ok, out, err) = cove(&["retention", "--addr", &s.addr.to_string()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("removed tag ci/app:t1"), "{out}");
    assert!(out.contains(&format!("removed manifest ci/app@{}", imgs[1].digest)), "{out}");
    assert!(!out.contains(&format!("manifest ci/app@{}", imgs[2].digest)), "t2's manifest kept by t4: {out}");
    assert_eq!(tags(&s, "ci/app").await, ["t0", "t3", "t4"]);
    assert_eq!(s.manifest("GET", "ci/app", &imgs[1].digest).await.status(), 404, "t1's manifest removed");
    assert!(!blob_path(&s.data_dir, &sha256_digest(&imgs[1].layers[0])).exists(), "t1's layer swept");
    let r = s.manifest("GET", "ci/app", "t4").await;
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.expect("t4")[..], &imgs[2].manifest[..]);
    for (tag, img) in [("t0", &imgs[0]), ("t3", &imgs[3]), ("t4", &imgs[2])] {
        for blob in blobs_of(img) {
            let d = sha256_digest(blob);
            let got = s.get(&format!("/v2/ci/app/blobs/{d}")).await.bytes().await.expect("blob");
            assert_eq!(sha256_digest(&got), d, "blob of {tag}");
        }
    }
    assert_eq!(tags(&s, "other/app").await, ["o0", "o1", "o2"], "other repositories untouched");
    assert_eq!(other.len(), 3);
    let m = scrape(&s).await;
    assert_eq!(m.get("cove_retention_tags_removed_total").copied(), Some(2.0));
}

/// Invalid `[retention]` settings are refused, each naming its key.
#[tokio::test]
async fn invalid_retention_config_is_rejected_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = "[upstreams.\"docker.io\"]\nenabled = false\n[upstreams.\"ghcr.io\"]\nenabled = false\n\
                [upstreams.\"quay.io\"]\nenabled = false\n[upstreams.\"upstream.test\"]\nurl = \"http://127.0.0.1:9\"\n";
    let cases = [
        ("[retention.upstreams.\"nope.example\"]\nmax_age = \"1d\"\n", "retention.upstreams.\"nope.example\""),
        (
            "[retention.upstreams.\"upstream.test\"]\nmax_size = \"12 parsecs\"\n",
            "retention.upstreams.\"upstream.test\".max_size",
        ),
        (
            "[retention.upstreams.\"upstream.test\"]\nmax_age = \"soon\"\n",
            "retention.upstreams.\"upstream.test\".max_age",
        ),
        ("[retention.upstreams.\"upstream.test\"]\n", "set max_size and/or max_age"),
        ("[retention]\ninterval = \"0s\"\n", "retention.interval"),
        ("[[retention.tags]]\nrepository = \"ci/*\"\n", "retention.tags[0]: set keep_last"),
        ("[[retention.tags]]\nrepository = \"CI/**x\"\nkeep_last = 1\n", "retention.tags[0].repository"),
        (
            "[[retention.tags]]\nrepository = \"ci/*\"\nkeep_pulled_within = \"often\"\n",
            "retention.tags[0].keep_pulled_within",
        ),
        ("[retention.upstreams.\"upstream.test\"]\nmax_sise = \"1G\"\n", "max_sise"),
    ];
    for (i, (extra, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, format!("{base}{extra}")).expect("config");
        let (ok, out, err) = cove(&["check-config", "--config", path.to_str().expect("path")]);
        assert!(!ok, "accepted {extra:?}: {out}");
        assert!(err.contains(key), "error for {extra:?} names {key}: {err}");
    }
    // The server refuses to start with one, too.
    let path = dir.path().join("bad0.toml");
    let out = Command::new(cove_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention.upstreams.\"nope.example\""));
    // A valid one passes.
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "{base}[retention]\ninterval = \"30m\"\n[retention.upstreams.\"upstream.test\"]\nmax_size = \"20GiB\"\n\
             max_age = \"30d\"\n[[retention.tags]]\nrepository = \"myorg/ci-*\"\nkeep_last = 10\n\
             keep_pulled_within = \"14d\"\n"
        ),
    )
    .expect("config");
    let (ok, out, err) = cove(&["check-config", "--config", good.to_str().expect("path")]);
    assert!(ok, "{out}{err}");
}
