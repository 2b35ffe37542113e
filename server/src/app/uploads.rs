//! Request limits of `[server]` on pushes: open upload sessions per source
//! and in total (`max_uploads_per_source`, `max_uploads`: 429
//! `TOOMANYREQUESTS`), and the largest blob (`max_blob_size`: 413
//! `SIZE_INVALID`, checked against `Content-Length` first and again while
//! the body streams).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;

use cove_core::{ByteStream, ErrorCode, ErrorDetail, Registry, RegistryError};

/// The open upload sessions this process started, by id, with their source.
/// Sessions that end elsewhere (expiry) are forgotten when a limit is
/// reached and the storage no longer has them; sessions from before a
/// restart are not counted.
pub struct UploadLimiter {
    max_total: usize,
    max_per_source: usize,
    sessions: Mutex<HashMap<String, IpAddr>>,
}

impl UploadLimiter {
    pub fn new(max_total: usize, max_per_source: usize) -> UploadLimiter {
        UploadLimiter { max_total, max_per_source, sessions: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, IpAddr>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Which limit `source` would break by opening one more session.
    fn over(&self, source: IpAddr) -> Option<(&'static str, usize)> {
        let s = self.lock();
        if s.len() >= self.max_total {
            return Some(("max_uploads", self.max_total));
        }
        let mine = s.values().filter(|ip| **ip == source).count();
        (mine >= self.max_per_source).then_some(("max_uploads_per_source", self.max_per_source))
    }

    /// Refuses a new session from `source` past a limit.
    pub async fn admit(&self, registry: &Registry, source: IpAddr) -> Result<(), RegistryError> {
        if self.over(source).is_none() {
            return Ok(());
        }
        // At a limit: first forget the sessions that have ended meanwhile.
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        for id in ids {
            if registry.storage().upload_info(&id).await.is_err() {
                self.closed(&id);
            }
        }
        match self.over(source) {
            None => Ok(()),
            Some((key, limit)) => {
                let whose = if key == "max_uploads" { "in all".to_owned() } else { format!("from {source}") };
                Err(RegistryError::new(
                    ErrorCode::TooManyRequests,
                    format!(
                        "too many open upload sessions {whose} (server.{key} = {limit}); \
                         finish or cancel (DELETE) open uploads, or wait for them to expire"
                    ),
                )
                .with_detail(ErrorDetail::RetryAfter(Duration::from_secs(5))))
            }
        }
    }

    /// Counts the new session `id` of `source`.
    pub fn opened(&self, id: &str, source: IpAddr) {
        self.lock().insert(id.to_owned(), source);
    }

    /// Forgets session `id` (completed, cancelled or gone).
    pub fn closed(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// The 413 of a blob past `server.max_blob_size`.
pub fn blob_too_large(limit: u64) -> RegistryError {
    RegistryError::new(ErrorCode::SizeInvalid, format!("blob is larger than server.max_blob_size ({limit} bytes)"))
        .with_detail(ErrorDetail::TooLarge { limit })
}

/// `body` failing once it carries more than `allowed` bytes; `hit` tells
/// the handler that this, not the client, ended the body.
pub fn capped(body: ByteStream, allowed: u64, hit: Arc<AtomicBool>) -> ByteStream {
    let mut seen = 0u64;
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        if seen > allowed {
            hit.store(true, Ordering::Relaxed);
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "blob larger than server.max_blob_size"));
        }
        Ok(chunk)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn capped_bodies_fail_past_the_limit() {
        let parts: Vec<std::io::Result<bytes::Bytes>> =
            vec![Ok(bytes::Bytes::from_static(b"abc")), Ok(bytes::Bytes::from_static(b"def"))];
        let hit = Arc::new(AtomicBool::new(false));
        let out: Vec<_> = capped(Box::pin(futures::stream::iter(parts)), 5, hit.clone()).collect().await;
        assert!(out[0].is_ok() && out[1].is_err(), "{out:?}");
        assert!(hit.load(Ordering::Relaxed));
    }

    #[test]
    fn limits_count_per_source_and_in_total() {
        let l = UploadLimiter::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        l.opened("1", a);
        assert!(l.over(a).is_none());
        l.opened("2", a);
        assert_eq!(l.over(a), Some(("max_uploads_per_source", 2)));
        assert!(l.over(b).is_none());
        l.opened("3", b);
        assert_eq!(l.over(b), Some(("max_uploads", 3)));
        l.closed("1");
        assert!(l.over(a).is_none() && l.over(b).is_none());
    }
}
