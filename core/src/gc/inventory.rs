//! The mark phase's listing, shared by garbage collection and retention:
//! every manifest of a repository with what it references, and its tags.
//! Listing happens after a run's `t0`, so anything written later is
//! protected by the guard instead.

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
    repos: BTreeMap<RepoName, Arc<RepoInventory>>,
    full_at: Instant,
}

/// One run's listing.
pub(crate) struct Listing {
    pub(crate) repos: BTreeMap<RepoName, Arc<RepoInventory>>,
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
        let fresh = kept.as_ref().filter(|k| k.full_at.elapsed() < FULL_LISTING_EVERY);
        let result = match (fresh, changed) {
            (Some(k), Some(changed)) => relist(storage, k.repos.clone(), changed)
                .await
                .map(|(repos, relisted)| Listing { repos, relisted, full: false }),
            _ => list_all(storage).await.map(|repos| Listing { relisted: repos.len(), repos, full: true }),
        };
        match result {
            Ok(listing) => {
                let full_at = match (&*kept, listing.full) {
                    (Some(k), false) => k.full_at,
                    _ => Instant::now(),
                };
                *kept = Some(Kept { repos: listing.repos.clone(), full_at });
                Ok(listing)
            }
            Err(e) => {
                // The changes taken are lost with this run: list everything next time.
                *kept = None;
                if let Some(i) = index {
                    i.all_changed();
                }
                Err(e)
            }
        }
    }
}

async fn list_all(storage: &dyn Storage) -> Result<BTreeMap<RepoName, Arc<RepoInventory>>, GcError> {
    let mut repos = BTreeMap::new();
    let mut seen = HashSet::new();
    for repo in storage.repo_list().await? {
        let inv = RepoInventory::list(storage, &repo, &mut seen).await?;
        repos.insert(repo, Arc::new(inv));
    }
    Ok(repos)
}

async fn relist(
    storage: &dyn Storage,
    mut repos: BTreeMap<RepoName, Arc<RepoInventory>>,
    changed: HashSet<RepoName>,
) -> Result<(BTreeMap<RepoName, Arc<RepoInventory>>, usize), GcError> {
    let relisted = changed.len();
    let mut seen = HashSet::new();
    for repo in changed {
        if storage.repo_exists(&repo).await? {
            let inv = RepoInventory::list(storage, &repo, &mut seen).await?;
            repos.insert(repo, Arc::new(inv));
        } else {
            repos.remove(&repo);
        }
    }
    Ok((repos, relisted))
}

/// What one stored manifest references.
pub(crate) struct ManifestRefs {
    /// Bytes of the manifest itself.
    pub(crate) size: u64,
    /// Config and layers, with the sizes their descriptors give.
    pub(crate) blobs: Vec<(Digest, u64)>,
    /// An index's child manifests.
    pub(crate) children: Vec<Digest>,
    /// The manifest this one refers to (a referrer's subject).
    pub(crate) subject: Option<Digest>,
}

impl ManifestRefs {
    pub(crate) fn blob_digests(&self) -> impl Iterator<Item = &Digest> {
        self.blobs.iter().map(|(d, _)| d)
    }
}

/// A small map kept as one sorted vector: a repository's manifests and
/// tags, of which GC and retention keep one per repository between runs
/// (a `BTreeMap` node or `HashMap` table per repository costs several
/// hundred bytes even for one entry).
#[derive(Debug, Clone)]
pub(crate) struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// Inserts or replaces; returns the value replaced.
    pub(crate) fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self.0.binary_search_by(|(x, _)| x.cmp(&k)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, v)),
            Err(i) => {
                self.0.insert(i, (k, v));
                None
            }
        }
    }

    pub(crate) fn get<Q: Ord + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.0.binary_search_by(|(x, _)| x.borrow().cmp(k)).ok().map(|i| &self.0[i].1)
    }

    pub(crate) fn contains_key<Q: Ord + ?Sized>(&self, k: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
    {
        self.get(k).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// In key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.iter().map(|(k, _)| k)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// One repository as listed.
pub(crate) struct RepoInventory {
    /// Its manifests, by digest.
    pub(crate) manifests: VecMap<Digest, ManifestRefs>,
    /// Tag → the digest it pointed at.
    pub(crate) tags: VecMap<String, Digest>,
}

impl RepoInventory {
    /// Lists `repo`. A manifest that does not parse stops the run: what it
    /// references is unknown, so nothing may be removed. Digests already in
    /// `seen` are shared with it rather than held again.
    pub(crate) async fn list(
        storage: &dyn Storage,
        repo: &RepoName,
        seen: &mut HashSet<Digest>,
    ) -> Result<RepoInventory, GcError> {
        let mut intern = |d: Digest| match seen.get(&d) {
            Some(known) => known.clone(),
            None => {
                seen.insert(d.clone());
                d
            }
        };
        let mut inv = RepoInventory { manifests: VecMap::default(), tags: VecMap::default() };
        for digest in storage.manifest_list(repo).await? {
            let Some(m) = storage.manifest_get(repo, &digest).await? else {
                continue; // deleted meanwhile
            };
            let p = parse_manifest(&m.bytes, Some(&m.media_type)).map_err(|e| GcError::Unparsable {
                repo: repo.clone(),
                digest: digest.clone(),
                reason: e.message.clone(),
            })?;
            let mut blobs: Vec<(Digest, u64)> =
                p.config.iter().chain(&p.layers).map(|d| (intern(d.digest.clone()), d.size)).collect();
            blobs.shrink_to_fit();
            let refs = ManifestRefs {
                size: m.bytes.len() as u64,
                blobs,
                children: p.manifests.iter().map(|d| intern(d.digest.clone())).collect(),
                subject: p.subject.map(|s| intern(s.digest)),
            };
            inv.manifests.insert(intern(digest), refs);
        }
        for tag in storage.tag_list(repo).await?.unwrap_or_default() {
            let Ok(t) = tag.parse::<Tag>() else { continue };
            if let Some(d) = storage.tag_get(repo, &t).await? {
                inv.tags.insert(tag, intern(d));
            }
        }
        inv.manifests.shrink_to_fit();
        inv.tags.shrink_to_fit();
        Ok(inv)
    }

    /// The manifests some index of this repository lists as children.
    pub(crate) fn children(&self) -> HashSet<&Digest> {
        self.manifests.values().flat_map(|m| &m.children).collect()
    }

    /// `start` and everything it keeps in this repository: an index's
    /// children (recursively) and referrers of any of them.
    pub(crate) fn closure(&self, start: impl IntoIterator<Item = Digest>) -> HashSet<Digest> {
        let mut referrers: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
        for (d, m) in &self.manifests {
            if let Some(s) = &m.subject {
                referrers.entry(s).or_default().push(d);
            }
        }
        let mut out = HashSet::new();
        let mut todo: Vec<Digest> = start.into_iter().collect();
        while let Some(d) = todo.pop() {
            let Some(m) = self.manifests.get(&d) else { continue };
            if !out.insert(d.clone()) {
                continue;
            }
            todo.extend(m.children.iter().cloned());
            if let Some(r) = referrers.get(&d) {
                todo.extend(r.iter().map(|d| (*d).clone()));
            }
        }
        out
    }

    /// The blobs the manifests `members` reference.
    pub(crate) fn blobs_of<'a>(&'a self, members: impl IntoIterator<Item = &'a Digest>) -> HashSet<Digest> {
        members.into_iter().filter_map(|d| self.manifests.get(d)).flat_map(|m| m.blob_digests().cloned()).collect()
    }
}
