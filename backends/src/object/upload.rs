//! Streaming writes: whole-blob writes and resumable upload sessions whose
//! state (including the running SHA-256) lives in the bucket.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use cove_core::storage::{valid_upload_id, UploadInfo, UploadSessions};
use cove_core::{Algorithm, ByteStream, Digest, DigestHasher, RepoName, StorageError};
use futures::stream::{FuturesOrdered, StreamExt, TryStreamExt};
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::digest::common::hazmat::SerializableState;
use sha2::Digest as _;

use super::{map_err, ObjectStorage};

/// Part uploads kept in flight while the next part is being received.
const PARTS_IN_FLIGHT: usize = 2;
/// S3's limit on the number of parts of one multipart upload.
const MAX_PARTS: usize = 10_000;

/// The session object `uploads/<id>/session.json`.
///
/// Invariant: `size == multipart.bytes + Σ tail.len`, and `sha256` is the
/// serialized SHA-256 state after exactly `size` bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    pub v: u32,
    pub repo: String,
    pub started_ms: u64,
    pub updated_ms: u64,
    pub size: u64,
    /// Hex of the sha2 `SerializableState` of the running hash.
    pub sha256: String,
    /// The multipart upload onto `uploads/<id>/data`, once a full part exists.
    pub multipart: Option<MultipartState>,
    /// Acknowledged bytes not yet in a part (each piece < part size in total).
    pub tail: Vec<TailPiece>,
}

/// An open multipart upload and its acknowledged parts (index = position).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MultipartState {
    pub upload_id: String,
    pub parts: Vec<String>,
    pub bytes: u64,
}

/// One tail object `uploads/<id>/tail/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TailPiece {
    pub name: String,
    pub len: u64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn save_hasher(h: &sha2::Sha256) -> String {
    hex::encode(h.serialize())
}

fn load_hasher(s: &str) -> Result<sha2::Sha256, StorageError> {
    let corrupt = || StorageError::Backend("corrupt upload session hash state".into());
    let raw = hex::decode(s).map_err(|_| corrupt())?;
    let arr = sha2::digest::array::Array::try_from(raw.as_slice()).map_err(|_| corrupt())?;
    sha2::Sha256::deserialize(&arr).map_err(|_| corrupt())
}

fn body_err(e: std::io::Error) -> StorageError {
    StorageError::BodyError(e.to_string())
}

type PartFuture = futures::future::BoxFuture<'static, Result<PartId, StorageError>>;

impl Session {
    fn info(&self, id: &str) -> Result<UploadInfo, StorageError> {
        Ok(UploadInfo {
            id: id.to_owned(),
            repo: self
                .repo
                .parse::<RepoName>()
                .map_err(|_| StorageError::Backend("corrupt upload session repo".into()))?,
            size: self.size,
            started: from_ms(self.started_ms),
            updated: from_ms(self.updated_ms),
        })
    }
}

impl ObjectStorage {
    pub(crate) async fn load_session(&self, id: &str) -> Result<Session, StorageError> {
        if !valid_upload_id(id) {
            return Err(StorageError::UploadUnknown);
        }
        let got = match self.store.get(&self.keys.upload_session(id)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Err(StorageError::UploadUnknown),
            Err(e) => return Err(map_err(e)),
        };
        let bytes = got.bytes().await.map_err(map_err)?;
        serde_json::from_slice(&bytes).map_err(|e| StorageError::Backend(format!("corrupt upload session: {e}")))
    }

    async fn save_session(&self, id: &str, s: &Session) -> Result<(), StorageError> {
        let body = serde_json::to_vec(s).map_err(|e| StorageError::Backend(e.to_string()))?;
        self.store.put(&self.keys.upload_session(id), PutPayload::from(body)).await.map_err(map_err)?;
        Ok(())
    }

    async fn read_tail(&self, id: &str, tail: &[TailPiece]) -> Result<BytesMut, StorageError> {
        let total: u64 = tail.iter().map(|p| p.len).sum();
        let mut buf = BytesMut::with_capacity(total as usize);
        for p in tail {
            let b = self
                .store
                .get(&self.keys.upload_tail(id, &p.name))
                .await
                .map_err(map_err)?
                .bytes()
                .await
                .map_err(map_err)?;
            if b.len() as u64 != p.len {
                return Err(StorageError::Backend(format!(
                    "upload tail piece has {} bytes, session says {}",
                    b.len(),
                    p.len
                )));
            }
            buf.extend_from_slice(&b);
        }
        Ok(buf)
    }

