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
//!   the key), and the key with the smallest id signs, so replicas
//!   converge on one key once they have seen the whole set;
//! - a token naming an unknown id triggers a re-read of the set, at most
//!   once per [`UNKNOWN_KID_REFRESH`] (the first one at any time); signing
//!   re-reads it when it is older than [`SIGNING_REFRESH`].
//!
//! Secrets never appear in `Debug` output or logs; only ids do.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cove_core::{Storage, StorageError};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The shared-state directory of the key set.
pub const KEYS_DIR: &str = "keys";
/// Minimum time between two re-reads caused by unknown key ids.
pub const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(3);
/// How old the set may get before signing re-reads it (convergence bound).
pub const SIGNING_REFRESH: Duration = Duration::from_secs(30);

/// Minimum HS256 secret length.
pub const MIN_SIGNING_KEY_LEN: usize = 32;

/// One key document as stored (`keys/<id>`).
#[derive(Serialize, Deserialize)]
struct KeyDoc {
    /// The secret, hex.
    secret: String,
    /// Creation time, Unix seconds.
    created: u64,
}

struct Key {
    secret: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &[u8]) -> Key {
        Key {
            secret: secret.to_vec(),
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
        Ok(SigningKeys::from_map(None, BTreeMap::from([(fixed_kid(secret), Arc::new(Key::new(secret)))])))
    }

    /// A fresh random key kept in memory only (no store: tests, tools).
    pub fn random() -> SigningKeys {
        let mut secret = [0u8; 32];
        crate::random_bytes(&mut secret);
        SigningKeys::from_map(None, BTreeMap::from([(fixed_kid(&secret), Arc::new(Key::new(&secret)))]))
    }

    fn from_map(store: Option<Arc<dyn Storage>>, keys: BTreeMap<String, Arc<Key>>) -> SigningKeys {
        SigningKeys {
            store,
            keys: RwLock::new(keys),
            last_read: tokio::sync::Mutex::new(Instant::now()),
            last_unknown: tokio::sync::Mutex::new(None),
        }
    }

    /// The set shared through `store`: reads it, and writes a new random
    /// key first when it is empty.
    pub async fn shared(store: Arc<dyn Storage>) -> Result<SigningKeys, KeysError> {
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
        Ok(SigningKeys::from_map(Some(store), keys))
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

    /// The signing key: the one with the smallest id.
    pub(crate) fn signing(&self) -> Option<(String, EncodingKey)> {
        self.read().iter().next().map(|(id, k)| (id.clone(), k.encoding.clone()))
    }

    /// The verification key of `kid`, if it is in the set.
    pub(crate) fn decoding(&self, kid: &str) -> Option<DecodingKey> {
        self.read().get(kid).map(|k| k.decoding.clone())
    }

    /// A 32-byte key for another purpose (`label`, e.g. `ui-session`),
    /// derived from the signing key, so it is the same on every replica
    /// that signs with the same key and survives restarts.
    pub fn derive(&self, label: &str) -> Option<[u8; 32]> {
        let keys = self.read();
        let (_, key) = keys.iter().next()?;
        let mut h = Sha256::new();
        h.update(b"cove-derived-key\0");
        h.update(label.as_bytes());
        h.update(b"\0");
        h.update(&key.secret);
        Some(h.finalize().into())
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
        let result = read_set(store.as_ref(), &known).await;
        *last = Instant::now();
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

/// Writes a new random key under a random id; returns the id.
async fn create_key(store: &dyn Storage) -> Result<String, StorageError> {
    let mut secret = [0u8; 32];
    crate::random_bytes(&mut secret);
    let mut id = [0u8; 8];
    crate::random_bytes(&mut id);
    let id = hex::encode(id);
    let doc = KeyDoc { secret: hex::encode(secret), created: now_secs() };
    let bytes = serde_json::to_vec(&doc).map_err(|e| StorageError::Backend(format!("encoding a key: {e}")))?;
    store.state_put(&format!("{KEYS_DIR}/{id}"), Bytes::from(bytes)).await?;
    Ok(id)
}

/// Reads every key of the set; keys already in `known` are not fetched
/// again (a key's document never changes). Unreadable documents are
/// skipped with a warning.
async fn read_set(
    store: &dyn Storage,
    known: &BTreeMap<String, Arc<Key>>,
) -> Result<BTreeMap<String, Arc<Key>>, StorageError> {
    let mut out = BTreeMap::new();
    for id in store.state_list(KEYS_DIR).await?.into_iter().filter(|id| is_key_id(id)) {
        if let Some(k) = known.get(&id) {
            out.insert(id, k.clone());
            continue;
        }
        let Some(raw) = store.state_get(&format!("{KEYS_DIR}/{id}")).await? else {
            continue; // deleted meanwhile
        };
        let secret = serde_json::from_slice::<KeyDoc>(&raw).ok().and_then(|d| hex::decode(d.secret).ok());
        match secret {
            Some(s) if s.len() >= MIN_SIGNING_KEY_LEN => {
                out.insert(id, Arc::new(Key::new(&s)));
            }
            _ => tracing::warn!(key_id = %id, "skipping an unreadable token signing key in storage"),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<dyn Storage>) {
        let dir = tempfile::tempdir().unwrap();
        let s = cove_backends::FsStorage::open(dir.path()).unwrap();
        (dir, Arc::new(s))
    }

    #[tokio::test]
    async fn an_empty_store_gets_one_key() {
        let (_d, s) = store();
        let k = SigningKeys::shared(s.clone()).await.unwrap();
        let ids = k.ids();
        assert_eq!(ids.len(), 1);
        assert_eq!(s.state_list(KEYS_DIR).await.unwrap(), ids);
        // A second replica loads it instead of writing another.
        let k2 = SigningKeys::shared(s.clone()).await.unwrap();
        assert_eq!(k2.ids(), ids);
        assert_eq!(s.state_list(KEYS_DIR).await.unwrap().len(), 1);
        assert_eq!(k.derive("ui-session"), k2.derive("ui-session"));
        assert_ne!(k.derive("ui-session"), k.derive("other"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creators_converge_on_the_smallest_id() {
        let (_d, s) = store();
        // Both replicas saw an empty set and each wrote a key.
        let a = create_key(s.as_ref()).await.unwrap();
        let b = create_key(s.as_ref()).await.unwrap();
        let smallest = a.clone().min(b.clone());
        let (ka, kb) = tokio::join!(SigningKeys::shared(s.clone()), SigningKeys::shared(s.clone()));
        let (ka, kb) = (ka.unwrap(), kb.unwrap());
        assert_eq!(ka.signing().unwrap().0, smallest);
        assert_eq!(kb.signing().unwrap().0, smallest);
        assert_eq!(ka.derive("ui-session"), kb.derive("ui-session"));

        // Two starting at the very same moment on an empty store.
        let (_d2, s2) = store();
        let (x, y) = tokio::join!(SigningKeys::shared(s2.clone()), SigningKeys::shared(s2.clone()));
        let (x, y) = (x.unwrap(), y.unwrap());
        let all = s2.state_list(KEYS_DIR).await.unwrap();
        assert!((1..=2).contains(&all.len()), "{all:?}");
        assert!(x.refresh_if_older(Duration::ZERO).await);
        assert!(y.refresh_if_older(Duration::ZERO).await);
        assert_eq!(x.ids(), all);
        assert_eq!(y.ids(), all);
        assert_eq!(x.signing().unwrap().0, all[0]);
        assert_eq!(y.signing().unwrap().0, all[0]);
    }

    #[tokio::test]
    async fn refreshes_are_rate_limited_and_keep_keys_on_failure() {
        let (_d, s) = store();
        let k = SigningKeys::shared(s.clone()).await.unwrap();
        let late = create_key(s.as_ref()).await.unwrap();
        assert!(k.decoding(&late).is_none());
        assert!(!k.refresh_if_older(Duration::from_secs(3600)).await, "read too recently");
        assert!(k.refresh_if_older(Duration::ZERO).await);
        assert!(k.decoding(&late).is_some());
        // A corrupt document is skipped, the rest stays.
        s.state_put("keys/0000000000000000", Bytes::from_static(b"{nonsense")).await.unwrap();
        assert!(k.refresh_if_older(Duration::ZERO).await);
        assert_eq!(k.ids().len(), 2);
        assert!(!format!("{k:?}").contains(&hex::encode(&k.read().values().next().unwrap().secret)));
    }

    #[test]
    fn fixed_keys_must_be_long_enough() {
        assert!(matches!(SigningKeys::fixed(b"short"), Err(KeysError::TooShort)));
        let k = SigningKeys::fixed(&[1u8; 32]).unwrap();
        assert!(!k.is_shared());
        assert_eq!(k.ids(), vec![fixed_kid(&[1u8; 32])]);
    }

    fn issuer(keys: SigningKeys) -> crate::TokenIssuer {
        crate::TokenIssuer::with_keys("cove", "cove", Duration::from_secs(300), Arc::new(keys))
    }

    fn alice() -> cove_core::Identity {
        cove_core::Identity::User { name: "alice".into(), groups: vec![] }
    }

    #[tokio::test]
    async fn tokens_of_one_replica_verify_on_another() {
        use crate::token::TokenCheck;
        let (_d, s) = store();
        let a = issuer(SigningKeys::shared(s.clone()).await.unwrap());
        let token = a.issue(&alice(), &[]).unwrap().token;
        // A replica (or a restart) that loads the set later accepts it.
        let b = issuer(SigningKeys::shared(s.clone()).await.unwrap());
        assert!(matches!(b.check(&token).await, TokenCheck::Valid(v) if v.identity.name() == Some("alice")));
        // An in-memory key elsewhere does not.
        let c = issuer(SigningKeys::random());
        assert!(matches!(c.check(&token).await, TokenCheck::NotOurs));
    }

    #[tokio::test]
    async fn an_unknown_kid_rereads_the_set_once_per_interval() {
        use crate::token::TokenCheck;
        let (_d, s) = store();
        let b = issuer(SigningKeys::shared(s.clone()).await.unwrap());
        // Another replica's key written after b loaded the set, with an id
        // smaller than every other so that it also takes over signing.
        s.state_put("keys/0000000000000001", key_doc(&[9u8; 32])).await.unwrap();
        let other = issuer(SigningKeys::shared(s.clone()).await.unwrap());
        let token = other.issue(&alice(), &[]).unwrap().token;
        assert_eq!(other.keys().signing().unwrap().0, "0000000000000001");
        // The first unknown id re-reads at once, even right after start.
        assert!(matches!(b.check(&token).await, TokenCheck::Valid(_)), "re-read on the unknown kid");
        assert_eq!(b.keys().signing().unwrap().0, "0000000000000001", "signs with the smallest id now");
        // A key written next is only seen after UNKNOWN_KID_REFRESH.
        s.state_put("keys/0000000000000000", key_doc(&[8u8; 32])).await.unwrap();
        let newer = issuer(SigningKeys::shared(s.clone()).await.unwrap());
        let token2 = newer.issue(&alice(), &[]).unwrap().token;
        assert!(matches!(b.check(&token2).await, TokenCheck::NotOurs), "rate-limited");
        assert!(b.keys().decoding("0000000000000000").is_none());
        let earlier = b.keys().last_unknown.lock().await.map(|t| t - UNKNOWN_KID_REFRESH);
        *b.keys().last_unknown.lock().await = earlier;
        assert!(matches!(b.check(&token2).await, TokenCheck::Valid(_)), "re-read after the interval");
        // A tampered token with a known kid is invalid, not a reason to re-read.
        let mut bad = token.clone();
        bad.pop();
        bad.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(b.check(&bad).await, TokenCheck::Invalid));
    }

    fn key_doc(secret: &[u8]) -> Bytes {
        Bytes::from(serde_json::to_vec(&KeyDoc { secret: hex::encode(secret), created: 0 }).unwrap())
    }
}
