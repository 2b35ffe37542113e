//! The key set in the storage's shared state: one JSON document per key
//! (`keys/<id>`: the secret in hex and the creation time), written under a
//! random id and read back whole.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use cove_core::{Storage, StorageError};
use serde::{Deserialize, Serialize};

use super::{is_key_id, now_secs, Key, KEYS_DIR, MIN_SIGNING_KEY_LEN};

/// One key document as stored (`keys/<id>`).
#[derive(Serialize, Deserialize)]
pub(super) struct KeyDoc {
    /// The secret, hex.
    pub(super) secret: String,
    /// Creation time, Unix seconds.
    pub(super) created: u64,
}

/// Writes a new random key under a random id; returns the id.
pub(super) async fn create_key(store: &dyn Storage) -> Result<String, StorageError> {
    create_key_at(store, now_secs()).await.map(|(id, _)| id)
}

/// Writes a new random key created at `created`; returns its id and key.
pub(super) async fn create_key_at(store: &dyn Storage, created: u64) -> Result<(String, Arc<Key>), StorageError> {
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

/// Reads every key of the set; keys already in `known` are not fetched
/// again (a key's document never changes). Unreadable documents are
/// skipped with a warning.
pub(super) async fn read_set(
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