    fn part_future(&self, id: &str, upload_id: &str, idx: usize, data: Bytes) -> PartFuture {
        let mp = self.multipart.clone();
        let path = self.keys.upload_data(id);
        let upload_id = upload_id.to_owned();
        Box::pin(async move {
            let mp = mp.ok_or(StorageError::NotSupported(
                "chunked uploads larger than one part need a store with multipart uploads",
            ))?;
            mp.put_part(&path, &upload_id, idx, PutPayload::from(data)).await.map_err(map_err)
        })
    }

    async fn hash_object(&self, path: &Path, alg: Algorithm) -> Result<Digest, StorageError> {
        let mut h = DigestHasher::new(alg);
        let mut s = self.store.get(path).await.map_err(map_err)?.into_stream();
        while let Some(chunk) = s.next().await {
            h.update(&chunk.map_err(map_err)?);
        }
        Ok(h.finish())
    }

    async fn cleanup_upload(&self, id: &str) -> Result<(), StorageError> {
        let session = self.keys.upload_session(id);
        let objects: Vec<Path> = self
            .store
            .list(Some(&self.keys.upload_dir(id)))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(map_err)?;
        for p in objects.iter().filter(|p| **p != session) {
            self.delete_quietly(p).await;
        }
        match self.store.delete(&session).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Writes a whole blob whose digest is known up front: small blobs with
    /// one put after verification, larger ones as a multipart upload straight
    /// onto the blob key that is completed only after verification.
    pub(crate) async fn write_blob(
        &self,
        target: Path,
        digest: &Digest,
        mut body: ByteStream,
        expected_size: Option<u64>,
    ) -> Result<u64, StorageError> {
        if let Some(size) = self.head_size(&target).await? {
            while let Some(chunk) = body.next().await {
                chunk.map_err(body_err)?;
            }
            return Ok(size);
        }
        let part_size = self.part_size as usize;
        let mut hasher = DigestHasher::new(digest.algorithm());
        let mut buf = BytesMut::new();
        let mut size = 0u64;
        let mut upload: Option<Box<dyn object_store::MultipartUpload>> = None;
        let mut in_flight = FuturesOrdered::new();
        let result: Result<(), StorageError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(body_err)?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                if expected_size.is_some_and(|e| size > e) {
                    return Err(StorageError::SizeMismatch {
                        expected: expected_size.unwrap_or_default(),
                        actual: size,
                    });
                }
                buf.extend_from_slice(&chunk);
                if buf.len() >= part_size {
                    if upload.is_none() {
                        upload = Some(self.store.put_multipart(&target).await.map_err(map_err)?);
                    }
                    if let Some(up) = upload.as_mut() {
                        in_flight.push_back(up.put_part(PutPayload::from(buf.split().freeze())));
                    }
                    if in_flight.len() >= PARTS_IN_FLIGHT {
                        if let Some(r) = in_flight.next().await {
                            r.map_err(map_err)?;
                        }
                    }
                }
            }
            while let Some(r) = in_flight.next().await {
                r.map_err(map_err)?;
            }
            Ok(())
        }
        .await;
        drop(in_flight);
        let verdict = result.and_then(|()| {
            if let Some(e) = expected_size.filter(|e| *e != size) {
                return Err(StorageError::SizeMismatch { expected: e, actual: size });
            }
            let actual = hasher.finish();
            if &actual != digest {
                return Err(StorageError::DigestMismatch { expected: digest.clone(), actual });
            }
            Ok(())
        });
        match (verdict, upload) {
            (Err(e), Some(mut up)) => {
                if let Err(ae) = up.abort().await {
                    tracing::warn!(error = %ae, "aborting multipart blob write failed");
                }
                Err(e)
            }
            (Err(e), None) => Err(e),
            (Ok(()), None) => {
                self.store.put(&target, PutPayload::from(buf.freeze())).await.map_err(map_err)?;
                Ok(size)
            }
            (Ok(()), Some(mut up)) => {
                if !buf.is_empty() {
                    up.put_part(PutPayload::from(buf.freeze())).await.map_err(map_err)?;
                }
                up.complete().await.map_err(map_err)?;
                Ok(size)
            }
        }
    }
}

