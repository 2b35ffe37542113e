//! Scrub: re-reads every stored blob and manifest and checks it against its
//! digest. Corrupt objects are reported and, on request, quarantined: their
//! bytes are copied to a local directory and the object is removed from
//! storage (a cached blob is then fetched again on its next pull).

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt;

use crate::digest::{Digest, DigestHasher};
use crate::storage::{Storage, StorageError};

/// One corrupt object.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Corrupt {
    /// `blob` or `manifest`.
    pub kind: String,
    /// The repository, for manifests.
    pub repository: Option<String>,
    pub digest: String,
    /// What was found instead (`sha256:…` of the content, or a read error).
    pub found: String,
    /// Where the bytes were saved, when quarantined.
    pub quarantined_to: Option<PathBuf>,
}

/// The outcome of a scrub.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ScrubReport {
    pub blobs: usize,
    pub manifests: usize,
    pub bytes: u64,
    pub corrupt: Vec<Corrupt>,
    pub duration_ms: u64,
}

/// Progress after each object.
#[derive(Debug, Clone, Copy)]
pub struct ScrubProgress {
    pub done: usize,
    pub total: usize,
    pub bytes: u64,
}

/// Verifies every blob and manifest of `storage`. With `quarantine`, corrupt
/// objects are copied into that directory and removed from storage.
pub async fn scrub(
    storage: &dyn Storage,
    quarantine: Option<&Path>,
    progress: &mut (dyn FnMut(ScrubProgress) + Send),
) -> Result<ScrubReport, StorageError> {
    let started = Instant::now();
    let mut report = ScrubReport::default();
    let blobs = storage.blob_list().await?;
    let repos = storage.repo_list().await?;
    let mut manifests = Vec::new();
    for repo in &repos {
        for d in storage.manifest_list(repo).await? {
            manifests.push((repo.clone(), d));
        }
    }
    let total = blobs.len() + manifests.len();
    let mut done = 0;
    for digest in blobs {
        let (found, bytes) = hash_blob(storage, &digest).await;
        report.blobs += 1;
        report.bytes += bytes;
        if found.as_deref() != Ok(digest.to_string().as_str()) {
            let found = found.unwrap_or_else(|e| format!("unreadable: {e}"));
            tracing::warn!(%digest, %found, "scrub: corrupt blob");
            let quarantined_to = match quarantine {
                Some(dir) => Some(quarantine_blob(storage, dir, &digest).await?),
                None => None,
            };
            report.corrupt.push(Corrupt {
                kind: "blob".into(),
                repository: None,
                digest: digest.to_string(),
                found,
                quarantined_to,
            });
        }
        done += 1;
        progress(ScrubProgress { done, total, bytes: report.bytes });
    }
    for (repo, digest) in manifests {
        report.manifests += 1;
        let Some(m) = storage.manifest_get(&repo, &digest).await? else {
            done += 1;
            continue;
        };
        report.bytes += m.bytes.len() as u64;
        let mut h = DigestHasher::new(digest.algorithm());
        h.update(&m.bytes);
        let actual = h.finish();
        if actual != digest {
            tracing::warn!(%repo, %digest, found = %actual, "scrub: corrupt manifest");
            let quarantined_to = match quarantine {
                Some(dir) => {
                    let path =
                        dir.join(format!("manifest-{}-{}", repo.to_string().replace('/', "_"), file_name(&digest)));
                    write_file(&path, &m.bytes).await?;
                    storage.manifest_delete(&repo, &digest).await?;
                    Some(path)
                }
                None => None,
            };
            report.corrupt.push(Corrupt {
                kind: "manifest".into(),
                repository: Some(repo.to_string()),
                digest: digest.to_string(),
                found: actual.to_string(),
                quarantined_to,
            });
        }
        done += 1;
        progress(ScrubProgress { done, total, bytes: report.bytes });
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

fn file_name(d: &Digest) -> String {
    format!("{}-{}", d.algorithm().as_str(), d.hex())
}

/// The digest of a blob's bytes as read, and how many bytes were read.
async fn hash_blob(storage: &dyn Storage, digest: &Digest) -> (Result<String, String>, u64) {
    let mut stream = match storage.blob_read(digest, None).await {
        Ok(s) => s,
        Err(e) => return (Err(e.to_string()), 0),
    };
    let mut h = DigestHasher::new(digest.algorithm());
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                n += c.len() as u64;
                h.update(&c);
            }
            Err(e) => return (Err(e.to_string()), n),
        }
    }
    (Ok(h.finish().to_string()), n)
}

async fn quarantine_blob(storage: &dyn Storage, dir: &Path, digest: &Digest) -> Result<PathBuf, StorageError> {
    tokio::fs::create_dir_all(dir).await?;
    let path = dir.join(format!("blob-{}", file_name(digest)));
    let mut out = tokio::fs::File::create(&path).await?;
    if let Ok(mut stream) = storage.blob_read(digest, None).await {
        while let Some(Ok(chunk)) = stream.next().await {
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await?;
        }
    }
    tokio::io::AsyncWriteExt::flush(&mut out).await?;
    storage.blob_delete(digest).await?;
    Ok(path)
}

async fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::write(path, bytes).await?;
    Ok(())
}
