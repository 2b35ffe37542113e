//! [`AuthService`]: the one entry point the HTTP server calls per request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cove_core::{
    AccessPolicy, Action, AuthRequest, Authenticator, Challenge, ChallengeError, ErrorCode, Identity, RegistryError,
    RepoName, Storage,
};

use crate::config::{self, AccessRule, AuthConfig, AuthKind, ConfigProblem};
use crate::credentials::Credentials;
use crate::htpasswd::{HtpasswdAuthenticator, HtpasswdError, HtpasswdOptions};
use crate::keys::{Rotation, SigningKeys};
use crate::network::{NetworkAuthenticator, NetworkBoundary};
use crate::oidc::OidcAuthenticator;
use crate::policy::{Actions, RulePolicy};
use crate::ratelimit::FailureLimiter;
use crate::token::{Scope, TokenCheck, TokenIssuer, TokenResponse, VerifiedToken};

/// Why an [`AuthService`] could not be built from config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthBuildError {
    /// The config is invalid; every problem is listed with its key path.
    #[error("invalid auth configuration: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigProblem>),
    /// The htpasswd file could not be loaded.
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
    /// Another setup failure (signing key file, HTTP client).
    #[error("{0}")]
    Setup(String),
}

/// Everything the server needs for authentication and authorization: the
/// network boundary, an [`Authenticator`], an [`AccessPolicy`], the registry
/// token issuer and the failed-login limiter.
pub struct AuthService {
    boundary: NetworkBoundary,
    authenticator: Arc<dyn Authenticator>,
    policy: Arc<dyn AccessPolicy>,
    tokens: TokenIssuer,
    limiter: FailureLimiter,
    /// The token endpoint URL for Bearer challenges; `None` → the
    /// authenticator's own challenge (Basic for htpasswd).
    realm: Option<String>,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService")
            .field("kind", &self.authenticator.kind())
            .field("boundary", &self.boundary)
            .field("tokens", &self.tokens)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// How the caller was identified.
enum Caller {
    /// No `Authorization` header.
    NoCredentials,
    /// Verified by the authenticator.
    Authenticated(Identity),
    /// A registry token of ours.
    Token(VerifiedToken),
}

impl Caller {
    fn identity(&self) -> &Identity {
        match self {
            Caller::NoCredentials => &Identity::Anonymous,
            Caller::Authenticated(i) => i,
            Caller::Token(t) => &t.identity,
        }
    }
}

impl AuthService {
    /// Validates `[auth]`/`[[access]]` and builds the service: loads the
    /// htpasswd file or prepares OIDC (keys are fetched lazily), reads or
    /// generates the token key. `upstream_hosts` are the first components of
    /// cached upstream namespaces (pull-only by default); `public_url` is the
    /// registry's external base URL, used for the token realm
    /// (`<public_url>/token`) unless `auth.token.realm` is set.
    pub async fn from_config(
        auth: &AuthConfig,
        access: &[AccessRule],
        upstream_hosts: &[String],
        public_url: Option<&str>,
    ) -> Result<Self, AuthBuildError> {
        AuthService::from_config_with_state(auth, access, upstream_hosts, public_url, None, Duration::ZERO).await
    }

