//! [`FakeUpstream`]: an in-memory [`Upstream`] holding tags, manifests and
//! blobs per repository, with faults a test switches on ([`Fault`]: an
//! error status, 429 with `Retry-After`, wrong bytes, a truncated, slow or
//! stalled body) and a log of every call. For engine tests that need an
//! upstream without HTTP; the [`crate::suites::upstream`] suite holds it to
//! the same contract as the real client.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use cove_core::upstream::{UpstreamBlob, UpstreamError, UpstreamManifest};
use cove_core::{ByteStream, Digest, Reference, RepoName, Upstream};
use futures::StreamExt as _;

use crate::layout::{LayoutImage, LayoutIndex};

/// What the fake does instead of answering well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An HTTP status as a registry would send it: 404 → `NotFound`,
    /// 401/403 → `Unauthorized`, 5xx → `Unavailable`, anything else
    /// `Invalid`.
    Status(u16),
    /// 429, with this `Retry-After` value if any.
    TooManyRequests { retry_after: Option<String> },
    /// Blob bodies and manifest bytes arrive with their first byte flipped
    /// (the announced digest stays): the caller must notice.
    WrongBytes,
    /// Blob bodies end with an `UnexpectedEof` error after this many bytes.
    Truncate(usize),
    /// Blob bodies yield this many bytes and then nothing, forever.
    Stall(usize),
    /// Blob bodies arrive `chunk` bytes at a time, `every` apart.
    Slow { chunk: usize, every: Duration },
}

/// One call the fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// `head_manifest`, `get_manifest`, `head_blob`, `get_blob`, `tags`,
    /// `referrers`, `ping`.
    pub op: &'static str,
    /// The repository (empty for `ping`).
    pub repo: String,
    /// The reference or digest asked for (empty for `tags` and `ping`).
    pub what: String,
}

#[derive(Default)]
struct Repo {
    tags: BTreeMap<String, Digest>,
    manifests: HashMap<Digest, (String, Bytes)>,
    blobs: HashMap<Digest, Bytes>,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    /// Whether `referrers` answers as a registry with the referrers API
    /// (listing stored manifests whose `subject` is the digest) or as one
    /// without it (`Ok(None)`, a 404).
    no_referrers_api: bool,
    /// What `rate_limit` reports.
    rate_limit: Option<cove_core::upstream::RateLimit>,
    /// The fault and how many more calls it applies to.
    fault: Option<(Fault, usize)>,
    calls: Vec<Call>,
}

/// An in-memory upstream; see the module docs.
pub struct FakeUpstream {
    host: String,
    state: Mutex<State>,
}

/// Bodies are handed out in pieces of this size.
const PIECE: usize = 64 * 1024;

impl FakeUpstream {
    /// An empty upstream standing for origin `host`.
    pub fn new(host: &str) -> FakeUpstream {
        FakeUpstream { host: host.to_owned(), state: Mutex::new(State::default()) }
    }

    fn with_repo<T>(&self, repo: &str, f: impl FnOnce(&mut Repo) -> T) -> T {
        f(self.state.lock().expect("lock").repos.entry(repo.to_owned()).or_default())
    }

    /// Stores a blob in `repo`; returns its digest.
    pub fn add_blob(&self, repo: &str, bytes: impl Into<Bytes>) -> Digest {
        let bytes = bytes.into();
        let d = Digest::sha256_of(&bytes);
        self.with_repo(repo, |r| r.blobs.insert(d.clone(), bytes));
        d
    }

    /// Stores a manifest in `repo`; returns its digest.
    pub fn add_manifest(&self, repo: &str, media_type: &str, bytes: impl Into<Bytes>) -> Digest {
        let bytes = bytes.into();
        let d = Digest::sha256_of(&bytes);
        self.with_repo(repo, |r| r.manifests.insert(d.clone(), (media_type.to_owned(), bytes)));
        d
    }

    /// Points `tag` of `repo` at `digest` (which should be a stored manifest).
    pub fn tag(&self, repo: &str, tag: &str, digest: &Digest) {
        self.with_repo(repo, |r| r.tags.insert(tag.to_owned(), digest.clone()));
    }

    /// Removes `tag` from `repo`.
    pub fn untag(&self, repo: &str, tag: &str) {
        self.with_repo(repo, |r| r.tags.remove(tag));
    }

