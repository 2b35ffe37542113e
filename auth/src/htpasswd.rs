//! The `htpasswd` authenticator: HTTP Basic against an htpasswd file.
//!
//! Only bcrypt (`$2a$`, `$2b$`, `$2y$`) and SHA-crypt (`$5$`, `$6$`) hashes
//! are accepted; weaker schemes are refused at load naming the user and line.
//! The file is re-read when it changes (checked at most once per
//! `reload_interval`, on use). Successful verifications are cached for
//! `cache_ttl`, keyed per user by a salted SHA-256 of user and password and
//! compared in constant time, so a many-layer pull pays one bcrypt run.
//!
//! This file holds the authenticator (file reloads, the verification cache,
//! single-flight verification); `file` parses the htpasswd text and
//! refuses weak schemes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use cove_core::{AuthRequest, Authenticator, Challenge, Identity, RegistryError};
use sha2::{Digest as _, Sha256};
use sha_crypt::PasswordVerifier as _;
use subtle::ConstantTimeEq;

use crate::credentials::Credentials;

/// A problem loading an htpasswd file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HtpasswdError {
    /// The file could not be read.
    #[error("cannot read htpasswd file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// One or more lines are malformed or use a refused scheme.
    #[error("htpasswd file {path}: {}", problems.join("; "))]
    Invalid {
        /// The file.
        path: String,
        /// One message per bad line, naming the line and user.
        problems: Vec<String>,
    },
}

mod file;

use file::Hash;
pub use file::HtpasswdUsers;

/// Options of the htpasswd authenticator.
#[derive(Debug, Clone)]
pub struct HtpasswdOptions {
    /// How long a successful verification is remembered (zero disables).
    pub cache_ttl: Duration,
    /// Minimum time between checks of the file for changes.
    pub reload_interval: Duration,
    /// The `realm` of the `Basic` challenge.
    pub realm: String,
}

impl Default for HtpasswdOptions {
    fn default() -> Self {
        HtpasswdOptions {
            cache_ttl: Duration::from_secs(60),
            reload_interval: Duration::from_secs(1),
            realm: "cove".to_owned(),
        }
    }
}

struct Loaded {
    users: Arc<HtpasswdUsers>,
    generation: u64,
}

struct FileStamp {
    checked: Instant,
    modified: Option<SystemTime>,
    len: u64,
    sha256: [u8; 32],
}

struct CacheEntry {
    digest: [u8; 32],
    expires: Instant,
    generation: u64,
}

/// A request's share of an in-flight verification; the last one out
/// (including a cancelled request) removes the map entry.
struct Flight<'a> {
    map: &'a Mutex<HashMap<[u8; 32], Arc<tokio::sync::OnceCell<bool>>>>,
    digest: [u8; 32],
    cell: Arc<tokio::sync::OnceCell<bool>>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this request hold it: nobody else is waiting.
        if Arc::strong_count(&self.cell) == 2 && m.get(&self.digest).is_some_and(|c| Arc::ptr_eq(c, &self.cell)) {
            m.remove(&self.digest);
        }
    }
}

/// Verifies HTTP Basic credentials against an htpasswd file.
pub struct HtpasswdAuthenticator {
    path: PathBuf,
    opts: HtpasswdOptions,
    loaded: RwLock<Loaded>,
    stamp: tokio::sync::Mutex<FileStamp>,
    cache: Mutex<HashMap<String, CacheEntry>>,
    cache_salt: [u8; 32],
    /// Verifications in progress by cache digest (single flight): concurrent
    /// requests with the same credentials share one bcrypt run's result.
    inflight: Mutex<HashMap<[u8; 32], Arc<tokio::sync::OnceCell<bool>>>>,
    /// Verified against for unknown users so their timing matches known ones.
    dummy_hash: String,
}

impl std::fmt::Debug for HtpasswdAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HtpasswdAuthenticator")
            .field("path", &self.path)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

async fn read_file(path: &Path) -> Result<(FileStamp, String), HtpasswdError> {
    let io = |source| HtpasswdError::Io { path: path.display().to_string(), source };
    let meta = tokio::fs::metadata(path).await.map_err(io)?;
    let bytes = tokio::fs::read(path).await.map_err(io)?;
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    let text = String::from_utf8(bytes).map_err(|_| HtpasswdError::Invalid {
        path: path.display().to_string(),
        problems: vec!["file is not UTF-8".to_owned()],
    })?;
    Ok((FileStamp { checked: Instant::now(), modified: meta.modified().ok(), len: meta.len(), sha256 }, text))
}

