//! [`SigningKeys`]: the HS256 key set registry tokens are signed with.
//!
//! With `auth.token.signing_key_file` the set is that one key. Without it
//! the set lives in the storage's shared state (`keys/<id>`, one JSON
//! document per key), so every replica on one bucket accepts the tokens of
//! every other:
//! - at start the set is listed; if it is empty a random key is written
//!   under a random id. Two replicas starting at once may both write one:
//!   nothing relies on conditional writes (Garage ignores them);
//! - every key of the set verifies tokens (the token's `kid` header names
//!   the key); one key signs, chosen from the set and the clock alone, so
//!   replicas converge on one key once they have seen the whole set: the
//!   smallest id among the newest *published* keys (created at least
//!   [`Rotation::publish`] ago, so every replica has had time to load them;
//!   keys created within that interval of each other count as one
//!   generation), or the smallest id of all while none is published;
//! - with a [`Rotation`], a replica that finds the newest key older than
//!   [`Rotation::every`] writes a new one (two doing so at once write one
//!   generation of two keys), and deletes keys that stopped signing more
//!   than [`Rotation::overlap`] ago (the longest a token or web session
//!   signed with them lives), so old credentials stay valid to their end;
//! - [`SigningKeys::refresh_if_older`] re-reads the set and runs the
//!   rotation; the server calls it every [`Rotation::refresh`];
//! - a token naming an unknown id triggers a re-read of the set, at most
//!   once per [`UNKNOWN_KID_REFRESH`] (the first one at any time); signing
//!   re-reads it when it is older than [`SIGNING_REFRESH`].
//!
//! Secrets never appear in `Debug` output or logs; only ids do.
//!
//! This file holds the set and its use (signing, verifying, derived keys,
//! re-reads); `rotation` decides which key signs and when keys are added or
//! retired; `store` reads and writes the key documents in the shared state.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cove_core::{Storage, StorageError};
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest as _, Sha256};

mod rotation;
mod store;
#[cfg(test)]
mod tests;

pub use rotation::Rotation;
use rotation::{active_id, rotate};
use store::{create_key, read_set};

/// The shared-state directory of the key set.
pub const KEYS_DIR: &str = "keys";
/// Minimum time between two re-reads caused by unknown key ids.
pub const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(3);
/// How old the set may get before signing re-reads it (convergence bound).
pub const SIGNING_REFRESH: Duration = Duration::from_secs(30);

/// How long a key written at start waits before it signs when keys are
/// not rotated (and the upper bound of [`Rotation::publish`]).
const NO_ROTATION_PUBLISH: Duration = Duration::from_secs(60);

/// Minimum HS256 secret length.
pub const MIN_SIGNING_KEY_LEN: usize = 32;

