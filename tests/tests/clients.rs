//! Real clients against the real server: skopeo copies OCI layouts in and
//! out (digests identical); podman builds a FROM-scratch image, pushes it,
//! removes it and pulls it back. A missing client fails the test with the
//! install hint; it never passes silently.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use cove_testkit::peers::skopeo::skopeo;

fn host(s: &Server) -> String {
    s.addr.to_string()
}

/// A two-platform OCI layout: an image index (tagged `ref_name`) over two
/// random images. Returns the index bytes and the images.
fn write_multi_arch_layout(dir: &Path, ref_name: &str) -> (Vec<u8>, Vec<Image>) {
    let images = vec![Image::random(2), Image::random(1)];
    for img in &images {
        write_oci_layout(dir, img, "unused");
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": images[0].digest, "size": images[0].manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": images[1].digest, "size": images[1].manifest.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .expect("index json");
    let d = sha256_digest(&index);
    std::fs::write(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:")), &index).expect("write index blob");
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_INDEX, "digest": d, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).expect("json")).expect("write index.json");
    (index, images)
}

#[tokio::test]
async fn skopeo_copies_an_oci_layout_in_and_out_with_identical_digests() {
    let s = Server::start().await;
    let work = tempfile::tempdir().expect("tmp");
    let src = work.path().join("src");
    let img = Image::random(3);
    write_oci_layout(&src, &img, "v1");

    run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{}/skopeo/app:v1", host(&s)),
    ]));

    // The registry serves the manifest byte for byte under the same digest.
    let r = s.get("/v2/skopeo/app/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), img.digest);
    assert_eq!(r.bytes().await.expect("body")[..], img.manifest[..]);

    // skopeo inspect sees the same digest and layers.
    let out = run(skopeo().args(["inspect", "--tls-verify=false", &format!("docker://{}/skopeo/app:v1", host(&s))]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
    assert_eq!(v["Digest"], serde_json::json!(img.digest), "inspect: {v}");
    let layers: Vec<String> = img.layers.iter().map(|l| sha256_digest(l)).collect();
    assert_eq!(v["Layers"], serde_json::json!(layers), "inspect layers");
    assert!(v["RepoTags"].as_array().is_some_and(|t| t.contains(&serde_json::json!("v1"))), "inspect tags: {v}");
    let raw =
        run(skopeo().args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{}/skopeo/app:v1", host(&s))]));
    assert_eq!(raw.as_bytes(), &img.manifest[..], "inspect --raw differs");

    // And back out to another layout: same manifest digest, same blobs.
    let dst = work.path().join("dst");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{}/skopeo/app:v1", host(&s)),
        &format!("oci:{}:back", dst.display()),
    ]));
    let back = oci_layout_manifest_digest(&dst, "back");
    assert_eq!(back, img.digest, "manifest digest changed on the round trip");
    assert_eq!(oci_layout_blob(&dst, &img.digest), img.manifest);
    assert_eq!(oci_layout_blob(&dst, &sha256_digest(&img.config)), img.config);
    for l in &img.layers {
        assert!(oci_layout_blob(&dst, &sha256_digest(l)) == *l, "layer differs");
    }

    // Registry to registry (another repository): skopeo may mount blobs.
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{}/skopeo/app:v1", host(&s)),
        &format!("docker://{}/skopeo/copy:v2", host(&s)),
    ]));
    let r = s.head("/v2/skopeo/copy/manifests/v2").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), img.digest);

    // skopeo list-tags goes through tags/list.
    let out = run(skopeo().args(["list-tags", "--tls-verify=false", &format!("docker://{}/skopeo/app", host(&s))]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("list-tags json");
    assert_eq!(v["Tags"], serde_json::json!(["v1"]));
}

#[tokio::test]
async fn skopeo_copies_a_multi_arch_index_with_all() {
    let s = Server::start().await;
    let work = tempfile::tempdir().expect("tmp");
    let src = work.path().join("src");
    let (index, images) = write_multi_arch_layout(&src, "multi");
    let index_digest = sha256_digest(&index);
    run(skopeo().args([
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("oci:{}:multi", src.display()),
        &format!("docker://{}/skopeo/multi:1", host(&s)),
    ]));
    let r = s.get("/v2/skopeo/multi/manifests/1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert_eq!(header(&r, "docker-content-digest"), index_digest);
    assert_eq!(r.bytes().await.expect("body")[..], index[..]);
    for img in &images {
        let r = s.get(&format!("/v2/skopeo/multi/manifests/{}", img.digest)).await;
        assert_eq!(r.status(), 200, "child {}", img.digest);
    }
    let dst = work.path().join("dst");
    run(skopeo().args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{}/skopeo/multi:1", host(&s)),
        &format!("oci:{}:back", dst.display()),
    ]));
    assert_eq!(oci_layout_manifest_digest(&dst, "back"), index_digest);
    for img in &images {
        assert_eq!(oci_layout_blob(&dst, &img.digest), img.manifest);
    }
}

