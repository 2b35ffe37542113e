//! The shared [`Upstream`] suite: the real client (cove-upstreams'
//! `OciUpstream`, against distribution and against the fault registry) and
//! [`FakeUpstream`] are held to one contract.
//!
//! - [`run_all`]: a well-behaved upstream holding a [`Fixture`] (one image,
//!   one index of two platforms) answers every method byte for byte, and
//!   says `NotFound` for what it does not hold.
//! - [`faults`]: an upstream whose answers a [`Faults`] switch spoils maps
//!   them the same way: 404 → `NotFound` at once, 5xx → `Unavailable`,
//!   429 + `Retry-After` → `TooManyRequests` with the value and no waiting
//!   out long delays, wrong bytes handed to the caller to catch (never
//!   "corrected"), truncated and stalled bodies never ending as a complete
//!   body, slow bodies arriving whole.
//!
//! [`FaultRegistry`] is the fault registry ([`crate::fault`]) serving a
//! fixture with a switchable [`Fault`], for the real client.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cove_core::upstream::UpstreamError;
use cove_core::{Reference, RepoName, Upstream};

use crate::fake_upstream::{FakeUpstream, Fault};
use crate::fault::{self, BodyMode, Content, FaultServer, Reply, SharedContent};
use crate::layout::{Layout, LayoutImage, LayoutIndex};
use crate::util::{digest, reference, repo, sha256_digest, try_read_all};

/// What the upstream under test holds: `image` tagged `image_tag` and
/// `index` tagged `index_tag`, in `repo`, and nothing else there.
pub struct Fixture {
    pub repo: RepoName,
    pub image: LayoutImage,
    pub image_tag: String,
    pub index: LayoutIndex,
    pub index_tag: String,
    /// The OCI layout holding it all (for skopeo to push).
    pub layout: Layout,
}

impl Fixture {
    /// Builds the fixture's images in an OCI layout at `dir`.
    pub fn build(dir: &Path, repo_name: &str) -> Fixture {
        let mut layout = Layout::new(dir);
        let image = layout.add_image("v1", &[300_000, 1_000]);
        let index = layout.add_index("multi", &["amd64", "arm64"], &[50_000]);
        Fixture { repo: repo(repo_name), image, image_tag: "v1".into(), index, index_tag: "multi".into(), layout }
    }

    /// Stores the fixture in a [`FakeUpstream`].
    pub fn load_fake(&self, fake: &FakeUpstream) {
        fake.add_image(self.repo.as_str(), &self.image_tag, &self.image);
        fake.add_index(self.repo.as_str(), &self.index_tag, &self.index);
    }

    /// Stores the fixture in the fault registry's content (any repository
    /// name serves it).
    pub fn load_content(&self, content: &SharedContent) {
        let mut c = content.lock().expect("lock");
        let imgs = std::iter::once(&self.image).chain(&self.index.images);
        for img in imgs {
            for b in std::iter::once(&img.config).chain(&img.layers) {
                c.add_blob(b.bytes.clone());
            }
            c.add_manifest(&img.manifest.media_type, img.manifest.bytes.clone());
        }
        let d = c.add_manifest(&self.image.manifest.media_type, self.image.manifest.bytes.clone());
        c.tag(&self.image_tag, &d);
        let d = c.add_manifest(&self.index.index.media_type, self.index.index.bytes.clone());
        c.tag(&self.index_tag, &d);
    }
}

/// Runs every well-behaved check.
pub async fn run_all(up: &dyn Upstream, f: &Fixture) {
    up.ping().await.expect("ping a healthy upstream");
    manifests(up, f).await;
    index(up, f).await;
    blobs(up, f).await;
    tags(up, f).await;
    referrers(up, f).await;
    not_found(up, f).await;
}

/// The fixture has no referrers: an upstream with the referrers API lists
/// none, one without it says so (`None`, the caller's cue for the tag
/// schema); neither is an error.
pub async fn referrers(up: &dyn Upstream, f: &Fixture) {
    let subject = digest(&f.image.manifest.digest);
    let r = up.referrers(&f.repo, &subject).await.expect("referrers of a manifest without any");
    assert!(r.as_ref().is_none_or(|l| l.is_empty()), "no referrers expected: {r:?}");
}

/// Manifests by tag and by digest: HEAD has no bytes, GET is byte for byte,
/// both with the announced digest, media type and size.
pub async fn manifests(up: &dyn Upstream, f: &Fixture) {
    let m = &f.image.manifest;
    for r in [reference(&f.image_tag), reference(&m.digest)] {
        let head = up.head_manifest(&f.repo, &r).await.unwrap_or_else(|e| panic!("{}: HEAD {r}: {e}", up.host()));
        assert_eq!(head.digest.to_string(), m.digest, "HEAD {r}: digest");
        assert_eq!(head.media_type, m.media_type, "HEAD {r}: media type");
        assert_eq!(head.size, m.bytes.len() as u64, "HEAD {r}: size");
        assert!(head.bytes.is_none(), "HEAD {r} carries no body");
        let get = up.get_manifest(&f.repo, &r).await.unwrap_or_else(|e| panic!("{}: GET {r}: {e}", up.host()));
        assert_eq!(get.bytes.as_deref(), Some(&m.bytes[..]), "GET {r}: byte for byte");
        assert_eq!(get.digest.to_string(), m.digest, "GET {r}: digest");
        assert_eq!(get.media_type, m.media_type, "GET {r}: media type");
        assert_eq!(get.size, m.bytes.len() as u64, "GET {r}: size");
    }
}

