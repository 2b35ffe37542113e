//! Rotation of a shared key set: which key signs (the smallest id of the
//! newest published generation), when a new key is written, and when a key
//! that stopped signing is deleted (see the module doc of [`super`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cove_core::Storage;

use super::store::create_key_at;
use super::{Key, KEYS_DIR, NO_ROTATION_PUBLISH, SIGNING_REFRESH};

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

/// The id of the key that signs (see the module doc): the smallest id of
/// the newest published generation, or of all keys while none is published.
pub(super) fn active_id(keys: &BTreeMap<String, Arc<Key>>, now: u64, publish: Duration) -> Option<&String> {
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

/// One rotation step on the set just read (`keys`, updated in place): a
/// new key when the newest is older than `every`; keys that stopped
/// signing more than `overlap` ago deleted. Store errors are logged; the
/// set in memory then stays as it was read.
pub(super) async fn rotate(store: &dyn Storage, keys: &mut BTreeMap<String, Arc<Key>>, rotation: Rotation, now: u64) {
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
