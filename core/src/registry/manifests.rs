//! Manifest operations of the engine: resolve (through the cache for
//! upstream namespaces), validate and store, delete.

use bytes::Bytes;

use super::{Cache, ManifestResponse, PutManifestResult, Registry};
use crate::cache::CachedRepo;
use crate::digest::{Digest, DigestHasher};
use crate::error::{ErrorCode, ErrorDetail, RegistryError, Result};
use crate::manifest::parse_manifest;
use crate::name::{Reference, RepoName, Tag};
use crate::storage::StoredManifest;

impl Registry {
    /// Resolves a reference to a stored manifest.
    pub async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<(ManifestResponse, Cache)> {
        if let Some((cache, route, remote)) = self.cached_route(repo) {
            let at = CachedRepo { storage: &self.storage, route: &route, remote: &remote, repo };
            let (m, status) = match cache.manifest(at, reference).await {
                // Storage said "not found" mid-way: retention evicted the
                // manifest between two steps. Once more: it is now
                // fetched from upstream again.
                Err(e) if e.code == ErrorCode::BlobUnknown && self.activity.get().is_some() => {
                    tracing::debug!(%repo, %reference, error = %e, "cached manifest vanished mid-request; retrying");
                    cache.manifest(at, reference).await?
                }
                other => other?,
            };
            self.record_pull(repo, reference, &m.digest);
            return Ok((m, Some(status)));
        }
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => {
                self.storage.tag_get(repo, t).await?.ok_or_else(|| RegistryError::manifest_unknown(reference))?
            }
        };
        let stored = self
            .storage
            .manifest_get(repo, &digest)
            .await?
            .ok_or_else(|| RegistryError::manifest_unknown(reference))?;
        self.record_pull(repo, reference, &digest);
        Ok((ManifestResponse { digest, media_type: stored.media_type, bytes: stored.bytes }, None))
    }

    /// Validates and stores a manifest, tagging it when `reference` is a tag
    /// and with every one of `tags` (the `tag` query parameters of a push).
    ///
    /// All-or-nothing for everything the client can get wrong: the tags are
    /// typed (so valid) and at most [`MAX_TAGS_PER_PUSH`], and the manifest,
    /// its blobs and child manifests are checked before anything is written.
    /// Then the manifest is stored, then each tag, so no tag ever names a
    /// manifest that is not there. A storage failure part-way through the
    /// tags leaves the manifest and the tags written so far (each one
    /// pointing at the complete manifest) and fails the request; repeating
    /// the push completes it.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
        tags: &[Tag],
    ) -> Result<PutManifestResult> {
        self.ensure_writable(repo)?;
        if tags.len() > MAX_TAGS_PER_PUSH {
            return Err(too_many_tags(tags.len()));
        }
        let parsed = parse_manifest(&bytes, content_type)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let mut h = DigestHasher::new(expected.algorithm());
                h.update(&bytes);
                let actual = h.finish();
                if &actual != expected {
                    return Err(RegistryError::new(
                        ErrorCode::DigestInvalid,
                        format!("manifest digest is {actual}, not {expected} as given in the URL"),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        for blob in parsed.required_blobs() {
            if !self.storage.blob_linked(repo, &blob.digest).await? {
                return Err(manifest_blob_unknown(&blob.digest, "blob"));
            }
        }
        for child in &parsed.manifests {
            if self.storage.manifest_get(repo, &child.digest).await?.is_none() {
                return Err(manifest_blob_unknown(&child.digest, "manifest"));
            }
        }
        let size = bytes.len() as u64;
        let stored = StoredManifest { media_type: parsed.media_type.clone(), bytes };
        self.full_checked(repo, None, self.storage.manifest_put(repo, &digest, &stored).await).await?;
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        if let Some(subject) = &subject {
            let descriptor = parsed.referrer_descriptor(&digest, size);
            self.storage.referrer_put(repo, subject, &descriptor).await?;
        }
        let mut accepted: Vec<Tag> = Vec::with_capacity(tags.len());
        for tag in tags {
            if !accepted.contains(tag) {
                accepted.push(tag.clone());
            }
        }
        let path_tag = match reference {
            Reference::Tag(tag) if !accepted.contains(tag) => Some(tag),
            _ => None,
        };
        for tag in path_tag.into_iter().chain(&accepted) {
            self.full_checked(repo, None, self.storage.tag_put(repo, tag, &digest).await).await?;
            if let Some(log) = self.activity.get() {
                log.record_push(repo, tag);
            }
        }
        Ok(PutManifestResult { digest, subject, tags: accepted })
    }

    /// Deletes a tag (by tag) or a manifest and every tag pointing at it (by
    /// digest).
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        self.ensure_writable(repo)?;
        match reference {
            Reference::Tag(tag) => {
                if !self.storage.tag_delete(repo, tag).await? {
                    return Err(RegistryError::manifest_unknown(reference));
                }
            }
            Reference::Digest(digest) => {
                let stored = self
                    .storage
                    .manifest_get(repo, digest)
                    .await?
                    .ok_or_else(|| RegistryError::manifest_unknown(reference))?;
                for tag in self.storage.tag_list(repo).await?.unwrap_or_default() {
                    let Ok(tag) = tag.parse::<Tag>() else {
                        continue;
                    };
                    if self.storage.tag_get(repo, &tag).await?.as_ref() == Some(digest) {
                        self.storage.tag_delete(repo, &tag).await?;
                    }
                }
                if let Ok(parsed) = parse_manifest(&stored.bytes, Some(&stored.media_type)) {
                    if let Some(subject) = parsed.subject {
                        self.storage.referrer_delete(repo, &subject.digest, digest).await?;
                    }
                }
                self.storage.manifest_delete(repo, digest).await?;
            }
        }
        Ok(())
    }
}

/// The most `tag` query parameters one manifest push may carry (the spec
/// asks registries to accept at least 10).
pub const MAX_TAGS_PER_PUSH: usize = 100;

/// A push naming more than [`MAX_TAGS_PER_PUSH`] tags (`414 URI Too Long`).
pub fn too_many_tags(n: usize) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        format!("{n} tag parameters: at most {MAX_TAGS_PER_PUSH} tags can be pushed with one manifest"),
    )
    .with_detail(ErrorDetail::TooManyTags { limit: MAX_TAGS_PER_PUSH })
}

fn manifest_blob_unknown(digest: &Digest, what: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestBlobUnknown,
        format!("manifest references {what} {digest}, which is not in this repository"),
    )
    .with_detail(ErrorDetail::Digest(digest.clone()))
}
