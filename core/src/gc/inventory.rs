//! The mark phase's listing, shared by garbage collection and retention:
//! every manifest of a repository with what it references, and its tags.
//! Listing happens after a run's `t0`, so anything written later is
//! protected by the guard instead.
//!
//! Listings are kept between runs, one per repository, so they are stored
//! densely: a listing run interns every digest and tag name it meets once
//! ([`Symbols`], shared by the repositories it listed), and each
//! repository is one allocation of `u32` words that refer to them
//! ([`RepoInventory`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::GcError;
use crate::digest::Digest;
use crate::manifest::parse_manifest;
use crate::name::{RepoName, Tag};
use crate::storage::{RepoIndex, Storage};

/// How often a run lists every repository again although nothing says it
/// changed (the full verification pass).
pub const FULL_LISTING_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Every repository's listing, by name.
pub(crate) type Repos = BTreeMap<RepoName, RepoInventory>;

/// Every repository's listing, kept between runs: a run lists again only
/// the repositories written since the previous one (the storage wrapper
/// tells the [`RepoIndex`]; on a shared store so do the other replicas'
/// change records), and everything at the first run, every
/// [`FULL_LISTING_EVERY`], after a failed run or when the index cannot
/// vouch that it saw every change. Manifests are immutable by digest and
/// tags only change through a write the index hears of, so an unchanged
/// repository's listing is what listing it again would return. Runs are
/// one at a time (the guard's run lock), so this is never listed twice at
/// once.
#[derive(Default)]
pub struct Inventories {
    kept: tokio::sync::Mutex<Option<Kept>>,
}

struct Kept {
    /// Shared with the last run's [`Listing`]; changed in place by the next
    /// run once that is gone.
    repos: Arc<Repos>,
    full_at: Instant,
}

/// One run's listing.
pub(crate) struct Listing {
    pub(crate) repos: Arc<Repos>,
    /// Repositories listed from the store this run (all of them on a full
    /// listing).
    pub(crate) relisted: usize,
    pub(crate) full: bool,
}

impl Inventories {
    /// Every repository's listing as of now (see the type's docs).
    pub(crate) async fn list(&self, storage: &dyn Storage, index: Option<&RepoIndex>) -> Result<Listing, GcError> {
        let mut kept = self.kept.lock().await;
        // The other replicas' latest records first (on a shared store); a
        // failed read means changes may be unseen: list everything.
        let polled = match index {
            Some(i) => i
                .poll(storage)
                .await
                .map_err(
                    |e| tracing::warn!(error = %e, "cannot read the other replicas' changes; listing every repository"),
                )
                .is_ok(),
            None => false,
        };
        // Taken before anything is listed: a write from here on counts for
        // the next run.
        let changed = index.and_then(RepoIndex::take_changed).filter(|_| polled);
        // Out of the mutex while listing: a failed run leaves nothing kept,
        // and a full listing does not hold the old one beside the new.
        let fresh = kept.take().filter(|k| k.full_at.elapsed() < FULL_LISTING_EVERY);
        let incremental = match (fresh, changed) {
            (Some(k), Some(changed)) => Some((k, changed)),
            _ => None,
        };
        let result = match incremental {
            Some((k, changed)) => relist(storage, index, k.repos, changed)
                .await
                .map(|(repos, relisted)| (Listing { repos, relisted, full: false }, k.full_at)),
            None => list_all(storage, index)
                .await
                .map(|repos| (Listing { relisted: repos.len(), repos: Arc::new(repos), full: true }, Instant::now())),
        };
        match result {
            Ok((listing, full_at)) => {
                *kept = Some(Kept { repos: listing.repos.clone(), full_at });
                Ok(listing)
            }
            Err(e) => {
                // The changes taken are lost with this run: list everything next time.
                if let Some(i) = index {
                    i.all_changed();
                }
                Err(e)
            }
        }
    }
}

/// The index's copy of `repo` when it has one, so a kept listing holds no
/// second copy of the name.
fn shared_name(index: Option<&RepoIndex>, repo: RepoName) -> RepoName {
    index.and_then(|i| i.read(|names| names.get(&repo).cloned()).flatten()).unwrap_or(repo)
}