    /// [`AuthService::from_config`] with the storage whose shared state
    /// holds the token signing keys when `auth.token.signing_key_file` is
    /// not set (see [`SigningKeys`]), so replicas on one store accept each
    /// other's tokens. `None`: a random in-memory key. `credential_ttl` is
    /// the lifetime of other credentials signed with keys derived from the
    /// set (web sessions): a rotated-out key verifies that long, or the
    /// token lifetime if longer.
    pub async fn from_config_with_state(
        auth: &AuthConfig,
        access: &[AccessRule],
        upstream_hosts: &[String],
        public_url: Option<&str>,
        state: Option<Arc<dyn Storage>>,
        credential_ttl: Duration,
    ) -> Result<Self, AuthBuildError> {
        let problems = config::validate(auth, access);
        if !problems.is_empty() {
            return Err(AuthBuildError::Config(problems));
        }
        let boundary =
            NetworkBoundary::new(&auth.trusted_networks, &auth.trusted_proxies).map_err(AuthBuildError::Setup)?;
        let service = auth.token.service.clone();
        let authenticator: Arc<dyn Authenticator> = match auth.kind {
            AuthKind::Network => Arc::new(NetworkAuthenticator),
            AuthKind::Htpasswd => {
                let path = auth.htpasswd_file.clone().unwrap_or_default();
                let opts = HtpasswdOptions {
                    cache_ttl: auth.credential_cache_ttl,
                    reload_interval: auth.htpasswd_reload_interval,
                    realm: service.clone(),
                };
                Arc::new(HtpasswdAuthenticator::open(path, opts).await?)
            }
            AuthKind::Oidc => {
                let cfg = auth.oidc.clone().ok_or_else(|| AuthBuildError::Setup("auth.oidc is required".into()))?;
                Arc::new(OidcAuthenticator::new(cfg, &service).map_err(AuthBuildError::Setup)?)
            }
        };
        let policy =
            RulePolicy::new(access, auth.effective_default_policy(), upstream_hosts).map_err(AuthBuildError::Setup)?;
        let keys = match (&auth.token.signing_key_file, state) {
            (Some(path), _) => {
                let bytes = tokio::fs::read(path).await.map_err(|e| {
                    AuthBuildError::Setup(format!("auth.token.signing_key_file: cannot read {path}: {e}"))
                })?;
                SigningKeys::fixed(bytes.trim_ascii())
                    .map_err(|e| AuthBuildError::Setup(format!("auth.token.signing_key_file: {e}")))?
            }
            (None, Some(store)) => {
                // Old keys verify as long as anything they signed lives.
                let margin = (auth.token.key_rotation / 8).min(Duration::from_secs(60));
                let overlap = auth.token.lifetime.max(credential_ttl) + margin;
                let rotation = Rotation::new(auth.token.key_rotation, overlap);
                SigningKeys::shared(store, Some(rotation)).await.map_err(|e| AuthBuildError::Setup(e.to_string()))?
            }
            (None, None) => SigningKeys::random(),
        };
        let tokens = TokenIssuer::with_keys(&auth.token.issuer, &service, auth.token.lifetime, Arc::new(keys));
        let realm =
            auth.token.realm.clone().or_else(|| public_url.map(|u| format!("{}/token", u.trim_end_matches('/'))));
        let limiter = FailureLimiter::new(auth.rate_limit.max_failures, auth.rate_limit.window);
        tracing::info!(kind = auth.kind.as_str(), token_realm = ?realm, "authentication configured");
        Ok(AuthService::new(boundary, authenticator, Arc::new(policy), tokens, limiter, realm))
    }

    /// Assembles a service from parts (custom authenticators, tests).
    pub fn new(
        boundary: NetworkBoundary,
        authenticator: Arc<dyn Authenticator>,
        policy: Arc<dyn AccessPolicy>,
        tokens: TokenIssuer,
        limiter: FailureLimiter,
        realm: Option<String>,
    ) -> Self {
        AuthService { boundary, authenticator, policy, tokens, limiter, realm: realm.map(|r| r.replace('"', "")) }
    }

    /// The token signing keys (the web interface derives its session key
    /// from them).
    pub fn signing_keys(&self) -> &Arc<SigningKeys> {
        self.tokens.keys()
    }

    /// The source-address rules (`auth.trusted_networks`, `auth.trusted_proxies`).
    pub fn boundary(&self) -> &NetworkBoundary {
        &self.boundary
    }

    /// The authenticator's kind (`network`, `htpasswd`, `oidc`).
    pub fn kind(&self) -> &'static str {
        self.authenticator.kind()
    }

    /// How to authenticate for the given scopes, or `None` when credentials
    /// cannot help (network kind). With a token realm it is the Docker token
    /// flow: `Bearer` with the realm, the service and the scopes to ask for.
    pub fn challenge(&self, scopes: &[Scope], error: Option<ChallengeError>) -> Option<Challenge> {
        let native = self.authenticator.challenge()?;
        let Some(realm) = &self.realm else {
            return Some(native);
        };
        Some(Challenge::Bearer {
            realm: realm.clone(),
            service: Some(self.tokens.service().to_owned()),
            scopes: scopes.iter().map(Scope::to_scope_string).collect(),
            error,
        })
    }

    fn unauthorized(&self, message: &str, scopes: &[Scope], error: Option<ChallengeError>) -> RegistryError {
        RegistryError::unauthorized(message, self.challenge(scopes, error))
    }

