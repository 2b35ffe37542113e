//! Several replicas on one bucket (s3s-fs and Garage): push through A, pull
//! through B; a chunked upload moving between replicas; concurrent pushes of
//! one tag; SIGKILL mid-upload; an abandoned upload cleaned up by another.

use super::*;

/// PATCHes `chunk` at `offset` to `url`; asserts 202 with the new range and
/// returns the next URL.
async fn patch(s: &Server, url: &str, offset: usize, chunk: &[u8]) -> String {
    let end = offset + chunk.len() - 1;
    let r = s.patch_chunk(url, Some(&format!("{offset}-{end}")), chunk).await;
    assert_eq!(r.status(), 202, "{} PATCH {offset}-{end}", s.base);
    assert_eq!(header(&r, "range"), format!("0-{end}"), "{} acknowledged range", s.base);
    s.resolve(&header(&r, "location"))
}

/// A request body that sends `first`, then stalls until the returned sender
/// is dropped (simulating a client still uploading when a server dies).
fn stalled_body(first: Vec<u8>) -> (futures::channel::mpsc::Sender<std::io::Result<Bytes>>, reqwest::Body) {
    let (mut tx, rx) = futures::channel::mpsc::channel::<std::io::Result<Bytes>>(64);
    for piece in first.chunks(256 * 1024) {
        tx.try_send(Ok(Bytes::copy_from_slice(piece))).expect("queue body piece");
    }
    (tx, reqwest::Body::wrap_stream(rx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_bucket_on_s3s_fs() {
    let peer = S3Peer::s3s_fs();
    replicas_suite(&peer, "s3s-fs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_bucket_on_garage() {
    let peer = S3Peer::garage();
    replicas_suite(&peer, "garage").await;
}

async fn replicas_suite(peer: &S3Peer, label: &str) {
    let mut a = replica(peer).await;
    let b = replica(peer).await;
    push_on_one_pull_on_other(&a, &b).await;
    chunked_upload_moves_between_replicas(&a, &b).await;
    concurrent_tag_pushes_stay_consistent(&a, &b, label).await;
    killed_replica_loses_nothing_acknowledged(peer, &mut a, &b).await;
}

async fn push_on_one_pull_on_other(a: &Server, b: &Server) {
    let img = a.push_image("multi/app", "v1", 3).await;
    let other = a.push_image("multi/other", "latest", 1).await;
    assert_serves_image(b, "multi/app", "v1", &img).await;
    assert_serves_image(b, "multi/other", "latest", &other).await;
    let r = b.manifest("GET", "multi/app", &img.digest).await;
    assert_eq!(r.status(), 200, "B: manifest by digest");
    let tags = json(b.get("/v2/multi/app/tags/list").await).await;
    assert_eq!(tags["tags"], serde_json::json!(["v1"]), "B: tags list");
    let catalog = json(b.get("/v2/_catalog").await).await;
    let repos = catalog["repositories"].as_array().expect("catalog array");
    for name in ["multi/app", "multi/other"] {
        assert!(repos.contains(&serde_json::json!(name)), "B: catalog {catalog} lacks {name}");
    }
    // A single-request upload (POST ?digest= with the body) larger than a
    // part, on A; B serves it, also by range.
    let mono = random_bytes(11 * MIB + 99);
    let d = sha256_digest(&mono);
    let r = a
        .req("POST", &format!("/v2/multi/app/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(mono.clone())
        .send()
        .await
        .expect("POST blob");
    assert_eq!(r.status(), 201, "A: single-request upload");
    assert_blob(b, "multi/app", &mono).await;
    let r = b
        .req("GET", &format!("/v2/multi/app/blobs/{d}"))
        .header("range", "bytes=5242000-6000000")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 206, "B: ranged blob GET");
    assert!(r.bytes().await.expect("body")[..] == mono[5_242_000..=6_000_000], "B: ranged bytes differ");
    // A blob pushed on A mounts into another repository on B.
    let layer = sha256_digest(&img.layers[0]);
    let r = b
        .req("POST", &format!("/v2/multi/mounted/blobs/uploads/?mount={layer}&from=multi/app"))
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), 201, "B: cross-repository mount of a blob pushed on A");
    assert_blob(a, "multi/mounted", &img.layers[0]).await;
    // A tag moved on B is seen by A; a manifest deleted on B is gone on A.
    let r = b.put_manifest("multi/app", "v2", OCI_MANIFEST, &other.manifest).await;
    assert_eq!(r.status(), 400, "B: manifest whose blobs multi/app lacks");
    let img2 = b.push_image("multi/app", "v1", 2).await;
    assert_serves_image(a, "multi/app", "v1", &img2).await;
    let r = b.delete(&format!("/v2/multi/app/manifests/{}", img.digest)).await;
    assert_eq!(r.status(), 202, "B: delete manifest");
    assert_eq!(a.manifest("GET", "multi/app", &img.digest).await.status(), 404, "A: deleted manifest");
}

async fn chunked_upload_moves_between_replicas(a: &Server, b: &Server) {
    let repo = "multi/chunked";
    let data = random_bytes(13 * MIB + 12345);
    let digest = sha256_digest(&data);
    // POST and two PATCHes on A: a 3 MiB tail, then 6 MiB crossing a part.
    let url = a.start_upload(repo).await;
    let url = patch(a, &url, 0, &data[..3 * MIB]).await;
    let url = patch(a, &url, 3 * MIB, &data[3 * MIB..9 * MIB]).await;
    // B sees the session's state and continues it.
    let on_b = b.url(&v2_path(&url));
    let r = b.req("GET", &on_b).send().await.expect("status on B");
    assert_eq!(r.status(), 204, "B: upload status");
    assert_eq!(header(&r, "range"), format!("0-{}", 9 * MIB - 1), "B: acknowledged range");
    // An out-of-order chunk on B is refused with the real offset.
    let r = b
        .req("PATCH", &on_b)
        .header("content-range", format!("{}-{}", 3 * MIB, 4 * MIB - 1))
        .body(data[3 * MIB..4 * MIB].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 416, "B: chunk at a stale offset");
    let url = patch(b, &on_b, 9 * MIB, &data[9 * MIB..11 * MIB]).await;
    assert!(url.starts_with(&b.base), "B answers with its own Location: {url}");
    // The final chunk goes with the PUT, on B.
    let r = b.put_final(&url, &digest, None, &data[11 * MIB..]).await;
    assert_eq!(r.status(), 201, "B: complete upload");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    for s in [a, b] {
        assert_blob(s, repo, &data).await;
        let r = s.head(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(header(&r, "content-length"), data.len().to_string(), "{} HEAD length", s.base);
    }
    // The session is gone on both.
    assert_eq!(a.req("GET", &url).send().await.expect("status").status(), 404, "B: finished session");
    assert_eq!(a.req("GET", &a.url(&v2_path(&url))).send().await.expect("status").status(), 404, "A: finished session");
    // And an image over it, pushed on A, pulls on B.
    let img = Image::from_layers(vec![data]);
    a.push_blob(repo, &img.config).await;
    assert_eq!(a.put_manifest(repo, "big", OCI_MANIFEST, &img.manifest).await.status(), 201);
    assert_serves_image(b, repo, "big", &img).await;
}

async fn concurrent_tag_pushes_stay_consistent(a: &Server, b: &Server, label: &str) {
    let repo = "multi/race";
    let mut wins = [0usize; 2];
    for round in 0..10 {
        // Odd rounds: both images share a 6 MiB base layer (more than a part),
        // committed by both replicas at once.
        let (ia, ib) = if round % 2 == 0 {
            (Image::random(2), Image::random(2))
        } else {
            let base = random_bytes(6 * MIB + round);
            (
                Image::from_layers(vec![base.clone(), random_bytes(2000)]),
                Image::from_layers(vec![base, random_bytes(3000)]),
            )
        };
        if round % 2 == 0 {
            // Blobs first, then both manifest PUTs at the same moment.
            for l in std::iter::once(&ia.config).chain(&ia.layers) {
                a.push_blob(repo, l).await;
            }
            for l in std::iter::once(&ib.config).chain(&ib.layers) {
                b.push_blob(repo, l).await;
            }
            let (ra, rb) = tokio::join!(
                a.put_manifest(repo, "race", OCI_MANIFEST, &ia.manifest),
                b.put_manifest(repo, "race", OCI_MANIFEST, &ib.manifest)
            );
            assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (201, 201), "round {round}: both pushes succeed");
        } else {
            // Whole image pushes racing from start to end.
            let (ra, rb) = tokio::join!(push_whole(a, repo, "race", &ia), push_whole(b, repo, "race", &ib));
            assert_eq!((ra, rb), (201, 201), "round {round}: both pushes succeed");
        }
        let da = header(&a.manifest("HEAD", repo, "race").await, "docker-content-digest");
        let db = header(&b.manifest("HEAD", repo, "race").await, "docker-content-digest");
        assert_eq!(da, db, "round {round}: the replicas disagree on {repo}:race");
        let winner = if da == ia.digest {
            wins[0] += 1;
            &ia
        } else if da == ib.digest {
            wins[1] += 1;
            &ib
        } else {
            panic!("round {round}: {repo}:race is {da:?}, neither pushed manifest");
        };
        // The tagged manifest is complete on both replicas.
        assert_serves_image(a, repo, "race", winner).await;
        assert_serves_image(b, repo, "race", winner).await;
        // The loser is still stored by digest (nothing half-written).
        let loser = if std::ptr::eq(winner, &ia) { &ib } else { &ia };
        assert_eq!(a.manifest("HEAD", repo, &loser.digest).await.status(), 200, "round {round}: losing manifest");
    }
    let tags = json(b.get(&format!("/v2/{repo}/tags/list")).await).await;
    assert_eq!(tags["tags"], serde_json::json!(["race"]), "tags list after the races");
    report(&format!(
        "object storage ({label}): concurrent tag pushes, 10 rounds: A won {}, B won {}",
        wins[0], wins[1]
    ));
}

/// Pushes every blob of `img`, then its manifest as `repo:tag`; returns
/// the manifest PUT's status.
async fn push_whole(s: &Server, repo: &str, tag: &str, img: &Image) -> u16 {
    for l in std::iter::once(&img.config).chain(&img.layers) {
        s.push_blob(repo, l).await;
    }
    s.put_manifest(repo, tag, OCI_MANIFEST, &img.manifest).await.status().as_u16()
}

async fn killed_replica_loses_nothing_acknowledged(peer: &S3Peer, a: &mut Server, b: &Server) {
    let repo = "multi/crash";
    // Chunked: 6 MiB (one part and a tail) and 1 MiB acknowledged by A.
    let chunked = random_bytes(16 * MIB + 777);
    let chunked_digest = sha256_digest(&chunked);
    let url = a.start_upload(repo).await;
    let url = patch(a, &url, 0, &chunked[..6 * MIB]).await;
    let url = patch(a, &url, 6 * MIB, &chunked[6 * MIB..7 * MIB]).await;
    let acked = 7 * MIB;
    // Then a PATCH whose body stalls after 7 more MiB (enough for A to have
    // put another part that no session records).
    let (tx_chunk, body) = stalled_body(chunked[acked..acked + 7 * MIB].to_vec());
    let inflight_patch = a.req("PATCH", &url).header("content-type", "application/octet-stream").body(body).send();
    let inflight_patch = tokio::spawn(inflight_patch);

    // Monolithic, single request: POST ?digest= with a 12 MiB body, stalled halfway.
    let mono = random_bytes(12 * MIB);
    let mono_digest = sha256_digest(&mono);
    let (tx_mono, body) = stalled_body(mono[..7 * MIB].to_vec());
    let inflight_mono = tokio::spawn(
        a.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={mono_digest}"))
            .header("content-type", "application/octet-stream")
            .header("content-length", mono.len().to_string())
            .body(body)
            .send(),
    );
    // Monolithic over a session: POST, then PUT ?digest= with the body, stalled.
    let put_data = random_bytes(9 * MIB);
    let put_digest = sha256_digest(&put_data);
    let put_url = a.start_upload(repo).await;
    let (tx_put, body) = stalled_body(put_data[..6 * MIB].to_vec());
    let inflight_put = tokio::spawn(
        a.req("PUT", &with_query(&put_url, &format!("digest={put_digest}")))
            .header("content-type", "application/octet-stream")
            .header("content-length", put_data.len().to_string())
            .body(body)
            .send(),
    );
    // Let A receive the bytes and write parts, then kill it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!inflight_patch.is_finished() && !inflight_mono.is_finished() && !inflight_put.is_finished());
    a.kill9();
    drop((tx_chunk, tx_mono, tx_put));
    for h in [inflight_patch, inflight_mono, inflight_put] {
        let r = h.await.expect("join");
        assert!(r.is_err() || r.as_ref().is_ok_and(|r| !r.status().is_success()), "in-flight request succeeded: {r:?}");
    }

    // Nothing of the monolithic uploads is visible, on B or in the bucket.
    for d in [&mono_digest, &put_digest] {
        assert_eq!(b.head(&format!("/v2/{repo}/blobs/{d}")).await.status(), 404, "B: half-uploaded blob {d}");
        assert!(!bucket_has(peer, &blob_key(d)).await, "half-uploaded blob {d} is in the bucket");
    }
    let r = b.req("GET", &b.url(&v2_path(&put_url))).send().await.expect("status");
    assert_eq!(r.status(), 204, "B: the monolithic upload's session");
    assert_eq!(header(&r, "range"), "0-0", "B: the stalled PUT body must not count as received");

    // The chunked session resumes on B at exactly the acknowledged offset.
    let on_b = b.url(&v2_path(&url));
    let r = b.req("GET", &on_b).send().await.expect("status on B");
    assert_eq!(r.status(), 204, "B: session of the killed replica");
    assert_eq!(header(&r, "range"), format!("0-{}", acked - 1), "B: acknowledged bytes after the kill");
    let next = patch(b, &on_b, acked, &chunked[acked..acked + 6 * MIB]).await;
    let r = b
        .req("PUT", &with_query(&next, &format!("digest={chunked_digest}")))
        .body(chunked[acked + 6 * MIB..].to_vec())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201, "B: completing the session of the killed replica");
    assert_blob(b, repo, &chunked).await;

    // A comes back (no local state to recover) and agrees.
    a.restart().await;
    assert_blob(a, repo, &chunked).await;
    for d in [&mono_digest, &put_digest] {
        assert_eq!(a.head(&format!("/v2/{repo}/blobs/{d}")).await.status(), 404, "A: half-uploaded blob {d}");
    }
    // The monolithic uploads can simply be redone.
    assert_eq!(a.push_blob(repo, &mono).await, mono_digest);
    assert_blob(b, repo, &mono).await;
}

/// A session abandoned by a killed replica (a multipart upload with a part,
/// and a tail) is removed by another replica's expiry: its objects and its
/// multipart upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_upload_of_a_killed_replica_is_cleaned_up_by_another() {
    let peer = S3Peer::s3s_fs();
    let mut a = replica(&peer).await;
    let repo = "multi/abandoned";
    let data = random_bytes(7 * MIB);
    let url = a.start_upload(repo).await;
    patch(&a, &url, 0, &data).await;
    a.kill9();
    let id = v2_path(&url).rsplit('/').next().expect("upload id").to_owned();
    let session_key = format!("{PREFIX}/uploads/{id}/session.json");
    let raw = peer.raw_s3();
    let session: serde_json::Value = serde_json::from_slice(
        &raw.get(&object_store::path::Path::from(session_key.as_str()))
            .await
            .expect("session object")
            .bytes()
            .await
            .expect("session bytes"),
    )
    .expect("session json");
    let upload_id = session["multipart"]["upload_id"].as_str().expect("a multipart upload holds the part").to_owned();
    let dir = format!("{PREFIX}/uploads/{id}");
    let keys = |raw: &object_store::aws::AmazonS3| {
        let raw = raw.clone();
        let dir = dir.clone();
        async move {
            use futures::TryStreamExt as _;
            raw.list(Some(&object_store::path::Path::from(dir.as_str())))
                .map_ok(|m| m.location.to_string())
                .try_collect::<Vec<_>>()
                .await
                .expect("list")
        }
    };
    assert!(keys(&raw).await.len() >= 2, "session and tail objects exist");

    // B sweeps sessions idle for more than 2 s.
    let config = s3_config(&peer, PREFIX).replace("[storage]\n", "[storage]\nupload_ttl = \"2s\"\n");
    let b = Server::start_with(ServerOptions { config: Some(config), ..Default::default() }).await;
    let on_b = b.url(&v2_path(&url));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = b.req("GET", &on_b).send().await.expect("status").status();
        if st == 404 {
            break;
        }
        assert_eq!(st, 204, "B: status of the abandoned session");
        assert!(Instant::now() < deadline, "the abandoned session was not expired within 20 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let left = keys(&raw).await;
    assert!(left.is_empty(), "objects of the expired session remain: {left:?}");
    let data_key = object_store::path::Path::from(format!("{PREFIX}/uploads/{id}/data"));
    let late = object_store::multipart::MultipartStore::put_part(
        &raw,
        &data_key,
        &upload_id,
        5,
        object_store::PutPayload::from_static(b"late"),
    )
    .await;
    assert!(late.is_err(), "the expired session's multipart upload was not aborted");
    assert!(b.logs().contains("removed idle upload sessions"), "B logs the expiry");
}