async fn list_all(storage: &dyn Storage, index: Option<&RepoIndex>) -> Result<Repos, GcError> {
    use futures::StreamExt as _;
    let names = storage.repo_list().await?;
    let mut symbols = Interner::default();
    let mut listed = Vec::with_capacity(names.len());
    let mut reads = std::pin::pin!(read_all(storage, names, false));
    while let Some((repo, raw)) = reads.next().await {
        // Not checked for existence: always `Some`.
        if let Some(raw) = raw? {
            listed.push((shared_name(index, repo), raw.encode(&mut symbols)?));
        }
    }
    let symbols = symbols.finish();
    Ok(listed.into_iter().map(|(repo, words)| (repo, RepoInventory { symbols: symbols.clone(), words })).collect())
}

async fn relist(
    storage: &dyn Storage,
    index: Option<&RepoIndex>,
    mut repos: Arc<Repos>,
    changed: HashSet<RepoName>,
) -> Result<(Arc<Repos>, usize), GcError> {
    use futures::StreamExt as _;
    let relisted = changed.len();
    let mut symbols = Interner::default();
    let mut listed = Vec::with_capacity(changed.len());
    let mut reads = std::pin::pin!(read_all(storage, changed.into_iter().collect(), true));
    while let Some((repo, raw)) = reads.next().await {
        let words = match raw? {
            Some(raw) => Some(raw.encode(&mut symbols)?),
            None => None,
        };
        listed.push((repo, words));
    }
    if listed.is_empty() {
        return Ok((repos, relisted)); // nothing to change: no copy even if shared
    }
    let symbols = symbols.finish();
    // In place unless the previous run's listing is still held somewhere.
    let map = Arc::make_mut(&mut repos);
    for (repo, words) in listed {
        match words {
            Some(words) => {
                map.insert(shared_name(index, repo), RepoInventory { symbols: symbols.clone(), words });
            }
            None => {
                map.remove(&repo);
            }
        }
    }
    Ok((repos, relisted))
}

/// The digests and tag names one listing run met, each held once; the
/// repositories it listed refer to them by position.
#[derive(Default)]
pub(crate) struct Symbols {
    digests: Box<[Digest]>,
    tags: Box<[Box<str>]>,
}

/// Builds a run's [`Symbols`].
#[derive(Default)]
struct Interner {
    digests: HashMap<Digest, u32>,
    tags: HashMap<Box<str>, u32>,
}

/// Marks an absent subject in a manifest record.
const NONE: u32 = u32::MAX;

/// A count or position as a word (a listing of 4 billion of anything does
/// not fit in memory anyway).
fn word(n: usize) -> Result<u32, GcError> {
    u32::try_from(n).ok().filter(|w| *w != NONE).ok_or(GcError::ListingTooLarge)
}

fn push_u64(words: &mut Vec<u32>, n: u64) {
    words.push(n as u32);
    words.push((n >> 32) as u32);
}

impl Interner {
    fn digest(&mut self, d: Digest) -> Result<u32, GcError> {
        if let Some(id) = self.digests.get(&d) {
            return Ok(*id);
        }
        let id = word(self.digests.len())?;
        self.digests.insert(d, id);
        Ok(id)
    }

    fn tag(&mut self, t: String) -> Result<u32, GcError> {
        if let Some(id) = self.tags.get(t.as_str()) {
            return Ok(*id);
        }
        let id = word(self.tags.len())?;
        self.tags.insert(t.into_boxed_str(), id);
        Ok(id)
    }

    fn finish(self) -> Arc<Symbols> {
        fn by_id<T>(map: HashMap<T, u32>) -> Box<[T]> {
            let mut all: Vec<(T, u32)> = map.into_iter().collect();
            all.sort_unstable_by_key(|(_, id)| *id);
            all.into_iter().map(|(v, _)| v).collect()
        }
        Arc::new(Symbols { digests: by_id(self.digests), tags: by_id(self.tags) })
    }
}

/// One repository as read from the store, before encoding.
struct Raw {
    manifests: Vec<ManifestEntry>,
    tags: Vec<(String, Digest)>,
}

impl Raw {
    fn encode(self, symbols: &mut Interner) -> Result<Arc<[u32]>, GcError> {
        encode(self.manifests, self.tags, symbols)
    }
}

