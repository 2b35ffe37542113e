//! Manifests, tags, referrers and the paged repository walk.

use std::path::Path;

use bytes::Bytes;
use cove_core::manifest::Descriptor;
use cove_core::storage::{RepoWalk, StoredManifest};
use cove_core::{Digest, RepoName, StorageError, Tag};

use cove_core::storage::layout::{self, digest_from_parts, MANIFESTS};

use super::atomic;
use super::{FsStorage, L};

/// The manifest digests of the repository at `repo_dir`, sorted. With
/// `first_only`, stops at the first one found (an existence check).
pub(super) fn manifest_digests(repo_dir: &Path, first_only: bool) -> Result<Vec<Digest>, StorageError> {
    let dir = repo_dir.join(MANIFESTS);
    let mut out = Vec::new();
    for alg in atomic::list_names(&dir)? {
        for hex in atomic::list_names(&dir.join(&alg))? {
            if let Some(d) = digest_from_parts(&alg, &hex) {
                out.push(d);
                if first_only {
                    return Ok(out);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// At most `limit` repositories under `repos` holding at least one manifest
/// whose names sort strictly after `after`, in lexical order. Lists only the
/// directories on the way to `after` and those of the page (see
/// [`RepoWalk`]).
pub(super) fn repo_page(repos: &Path, after: Option<&str>, limit: usize) -> Result<Vec<RepoName>, StorageError> {
    let mut walk = RepoWalk::new(after);
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(name) = walk.next_dir() else {
            break;
        };
        let dir = if name.is_empty() { repos.to_path_buf() } else { repos.join(&name) };
        let mut children = Vec::new();
        let mut has_manifests = false;
        let entries = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            // Deleted since its parent was listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(child) = entry.file_name().into_string() else {
                continue;
            };
            if child == MANIFESTS {
                has_manifests = true;
            }
            // `_manifests` etc.; repository components never start with `_`.
            if child.starts_with('_') || child.starts_with('.') {
                continue;
            }
            // Symbolic links are not followed, as nothing in the layout is one.
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                children.push(child);
            }
        }
        let wanted = !name.is_empty() && after.is_none_or(|a| name.as_str() > a);
        let is_repo = wanted && has_manifests && !manifest_digests(&dir, true)?.is_empty();
        if let Some(found) = walk.visit(&name, is_repo, children) {
            match found.parse::<RepoName>() {
                Ok(r) => out.push(r),
                Err(_) => {
                    tracing::warn!(dir = %dir.display(), "skipping directory with an invalid repository name")
                }
            }
        }
    }
    Ok(out)
}

impl FsStorage {
    pub(super) async fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
    ) -> Result<(), StorageError> {
        let record = layout::encode_manifest(manifest)?;
        let (r, d) = (repo.clone(), digest.clone());
        self.run(move |inner| Ok(atomic::write_atomic(&inner.tmp, &inner.manifest_path(&r, &d), &[&record])?)).await
    }

    pub(super) async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>, StorageError> {
        let (r, d) = (repo.clone(), digest.clone());
        self.run(move |inner| {
            let Some(raw) = atomic::read_if_exists(&inner.manifest_path(&r, &d))? else {
                return Ok(None);
            };
            layout::decode_manifest(Bytes::from(raw), &d).map(Some)
        })
        .await
    }

    pub(super) async fn get_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError> {
        let (r, t) = (repo.clone(), tag.clone());
        self.run(move |inner| {
            let Some(raw) = atomic::read_if_exists(&inner.tag_path(&r, &t))? else {
                return Ok(None);
            };
            layout::decode_tag(&raw, &r, &t).map(Some)
        })
        .await
    }

    pub(super) async fn list_tags(&self, repo: &RepoName) -> Result<Option<Vec<String>>, StorageError> {
        let r = repo.clone();
        self.run(move |inner| {
            let dir = inner.repo_dir(&r);
            let mut tags: Vec<String> =
                atomic::list_names(&inner.path(&L.tags(&r)))?.iter().filter_map(|n| L.tag_from_name(n)).collect();
            if tags.is_empty() && manifest_digests(&dir, true)?.is_empty() {
                return Ok(None);
            }
            tags.sort();
            Ok(Some(tags))
        })
        .await
    }

    pub(super) async fn put_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        descriptor: &Descriptor,
    ) -> Result<(), StorageError> {
        let json = layout::encode_referrer(descriptor)?;
        let (r, s, name) = (repo.clone(), subject.clone(), L.referrer_name(&descriptor.digest));
        self.run(move |inner| {
            let dest = inner.referrer_dir(&r, &s).join(name);
            Ok(atomic::write_atomic(&inner.tmp, &dest, &[&json])?)
        })
        .await
    }

    pub(super) async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Descriptor>, StorageError> {
        let (r, s) = (repo.clone(), subject.clone());
        self.run(move |inner| {
            let dir = inner.referrer_dir(&r, &s);
            let mut names: Vec<(Digest, String)> = atomic::list_names(&dir)?
                .into_iter()
                .filter_map(|n| L.referrer_from_name(&n).map(|d| (d, n)))
                .collect();
            names.sort();
            let mut out = Vec::with_capacity(names.len());
            for (d, name) in names {
                let Some(raw) = atomic::read_if_exists(&dir.join(&name))? else {
                    continue; // deleted meanwhile
                };
                match layout::decode_referrer(&raw) {
                    Ok(desc) => out.push(desc),
                    Err(e) => {
                        tracing::warn!(referrer = %d, error = %e, "skipping unreadable referrer record")
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}