#[tokio::test]
async fn podman_builds_pushes_and_pulls_back_a_scratch_image() {
    let s = Server::start().await;
    let podman = Podman::new();
    let ctx = podman.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    let content = random_bytes(20_000);
    std::fs::write(ctx.join("f"), &content).expect("write f");
    std::fs::write(ctx.join("Containerfile"), "FROM scratch\nCOPY f /f\n").expect("Containerfile");
    let image = format!("{}/podman/scratch:1", host(&s));

    run(podman.cmd().args(["build", "-t", &image]).arg(&ctx));
    let digest_file = podman.dir.path().join("pushed.digest");
    run(podman.cmd().args(["push", "--tls-verify=false", "--digestfile"]).arg(&digest_file).arg(&image));
    let pushed = std::fs::read_to_string(&digest_file).expect("digest file").trim().to_owned();
    assert!(pushed.starts_with("sha256:"), "pushed digest {pushed:?}");

    // The registry has it under the tag with that digest.
    let r = s
        .req("GET", "/v2/podman/scratch/manifests/1")
        .header("accept", format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}, {OCI_INDEX}, {DOCKER_LIST}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), pushed);
    let manifest = r.bytes().await.expect("manifest");
    assert_eq!(sha256_digest(&manifest), pushed);

    // The same image as a Docker schema 2 manifest, under another tag.
    let docker_image = format!("{}/podman/scratch:docker", host(&s));
    let docker_digest_file = podman.dir.path().join("docker.digest");
    run(podman
        .cmd()
        .args(["push", "--tls-verify=false", "--format", "v2s2", "--digestfile"])
        .arg(&docker_digest_file)
        .arg(&image)
        .arg(format!("docker://{docker_image}")));
    let docker_digest = std::fs::read_to_string(&docker_digest_file).expect("digest file").trim().to_owned();
    let r = s.manifest("GET", "podman/scratch", "docker").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), DOCKER_MANIFEST, "podman --format v2s2 pushed a Docker manifest");
    assert_eq!(header(&r, "docker-content-digest"), docker_digest);
    assert_eq!(sha256_digest(&r.bytes().await.expect("body")), docker_digest);

    // Remove it locally, pull it back.
    run(podman.cmd().args(["rmi", "-f", &image]));
    run(podman.cmd().args(["pull", "--tls-verify=false", &docker_image]));
    let pulled = run(podman.cmd().args(["image", "inspect", "--format", "{{.Digest}}", &docker_image]));
    assert_eq!(pulled.trim(), docker_digest, "pulled Docker-format digest differs");
    run(podman.cmd().args(["rmi", "-f", &docker_image]));
    let out = run(podman.cmd().args(["images", "-q"]));
    assert!(out.trim().is_empty(), "image still present after rmi: {out}");
    run(podman.cmd().args(["pull", "--tls-verify=false", &image]));
    let pulled = run(podman.cmd().args(["image", "inspect", "--format", "{{.Digest}}", &image]));
    assert_eq!(pulled.trim(), pushed, "pulled digest differs from pushed");

    // The file inside the image is the one we built: export the pulled image
    // and unpack its layer.
    let out_dir = podman.dir.path().join("saved");
    run(podman.cmd().args(["save", "--format", "oci-dir", "-o"]).arg(&out_dir).arg(&image));
    let saved_manifest_digest = oci_layout_manifest_digest(&out_dir, "");
    let saved: serde_json::Value =
        serde_json::from_slice(&oci_layout_blob(&out_dir, &saved_manifest_digest)).expect("json");
    let layer_digest = saved["layers"][0]["digest"].as_str().expect("layer").to_owned();
    let layer_path = out_dir.join("blobs/sha256").join(layer_digest.trim_start_matches("sha256:"));
    let unpack = podman.dir.path().join("unpack");
    std::fs::create_dir_all(&unpack).expect("unpack dir");
    run(Command::new("tar").arg("-xf").arg(&layer_path).arg("-C").arg(&unpack));
    assert!(std::fs::read(unpack.join("f")).expect("f in the layer") == content, "the pulled image's /f differs");
}