/// Repositories read from the store at once by a listing run (each is a
/// few requests in a row: on an object store, tens of milliseconds).
const READ_AHEAD: usize = 8;

/// Reads `names` with [`READ_AHEAD`] in flight, yielding them in order;
/// with `check`, each is first asked for ([`Storage::repo_exists`]) and is
/// `None` when gone.
fn read_all<'a>(
    storage: &'a dyn Storage,
    names: Vec<RepoName>,
    check: bool,
) -> impl futures::Stream<Item = (RepoName, Result<Option<Raw>, GcError>)> + 'a {
    use futures::StreamExt as _;
    futures::stream::iter(names)
        .map(move |repo| async move {
            let raw = async {
                if check && !storage.repo_exists(&repo).await? {
                    return Ok(None);
                }
                RepoInventory::read(storage, &repo).await.map(Some)
            }
            .await;
            (repo, raw)
        })
        .buffered(READ_AHEAD)
}

/// One manifest as listed, before encoding.
struct ManifestEntry {
    digest: Digest,
    size: u64,
    /// Config and layers, with the sizes their descriptors give.
    blobs: Vec<(Digest, u64)>,
    /// An index's child manifests.
    children: Vec<Digest>,
    /// The manifest this one refers to (a referrer's subject).
    subject: Option<Digest>,
}

/// Encodes one repository: `[manifests, tags, offset of each manifest
/// record (in digest order)…, records…, (tag, digest) pairs (in tag
/// order)…]`, a record being `[digest, size (2 words), subject or NONE,
/// blobs, children, (blob, size (2 words))…, child…]`. Of entries with the
/// same key the last one counts.
fn encode(
    mut manifests: Vec<ManifestEntry>,
    mut tags: Vec<(String, Digest)>,
    symbols: &mut Interner,
) -> Result<Arc<[u32]>, GcError> {
    manifests.reverse();
    manifests.sort_by(|a, b| a.digest.cmp(&b.digest));
    manifests.dedup_by(|a, b| a.digest == b.digest);
    tags.reverse();
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    tags.dedup_by(|a, b| a.0 == b.0);
    let record_words: usize = manifests.iter().map(|m| 6 + 3 * m.blobs.len() + m.children.len()).sum();
    let mut words = Vec::with_capacity(2 + manifests.len() + record_words + 2 * tags.len());
    words.push(word(manifests.len())?);
    words.push(word(tags.len())?);
    let records_at = 2 + manifests.len();
    let mut at = records_at;
    for m in &manifests {
        words.push(word(at)?);
        at += 6 + 3 * m.blobs.len() + m.children.len();
    }
    for m in manifests {
        words.push(symbols.digest(m.digest)?);
        push_u64(&mut words, m.size);
        words.push(match m.subject {
            Some(s) => symbols.digest(s)?,
            None => NONE,
        });
        words.push(word(m.blobs.len())?);
        words.push(word(m.children.len())?);
        for (b, size) in m.blobs {
            words.push(symbols.digest(b)?);
            push_u64(&mut words, size);
        }
        for c in m.children {
            words.push(symbols.digest(c)?);
        }
    }
    for (t, d) in tags {
        words.push(symbols.tag(t)?);
        words.push(symbols.digest(d)?);
    }
    Ok(Arc::from(words))
}

/// One repository as listed: its manifests by digest, with what each
/// references, and its tags (see [`encode`] for the layout). Cloning it
/// copies two pointers.
#[derive(Clone)]
pub(crate) struct RepoInventory {
    symbols: Arc<Symbols>,
    words: Arc<[u32]>,
}

/// One manifest of a [`RepoInventory`].
#[derive(Clone, Copy)]
pub(crate) struct ManifestRefs<'a> {
    inv: &'a RepoInventory,
    /// Where its record starts in `inv.words`.
    at: usize,
}

impl<'a> ManifestRefs<'a> {
    fn w(&self, i: usize) -> u32 {
        self.inv.words[self.at + i]
    }

    fn u64_at(&self, i: usize) -> u64 {
        u64::from(self.w(i)) | (u64::from(self.w(i + 1)) << 32)
    }