    /// Stores an image built by [`crate::layout::Layout`] (manifest, config,
    /// layers), tagged `tag` unless empty; returns the manifest digest.
    pub fn add_image(&self, repo: &str, tag: &str, img: &LayoutImage) -> Digest {
        for b in std::iter::once(&img.config).chain(&img.layers) {
            self.add_blob(repo, b.bytes.clone());
        }
        let d = self.add_manifest(repo, &img.manifest.media_type, img.manifest.bytes.clone());
        if !tag.is_empty() {
            self.tag(repo, tag, &d);
        }
        d
    }

    /// Stores an index and its platform images, the index tagged `tag`;
    /// returns the index digest.
    pub fn add_index(&self, repo: &str, tag: &str, idx: &LayoutIndex) -> Digest {
        for img in &idx.images {
            self.add_image(repo, "", img);
        }
        let d = self.add_manifest(repo, &idx.index.media_type, idx.index.bytes.clone());
        self.tag(repo, tag, &d);
        d
    }

    /// Answers `referrers` as a registry without the referrers API (as
    /// distribution 2.8: clients use the tag schema), or with it again.
    pub fn set_referrers_api(&self, on: bool) {
        self.state.lock().expect("lock").no_referrers_api = !on;
    }

    /// Announces `remaining` of `limit` pulls left (now, no window), as
    /// Docker Hub's rate-limit headers do; `None` announces nothing.
    pub fn set_rate_limit(&self, limit_remaining: Option<(u64, u64)>) {
        self.state.lock().expect("lock").rate_limit = limit_remaining.map(|(limit, remaining)| {
            cove_core::upstream::RateLimit { limit, remaining, window: None, observed: std::time::SystemTime::now() }
        });
    }

    /// Applies `fault` to every call from now on (`None`: answer well again).
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.state.lock().expect("lock").fault = fault.map(|f| (f, usize::MAX));
    }

    /// Applies `fault` to the next `n` calls only.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.state.lock().expect("lock").fault = Some((fault, n));
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("lock").calls.clone()
    }

    /// How many calls so far were `op` (`"get_blob"`, …).
    pub fn count(&self, op: &str) -> usize {
        self.state.lock().expect("lock").calls.iter().filter(|c| c.op == op).count()
    }

    /// Records a call and returns the fault that applies to it, if any.
    fn enter(&self, op: &'static str, repo: &str, what: &str) -> Option<Fault> {
        let mut st = self.state.lock().expect("lock");
        st.calls.push(Call { op, repo: repo.to_owned(), what: what.to_owned() });
        let (fault, left) = st.fault.as_mut()?;
        let f = fault.clone();
        *left -= 1;
        if *left == 0 {
            st.fault = None;
        }
        Some(f)
    }

    fn manifest(&self, op: &'static str, repo: &RepoName, reference: &Reference, body: bool) -> ManifestResult {
        let fault = self.enter(op, repo.as_str(), &reference.to_string());
        if let Some(e) = fault.as_ref().and_then(status_error) {
            return Err(e);
        }
        let st = self.state.lock().expect("lock");
        let r = st.repos.get(repo.as_str()).ok_or(UpstreamError::NotFound)?;
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => r.tags.get(t.as_str()).cloned().ok_or(UpstreamError::NotFound)?,
        };
        let (media_type, bytes) = r.manifests.get(&digest).cloned().ok_or(UpstreamError::NotFound)?;
        let size = bytes.len() as u64;
        let bytes = match fault {
            Some(Fault::WrongBytes) => flip_first(bytes),
            _ => bytes,
        };
        Ok(UpstreamManifest { digest, media_type, size, bytes: body.then_some(bytes) })
    }

    fn blob(
        &self,
        op: &'static str,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(Bytes, Option<Fault>), UpstreamError> {
        let fault = self.enter(op, repo.as_str(), &digest.to_string());
        if let Some(e) = fault.as_ref().and_then(status_error) {
            return Err(e);
        }
        let st = self.state.lock().expect("lock");
        let bytes = st.repos.get(repo.as_str()).and_then(|r| r.blobs.get(digest)).cloned();
        Ok((bytes.ok_or(UpstreamError::NotFound)?, fault))
    }
}

type ManifestResult = Result<UpstreamManifest, UpstreamError>;

/// The error a status-like fault stands for (`None` for body faults).
fn status_error(f: &Fault) -> Option<UpstreamError> {
    match f {
        Fault::Status(404) => Some(UpstreamError::NotFound),
        Fault::Status(s @ (401 | 403)) => Some(UpstreamError::Unauthorized(format!("status {s}"))),
        Fault::Status(s) if *s >= 500 => Some(UpstreamError::Unavailable(format!("status {s}"))),
        Fault::Status(s) => Some(UpstreamError::Invalid(format!("unexpected status {s}"))),
        Fault::TooManyRequests { retry_after } => {
            Some(UpstreamError::TooManyRequests { retry_after: retry_after.clone() })
        }
        _ => None,
    }
}