/// The index by tag, and each platform manifest by digest.
pub async fn index(up: &dyn Upstream, f: &Fixture) {
    let i = &f.index.index;
    let idx = up.get_manifest(&f.repo, &reference(&f.index_tag)).await.expect("GET index");
    assert_eq!(idx.media_type, i.media_type);
    assert_eq!(idx.digest.to_string(), i.digest);
    assert_eq!(idx.bytes.as_deref(), Some(&i.bytes[..]), "index byte for byte");
    let head = up.head_manifest(&f.repo, &reference(&f.index_tag)).await.expect("HEAD index");
    assert_eq!((head.digest.to_string(), head.media_type), (i.digest.clone(), i.media_type.clone()));
    for img in &f.index.images {
        let m = up.get_manifest(&f.repo, &reference(&img.manifest.digest)).await.expect("platform manifest");
        assert_eq!(m.bytes.as_deref(), Some(&img.manifest.bytes[..]), "platform manifest byte for byte");
        assert_eq!(m.media_type, img.manifest.media_type);
    }
}

/// Every blob of the image: HEAD size, announced size, streamed bytes.
pub async fn blobs(up: &dyn Upstream, f: &Fixture) {
    for b in std::iter::once(&f.image.config).chain(&f.image.layers) {
        let d = digest(&b.digest);
        assert_eq!(up.head_blob(&f.repo, &d).await.expect("HEAD blob"), b.bytes.len() as u64, "HEAD {d}: size");
        let got = up.get_blob(&f.repo, &d).await.expect("GET blob");
        assert_eq!(got.size, Some(b.bytes.len() as u64), "GET {d}: announced size");
        let bytes = try_read_all(got.stream).await.expect("blob body");
        assert_eq!(sha256_digest(&bytes), b.digest, "GET {d}: bytes match the digest");
    }
}

/// The tag list holds exactly the fixture's tags.
pub async fn tags(up: &dyn Upstream, f: &Fixture) {
    let mut tags = up.tags(&f.repo).await.expect("tags");
    tags.sort();
    let mut want = vec![f.image_tag.clone(), f.index_tag.clone()];
    want.sort();
    assert_eq!(tags, want);
}

/// Unknown tags, digests, blobs and repositories are `NotFound`.
pub async fn not_found(up: &dyn Upstream, f: &Fixture) {
    let missing = digest(&sha256_digest(b"never pushed"));
    let nf = |r: Result<(), UpstreamError>, what: &str| {
        assert!(matches!(r, Err(UpstreamError::NotFound)), "{}: {what}: expected NotFound, got {r:?}", up.host());
    };
    nf(up.head_manifest(&f.repo, &reference("nope")).await.map(drop), "HEAD unknown tag");
    nf(up.get_manifest(&f.repo, &reference("nope")).await.map(drop), "GET unknown tag");
    nf(up.get_manifest(&f.repo, &Reference::Digest(missing.clone())).await.map(drop), "GET unknown digest");
    nf(up.head_blob(&f.repo, &missing).await.map(drop), "HEAD unknown blob");
    nf(up.get_blob(&f.repo, &missing).await.map(drop), "GET unknown blob");
    let absent = repo("suite/absent");
    nf(up.get_manifest(&absent, &reference(&f.image_tag)).await.map(drop), "GET in unknown repository");
    nf(up.tags(&absent).await.map(drop), "tags of unknown repository");
}

/// A switch that spoils an upstream's answers, and its request counter.
pub trait Faults: Send + Sync {
    /// Applies `fault` to every request from now on (`None`: answer well).
    fn inject(&self, fault: Option<Fault>);
    /// Requests that reached the upstream so far.
    fn requests(&self) -> usize;
}

impl Faults for FakeUpstream {
    fn inject(&self, fault: Option<Fault>) {
        self.set_fault(fault);
    }
    fn requests(&self) -> usize {
        self.calls().len()
    }
}