impl HtpasswdAuthenticator {
    /// Loads `path`; fails if the file is unreadable or any line is bad.
    pub async fn open(path: impl Into<PathBuf>, opts: HtpasswdOptions) -> Result<Self, HtpasswdError> {
        let path = path.into();
        let (stamp, text) = read_file(&path).await?;
        let users = HtpasswdUsers::parse(&text)
            .map_err(|problems| HtpasswdError::Invalid { path: path.display().to_string(), problems })?;
        if users.is_empty() {
            tracing::warn!(path = %path.display(), "htpasswd file has no users");
        }
        let mut salt = [0u8; 32];
        crate::random_bytes(&mut salt);
        let dummy_password = hex::encode(salt);
        let dummy_hash = tokio::task::spawn_blocking(move || bcrypt::hash(dummy_password, 10))
            .await
            .map_err(|e| HtpasswdError::Io {
                path: path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|e| HtpasswdError::Io {
                path: path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let mut cache_salt = [0u8; 32];
        crate::random_bytes(&mut cache_salt);
        Ok(HtpasswdAuthenticator {
            path,
            opts,
            loaded: RwLock::new(Loaded { users: Arc::new(users), generation: 0 }),
            stamp: tokio::sync::Mutex::new(stamp),
            cache: Mutex::new(HashMap::new()),
            cache_salt,
            inflight: Mutex::new(HashMap::new()),
            dummy_hash,
        })
    }

    /// The number of users currently loaded.
    pub fn user_count(&self) -> usize {
        self.snapshot().0.len()
    }

    fn snapshot(&self) -> (Arc<HtpasswdUsers>, u64) {
        let l = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        (l.users.clone(), l.generation)
    }

    /// Re-reads the file if it changed and the reload interval has passed.
    /// A file that became invalid is logged and the previous users are kept.
    async fn maybe_reload(&self) {
        // Only one task checks at a time; the others use the current users.
        let Ok(mut stamp) = self.stamp.try_lock() else {
            return;
        };
        if stamp.checked.elapsed() < self.opts.reload_interval {
            return;
        }
        stamp.checked = Instant::now();
        let meta = match tokio::fs::metadata(&self.path).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot stat htpasswd file; keeping loaded users");
                return;
            }
        };
        if meta.modified().ok() == stamp.modified && meta.len() == stamp.len {
            return;
        }
        let (new_stamp, text) = match read_file(&self.path).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload htpasswd file; keeping loaded users");
                return;
            }
        };
        let changed = !bool::from(new_stamp.sha256.ct_eq(&stamp.sha256));
        *stamp = new_stamp;
        if !changed {
            return;
        }
        match HtpasswdUsers::parse(&text) {
            Ok(users) => {
                let mut l = self.loaded.write().unwrap_or_else(|p| p.into_inner());
                l.users = Arc::new(users);
                l.generation += 1;
                tracing::info!(path = %self.path.display(), users = l.users.len(), "htpasswd file reloaded");
            }
            Err(problems) => tracing::error!(
                path = %self.path.display(),
                problems = %problems.join("; "),
                "htpasswd file changed but is invalid; keeping the previous users"
            ),
        }
    }

    fn cache_digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_salt);
        h.update((user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn cache_hit(&self, user: &str, digest: &[u8; 32], generation: u64) -> bool {
        if self.opts.cache_ttl.is_zero() {
            return false;
        }
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(user) {
            Some(e) => {
                let same = bool::from(e.digest.ct_eq(digest));
                same && e.generation == generation && e.expires > Instant::now()
            }
            None => false,
        }
    }

    fn cache_store(&self, user: &str, digest: [u8; 32], generation: u64) {
        if self.opts.cache_ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= 10_000 {
            cache.retain(|_, e| e.expires > now);
        }
        cache.insert(user.to_owned(), CacheEntry { digest, expires: now + self.opts.cache_ttl, generation });
    }

    /// Verifies `user`/`password`; `Ok(true)` if they match.
    pub async fn verify(&self, user: &str, password: &str) -> Result<bool, RegistryError> {
        self.maybe_reload().await;
        let (users, generation) = self.snapshot();
        let digest = self.cache_digest(user, password);
        if self.cache_hit(user, &digest, generation) {
            return Ok(true);
        }
        // Single flight when caching: the concurrent requests of a parallel
        // pull share the first one's verification instead of each running it.
        let flight = (!self.opts.cache_ttl.is_zero()).then(|| {
            let mut m = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            Flight { map: &self.inflight, digest, cell: m.entry(digest).or_default().clone() }
        });
        match &flight {
            Some(f) => f
                .cell
                .get_or_try_init(|| self.verify_uncached(user, password, &users, digest, generation))
                .await
                .copied(),
            None => self.verify_uncached(user, password, &users, digest, generation).await,
        }
    }

    async fn verify_uncached(
        &self,
        user: &str,
        password: &str,
        users: &HtpasswdUsers,
        digest: [u8; 32],
        generation: u64,
    ) -> Result<bool, RegistryError> {
        let (hash, known) = match users.users.get(user) {
            Some(h) => (h.clone(), true),
            None => (Hash::Bcrypt(self.dummy_hash.clone()), false),
        };
        let password_owned = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || match hash {
            Hash::Bcrypt(h) => bcrypt::verify(password_owned.as_bytes(), &h).unwrap_or(false),
            Hash::ShaCrypt(h) => {
                sha_crypt::ShaCrypt::default().verify_password(password_owned.as_bytes(), h.as_str()).is_ok()
            }
        })
        .await
        .map_err(|e| RegistryError::internal(format!("password verification task failed: {e}")))?
            && known;
        if ok {
            self.cache_store(user, digest, generation);
        }
        Ok(ok)
    }

    fn unauthorized(&self, msg: &str) -> RegistryError {
        RegistryError::unauthorized(msg, Some(self.basic_challenge()))
    }

    fn basic_challenge(&self) -> Challenge {
        Challenge::Basic { realm: self.opts.realm.replace('"', "") }
    }
}

