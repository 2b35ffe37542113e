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

    /// Validates and stores a manifest, tagging it when `reference` is a tag.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifestResult> {
        self.ensure_writable(repo)?;
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
        self.storage.manifest_put(repo, &digest, &stored).await?;
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        if let Some(subject) = &subject {
            let descriptor = parsed.referrer_descriptor(&digest, size);
            self.storage.referrer_put(repo, subject, &descriptor).await?;
        }
        if let Reference::Tag(tag) = reference {
            self.storage.tag_put(repo, tag, &digest).await?;
            if let Some(log) = self.activity.get() {
                log.record_push(repo, tag);
            }
        }
        Ok(PutManifestResult { digest, subject })
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

fn manifest_blob_unknown(digest: &Digest, what: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestBlobUnknown,
        format!("manifest references {what} {digest}, which is not in this repository"),
    )
    .with_detail(ErrorDetail::Digest(digest.clone()))
}