struct Key {
    secret: Vec<u8>,
    /// Creation time, Unix seconds (0 for a fixed key).
    created: u64,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &[u8], created: u64) -> Key {
        Key {
            secret: secret.to_vec(),
            created,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

/// A set of token signing keys: one fixed key, or a set shared through
/// the storage (see the module doc).
pub struct SigningKeys {
    /// Where the shared set lives; `None` for a fixed key.
    store: Option<Arc<dyn Storage>>,
    /// Rotation of the shared set; `None`: keys are never replaced.
    rotation: Option<Rotation>,
    keys: RwLock<BTreeMap<String, Arc<Key>>>,
    /// When the set was last read from the store; the async lock makes
    /// concurrent refreshes wait for the one running instead of piling up.
    last_read: tokio::sync::Mutex<Instant>,
    /// When an unknown key id last caused a re-read (`None`: never, so the
    /// first one right after start, when another replica may just have
    /// written its key, is not held back by the start-up read).
    last_unknown: tokio::sync::Mutex<Option<Instant>>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("shared", &self.store.is_some())
            .field("ids", &self.ids())
            .finish_non_exhaustive()
    }
}

/// Why the shared key set could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// The store failed.
    #[error("token signing keys in storage: {0}")]
    Storage(#[from] StorageError),
    /// A fixed key was too short.
    #[error("the token signing key must be at least {MIN_SIGNING_KEY_LEN} bytes")]
    TooShort,
}

fn fixed_kid(secret: &[u8]) -> String {
    format!("cove-{}", &hex::encode(Sha256::digest(secret))[..16])
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl SigningKeys {
    /// One fixed key (`auth.token.signing_key_file`), at least
    /// [`MIN_SIGNING_KEY_LEN`] bytes; its id is derived from its hash.
    pub fn fixed(secret: &[u8]) -> Result<SigningKeys, KeysError> {
        if secret.len() < MIN_SIGNING_KEY_LEN {
            return Err(KeysError::TooShort);
        }
        Ok(SigningKeys::from_map(None, BTreeMap::from([(fixed_kid(secret), Arc::new(Key::new(secret, 0)))])))
    }

    /// A fresh random key kept in memory only (no store: tests, tools).
    pub fn random() -> SigningKeys {
        let mut secret = [0u8; 32];
        crate::random_bytes(&mut secret);
        SigningKeys::from_map(None, BTreeMap::from([(fixed_kid(&secret), Arc::new(Key::new(&secret, 0)))]))
    }

    fn from_map(store: Option<Arc<dyn Storage>>, keys: BTreeMap<String, Arc<Key>>) -> SigningKeys {
        SigningKeys {
            store,
            rotation: None,
            keys: RwLock::new(keys),
            last_read: tokio::sync::Mutex::new(Instant::now()),
            last_unknown: tokio::sync::Mutex::new(None),
        }
    }

    /// The set shared through `store`, rotated by `rotation`: reads it,
    /// and writes a new random key first when it is empty.
    pub async fn shared(store: Arc<dyn Storage>, rotation: Option<Rotation>) -> Result<SigningKeys, KeysError> {
        let mut keys = read_set(store.as_ref(), &BTreeMap::new()).await?;
        if keys.is_empty() {
            let id = create_key(store.as_ref()).await?;
            // Read again: a replica starting at the same moment may have
            // written a key too, and the smallest id must win everywhere.
            keys = read_set(store.as_ref(), &BTreeMap::new()).await?;
            tracing::info!(key_id = %id, keys = keys.len(), "created a token signing key in storage");
        } else {
            tracing::info!(keys = keys.len(), "loaded the token signing keys from storage");
        }
        if keys.is_empty() {
            return Err(KeysError::Storage(StorageError::Backend(
                "the token signing key just written cannot be read back".into(),
            )));
        }
        let mut set = SigningKeys::from_map(Some(store), keys);
        set.rotation = rotation;
        Ok(set)
    }

    /// The rotation of a shared set, if any.
    pub fn rotation(&self) -> Option<Rotation> {
        self.rotation
    }

    /// Whether the set is shared through storage.
    pub fn is_shared(&self) -> bool {
        self.store.is_some()
    }

    /// The ids of the set, sorted (the first one signs).
    pub fn ids(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Key>>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (it is replaced whole), so a poisoned lock is still usable.
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self) -> Duration {
        self.rotation.map(|r| r.publish()).unwrap_or(NO_ROTATION_PUBLISH)
    }

    /// The signing key (see the module doc).
    pub(crate) fn signing(&self) -> Option<(String, EncodingKey)> {
        let keys = self.read();
        let id = active_id(&keys, now_secs(), self.publish())?;
        keys.get(id).map(|k| (id.clone(), k.encoding.clone()))
    }

    /// The verification key of `kid`, if it is in the set.
    pub(crate) fn decoding(&self, kid: &str) -> Option<DecodingKey> {
        self.read().get(kid).map(|k| k.decoding.clone())
    }

    /// 32-byte keys for another purpose (`label`, e.g. `ui-session`),
    /// derived from every key of the set, the one derived from the signing
    /// key first: sign with the first, accept any. They are the same on
    /// every replica with the same set, survive restarts and rotate with it.
    pub fn derive_all(&self, label: &str) -> Vec<[u8; 32]> {
        let keys = self.read();
        let active = active_id(&keys, now_secs(), self.publish()).cloned();
        let derive = |key: &Key| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(b"cove-derived-key\0");
            h.update(label.as_bytes());
            h.update(b"\0");
            h.update(&key.secret);
            h.finalize().into()
        };
        let mut out: Vec<[u8; 32]> = active.iter().filter_map(|id| keys.get(id)).map(|k| derive(k)).collect();
        out.extend(keys.iter().filter(|(id, _)| Some(*id) != active.as_ref()).map(|(_, k)| derive(k)));
        out
    }

    /// The key derived for `label` from the signing key (see
    /// [`SigningKeys::derive_all`]).
    pub fn derive(&self, label: &str) -> Option<[u8; 32]> {
        self.derive_all(label).into_iter().next()
    }

    /// Re-reads the shared set because a token named an id it does not
    /// hold, at most once per [`UNKNOWN_KID_REFRESH`] (so made-up ids cost
    /// the store one listing per interval). Concurrent callers wait for the
    /// re-read in progress. Returns whether it read.
    pub async fn refresh_for_unknown_id(&self) -> bool {
        if self.store.is_none() {
            return false;
        }
        let mut last = self.last_unknown.lock().await;
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFRESH) {
            return false;
        }
        *last = Some(Instant::now());
        self.refresh_if_older(Duration::ZERO).await
    }

    /// Re-reads the shared set if the last read is older than `min_age`.
    /// Returns whether it was read. Errors are logged and the old set kept.
    pub async fn refresh_if_older(&self, min_age: Duration) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let mut last = self.last_read.lock().await;
        if last.elapsed() < min_age {
            return false;
        }
        let known = self.read().clone();
        let mut result = read_set(store.as_ref(), &known).await;
        *last = Instant::now();
        if let (Some(rotation), Ok(keys)) = (self.rotation, result.as_mut()) {
            rotate(store.as_ref(), keys, rotation, now_secs()).await;
        }
        match result {
            Ok(keys) if !keys.is_empty() => {
                if keys.len() != known.len() {
                    tracing::info!(keys = keys.len(), signing = ?keys.keys().next(), "token signing keys changed");
                }
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
                true
            }
            Ok(_) => {
                tracing::warn!("the token signing keys in storage are gone; keeping the ones in memory");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read the token signing keys; keeping the ones in memory");
                false
            }
        }
    }
}

/// Whether `id` has the shape of a shared key id (16 lowercase hex digits).
pub(crate) fn is_key_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
