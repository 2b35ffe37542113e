//! Builds the application from a validated configuration and runs the HTTP
//! (or HTTPS, with `[server] tls_cert`/`tls_key`) server until SIGINT/SIGTERM,
//! then shuts down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use cove_auth::AuthService;
use cove_backends::{FsStorage, ObjectStorage};
use cove_core::cache::{PullThrough, UpstreamRoute};
use cove_core::{Registry, Upstream};
use cove_upstreams::OciUpstream;

use crate::app::App;
use crate::config::{Config, ConfigError, StorageKind, Validated};

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

/// Builds the application (storage, authenticator, policy) from the config.
pub async fn build_app(config: &Config, validated: &Validated) -> Result<Arc<App>, StartError> {
    let root = config.storage.root.clone();
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
    let (storage, gc_guard) = crate::ops::guard_storage(storage); // ops hook (issue 7): online GC
                                                                  // Always a pull-through cache, even with no upstream: a config reload may add one.
    let clients = OciUpstream::build_all(&validated.upstreams)
        .map_err(|errors| StartError::Config(ConfigError::Invalid(errors.iter().map(|e| e.to_string()).collect())))?;
    let routes = clients
        .into_iter()
        .map(|u| UpstreamRoute {
            host: u.host().to_owned(),
            tag_ttl: u.tag_ttl(),
            revalidate_wait: u.revalidate_wait(),
            upstream: u,
        })
        .collect();
    let spool = root.join("spool");
    let cache = PullThrough::new(routes, validated.self_hosts.clone(), spool.clone())
        .map_err(|e| StartError::Storage { path: spool.display().to_string(), source: e.into() })?;
    let registry = Registry::new(storage).with_cache(cache);
    let upstream_hosts: Vec<String> = validated.upstreams.iter().map(|u| u.host.clone()).collect();
    let auth = AuthService::from_config(&config.auth, &config.access, &upstream_hosts, validated.public_url.as_deref())
        .await
        .map_err(|e| StartError::Auth(e.to_string()))?;
    log_network_trust(&config.auth);
    let mut app = App::new(registry, Arc::new(auth), validated.public_url.clone());
    app.tls = config.server.tls_cert.is_some();
    let app = Arc::new(app);
    crate::ops::install(&app, config, gc_guard); // ops hook (issue 7): metrics, GC schedule
    Ok(app)
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
            let storage = FsStorage::open(root.clone())
                .map_err(|source| StartError::Storage { path: root.display().to_string(), source })?;
            Ok(Arc::new(storage))
        }
    }
}

/// Loads `[server] tls_cert`/`tls_key` when set: fails, naming the key, when
/// a file is unreadable, does not parse, or the key does not match.
pub fn open_tls(config: &Config) -> Result<Option<Arc<crate::tls::CertStore>>, StartError> {
    match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(crate::tls::CertStore::open(cert, key)?)),
        _ => Ok(None),
    }
}

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the server on `listener` until `shutdown` resolves; with `tls`, every
/// connection is TLS (ALPN h2, http/1.1).
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    upload_ttl: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let expiry = {
        let registry = app.registry.clone();
        tokio::spawn(async move {
            // Sweep at least twice per TTL so a session never outlives it by much.
            let period = (upload_ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(600));
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                match registry.expire_uploads(upload_ttl).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "removed idle upload sessions"),
                    Err(e) => tracing::warn!(error = %e, "upload expiry failed"),
                }
            }
        })
    };
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let svc = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.handle(req, peer).await) }
                });
                match &acceptor {
                    None => {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                        let conn = graceful.watch(conn);
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        });
                    }
                    Some(acceptor) => {
                        // The handshake runs in the connection's task, so a
                        // slow client never holds up the accept loop.
                        let accept = acceptor.accept(stream);
                        let watcher = graceful.watcher();
                        let builder = builder.clone();
                        tokio::spawn(async move {
                            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc).into_owned();
                            if let Err(e) = watcher.watch(conn).await {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        });
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    expiry.abort();
    drop(listener);
    tracing::info!("shutting down: waiting for open connections");
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after 30s; exiting anyway");
    }
}

/// Resolves on SIGINT or SIGTERM (SIGINT only where SIGTERM does not exist).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds the configured address.
pub async fn bind(validated: &Validated) -> Result<TcpListener, StartError> {
    TcpListener::bind(validated.listen)
        .await
        .map_err(|source| StartError::Listen { addr: validated.listen.to_string(), source })
}
