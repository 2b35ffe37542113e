//! The network-trust authenticator (default): no logins; every request that
//! reaches Cove is anonymous. Source-network allowlists build on this.

use cove_core::{AuthRequest, Authenticator, Identity, RegistryError};

/// Admits every request as [`Identity::Anonymous`].
#[derive(Debug, Default, Clone)]
pub struct NetworkAuthenticator;

#[async_trait::async_trait]
impl Authenticator for NetworkAuthenticator {
    fn kind(&self) -> &'static str {
        "network"
    }

    async fn authenticate(&self, _request: &AuthRequest<'_>) -> Result<Identity, RegistryError> {
        Ok(Identity::Anonymous)
    }

    fn challenge(&self) -> Option<String> {
        None
    }
}
