//! Tests of the key set: creation and convergence of replicas, re-reads
//! and their rate limits, rotation and retirement, derived keys.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;

use super::store::{create_key_at, KeyDoc};
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
        assert_eq!(active_id(&a, now, publish), newest.first().copied(), "smallest id of the new generation at {now}");
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