/// Runs every fault check. `up` holds `f` and is spoiled through `faults`;
/// a retrying client must be configured with at most a few fast retries.
pub async fn faults(up: &dyn Upstream, f: &Fixture, faults: &dyn Faults) {
    let layer = &f.image.layers[0];
    let d = digest(&layer.digest);
    let tag = reference(&f.image_tag);

    faults.inject(Some(Fault::Status(404)));
    let before = faults.requests();
    let r = up.get_manifest(&f.repo, &tag).await;
    assert!(matches!(r, Err(UpstreamError::NotFound)), "404 manifest: {r:?}");
    assert!(matches!(up.get_blob(&f.repo, &d).await.map(drop), Err(UpstreamError::NotFound)), "404 blob");
    assert_eq!(faults.requests() - before, 2, "a 404 is final: one request each, no retry");

    faults.inject(Some(Fault::Status(503)));
    let r = up.head_blob(&f.repo, &d).await;
    assert!(matches!(r, Err(UpstreamError::Unavailable(_))), "503: {r:?}");

    faults.inject(Some(Fault::TooManyRequests { retry_after: Some("120".into()) }));
    let (before, t0) = (faults.requests(), std::time::Instant::now());
    match up.get_manifest(&f.repo, &tag).await {
        Err(UpstreamError::TooManyRequests { retry_after }) => assert_eq!(retry_after.as_deref(), Some("120")),
        other => panic!("429: expected TooManyRequests, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "a long Retry-After is not waited out");
    assert_eq!(faults.requests() - before, 1, "a long Retry-After goes back to the caller at once");

    faults.inject(Some(Fault::WrongBytes));
    let body = try_read_all(up.get_blob(&f.repo, &d).await.expect("GET spoiled blob").stream).await;
    assert!(body.is_err() || body.is_ok_and(|b| sha256_digest(&b) != layer.digest), "wrong bytes are not corrected");
    match up.get_manifest(&f.repo, &tag).await {
        Ok(m) => {
            let bytes = m.bytes.expect("GET has bytes");
            assert_ne!(sha256_digest(&bytes), m.digest.to_string(), "wrong manifest bytes reach the caller to verify");
        }
        Err(e) => assert!(matches!(e, UpstreamError::Invalid(_)), "wrong manifest bytes: {e:?}"),
    }

    faults.inject(Some(Fault::Truncate(10_000)));
    let body = try_read_all(up.get_blob(&f.repo, &d).await.expect("GET truncated blob: head arrives").stream).await;
    assert!(body.is_err(), "a truncated body ends with an error, got {} bytes", body.map(|b| b.len()).unwrap_or(0));

    faults.inject(Some(Fault::Stall(10_000)));
    let stalled = tokio::time::timeout(Duration::from_secs(3), async {
        try_read_all(up.get_blob(&f.repo, &d).await.map_err(std::io::Error::other)?.stream).await
    })
    .await;
    assert!(!matches!(stalled, Ok(Ok(_))), "a stalled body never completes");

    faults.inject(Some(Fault::Slow { chunk: 64, every: Duration::from_millis(2) }));
    let cfg = &f.image.config;
    let b = try_read_all(up.get_blob(&f.repo, &digest(&cfg.digest)).await.expect("slow blob").stream).await;
    assert_eq!(sha256_digest(&b.expect("slow body")), cfg.digest, "a slow body arrives whole");

    faults.inject(None);
    manifests(up, f).await;
}

/// The fault registry serving a [`Fixture`], spoiled by a switchable
/// [`Fault`]: the real HTTP counterpart of [`FakeUpstream`]'s faults.
pub struct FaultRegistry {
    pub server: FaultServer,
    fault: Arc<Mutex<Option<Fault>>>,
}

impl FaultRegistry {
    /// Starts serving `f`.
    pub async fn start(f: &Fixture) -> FaultRegistry {
        let content = Content::shared();
        f.load_content(&content);
        let fault: Arc<Mutex<Option<Fault>>> = Arc::default();
        let sw = fault.clone();
        let server = FaultServer::start(move |req| {
            let good = fault::serve(&content, req);
            let is_body = req.method == "GET" && good.status == 200;
            let is_blob = fault::blob_of(req).is_some();
            match sw.lock().expect("lock").clone() {
                None => good,
                Some(Fault::Status(s)) => Reply::error(s, "FAULT"),
                Some(Fault::TooManyRequests { retry_after }) => match retry_after {
                    Some(v) => Reply::error(429, "TOOMANYREQUESTS").header("Retry-After", v),
                    None => Reply::error(429, "TOOMANYREQUESTS"),
                },
                Some(Fault::WrongBytes) if is_body => {
                    let mut v = good.body.to_vec();
                    if let Some(b) = v.first_mut() {
                        *b ^= 0xff;
                    }
                    Reply { body: Bytes::from(v), ..good }
                }
                Some(Fault::Truncate(n)) if is_body && is_blob => good.mode(BodyMode::Truncate(n)),
                Some(Fault::Stall(n)) if is_body && is_blob => {
                    good.mode(BodyMode::Throttle { chunk: n, every: Duration::from_secs(3600) })
                }
                Some(Fault::Slow { chunk, every }) if is_body && is_blob => {
                    good.mode(BodyMode::Throttle { chunk, every })
                }
                Some(_) => good,
            }
        })
        .await;
        FaultRegistry { server, fault }
    }
}

impl Faults for FaultRegistry {
    fn inject(&self, fault: Option<Fault>) {
        *self.fault.lock().expect("lock") = fault;
    }
    fn requests(&self) -> usize {
        self.server.requests().len()
    }
}
