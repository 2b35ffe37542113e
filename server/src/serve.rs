//! `cove serve`: builds every component from a validated configuration
//! (storage, the pull-through cache, authentication, metrics, the background
//! jobs, the reloader, the HTTP application), each given the handles it
//! needs, then serves HTTP (or HTTPS with `[server] tls_cert`/`tls_key`)
//! until SIGINT/SIGTERM and shuts down gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use cove_auth::AuthService;
use cove_backends::{FsStorage, ObjectStorage};
use cove_core::cache::PullThrough;
use cove_core::retention::ActivityLog;
use cove_core::storage::RepoIndex;
use cove_core::Registry;

use crate::app::{App, Operations};
use crate::auth_slot::AuthSlot;
use crate::config::{Config, ConfigError, GcSettings, RetentionSettings, StorageKind, Validated};
use crate::jobs::gc::{guard_storage, GarbageCollector};
use crate::jobs::prefetch::PrefetchJob;
use crate::jobs::retention::{RetentionHandles, RetentionJob};
use crate::jobs::{activity, keys, maintenance, repo_index, tls_watch, uploads, Jobs};
use crate::metrics::Metrics;
use crate::reload::{self, ConfigSource, ReloadTargets, Reloader};
use crate::tls::CertStore;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open storage at {path}: {source}")]
    Storage { path: String, source: cove_core::StorageError },
    #[error("cannot open object storage: {0}")]
    Object(String),
    #[error("cannot set up authentication: {0}")]
    Auth(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Serves `config` (read from `source`, which a reload reads again) until
/// `shutdown` resolves.
pub async fn serve(config: Config, source: ConfigSource, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let validated = config.validate()?;
    let tls = open_tls(&config)?;
    let server = build(&config, &validated, source, tls.clone()).await?;
    let tls_config = match &tls {
        Some(store) => Some(store.server_config()?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(validated.listen)
        .await
        .map_err(|source| StartError::Listen { addr: validated.listen.to_string(), source })?;
    let mut jobs = server.jobs;
    if let Some(store) = tls {
        jobs.add(tls_watch::spawn_cert_watcher(store));
    }
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let scheme = if tls_config.is_some() { "https" } else { "http" };
    tracing::info!(listen = %addr, scheme, storage = %config.storage.describe(), "cove is serving");
    crate::listener::run(server.app, listener, tls_config, validated.http.clone(), shutdown).await;
    // The lease first: its keeper may be half-way through a claim, which
    // stopping the jobs would cut off and leave in the store for a ttl.
    server.lease.release().await;
    jobs.stop();
    activity::save_at_shutdown(&server.activity, server.shared_activity.as_deref()).await;
    Ok(())
}

/// A built server: the application and its running jobs.
struct Built {
    app: Arc<App>,
    jobs: Jobs,
    activity: Arc<ActivityLog>,
    shared_activity: Option<Arc<activity::SharedActivity>>,
    lease: Arc<cove_core::lease::LeaseKeeper>,
}

/// Builds every component and starts the background jobs.
async fn build(
    config: &Config,
    validated: &Validated,
    source: ConfigSource,
    tls: Option<Arc<CertStore>>,
) -> Result<Built, StartError> {
    let (registry, gc_guard) = open_registry(config, validated).await?;
    let upstream_hosts = validated.upstream_hosts();
    // Without a key file the token signing keys live in the storage's
    // shared state, so replicas on one bucket accept each other's tokens.
    let auth = AuthService::from_config_with_state(
        &config.auth,
        &config.access,
        &upstream_hosts,
        validated.public_url.as_deref(),
        Some(registry.storage().clone()),
        config.ui.signed_credential_ttl(),
    )
    .await
    .map_err(|e| StartError::Auth(e.to_string()))?;
    let ui_keys = auth.signing_keys().clone();
    log_network_trust(&config.auth);
    let auth = Arc::new(AuthSlot::new(Arc::new(auth)));
    let metrics = Arc::new(Metrics::new());
    metrics.set_replica(&config.server.replica_name());
    metrics.set_enabled(config.metrics.enabled);
    let activity = Arc::new(ActivityLog::load(&activity::activity_path(config)));
    let shared_activity = activity::SharedActivity::for_config(config, registry.storage().clone(), activity.clone());
    if let Some(shared) = &shared_activity {
        shared.restore().await;
    }
    registry.set_activity(activity.clone());
    let lease = maintenance::keeper(config, registry.storage().clone());
    let gc = Arc::new(GarbageCollector::new(
        registry.clone(),
        gc_guard.clone(),
        metrics.clone(),
        GcSettings::from_config(config),
        lease.clone(),
    ));
    let handles = RetentionHandles {
        guard: gc_guard,
        metrics: metrics.clone(),
        activity: activity.clone(),
        shared: shared_activity.clone(),
        keeper: lease.clone(),
    };
    let retention = Arc::new(RetentionJob::new(registry.clone(), handles, RetentionSettings::from_config(config)));
    let prefetch = Arc::new(PrefetchJob::new(registry.clone(), validated.prefetch.clone()));
    let targets = ReloadTargets {
        auth: auth.clone(),
        registry: registry.clone(),
        gc: gc.clone(),
        retention: retention.clone(),
        prefetch: prefetch.clone(),
        metrics: metrics.clone(),
        tls,
    };
    let reloader = Arc::new(Reloader::new(source, config, targets));
    let mut jobs = Jobs::default();
    jobs.add(lease.spawn());
    jobs.add(gc.spawn_schedule());
    jobs.add(retention.spawn_schedule());
    jobs.add(prefetch.spawn_schedule());
    jobs.add(activity::spawn_activity_saver(activity.clone(), shared_activity.clone(), activity::save_every(config)));
    jobs.add(uploads::spawn_upload_expiry(registry.clone(), validated.upload_ttl));
    if let Some(task) = repo_index::spawn_repo_index(registry.clone()) {
        jobs.add(task);
    }
    if let Some(task) = keys::spawn_key_refresh(auth.clone(), Some(ui_keys.clone())) {
        jobs.add(task);
    }
    if let Some(task) = reload::spawn_sighup_handler(reloader.clone()) {
        jobs.add(task);
    }
    let ops = Operations {
        metrics,
        gc,
        retention,
        prefetch,
        reloader,
        quarantine_dir: config.storage.root.join("quarantine"),
        identity: crate::status::ServerIdentity { replica: config.server.replica_name(), started: SystemTime::now() },
        ui: config
            .ui
            .enabled
            .then(|| crate::ui::Ui::new(config.ui.session_ttl(), browser_login(config), Some(ui_keys))),
    };
    let tls_on = config.server.tls_cert.is_some();
    let app = Arc::new(App::new(registry, auth, tls_on, validated.http.clone(), ops));
    Ok(Built { app, jobs, activity, shared_activity, lease })
}

/// Opens storage (guarded so GC runs while serving) and the registry on it,
/// always with a pull-through cache, even with no upstream: a config reload
/// may add one.
async fn open_registry(
    config: &Config,
    validated: &Validated,
) -> Result<(Registry, Arc<cove_core::gc::GcGuard>), StartError> {
    let storage = open_storage(config)?;
    if config.storage.object.is_some() {
        // Fail at start, not on the first request, when the bucket is
        // unreachable, missing or refuses the credentials.
        storage.check().await.map_err(|e| {
            StartError::Object(format!(
                "cannot write to {} (check storage.endpoint, storage.bucket, storage.region and the credentials, \
                 storage.access_key_id/storage.secret_access_key or the environment): {e}",
                config.storage.describe()
            ))
        })?;
    }
    let index = RepoIndex::new(storage.capabilities().shared);
    let (storage, gc_guard) = guard_storage(storage, index.clone());
    let routes = crate::upstreams::build_routes(&validated.upstreams)
        .map_err(|problems| StartError::Config(ConfigError::Invalid(problems)))?;
    let spool = config.storage.root.join("spool");
    let cache = PullThrough::new(routes, validated.name_rules(), spool.clone())
        .map_err(|e| StartError::Storage { path: spool.display().to_string(), source: e.into() })?;
    Ok((Registry::new(storage).with_cache(cache).with_repo_index(index), gc_guard))
}

/// The registry and pull-through cache of `config` without a server (for
/// `cove prefetch` with the server stopped).
pub async fn open_registry_offline(config: &Config) -> Result<Registry, StartError> {
    let validated = config.validate()?;
    Ok(open_registry(config, &validated).await?.0)
}

/// Says at start who may connect and whose forwarding headers are believed,
/// so a reverse-proxy set-up can be checked from the first log lines.
fn log_network_trust(auth: &cove_auth::AuthConfig) {
    let proxies = if auth.trusted_proxies.is_empty() {
        "none (forwarding headers can only refuse a request)".to_owned()
    } else {
        auth.trusted_proxies.join(", ")
    };
    tracing::info!(
        auth = auth.kind.as_str(),
        trusted_networks = %auth.trusted_networks.join(", "),
        trusted_proxies = %proxies,
        "network trust: clients are judged by their own address; X-Forwarded-For/Forwarded believed only from trusted_proxies"
    );
}

/// Opens the configured storage backend.
pub fn open_storage(config: &Config) -> Result<Arc<dyn cove_core::Storage>, StartError> {
    match (config.storage.kind, &config.storage.object) {
        (StorageKind::Object, Some(object)) => {
            let storage = ObjectStorage::from_config(object).map_err(|e| StartError::Object(e.to_string()))?;
            Ok(Arc::new(storage))
        }
        _ => {
            let root = &config.storage.root;
            let storage = FsStorage::open_with_floor(root.clone(), config.storage.min_free())
                .map_err(|source| StartError::Storage { path: root.display().to_string(), source })?;
            Ok(Arc::new(storage))
        }
    }
}

/// Loads `[server] tls_cert`/`tls_key` when set: fails, naming the key, when
/// a file is unreadable, does not parse, or the key does not match.
fn open_tls(config: &Config) -> Result<Option<Arc<CertStore>>, StartError> {
    match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(CertStore::open(cert, key)?)),
        _ => Ok(None),
    }
}

/// The web interface's OIDC browser login, under `auth.kind = "oidc"`.
fn browser_login(config: &Config) -> Option<cove_auth::oidc_login::BrowserLogin> {
    let oidc = config.auth.oidc.as_ref().filter(|_| config.auth.kind == cove_auth::AuthKind::Oidc)?;
    let client_id = config.ui.oidc_client_id.clone().unwrap_or_else(|| oidc.audience.clone());
    match cove_auth::oidc_login::BrowserLogin::new(oidc, &client_id) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "web interface: no OIDC browser login");
            None
        }
    }
}