    pub(crate) fn digest(&self) -> &'a Digest {
        self.inv.digest(self.inv.words[self.at])
    }

    /// Bytes of the manifest itself.
    pub(crate) fn size(&self) -> u64 {
        self.u64_at(1)
    }

    /// The manifest this one refers to (a referrer's subject).
    pub(crate) fn subject(&self) -> Option<&'a Digest> {
        let inv = self.inv;
        Some(self.w(3)).filter(|s| *s != NONE).map(|s| inv.digest(s))
    }

    /// Config and layers, with the sizes their descriptors give.
    pub(crate) fn blobs(&self) -> impl Iterator<Item = (&'a Digest, u64)> + 'a {
        let (inv, start, n) = (self.inv, self.at + 6, self.w(4) as usize);
        inv.words[start..start + 3 * n].chunks_exact(3).map(move |c| {
            let size = u64::from(c[1]) | (u64::from(c[2]) << 32);
            (inv.digest(c[0]), size)
        })
    }

    pub(crate) fn blob_digests(&self) -> impl Iterator<Item = &'a Digest> + 'a {
        self.blobs().map(|(d, _)| d)
    }

    /// An index's child manifests.
    pub(crate) fn children(&self) -> impl Iterator<Item = &'a Digest> + 'a {
        let inv = self.inv;
        let start = self.at + 6 + 3 * self.w(4) as usize;
        inv.words[start..start + self.w(5) as usize].iter().map(move |c| inv.digest(*c))
    }
}

impl RepoInventory {
    /// Reads `repo`'s manifests and tags from the store (interned and
    /// encoded afterwards, in listing order, by [`Raw::encode`]). A
    /// manifest that does not parse stops the run: what it references is
    /// unknown, so nothing may be removed.
    async fn read(storage: &dyn Storage, repo: &RepoName) -> Result<Raw, GcError> {
        let mut manifests = Vec::new();
        for digest in storage.manifest_list(repo).await? {
            let Some(m) = storage.manifest_get(repo, &digest).await? else {
                continue; // deleted meanwhile
            };
            let p = parse_manifest(&m.bytes, Some(&m.media_type)).map_err(|e| GcError::Unparsable {
                repo: repo.clone(),
                digest: digest.clone(),
                reason: e.message.clone(),
            })?;
            manifests.push(ManifestEntry {
                size: m.bytes.len() as u64,
                blobs: p.config.iter().chain(&p.layers).map(|d| (d.digest.clone(), d.size)).collect(),
                children: p.manifests.iter().map(|d| d.digest.clone()).collect(),
                subject: p.subject.map(|s| s.digest),
                digest,
            });
        }
        let mut tags = Vec::new();
        for tag in storage.tag_list(repo).await?.unwrap_or_default() {
            let Ok(t) = tag.parse::<Tag>() else { continue };
            if let Some(d) = storage.tag_get(repo, &t).await? {
                tags.push((tag, d));
            }
        }
        Ok(Raw { manifests, tags })
    }

    fn digest(&self, id: u32) -> &Digest {
        &self.symbols.digests[id as usize]
    }

