//! Manifests, tags, referrers and the paged repository walk.

use std::path::Path;

use bytes::Bytes;
use cove_core::manifest::Descriptor;
use cove_core::storage::{RepoWalk, StoredManifest};
use cove_core::{Digest, RepoName, StorageError, Tag};

use super::atomic;
use super::{parse_alg, FsStorage};

const MANIFESTS: &str = "_manifests";
const TAGS: &str = "_tags";

/// The file name of a referrer record: `<alg>-<hex>`, which sorts like the
/// digests themselves.
pub(super) fn referrer_file_name(d: &Digest) -> String {
    format!("{}-{}", d.algorithm().as_str(), d.hex())
}

fn parse_referrer_file_name(name: &str) -> Option<Digest> {
    let (alg, hex) = name.split_once('-')?;
    Digest::new(parse_alg(alg)?, hex).ok()
}

/// The manifest digests of the repository at `repo_dir`, sorted. With
/// `first_only`, stops at the first one found (an existence check).
pub(super) fn manifest_digests(repo_dir: &Path, first_only: bool) -> Result<Vec<Digest>, StorageError> {
    let dir = repo_dir.join(MANIFESTS);
    let mut out = Vec::new();
    for alg_name in atomic::list_names(&dir)? {
        let Some(alg) = parse_alg(&alg_name) else {
            continue;
        };
        for hex in atomic::list_names(&dir.join(&alg_name))? {
            if let Ok(d) = Digest::new(alg, &hex) {
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
        if manifest.media_type.contains(['\n', '\r']) {
            return Err(StorageError::Backend("manifest media type contains a line break".into()));
        }
        let (r, d, m) = (repo.clone(), digest.clone(), manifest.clone());
        self.run(move |inner| {
            Ok(atomic::write_atomic(
                &inner.tmp,
                &inner.manifest_path(&r, &d),
                &[m.media_type.as_bytes(), b"\n", &m.bytes],
            )?)
        })
        .await
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
            let raw = Bytes::from(raw);
            let nl = raw
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| StorageError::Backend(format!("manifest file of {d} is corrupt")))?;
            let media_type = std::str::from_utf8(&raw[..nl])
                .map_err(|_| StorageError::Backend(format!("manifest file of {d} is corrupt")))?
                .to_owned();
            Ok(Some(StoredManifest { media_type, bytes: raw.slice(nl + 1..) }))
        })
        .await
    }

    pub(super) async fn get_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError> {
        let (r, t) = (repo.clone(), tag.clone());
        self.run(move |inner| {
            let Some(raw) = atomic::read_if_exists(&inner.tag_path(&r, &t))? else {
                return Ok(None);
            };
            let s = String::from_utf8_lossy(&raw);
            let d = s
                .trim()
                .parse::<Digest>()
                .map_err(|_| StorageError::Backend(format!("tag file of {r}:{t} is corrupt")))?;
            Ok(Some(d))
        })
        .await
    }

    pub(super) async fn list_tags(&self, repo: &RepoName) -> Result<Option<Vec<String>>, StorageError> {
        let r = repo.clone();
        self.run(move |inner| {
            let dir = inner.repo_dir(&r);
            let mut tags: Vec<String> = atomic::list_names(&dir.join(TAGS))?
                .into_iter()
                .map(|name| tag_from_file_name(&name))
                .filter(|t| t.parse::<Tag>().is_ok())
                .collect();
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
        let json =
            serde_json::to_vec(descriptor).map_err(|e| StorageError::Backend(format!("encoding referrer: {e}")))?;
        let (r, s, name) = (repo.clone(), subject.clone(), referrer_file_name(&descriptor.digest));
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
                .filter_map(|n| parse_referrer_file_name(&n).map(|d| (d, n)))
                .collect();
            names.sort();
            let mut out = Vec::with_capacity(names.len());
            for (d, name) in names {
                let Some(raw) = atomic::read_if_exists(&dir.join(&name))? else {
                    continue; // deleted meanwhile
                };
                match serde_json::from_slice::<Descriptor>(&raw) {
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

/// The file name of a tag. Upper-case letters are written as `^` + the
/// lower-case letter (`^` cannot occur in a tag), so tags that differ only in
/// case stay distinct on case-insensitive filesystems (macOS by default).
pub(super) fn tag_file_name(tag: &Tag) -> String {
    let mut out = String::with_capacity(tag.as_str().len());
    for c in tag.as_str().chars() {
        if c.is_ascii_uppercase() {
            out.push('^');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The inverse of [`tag_file_name`].
fn tag_from_file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '^' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}
