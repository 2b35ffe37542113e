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

/// How long a key written at start waits before it signs when keys are
/// not rotated (and the upper bound of [`Rotation::publish`]).
const NO_ROTATION_PUBLISH: Duration = Duration::from_secs(60);

/// Minimum HS256 secret length.
pub const MIN_SIGNING_KEY_LEN: usize = 32;

/// Key rotation of a shared set (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A new key is written when the newest is this old.
    pub every: Duration,
    /// How long a key keeps verifying after a newer one started signing:
    /// at least the lifetime of anything it signed (tokens, web sessions).
    pub overlap: Duration,
}

impl Rotation {
    /// A rotation every `every` whose old keys verify for `overlap` more.
    pub fn new(every: Duration, overlap: Duration) -> Rotation {
        Rotation { every, overlap }
    }

    /// How long a new key waits before it signs: long enough for every
    /// replica to have re-read the set ([`Rotation::refresh`]).
    pub fn publish(&self) -> Duration {
        if self.every.is_zero() {
            // Never rotated: only keys written at start need publishing.
            return NO_ROTATION_PUBLISH;
        }
        (self.every / 8).min(NO_ROTATION_PUBLISH)
    }

    /// How often the server re-reads the set (and rotates).
    pub fn refresh(&self) -> Duration {
        (self.publish() / 2).clamp(Duration::from_millis(200), SIGNING_REFRESH)
    }
}

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