    /// Boundary, rate limit, credentials → who is calling.
    async fn identify(&self, req: &AuthRequest<'_>, scopes: &[Scope]) -> Result<(IpAddr, Caller), RegistryError> {
        let client = self.boundary.admit(req.peer, req.forwarded_for, req.forwarded)?;
        let Some(header) = req.authorization else {
            return Ok((client, Caller::NoCredentials));
        };
        self.limiter.check(client)?;
        if let Ok(Credentials::Bearer(t)) = Credentials::parse(header) {
            match self.tokens.check(t.expose()).await {
                TokenCheck::Valid(v) => return Ok((client, Caller::Token(v))),
                // Expired tokens are routine (clients refresh on 401): not a failure.
                TokenCheck::Invalid => {
                    return Err(self.unauthorized(
                        "registry token is invalid or expired",
                        scopes,
                        Some(ChallengeError::InvalidToken),
                    ))
                }
                TokenCheck::NotOurs => {}
            }
        }
        let inner =
            AuthRequest { peer: client, authorization: req.authorization, forwarded_for: None, forwarded: None };
        match self.authenticator.authenticate(&inner).await {
            Ok(Identity::Anonymous) => Ok((client, Caller::NoCredentials)),
            Ok(id) => Ok((client, Caller::Authenticated(id))),
            Err(e) if e.code == ErrorCode::Unauthorized => {
                self.limiter.record_failure(client);
                let mut out = self.unauthorized(&e.message, scopes, Some(ChallengeError::InvalidToken));
                if self.realm.is_none() {
                    // Keep the authenticator's own challenge (e.g. OIDC error detail).
                    out.detail = e.detail;
                }
                Err(out)
            }
            Err(e) => Err(e),
        }
    }

    /// Authenticates the request and checks it may perform `need` (`None`:
    /// only authentication, e.g. `GET /v2/` and the catalog). Returns the
    /// identity, `UNAUTHORIZED` with a [`Challenge`] when credentials could
    /// help, `DENIED` when they could not (outside `auth.trusted_networks`,
    /// or the identity lacks the permission), or `TOOMANYREQUESTS` with how
    /// long to wait after too many failed logins.
    pub async fn authorize(
        &self,
        req: &AuthRequest<'_>,
        need: Option<(&RepoName, Action)>,
    ) -> Result<Identity, RegistryError> {
        match need {
            Some(n) => self.authorize_all(req, &[n]).await,
            None => self.authorize_all(req, &[]).await,
        }
    }

    /// Like [`AuthService::authorize`] for several permissions at once; all
    /// must hold (e.g. a cross-repository mount checks push on the target and
    /// pull on the source). An empty list means authentication only.
    pub async fn authorize_all(
        &self,
        req: &AuthRequest<'_>,
        needs: &[(&RepoName, Action)],
    ) -> Result<Identity, RegistryError> {
        let scopes = scopes_for(needs);
        let (_, caller) = self.identify(req, &scopes).await?;
        let identity = caller.identity().clone();
        if needs.is_empty() {
            return match caller {
                Caller::NoCredentials if self.authenticator.challenge().is_some() => {
                    Err(self.unauthorized("authentication required", &[], None))
                }
                _ => Ok(identity),
            };
        }
        let policy_ok = needs.iter().all(|(r, a)| self.policy.allows(&identity, *a, r));
        let token_ok = match &caller {
            Caller::Token(t) => needs.iter().all(|(r, a)| t.grants(r, *a)),
            _ => true,
        };
        if policy_ok && token_ok {
            return Ok(identity);
        }
        let denied_msg = || {
            let what: Vec<String> = needs
                .iter()
                .filter(|(r, a)| !self.policy.allows(&identity, *a, r))
                .map(|(r, a)| format!("{a} on {r}"))
                .collect();
            let who = identity.name().map_or("anonymous".to_owned(), |n| format!("user {n}"));
            format!("{who} is not allowed to {}", what.join(", "))
        };
        if policy_ok {
            // The token lacks a scope the identity could get: ask for a new token.
            return Err(self.unauthorized(
                "token does not grant this access",
                &scopes,
                Some(ChallengeError::InsufficientScope),
            ));
        }
        if !identity.is_authenticated() && self.authenticator.challenge().is_some() {
            return Err(self.unauthorized(&format!("{}; log in", denied_msg()), &scopes, None));
        }
        Err(RegistryError::denied(denied_msg()))
    }

    /// Authorizes `GET /v2/_catalog`: authentication as for `GET /v2/`, and a
    /// registry token must carry the `registry:catalog:*` scope (which the
    /// token endpoint grants only to authenticated identities, or to everyone
    /// on an open registry), so an anonymous token cannot list repositories.
    /// Challenges ask for that scope. The caller filters the list with
    /// [`AuthService::visible_in_catalog`].
    pub async fn authorize_catalog(&self, req: &AuthRequest<'_>) -> Result<Identity, RegistryError> {
        let scopes = [Scope::Catalog];
        let (_, caller) = self.identify(req, &scopes).await?;
        match caller {
            Caller::NoCredentials if self.authenticator.challenge().is_some() => {
                Err(self.unauthorized("authentication required", &scopes, None))
            }
            Caller::Token(t) if self.authenticator.challenge().is_some() && !t.scopes.contains(&Scope::Catalog) => Err(
                self.unauthorized("token does not grant the catalog", &scopes, Some(ChallengeError::InsufficientScope)),
            ),
            caller => Ok(caller.identity().clone()),
        }
    }