#[async_trait::async_trait]
impl Authenticator for HtpasswdAuthenticator {
    fn kind(&self) -> &'static str {
        "htpasswd"
    }

    async fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Identity, RegistryError> {
        let Some(header) = request.authorization else {
            return Ok(Identity::Anonymous);
        };
        let creds = Credentials::parse(header).map_err(|e| self.unauthorized(&e.message))?;
        match creds {
            Credentials::Basic { user, password } => {
                if self.verify(&user, password.expose()).await? {
                    Ok(Identity::User { name: user, groups: Vec::new() })
                } else {
                    tracing::info!(user = %user, client = %request.peer, "htpasswd login failed");
                    Err(self.unauthorized("invalid user name or password"))
                }
            }
            Credentials::Bearer(_) => {
                Err(self.unauthorized("bearer token is not valid here (expired, or not issued by this registry)"))
            }
        }
    }

    fn challenge(&self) -> Option<Challenge> {
        Some(self.basic_challenge())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_verifications_share_one_run_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("alice:{}\n", bcrypt::hash("pw-alice", 4).unwrap())).unwrap();
        let a = Arc::new(HtpasswdAuthenticator::open(&path, HtpasswdOptions::default()).await.unwrap());
        let run = |pw: &'static str| {
            let a = a.clone();
            tokio::spawn(async move { a.verify("alice", pw).await.unwrap() })
        };
        let good: Vec<_> = (0..16).map(|_| run("pw-alice")).collect();
        let bad: Vec<_> = (0..8).map(|_| run("wrong")).collect();
        for t in good {
            assert!(t.await.unwrap());
        }
        for t in bad {
            assert!(!t.await.unwrap());
        }
        // A cancelled verification does not leave its entry either.
        let v = a.verify("alice", "another-wrong");
        let _ = tokio::time::timeout(Duration::from_micros(1), v).await;
        assert!(a.inflight.lock().unwrap().is_empty(), "in-flight entries are removed");
        assert!(!a.verify("alice", "wrong").await.unwrap(), "a failure is not remembered as success");
        assert!(a.verify("alice", "pw-alice").await.unwrap());
    }
}