/// The id of the key that signs (see the module doc): the smallest id of
/// the newest published generation, or of all keys while none is published.
fn active_id(keys: &BTreeMap<String, Arc<Key>>, now: u64, publish: Duration) -> Option<&String> {
    let publish = publish.as_secs();
    let newest_published = keys.values().map(|k| k.created).filter(|c| c.saturating_add(publish) <= now).max();
    match newest_published {
        None => keys.keys().next(),
        Some(t) => keys
            .iter()
            .find(|(_, k)| k.created.saturating_add(publish) <= now && k.created.saturating_add(publish) >= t)
            .map(|(id, _)| id),
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

/// Writes a new random key under a random id; returns the id.
async fn create_key(store: &dyn Storage) -> Result<String, StorageError> {
    create_key_at(store, now_secs()).await.map(|(id, _)| id)
}

/// Writes a new random key created at `created`; returns its id and key.
async fn create_key_at(store: &dyn Storage, created: u64) -> Result<(String, Arc<Key>), StorageError> {
    let mut secret = [0u8; 32];
    crate::random_bytes(&mut secret);
    let mut id = [0u8; 8];
    crate::random_bytes(&mut id);
    let id = hex::encode(id);
    let doc = KeyDoc { secret: hex::encode(secret), created };
    let bytes = serde_json::to_vec(&doc).map_err(|e| StorageError::Backend(format!("encoding a key: {e}")))?;
    store.state_put(&format!("{KEYS_DIR}/{id}"), Bytes::from(bytes)).await?;
    Ok((id, Arc::new(Key::new(&secret, created))))
}

/// One rotation step on the set just read (`keys`, updated in place): a
/// new key when the newest is older than `every`; keys that stopped
/// signing more than `overlap` ago deleted. Store errors are logged; the
/// set in memory then stays as it was read.
async fn rotate(store: &dyn Storage, keys: &mut BTreeMap<String, Arc<Key>>, rotation: Rotation, now: u64) {
    if rotation.every.is_zero() {
        return;
    }
    let newest = keys.values().map(|k| k.created).max().unwrap_or(0);
    if newest.saturating_add(rotation.every.as_secs().max(1)) <= now {
        match create_key_at(store, now).await {
            Ok((id, key)) => {
                tracing::info!(key_id = %id, "rotated the token signing keys: wrote a new key");
                keys.insert(id, key);
            }
            Err(e) => tracing::warn!(error = %e, "cannot write a new token signing key; keeping the current ones"),
        }
    }
    // A key stopped signing when the next generation was published (its
    // first key created more than `publish` after it, plus `publish`); it
    // retires `overlap` after that.
    let publish = rotation.publish().as_secs();
    let retired: Vec<String> = keys
        .iter()
        .filter(|(_, k)| {
            let successor = keys.values().map(|j| j.created).filter(|c| *c > k.created.saturating_add(publish)).min();
            successor.is_some_and(|c| now >= c.saturating_add(publish).saturating_add(rotation.overlap.as_secs()))
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in retired {
        match store.state_delete(&format!("{KEYS_DIR}/{id}")).await {
            Ok(_) => {
                tracing::info!(key_id = %id, "retired a token signing key");
                keys.remove(&id);
            }
            Err(e) => tracing::warn!(key_id = %id, error = %e, "cannot delete a retired token signing key"),
        }
    }
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
        let doc = serde_json::from_slice::<KeyDoc>(&raw).ok();
        let secret = doc.as_ref().and_then(|d| hex::decode(&d.secret).ok());
        match (secret, doc) {
            (Some(s), Some(d)) if s.len() >= MIN_SIGNING_KEY_LEN => {
                out.insert(id, Arc::new(Key::new(&s, d.created)));
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
        let k = SigningKeys::shared(s.clone(), None).await.unwrap();
        let ids = k.ids();
        assert_eq!(ids.len(), 1);
        assert_eq!(s.state_list(KEYS_DIR).await.unwrap(), ids);
        // A second replica loads it instead of writing another.
        let k2 = SigningKeys::shared(s.clone(), None).await.unwrap();
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
        let (ka, kb) = tokio::join!(SigningKeys::shared(s.clone(), None), SigningKeys::shared(s.clone(), None));
        let (ka, kb) = (ka.unwrap(), kb.unwrap());
        assert_eq!(ka.signing().unwrap().0, smallest);
        assert_eq!(kb.signing().unwrap().0, smallest);
        assert_eq!(ka.derive("ui-session"), kb.derive("ui-session"));

        // Two starting at the very same moment on an empty store.
        let (_d2, s2) = store();
        let (x, y) = tokio::join!(SigningKeys::shared(s2.clone(), None), SigningKeys::shared(s2.clone(), None));
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
        let k = SigningKeys::shared(s.clone(), None).await.unwrap();
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
        let a = issuer(SigningKeys::shared(s.clone(), None).await.unwrap());
        let token = a.issue(&alice(), &[]).unwrap().token;
        // A replica (or a restart) that loads the set later accepts it.
        let b = issuer(SigningKeys::shared(s.clone(), None).await.unwrap());
        assert!(matches!(b.check(&token).await, TokenCheck::Valid(v) if v.identity.name() == Some("alice")));
        // An in-memory key elsewhere does not.
        let c = issuer(SigningKeys::random());
        assert!(matches!(c.check(&token).await, TokenCheck::NotOurs));
    }

    #[tokio::test]
    async fn an_unknown_kid_rereads_the_set_once_per_interval() {
        use crate::token::TokenCheck;
        let (_d, s) = store();
        let b = issuer(SigningKeys::shared(s.clone(), None).await.unwrap());
        // Another replica's key written after b loaded the set, with an id
        // smaller than every other so that it also takes over signing.
        s.state_put("keys/0000000000000001", key_doc(&[9u8; 32])).await.unwrap();
        let other = issuer(SigningKeys::shared(s.clone(), None).await.unwrap());
        let token = other.issue(&alice(), &[]).unwrap().token;
        assert_eq!(other.keys().signing().unwrap().0, "0000000000000001");
        // The first unknown id re-reads at once, even right after start.
        assert!(matches!(b.check(&token).await, TokenCheck::Valid(_)), "re-read on the unknown kid");
        assert_eq!(b.keys().signing().unwrap().0, "0000000000000001", "signs with the smallest id now");
        // A key written next is only seen after UNKNOWN_KID_REFRESH.
        s.state_put("keys/0000000000000000", key_doc(&[8u8; 32])).await.unwrap();
        let newer = issuer(SigningKeys::shared(s.clone(), None).await.unwrap());
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

    async fn set_of(s: &Arc<dyn Storage>) -> BTreeMap<String, Arc<Key>> {
        read_set(s.as_ref(), &BTreeMap::new()).await.unwrap()
    }

    #[tokio::test]
    async fn rotation_publishes_a_new_key_then_retires_the_old_one() {
        let (_d, s) = store();
        let rotation = Rotation::new(Duration::from_secs(100), Duration::from_secs(50));
        let publish = rotation.publish();
        assert_eq!(publish, Duration::from_millis(12_500));
        // `0s` (never rotate) must not turn the refresh into a busy loop.
        let never = Rotation::new(Duration::ZERO, Duration::from_secs(50));
        assert_eq!(never.refresh(), SIGNING_REFRESH);
        let (k1, _) = create_key_at(s.as_ref(), 1000).await.unwrap();
        let mut keys = set_of(&s).await;
        rotate(s.as_ref(), &mut keys, rotation, 1099).await;
        assert_eq!(keys.len(), 1, "not due before `every`");
        rotate(s.as_ref(), &mut keys, rotation, 1100).await;
        assert_eq!(keys.len(), 2, "a new key once the newest is `every` old");
        assert_eq!(set_of(&s).await.len(), 2, "written to the store");
        let k2 = keys.keys().find(|id| **id != k1).unwrap().clone();
        // The new key signs only once published; until then the old one.
        assert_eq!(active_id(&keys, 1111, publish), Some(&k1));
        assert_eq!(active_id(&keys, 1112, publish), Some(&k2));
        // The old key verifies for `overlap` after the new one took over.
        rotate(s.as_ref(), &mut keys, rotation, 1161).await;
        assert!(keys.contains_key(&k1), "still within the overlap");
        rotate(s.as_ref(), &mut keys, rotation, 1162).await;
        assert!(!keys.contains_key(&k1), "retired after the overlap");
        assert_eq!(set_of(&s).await.keys().cloned().collect::<Vec<_>>(), vec![k2.clone()], "deleted from the store");
        // No new key until the new one is `every` old.
        rotate(s.as_ref(), &mut keys, rotation, 1199).await;
        assert_eq!(keys.len(), 1);
    }

    #[tokio::test]
    async fn replicas_rotating_at_once_converge_on_one_key() {
        let (_d, s) = store();
        let rotation = Rotation::new(Duration::from_secs(100), Duration::from_secs(50));
        let (k1, _) = create_key_at(s.as_ref(), 1000).await.unwrap();
        let (mut a, mut b) = (set_of(&s).await, set_of(&s).await);
        // Both find the set due at the same moment: two new keys.
        rotate(s.as_ref(), &mut a, rotation, 1100).await;
        rotate(s.as_ref(), &mut b, rotation, 1101).await;
        let (a, b) = (set_of(&s).await, set_of(&s).await);
        assert_eq!(a.len(), 3);
        let publish = rotation.publish();
        assert_eq!(active_id(&a, 1105, publish), Some(&k1), "the old key signs until the new ones are published");
        let newest: Vec<&String> = a.keys().filter(|id| **id != k1).collect();
        for now in [1113, 1114, 1200] {
            assert_eq!(active_id(&a, now, publish), active_id(&b, now, publish), "same choice at {now}");
            assert_eq!(
                active_id(&a, now, publish),
                newest.first().copied(),
                "smallest id of the new generation at {now}"
            );
        }
    }

    #[tokio::test]
    async fn derived_keys_follow_the_signing_key_and_accept_every_key() {
        let (_d, s) = store();
        let old = create_key_at(s.as_ref(), now_secs() - 1000).await.unwrap().0;
        let k = SigningKeys::shared(s.clone(), Some(Rotation::new(Duration::from_secs(800), Duration::from_secs(60))))
            .await
            .unwrap();
        let before = k.derive_all("ui-session");
        assert_eq!(before.len(), 1);
        assert_eq!(k.signing().unwrap().0, old);
        // Due (the key is 1000 s old): the refresh rotates.
        assert!(k.refresh_if_older(Duration::ZERO).await);
        assert_eq!(k.ids().len(), 2, "a new key was written");
        assert_eq!(k.signing().unwrap().0, old, "the new key is not published yet");
        let after = k.derive_all("ui-session");
        assert_eq!(after.len(), 2, "one derived key per key of the set");
        assert_eq!(after[0], before[0], "the signing key's derived key comes first");
        assert_eq!(k.derive("ui-session"), Some(before[0]));
    }

    fn key_doc(secret: &[u8]) -> Bytes {
        Bytes::from(serde_json::to_vec(&KeyDoc { secret: hex::encode(secret), created: 0 }).unwrap())
    }
}