    fn manifest_at(&self, i: usize) -> ManifestRefs<'_> {
        ManifestRefs { inv: self, at: self.words[2 + i] as usize }
    }

    fn tag_at(&self, i: usize) -> (&str, &Digest) {
        let at = self.words.len() - 2 * self.words[1] as usize + 2 * i;
        (&self.symbols.tags[self.words[at] as usize], self.digest(self.words[at + 1]))
    }

    pub(crate) fn manifest_count(&self) -> usize {
        self.words[0] as usize
    }

    /// Its manifests, in digest order.
    pub(crate) fn manifests(&self) -> impl Iterator<Item = ManifestRefs<'_>> {
        (0..self.manifest_count()).map(|i| self.manifest_at(i))
    }

    pub(crate) fn manifest_digests(&self) -> impl Iterator<Item = &Digest> {
        self.manifests().map(|m| m.digest())
    }

    pub(crate) fn manifest(&self, digest: &Digest) -> Option<ManifestRefs<'_>> {
        let (mut lo, mut hi) = (0, self.manifest_count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let m = self.manifest_at(mid);
            match m.digest().cmp(digest) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(m),
            }
        }
        None
    }

    pub(crate) fn contains_manifest(&self, digest: &Digest) -> bool {
        self.manifest(digest).is_some()
    }

    /// Tag → the digest it pointed at, in tag order.
    pub(crate) fn tags(&self) -> impl Iterator<Item = (&str, &Digest)> {
        (0..self.words[1] as usize).map(|i| self.tag_at(i))
    }

    /// The digests its tags point at.
    pub(crate) fn tagged(&self) -> impl Iterator<Item = &Digest> {
        self.tags().map(|(_, d)| d)
    }

    pub(crate) fn tag(&self, name: &str) -> Option<&Digest> {
        let (mut lo, mut hi) = (0, self.words[1] as usize);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (t, d) = self.tag_at(mid);
            match t.cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(d),
            }
        }
        None
    }

    /// The manifests some index of this repository lists as children.
    pub(crate) fn children(&self) -> HashSet<&Digest> {
        self.manifests().flat_map(|m| m.children()).collect()
    }

    /// `start` and everything it keeps in this repository: an index's
    /// children (recursively) and referrers of any of them.
    pub(crate) fn closure(&self, start: impl IntoIterator<Item = Digest>) -> HashSet<Digest> {
        let mut referrers: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
        for m in self.manifests() {
            if let Some(s) = m.subject() {
                referrers.entry(s).or_default().push(m.digest());
            }
        }
        let mut out = HashSet::new();
        let mut todo: Vec<Digest> = start.into_iter().collect();
        while let Some(d) = todo.pop() {
            let Some(m) = self.manifest(&d) else { continue };
            if !out.insert(d.clone()) {
                continue;
            }
            todo.extend(m.children().cloned());
            if let Some(r) = referrers.get(&d) {
                todo.extend(r.iter().map(|d| (*d).clone()));
            }
        }
        out
    }

    /// The blobs the manifests `members` reference.
    pub(crate) fn blobs_of<'a>(&'a self, members: impl IntoIterator<Item = &'a Digest>) -> HashSet<Digest> {
        members.into_iter().filter_map(|d| self.manifest(d)).flat_map(|m| m.blob_digests().cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn entry(name: &str, size: u64, blobs: &[(&str, u64)], children: &[&str], subject: Option<&str>) -> ManifestEntry {
        ManifestEntry {
            digest: d(name),
            size,
            blobs: blobs.iter().map(|(b, s)| (d(b), *s)).collect(),
            children: children.iter().map(|c| d(c)).collect(),
            subject: subject.map(d),
        }
    }

    fn inventory(manifests: Vec<ManifestEntry>, tags: &[(&str, &str)], symbols: &mut Interner) -> Arc<[u32]> {
        let tags = tags.iter().map(|(t, m)| (t.to_string(), d(m))).collect();
        encode(manifests, tags, symbols).expect("encodes")
    }

    #[test]
    fn encoded_listing_reads_back_what_was_listed() {
        let mut symbols = Interner::default();
        let big = u64::from(u32::MAX) * 3 + 7;
        let manifests = vec![
            entry("image", 412, &[("config", 1500), ("layer1", big), ("layer2", 0)], &[], None),
            entry("index", 900, &[], &["image", "other"], None),
            entry("signature", 300, &[("sigblob", 77)], &[], Some("image")),
            // A duplicate key: the last one counts.
            entry("other", 1, &[], &[], None),
            entry("other", 2, &[("layer1", 5)], &[], None),
        ];
        let words = inventory(manifests, &[("v1", "index"), ("latest", "image"), ("v1", "other")], &mut symbols);
        let other = inventory(vec![entry("image", 412, &[("config", 1500)], &[], None)], &[], &mut symbols);
        let symbols = symbols.finish();
        assert_eq!(symbols.digests.len(), 8, "each digest is held once");
        let inv = RepoInventory { symbols: symbols.clone(), words };

        assert_eq!(inv.manifest_count(), 4);
        let mut want = vec![d("image"), d("index"), d("signature"), d("other")];
        want.sort();
        assert_eq!(inv.manifest_digests().cloned().collect::<Vec<_>>(), want, "in digest order");

        let image = inv.manifest(&d("image")).expect("listed");
        assert_eq!(image.digest(), &d("image"));
        assert_eq!(image.size(), 412);
        assert_eq!(
            image.blobs().map(|(b, s)| (b.clone(), s)).collect::<Vec<_>>(),
            vec![(d("config"), 1500), (d("layer1"), big), (d("layer2"), 0)]
        );
        assert_eq!(image.children().count(), 0);
        assert_eq!(image.subject(), None);

        let index = inv.manifest(&d("index")).expect("listed");
        assert_eq!(index.size(), 900);
        assert_eq!(index.blobs().count(), 0);
        assert_eq!(index.children().cloned().collect::<Vec<_>>(), vec![d("image"), d("other")]);

        let sig = inv.manifest(&d("signature")).expect("listed");
        assert_eq!(sig.subject(), Some(&d("image")));
        assert_eq!(sig.blobs().collect::<Vec<_>>(), vec![(&d("sigblob"), 77)]);

        let other_m = inv.manifest(&d("other")).expect("listed");
        assert_eq!((other_m.size(), other_m.blobs().count()), (2, 1));

        assert!(inv.manifest(&d("config")).is_none(), "a blob is no manifest");
        assert!(!inv.contains_manifest(&d("missing")));

        assert_eq!(
            inv.tags().map(|(t, d)| (t.to_owned(), d.clone())).collect::<Vec<_>>(),
            vec![("latest".to_owned(), d("image")), ("v1".to_owned(), d("other"))]
        );
        assert_eq!(inv.tag("v1"), Some(&d("other")));
        assert_eq!(inv.tag("latest"), Some(&d("image")));
        assert_eq!(inv.tag("v2"), None);

        assert_eq!(inv.children(), [&d("image"), &d("other")].into_iter().collect());
        // The index keeps its children, the image its signature.
        assert_eq!(inv.closure([d("index")]), [d("index"), d("image"), d("other"), d("signature")].into());
        assert_eq!(inv.closure([d("other")]), [d("other")].into());
        assert_eq!(
            inv.blobs_of(&[d("image"), d("signature")]),
            [d("config"), d("layer1"), d("layer2"), d("sigblob")].into()
        );

        let second = RepoInventory { symbols, words: other };
        assert_eq!(second.manifest_count(), 1);
        assert_eq!(second.tags().count(), 0);
        assert_eq!(
            second.manifest(&d("image")).map(|m| m.blob_digests().cloned().collect::<Vec<_>>()),
            Some(vec![d("config")])
        );
    }

    #[test]
    fn an_empty_repository_lists_nothing() {
        let mut symbols = Interner::default();
        let words = inventory(Vec::new(), &[], &mut symbols);
        let inv = RepoInventory { symbols: symbols.finish(), words };
        assert_eq!(inv.manifest_count(), 0);
        assert!(inv.manifest(&d("x")).is_none());
        assert_eq!(inv.tag("latest"), None);
        assert!(inv.closure([d("x")]).is_empty());
    }

    #[test]
    fn lookups_find_every_manifest_and_tag_of_a_large_repository() {
        let mut symbols = Interner::default();
        let n = 1000;
        let manifests = (0..n).map(|i| entry(&format!("m{i}"), i, &[(&format!("b{i}"), i * 2)], &[], None)).collect();
        let tags: Vec<(String, String)> = (0..n).map(|i| (format!("t{i}"), format!("m{}", n - 1 - i))).collect();
        let tag_refs: Vec<(&str, &str)> = tags.iter().map(|(t, m)| (t.as_str(), m.as_str())).collect();
        let words = inventory(manifests, &tag_refs, &mut symbols);
        let inv = RepoInventory { symbols: symbols.finish(), words };
        for i in 0..n {
            let m = inv.manifest(&d(&format!("m{i}"))).expect("found");
            assert_eq!(m.size(), i);
            assert_eq!(m.blobs().collect::<Vec<_>>(), vec![(&d(&format!("b{i}")), i * 2)]);
            assert_eq!(inv.tag(&format!("t{i}")), Some(&d(&format!("m{}", n - 1 - i))));
        }
        assert!(inv.manifest(&d("m1000")).is_none());
        assert!(inv.tag("t1000").is_none());
    }
}