fn flip_first(bytes: Bytes) -> Bytes {
    let mut v = bytes.to_vec();
    if let Some(b) = v.first_mut() {
        *b ^= 0xff;
    }
    Bytes::from(v)
}

/// `bytes` as a body, shaped by `fault`.
fn body(bytes: Bytes, fault: Option<Fault>) -> ByteStream {
    let pieces = |b: Bytes, n: usize| -> Vec<std::io::Result<Bytes>> {
        (0..b.len()).step_by(n.max(1)).map(|i| Ok(b.slice(i..(i + n.max(1)).min(b.len())))).collect()
    };
    match fault {
        Some(Fault::WrongBytes) => Box::pin(futures::stream::iter(pieces(flip_first(bytes), PIECE))),
        Some(Fault::Truncate(n)) => {
            let mut v = pieces(bytes.slice(..n.min(bytes.len())), PIECE);
            v.push(Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "upstream body cut short")));
            Box::pin(futures::stream::iter(v))
        }
        Some(Fault::Stall(n)) => Box::pin(
            futures::stream::iter(pieces(bytes.slice(..n.min(bytes.len())), PIECE)).chain(futures::stream::pending()),
        ),
        Some(Fault::Slow { chunk, every }) => {
            Box::pin(futures::stream::iter(pieces(bytes, chunk)).then(move |c| async move {
                tokio::time::sleep(every).await;
                c
            }))
        }
        _ => Box::pin(futures::stream::iter(pieces(bytes, PIECE))),
    }
}

#[async_trait::async_trait]
impl Upstream for FakeUpstream {
    fn host(&self) -> &str {
        &self.host
    }

    async fn head_manifest(&self, repo: &RepoName, reference: &Reference) -> ManifestResult {
        self.manifest("head_manifest", repo, reference, false)
    }

    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> ManifestResult {
        self.manifest("get_manifest", repo, reference, true)
    }

    async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64, UpstreamError> {
        self.blob("head_blob", repo, digest).map(|(b, _)| b.len() as u64)
    }

    async fn get_blob(&self, repo: &RepoName, digest: &Digest) -> Result<UpstreamBlob, UpstreamError> {
        let (bytes, fault) = self.blob("get_blob", repo, digest)?;
        Ok(UpstreamBlob { size: Some(bytes.len() as u64), stream: body(bytes, fault) })
    }

    async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, UpstreamError> {
        if let Some(e) = self.enter("tags", repo.as_str(), "").as_ref().and_then(status_error) {
            return Err(e);
        }
        let st = self.state.lock().expect("lock");
        let r = st.repos.get(repo.as_str()).ok_or(UpstreamError::NotFound)?;
        Ok(r.tags.keys().cloned().collect())
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Option<Vec<cove_core::manifest::Descriptor>>, UpstreamError> {
        if let Some(e) = self.enter("referrers", repo.as_str(), &subject.to_string()).as_ref().and_then(status_error) {
            return Err(e);
        }
        let st = self.state.lock().expect("lock");
        if st.no_referrers_api {
            return Ok(None);
        }
        let Some(r) = st.repos.get(repo.as_str()) else {
            return Ok(Some(Vec::new()));
        };
        let mut list: Vec<_> = r
            .manifests
            .iter()
            .filter_map(|(d, (mt, bytes))| {
                let p = cove_core::manifest::parse_manifest(bytes, Some(mt)).ok()?;
                (p.subject.as_ref()?.digest == *subject).then(|| p.referrer_descriptor(d, bytes.len() as u64))
            })
            .collect();
        list.sort_by_key(|d| d.digest.to_string());
        Ok(Some(list))
    }

    async fn ping(&self) -> Result<(), UpstreamError> {
        match self.enter("ping", "", "").as_ref().and_then(status_error) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    /// Always healthy: the fake fails each call as told, it has no breaker.
    fn health(&self) -> cove_core::upstream::UpstreamHealth {
        cove_core::upstream::UpstreamHealth { healthy: true, ..Default::default() }
    }

    fn rate_limit(&self) -> Option<cove_core::upstream::RateLimit> {
        self.state.lock().expect("lock").rate_limit
    }
}