#[async_trait::async_trait]
impl UploadSessions for ObjectStorage {
    async fn upload_start(&self, repo: &RepoName) -> Result<UploadInfo, StorageError> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let s = Session {
            v: 1,
            repo: repo.to_string(),
            started_ms: now,
            updated_ms: now,
            size: 0,
            sha256: save_hasher(&sha2::Sha256::default()),
            multipart: None,
            tail: Vec::new(),
        };
        let body = serde_json::to_vec(&s).map_err(|e| StorageError::Backend(e.to_string()))?;
        let key = self.keys.upload_session(&id);
        // Create-only where the store supports it; ids are random, so a store
        // that ignores the condition (Garage) is still safe.
        match self.store.put_opts(&key, PutPayload::from(body.clone()), PutMode::Create.into()).await {
            Ok(_) => {}
            Err(object_store::Error::NotImplemented { .. }) => {
                self.store.put(&key, PutPayload::from(body)).await.map_err(map_err)?;
            }
            Err(e) => return Err(map_err(e)),
        }
        s.info(&id)
    }
    async fn upload_info(&self, id: &str) -> Result<UploadInfo, StorageError> {
        self.load_session(id).await?.info(id)
    }
    /// Appends `body` to session `id` at `offset`; see `Storage::upload_append`.
    async fn upload_append(&self, id: &str, offset: u64, mut body: ByteStream) -> Result<u64, StorageError> {
        let mut sess = self.load_session(id).await?;
        if offset != sess.size {
            return Err(StorageError::OffsetMismatch { expected: sess.size, got: offset });
        }
        let part_size = self.part_size;
        let mut hasher = load_hasher(&sess.sha256)?;
        // Old tail pieces stay in the bucket until a part absorbs them.
        let mut old_tail: Vec<TailPiece> = sess.tail.clone();
        let mut old_tail_len: u64 = old_tail.iter().map(|p| p.len).sum();
        let mut absorbed: Vec<TailPiece> = Vec::new();
        let mut buf = BytesMut::new();
        let mut received = 0u64;
        let mut in_flight: FuturesOrdered<PartFuture> = FuturesOrdered::new();
        let mut new_parts: Vec<String> = Vec::new();
        let mut new_part_bytes = 0u64;
        let first_idx = sess.multipart.as_ref().map_or(0, |m| m.parts.len());
        let mut next_idx = first_idx;

        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(body_err)?;
            hasher.update(&chunk);
            received += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            if old_tail_len + buf.len() as u64 >= part_size {
                let data = if old_tail.is_empty() {
                    buf.split().freeze()
                } else {
                    let mut d = self.read_tail(id, &old_tail).await?;
                    d.extend_from_slice(&buf);
                    buf.clear();
                    absorbed.append(&mut old_tail);
                    old_tail_len = 0;
                    d.freeze()
                };
                if next_idx >= MAX_PARTS {
                    return Err(StorageError::Backend("upload exceeds the store's part count limit".into()));
                }
                if sess.multipart.is_none() {
                    // Record the multipart upload before any part goes up,
                    // so upload_abort can always find and abort it.
                    let mp = self.multipart.as_ref().ok_or(StorageError::NotSupported(
                        "chunked uploads larger than one part need a store with multipart uploads",
                    ))?;
                    let upload_id = mp.create_multipart(&self.keys.upload_data(id)).await.map_err(map_err)?;
                    sess.multipart = Some(MultipartState { upload_id, parts: Vec::new(), bytes: 0 });
                    self.save_session(id, &sess).await?;
                }
                let upload_id = sess.multipart.as_ref().map(|m| m.upload_id.clone()).unwrap_or_default();
                new_part_bytes += data.len() as u64;
                in_flight.push_back(self.part_future(id, &upload_id, next_idx, data));
                next_idx += 1;
                if in_flight.len() >= PARTS_IN_FLIGHT {
                    if let Some(done) = in_flight.next().await {
                        new_parts.push(done?.content_id);
                    }
                }
            }
        }
        while let Some(done) = in_flight.next().await {
            new_parts.push(done?.content_id);
        }
        let mut tail = old_tail;
        if !buf.is_empty() {
            let name = format!("{:020}-{}", sess.size + received - buf.len() as u64, uuid::Uuid::new_v4().simple());
            let len = buf.len() as u64;
            self.store.put(&self.keys.upload_tail(id, &name), PutPayload::from(buf.freeze())).await.map_err(map_err)?;
            tail.push(TailPiece { name, len });
        }
        if let Some(m) = sess.multipart.as_mut() {
            m.parts.extend(new_parts);
            m.bytes += new_part_bytes;
        }
        sess.tail = tail;
        sess.size += received;
        sess.sha256 = save_hasher(&hasher);
        sess.updated_ms = now_ms();
        self.save_session(id, &sess).await?;
        for p in absorbed {
            self.delete_quietly(&self.keys.upload_tail(id, &p.name)).await;
        }
        Ok(sess.size)
    }
    /// Verifies and publishes session `id` as blob `digest`; see
    /// `Storage::upload_commit`.
    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, StorageError> {
        let sess = self.load_session(id).await?;
        let sha256 = DigestHasher::Sha256(load_hasher(&sess.sha256)?).finish();
        if digest.algorithm() == Algorithm::Sha256 && &sha256 != digest {
            self.upload_abort(id).await?;
            return Err(StorageError::DigestMismatch { expected: digest.clone(), actual: sha256 });
        }
        let target = self.keys.blob(digest);
        let tail = self.read_tail(id, &sess.tail).await?.freeze();
        match sess.multipart.as_ref().filter(|m| !m.parts.is_empty()) {
            None => {
                if let Some(m) = &sess.multipart {
                    if let Some(mp) = &self.multipart {
                        let _ = mp.abort_multipart(&self.keys.upload_data(id), &m.upload_id).await;
                    }
                }
                if digest.algorithm() != Algorithm::Sha256 {
                    let mut h = DigestHasher::new(digest.algorithm());
                    h.update(&tail);
                    let actual = h.finish();
                    if &actual != digest {
                        self.upload_abort(id).await?;
                        return Err(StorageError::DigestMismatch { expected: digest.clone(), actual });
                    }
                }
                self.store.put(&target, PutPayload::from(tail)).await.map_err(map_err)?;
            }
            Some(m) => {
                let mp = self.multipart.as_ref().ok_or(StorageError::NotSupported(
                    "chunked uploads larger than one part need a store with multipart uploads",
                ))?;
                let data = self.keys.upload_data(id);
                let mut parts: Vec<PartId> = m.parts.iter().map(|c| PartId { content_id: c.clone() }).collect();
                if !tail.is_empty() {
                    parts.push(
                        mp.put_part(&data, &m.upload_id, parts.len(), PutPayload::from(tail)).await.map_err(map_err)?,
                    );
                }
                mp.complete_multipart(&data, &m.upload_id, parts).await.map_err(map_err)?;
                let staged = self.store.head(&data).await.map_err(map_err)?.size;
                if staged != sess.size {
                    self.upload_abort(id).await?;
                    return Err(StorageError::Backend(format!(
                        "assembled upload has {staged} bytes, session acknowledged {}",
                        sess.size
                    )));
                }
                if digest.algorithm() != Algorithm::Sha256 {
                    // The running hash is SHA-256 only: re-read the staged
                    // object once to verify other algorithms.
                    let actual = self.hash_object(&data, digest.algorithm()).await?;
                    if &actual != digest {
                        self.upload_abort(id).await?;
                        return Err(StorageError::DigestMismatch { expected: digest.clone(), actual });
                    }
                }
                if self.head_size(&target).await?.is_none() {
                    if staged <= self.copy_limit {
                        self.store.copy(&data, &target).await.map_err(map_err)?;
                    } else {
                        // Too large for a server-side copy: stream it into
                        // place (verified again on the way).
                        tracing::info!(
                            upload = id,
                            bytes = staged,
                            "upload too large to copy server-side; streaming it into place"
                        );
                        let body: ByteStream = Box::pin(
                            self.store
                                .get(&data)
                                .await
                                .map_err(map_err)?
                                .into_stream()
                                .map_err(|e| std::io::Error::other(e.to_string())),
                        );
                        if let Err(e) = self.write_blob(self.keys.blob(digest), digest, body, Some(staged)).await {
                            if matches!(e, StorageError::DigestMismatch { .. } | StorageError::SizeMismatch { .. }) {
                                self.upload_abort(id).await?;
                            }
                            return Err(e);
                        }
                    }
                }
            }
        }
        self.cleanup_upload(id).await?;
        Ok(sess.size)
    }
    /// Aborts the multipart upload (if any) and deletes every object of the
    /// session, the session object last (so an interrupted cleanup is still
    /// listed and retried by expiry).
    async fn upload_abort(&self, id: &str) -> Result<(), StorageError> {
        let sess = self.load_session(id).await?;
        if let (Some(m), Some(mp)) = (&sess.multipart, &self.multipart) {
            match mp.abort_multipart(&self.keys.upload_data(id), &m.upload_id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(upload = id, error = %e, "aborting multipart upload failed")
                }
            }
        }
        self.cleanup_upload(id).await
    }
    /// All sessions in the bucket.
    async fn upload_list(&self) -> Result<Vec<UploadInfo>, StorageError> {
        let root = self.keys.at(cove_core::storage::layout::UPLOADS);
        let listed = self.store.list_with_delimiter(Some(&root)).await.map_err(map_err)?;
        let mut out = Vec::new();
        for dir in listed.common_prefixes {
            let Some(id) = dir.filename().map(str::to_owned) else {
                continue;
            };
            match self.upload_info(&id).await {
                Ok(info) => out.push(info),
                Err(StorageError::UploadUnknown) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}
