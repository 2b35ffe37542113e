//! Copying a whole registry from one [`Storage`] to another (`cove storage
//! copy`): every repository, manifest, tag, referrer and referenced blob,
//! each blob verified against its digest by the destination's write.
//! Idempotent, so an interrupted copy resumes by running it again: what the
//! destination already holds is skipped.

use crate::manifest::parse_manifest;
use crate::name::Tag;
use crate::storage::{Storage, StorageError};

/// What a copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyStats {
    pub repositories: u64,
    pub manifests_copied: u64,
    pub manifests_present: u64,
    pub blobs_copied: u64,
    pub blobs_present: u64,
    /// Blobs a manifest references that the source does not hold (normal for
    /// pull-through caches, which fetch layers only when asked).
    pub blobs_missing_in_source: u64,
    pub bytes_copied: u64,
    pub tags: u64,
    pub referrers: u64,
}

/// A progress event, for a progress display.
#[derive(Debug, Clone)]
pub struct CopyProgress<'a> {
    pub repository: &'a str,
    pub repo_index: usize,
    pub repo_count: usize,
    pub stats: &'a CopyStats,
}

/// Copies everything from `src` to `dst`, calling `progress` after each
/// blob and repository.
pub async fn copy_all(
    src: &dyn Storage,
    dst: &dyn Storage,
    progress: &mut (dyn FnMut(&CopyProgress<'_>) + Send),
) -> Result<CopyStats, StorageError> {
    let mut stats = CopyStats::default();
    let repos = src.repo_list().await?;
    let repo_count = repos.len();
    for (repo_index, repo) in repos.iter().enumerate() {
        let name = repo.to_string();
        let mut manifests = src.manifest_list(repo).await?;
        manifests.sort();
        // Image manifests before indexes does not matter to storage; blobs
        // go first within each manifest so nothing dangles mid-copy.
        for digest in &manifests {
            let Some(m) = src.manifest_get(repo, digest).await? else { continue };
            let parsed = parse_manifest(&m.bytes, Some(&m.media_type)).ok();
            if let Some(parsed) = &parsed {
                for blob in parsed.required_blobs() {
                    let d = &blob.digest;
                    if dst.blob_size(d).await?.is_some() {
                        stats.blobs_present += 1;
                    } else if let Some(size) = src.blob_size(d).await? {
                        let body = src.blob_read(d, None).await?;
                        dst.blob_write(d, body, Some(size)).await?;
                        stats.blobs_copied += 1;
                        stats.bytes_copied += size;
                    } else {
                        stats.blobs_missing_in_source += 1;
                        continue;
                    }
                    if src.blob_linked(repo, d).await? {
                        dst.blob_link(repo, d).await?;
                    }
                    progress(&CopyProgress { repository: &name, repo_index, repo_count, stats: &stats });
                }
            }
            if dst.manifest_get(repo, digest).await?.is_some() {
                stats.manifests_present += 1;
            } else {
                dst.manifest_put(repo, digest, &m).await?;
                stats.manifests_copied += 1;
            }
            if let Some(subject) = parsed.as_ref().and_then(|p| p.subject.as_ref()) {
                let Some(parsed) = &parsed else { continue };
                let descriptor = parsed.referrer_descriptor(digest, m.bytes.len() as u64);
                dst.referrer_put(repo, &subject.digest, &descriptor).await?;
                stats.referrers += 1;
            }
        }
        for tag in src.tag_list(repo).await?.unwrap_or_default() {
            let Ok(tag) = tag.parse::<Tag>() else { continue };
            if let Some(d) = src.tag_get(repo, &tag).await? {
                if dst.tag_get(repo, &tag).await?.as_ref() != Some(&d) {
                    dst.tag_put(repo, &tag, &d).await?;
                }
                stats.tags += 1;
            }
        }
        stats.repositories += 1;
        progress(&CopyProgress { repository: &name, repo_index: repo_index + 1, repo_count, stats: &stats });
    }
    Ok(stats)
}
