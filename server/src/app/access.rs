//! The one access check: every route's [`Access`] is judged here, before
//! its handler runs.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderMap;

use cove_auth::AuthService;
use cove_core::{AuthRequest, ErrorCode, Identity, Registry, RegistryError, RepoName};

use crate::app::router::{Access, Route};

/// What the check established: the authentication snapshot the request
/// keeps, who is calling, and the repository its route names.
pub struct Grant {
    pub auth: Arc<AuthService>,
    pub identity: Identity,
    /// The route's repository, resolved (containerd's `ns=` applied).
    pub repository: Option<RepoName>,
}

impl Grant {
    /// Whether the caller sees `repo` in the catalog (it may pull it).
    pub fn visible_in_catalog(&self, repo: &RepoName) -> bool {
        self.auth.visible_in_catalog(&self.identity, repo)
    }

    /// Whether a cross-repository mount may read `source`: the caller must
    /// be allowed to pull it (else the client gets a plain upload session).
    pub async fn may_mount_from(&self, headers: &HeaderMap, peer: SocketAddr, source: &RepoName) -> bool {
        let fwd = Forwarding::of(headers);
        self.auth.may_mount_from(&auth_request(headers, peer, &fwd), source).await
    }
}

impl Grant {
    /// Checks a browser login: `authorization` (a `Basic` header built from
    /// the login form) goes through the same boundary, failed-login limiter
    /// and authenticator as an API request's credentials.
    pub async fn login(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        authorization: &str,
    ) -> Result<Identity, RegistryError> {
        let fwd = Forwarding::of(headers);
        let mut areq = auth_request(headers, peer, &fwd);
        areq.authorization = Some(authorization);
        self.auth.authorize(&areq, None).await
    }

    /// The client's address: the peer, or the client a trusted proxy
    /// forwarded for (as the network boundary judged it).
    pub fn client_address(&self, headers: &HeaderMap, peer: SocketAddr) -> std::net::IpAddr {
        let fwd = Forwarding::of(headers);
        self.auth
            .boundary()
            .admit(peer.ip(), fwd.x_forwarded_for.as_deref(), fwd.forwarded.as_deref())
            .unwrap_or_else(|_| cove_auth::network::canonical_ip(peer.ip()))
    }

    /// Issues a registry token for the scopes `query` asks for; the issuer
    /// judges the network boundary and the credentials itself.
    pub async fn issue_token(
        &self,
        query: &str,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Result<cove_auth::TokenResponse, RegistryError> {
        let fwd = Forwarding::of(headers);
        self.auth.token(query, &auth_request(headers, peer, &fwd)).await
    }
}

/// Checks that the request may take `route`. `ns` is containerd's mirror
/// namespace, which decides what a repository name means.
pub async fn check(
    route: &Route,
    auth: Arc<AuthService>,
    registry: &Registry,
    headers: &HeaderMap,
    peer: SocketAddr,
    ns: Option<&str>,
) -> Result<Grant, RegistryError> {
    let fwd = Forwarding::of(headers);
    let areq = auth_request(headers, peer, &fwd);
    let mut repository = None;
    let identity = match route.access() {
        Access::Public | Access::TokenIssuer => Identity::Anonymous,
        Access::LoopbackAdmin => {
            loopback_admin(headers, peer)?;
            Identity::Anonymous
        }
        Access::Browser => {
            // The same boundary as the API; the UI's session names the identity.
            auth.boundary().admit(peer.ip(), fwd.x_forwarded_for.as_deref(), fwd.forwarded.as_deref())?;
            Identity::Anonymous
        }
        Access::Authenticated => auth.authorize(&areq, None).await?,
        // Listing repositories needs the catalog scope, not just any token.
        Access::Catalog => auth.authorize_catalog(&areq).await?,
        Access::Repository(action) => {
            let repo = resolve(route, registry, ns)?;
            let identity = auth
                .authorize(&areq, Some((&repo, action)))
                .await
                .map_err(|e| explain_default_upstream(e, route, registry, &repo, ns))?;
            repository = Some(repo);
            identity
        }
    };
    Ok(Grant { auth, identity, repository })
}

/// The repository a route names, resolved against the mirror namespace.
fn resolve(route: &Route, registry: &Registry, ns: Option<&str>) -> Result<RepoName, RegistryError> {
    match route {
        Route::Repository { name, .. } => registry.resolve_name(name, ns),
        _ => Err(RegistryError::internal("repository access on a route without a repository")),
    }
}

/// A refusal of a name that Docker Hub mirror mode gave to its default
/// upstream says so: the client wrote the name without that prefix.
fn explain_default_upstream(
    mut e: RegistryError,
    route: &Route,
    registry: &Registry,
    repo: &RepoName,
    ns: Option<&str>,
) -> RegistryError {
    let mirror_mode = registry.cache().is_some_and(|c| c.name_rules().default_upstream.is_some());
    if let Route::Repository { name, .. } = route {
        if mirror_mode && e.code == ErrorCode::Denied && ns.is_none() && repo.as_str() != name {
            e.message = format!(
                "{} ({name} means {repo} here: in Docker Hub mirror mode only names under mirror.private_prefixes are private)",
                e.message
            );
        }
    }
    e
}

/// Admin endpoints answer only a loopback peer that forwards for nobody.
fn loopback_admin(headers: &HeaderMap, peer: SocketAddr) -> Result<(), RegistryError> {
    if !peer.ip().is_loopback() || headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded") {
        return Err(RegistryError::new(ErrorCode::Denied, "admin endpoints answer only to loopback clients"));
    }
    Ok(())
}

/// What the authenticator may see of a request. A non-UTF-8 `Authorization`
/// header is passed as empty so it is refused as malformed, not ignored.
/// `forwarded` is [`Forwarding::of`] the same headers.
fn auth_request<'a>(headers: &'a HeaderMap, peer: SocketAddr, forwarded: &'a Forwarding) -> AuthRequest<'a> {
    AuthRequest {
        peer: peer.ip(),
        authorization: headers.get(http::header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("")),
        forwarded_for: forwarded.x_forwarded_for.as_deref(),
        forwarded: forwarded.forwarded.as_deref(),
    }
}

/// The forwarding headers of a request, each header's lines joined in order
/// (proxies may send several). A line that is not text is kept as an
/// unreadable entry, so it is judged (and refused) rather than skipped.
pub struct Forwarding {
    x_forwarded_for: Option<String>,
    forwarded: Option<String>,
}

impl Forwarding {
    pub fn of(headers: &HeaderMap) -> Forwarding {
        let joined = |name: &str| {
            let parts: Vec<&str> = headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("?")).collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        };
        Forwarding { x_forwarded_for: joined("x-forwarded-for"), forwarded: joined("forwarded") }
    }
}
