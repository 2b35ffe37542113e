//! Re-reading (and rotating) the token signing keys shared through the
//! storage, on every replica, so each loads keys the others wrote and the
//! set rotates on schedule even when no token is being issued.

use std::sync::Arc;

use cove_auth::keys::SigningKeys;
use tokio::task::JoinHandle;

use crate::auth_slot::AuthSlot;

/// Every [`Rotation::refresh`](cove_auth::keys::Rotation::refresh), re-reads
/// the key set of the current `AuthService` (it changes on reload) and
/// `also` (the set the web interface's sessions derive from, if it is
/// another one). `None` when the keys are not shared (a key file, or a
/// store without shared state): nothing to do.
pub fn spawn_key_refresh(auth: Arc<AuthSlot>, also: Option<Arc<SigningKeys>>) -> Option<JoinHandle<()>> {
    let rotation = auth.current().signing_keys().rotation()?;
    let period = rotation.refresh();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let current = auth.current().signing_keys().clone();
            current.refresh_if_older(period / 2).await;
            if let Some(other) = also.as_ref().filter(|o| !Arc::ptr_eq(o, &current)) {
                other.refresh_if_older(period / 2).await;
            }
        }
    }))
}