    /// True if the caller may pull `source` (for a cross-repository mount,
    /// after `authorize(target, Push)` succeeded). On `false` the server
    /// should fall back to a plain upload session (202), as the spec says.
    pub async fn may_mount_from(&self, req: &AuthRequest<'_>, source: &RepoName) -> bool {
        self.authorize_all(req, &[(source, Action::Pull)]).await.is_ok()
    }

    /// True if the access policy lets `identity` perform `action` on `repo`
    /// (the web interface asks this for an identity from its session).
    pub fn allows(&self, identity: &Identity, action: Action, repo: &RepoName) -> bool {
        self.policy.allows(identity, action, repo)
    }

    /// Whether a browser must log in: the authenticator takes credentials
    /// (htpasswd, OIDC) rather than trusting the network.
    pub fn wants_credentials(&self) -> bool {
        self.authenticator.challenge().is_some()
    }

    /// True if `identity` may see `repo` in the catalog (it may pull it).
    pub fn visible_in_catalog(&self, identity: &Identity, repo: &RepoName) -> bool {
        self.policy.allows(identity, Action::Pull, repo)
    }

    /// The Docker token endpoint (`GET /token?service=…&scope=…&account=…`).
    /// `query` is the raw query string; `req` carries the peer and the
    /// `Authorization` header (Basic credentials, or none for an anonymous
    /// token). Grants each requested scope's actions that the policy allows
    /// (possibly none). Wrong credentials → `UNAUTHORIZED` with a Basic
    /// challenge.
    /// Respond 200 with [`TokenResponse::to_json`].
    pub async fn token(&self, query: &str, req: &AuthRequest<'_>) -> Result<TokenResponse, RegistryError> {
        let mut requested = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if k == "scope" {
                requested.extend(v.split(' ').filter(|s| !s.is_empty()).filter_map(Scope::parse));
            }
        }
        let client = self.boundary.admit(req.peer, req.forwarded_for, req.forwarded)?;
        let identity = match req.authorization {
            None => Identity::Anonymous,
            Some(header) => {
                self.limiter.check(client)?;
                let basic = Challenge::Basic { realm: self.tokens.service().replace('"', "") };
                let verified = match Credentials::parse(header) {
                    Ok(Credentials::Bearer(t)) => match self.tokens.check(t.expose()).await {
                        TokenCheck::Valid(v) => Some(v.identity),
                        _ => None,
                    },
                    _ => None,
                };
                match verified {
                    Some(id) => id,
                    None => {
                        let inner = AuthRequest {
                            peer: client,
                            authorization: Some(header),
                            forwarded_for: None,
                            forwarded: None,
                        };
                        match self.authenticator.authenticate(&inner).await {
                            Ok(id) => id,
                            Err(e) if e.code == ErrorCode::Unauthorized => {
                                self.limiter.record_failure(client);
                                return Err(RegistryError::unauthorized(e.message, Some(basic)));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        };
        let open_registry = self.authenticator.challenge().is_none();
        let mut granted = Vec::new();
        for s in requested {
            match s {
                Scope::Repository { repo, actions } => {
                    let ok: Actions =
                        actions.to_vec().into_iter().filter(|a| self.policy.allows(&identity, *a, &repo)).collect();
                    if ok != Actions::NONE {
                        granted.push(Scope::Repository { repo, actions: ok });
                    }
                }
                Scope::Catalog if identity.is_authenticated() || open_registry => granted.push(Scope::Catalog),
                Scope::Catalog => {}
            }
        }
        tracing::debug!(identity = ?identity, scopes = granted.len(), "registry token issued");
        self.tokens.issue_fresh(&identity, &granted).await.map_err(RegistryError::internal)
    }
}

fn scopes_for(needs: &[(&RepoName, Action)]) -> Vec<Scope> {
    let mut out: Vec<Scope> = Vec::new();
    for (repo, action) in needs {
        // Ask for pull alongside push, as docker does, so one token serves
        // the HEAD checks of a push too.
        let mut acts = Actions::NONE.with(*action);
        if *action == Action::Push {
            acts = acts.with(Action::Pull);
        }
        match out.iter_mut().find(|s| matches!(s, Scope::Repository { repo: r, .. } if r == *repo)) {
            Some(Scope::Repository { actions, .. }) => *actions = actions.union(acts),
            _ => out.push(Scope::Repository { repo: (*repo).clone(), actions: acts }),
        }
    }
    out
}
