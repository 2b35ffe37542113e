//! The authentication service in effect: read once per request, swapped
//! whole by a config reload.

use std::sync::{Arc, RwLock};

use cove_auth::AuthService;

/// Holds the current [`AuthService`]. A request takes one snapshot
/// ([`AuthSlot::current`]) and never sees a mix of old and new settings.
pub struct AuthSlot(RwLock<Arc<AuthService>>);

impl AuthSlot {
    /// A slot holding `auth` until the first reload.
    pub fn new(auth: Arc<AuthService>) -> AuthSlot {
        AuthSlot(RwLock::new(auth))
    }

    /// The authentication service in effect now.
    pub fn current(&self) -> Arc<AuthService> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the authentication service. Requests that already took a
    /// snapshot finish with the old one.
    pub fn replace(&self, auth: Arc<AuthService>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = auth;
    }
}
