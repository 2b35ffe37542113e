//! Configuration reload (issue 7): on SIGHUP (unix) or `POST /admin/reload`
//! (every platform; `cove reload` calls it), the config file the server
//! started with is read, parsed and validated again. Any error rejects the
//! whole file: the reasons are logged (naming the keys) and returned, and the
//! running configuration stays. Otherwise the new settings are swapped in
//! without touching connections or requests in flight:
//!
//! - `[auth]`, `[[access]]`: a new `AuthService`, swapped whole (each request
//!   holds one snapshot, never a mix);
//! - `[upstreams]`: the pull-through routes (hosts that remain keep their
//!   tag freshness, in-flight fetches and counters; unchanged ones keep their
//!   client and its tokens);
//! - `server.hostnames`, `[gc]`, `[metrics]`, `[retention]`;
//! - `server.tls_cert`/`tls_key` (the files are also re-read).
//!
//! `server.listen`, `server.log_format`, `server.public_url`, `[storage]` and
//! turning TLS on or off need a restart: a change is reported with a warning
//! and the running value kept, while the rest is applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Serialize;

use cove_auth::AuthService;
use cove_core::cache::UpstreamRoute;
use cove_core::Upstream;
use cove_upstreams::OciUpstream;

use crate::app::App;
use crate::body::{self, Body};
use crate::config::Config;
use crate::tls::CertStore;

/// What a successful reload changed.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ReloadReport {
    /// Settings applied, e.g. `access`, `upstreams (added: quay.io)`.
    pub changed: Vec<String>,
    /// Keys whose change was not applied: they need a restart.
    pub needs_restart: Vec<String>,
}

/// The running configuration and how to read it again.
pub struct Reloader {
    path: Option<PathBuf>,
    listen_override: Option<String>,
    data_dir_override: Option<PathBuf>,
    tls: Option<Arc<CertStore>>,
    /// The configuration in effect (and its TOML table, for comparisons);
    /// the async mutex also serialises reloads.
    running: tokio::sync::Mutex<Running>,
}

struct Running {
    config: Config,
    table: toml::Table,
}

/// Top-level sections this module knows how to apply (or to refuse).
const APPLIED: [&str; 6] = ["auth", "access", "upstreams", "gc", "metrics", "retention"];

impl Reloader {
    /// `path` is the `--config` file (none: nothing to reload); the
    /// overrides are `--listen` and `--data-dir`, which keep winning.
    pub fn new(
        path: Option<PathBuf>,
        listen_override: Option<String>,
        data_dir_override: Option<PathBuf>,
        config: &Config,
        tls: Option<Arc<CertStore>>,
    ) -> Reloader {
        let table = path.as_deref().and_then(|p| read_table(p).ok()).unwrap_or_default();
        Reloader {
            path,
            listen_override,
            data_dir_override,
            tls,
            running: tokio::sync::Mutex::new(Running { config: config.clone(), table }),
        }
    }

    /// Re-reads the config file and applies it, or keeps everything and
    /// returns every reason (each naming its key or the file).
    pub async fn reload(&self, app: &App) -> Result<ReloadReport, Vec<String>> {
        let result = self.reload_inner(app).await;
        if let Some(ops) = app.ops.get() {
            ops.metrics.record_reload(result.is_ok());
        }
        match &result {
            Ok(r) => {
                for key in &r.needs_restart {
                    tracing::warn!(key = %key, "configuration change not applied: needs a restart");
                }
                let changed = if r.changed.is_empty() { "nothing".to_owned() } else { r.changed.join(", ") };
                tracing::info!(changed = %changed, "configuration reloaded");
            }
            Err(reasons) => tracing::error!(
                reasons = %reasons.join("; "),
                "configuration reload rejected; the running configuration is kept"
            ),
        }
        result
    }

    async fn reload_inner(&self, app: &App) -> Result<ReloadReport, Vec<String>> {
        let mut running = self.running.lock().await;
        let mut report = ReloadReport::default();
        // The certificate files may have changed without the config.
        if let Some(store) = &self.tls {
            let s = store.clone();
            let outcome = tokio::task::spawn_blocking(move || s.reload_if_changed()).await.ok().flatten();
            if matches!(outcome, Some(Ok(()))) {
                report.changed.push("TLS certificate (files changed)".into());
            }
            crate::tls::log_outcome(outcome, "reload");
        }
        let Some(path) = self.path.clone() else {
            return Ok(report);
        };
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| vec![format!("cannot read config file {}: {e}", path.display())])?;
        let new_table: toml::Table =
            toml::from_str(&text).map_err(|e| vec![format!("invalid config file {}: {e}", path.display())])?;
        let mut new = Config::parse(&text).map_err(|e| vec![format!("invalid config file {}: {e}", path.display())])?;
        if let Some(l) = &self.listen_override {
            new.server.listen = l.clone();
        }
        if let Some(d) = &self.data_dir_override {
            new.storage.root = d.clone();
        }
        new.validate().map_err(|e| match e {
            crate::config::ConfigError::Invalid(problems) => problems,
            other => vec![other.to_string()],
        })?;

        // Keys that need a restart keep their running values.
        let old = &running.config;
        let mut effective = new.clone();
        let mut effective_table = new_table.clone();
        let restart = |key: &str, differs: bool, report: &mut ReloadReport| {
            if differs {
                report.needs_restart.push(key.to_owned());
            }
        };
        restart("server.listen", old.server.listen != new.server.listen, &mut report);
        effective.server.listen = old.server.listen.clone();
        restart("server.log_format", old.server.log_format != new.server.log_format, &mut report);
        effective.server.log_format = old.server.log_format;
        restart("server.public_url", old.server.public_url != new.server.public_url, &mut report);
        effective.server.public_url = old.server.public_url.clone();
        let storage_differs =
            get(&running.table, &["storage"]) != get(&new_table, &["storage"]) || old.storage.root != new.storage.root;
        restart("storage", storage_differs, &mut report);
        effective.storage = old.storage.clone();
        let tls_toggled = old.server.tls_cert.is_some() != new.server.tls_cert.is_some();
        restart("server.tls_cert/server.tls_key (turning TLS on or off)", tls_toggled, &mut report);
        if tls_toggled {
            effective.server.tls_cert = old.server.tls_cert.clone();
            effective.server.tls_key = old.server.tls_key.clone();
        }
        for (key, value) in &new_table {
            if key != "server"
                && key != "storage"
                && !APPLIED.contains(&key.as_str())
                && running.table.get(key) != Some(value)
            {
                report.needs_restart.push(key.clone());
            }
        }
        for key in running.table.keys() {
            if key != "server" && key != "storage" && !APPLIED.contains(&key.as_str()) && !new_table.contains_key(key) {
                report.needs_restart.push(key.clone());
            }
        }
        for key in ["listen", "log_format", "public_url"] {
            set_or_remove(&mut effective_table, "server", key, get(&running.table, &["server", key]).cloned());
        }
        match running.table.get("storage") {
            Some(v) => {
                effective_table.insert("storage".into(), v.clone());
            }
            None => {
                effective_table.remove("storage");
            }
        }
        let validated = effective.validate().map_err(|e| vec![e.to_string()])?;
        let old_validated = old.validate().map_err(|e| vec![format!("the running configuration: {e}")])?;

        // Build everything that can fail before applying anything.
        let new_tls = match (&self.tls, &effective.server.tls_cert, &effective.server.tls_key) {
            (Some(store), Some(cert), Some(key)) if store.paths() != (cert.clone(), key.clone()) => {
                let (c, k) = (cert.clone(), key.clone());
                let provider = crate::tls::provider();
                tokio::task::spawn_blocking(move || crate::tls::load_pair(&c, &k, &provider).map(|_| ()))
                    .await
                    .map_err(|e| vec![e.to_string()])?
                    .map_err(|e| vec![e.to_string()])?;
                Some((store.clone(), cert.clone(), key.clone()))
            }
            _ => None,
        };
        let old_hosts: Vec<String> = old_validated.upstreams.iter().map(|u| u.host.clone()).collect();
        let new_hosts: Vec<String> = validated.upstreams.iter().map(|u| u.host.clone()).collect();
        let added: Vec<String> = new_hosts.iter().filter(|h| !old_hosts.contains(h)).cloned().collect();
        let removed: Vec<String> = old_hosts.iter().filter(|h| !new_hosts.contains(h)).cloned().collect();
        let modified: Vec<String> = new_hosts
            .iter()
            .filter(|h| {
                old_hosts.contains(h)
                    && get(&running.table, &["upstreams", h.as_str()])
                        != get(&effective_table, &["upstreams", h.as_str()])
            })
            .cloned()
            .collect();
        let upstreams_changed = !(added.is_empty() && removed.is_empty() && modified.is_empty());
        let new_routes = if upstreams_changed {
            let cache = app.registry.cache();
            let current = cache.map(|c| c.routes()).unwrap_or_default();
            let build: Vec<_> = validated
                .upstreams
                .iter()
                .filter(|u| added.contains(&u.host) || modified.contains(&u.host))
                .cloned()
                .collect();
            let clients = OciUpstream::build_all(&build)
                .map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
            let mut routes: Vec<UpstreamRoute> = clients
                .into_iter()
                .map(|u| UpstreamRoute { host: u.host().to_owned(), tag_ttl: u.tag_ttl(), upstream: u })
                .collect();
            routes.extend(current.into_iter().filter(|r| new_hosts.contains(&r.host) && !modified.contains(&r.host)));
            routes.sort_by(|a, b| a.host.cmp(&b.host));
            Some(routes)
        } else {
            None
        };
        let auth_changed = get(&running.table, &["auth"]) != get(&effective_table, &["auth"])
            || get(&running.table, &["access"]) != get(&effective_table, &["access"]);
        let new_auth = if auth_changed || added.len() + removed.len() > 0 {
            let auth = AuthService::from_config(
                &effective.auth,
                &effective.access,
                &new_hosts,
                validated.public_url.as_deref(),
            )
            .await
            .map_err(|e| vec![format!("auth: {e}")])?;
            Some(Arc::new(auth))
        } else {
            None
        };

        // Apply.
        if let Some(auth) = new_auth {
            app.set_auth(auth);
            if get(&running.table, &["auth"]) != get(&effective_table, &["auth"]) {
                report.changed.push("auth".into());
            }
            if get(&running.table, &["access"]) != get(&effective_table, &["access"]) {
                report.changed.push("access".into());
            }
        }
        if let (Some(routes), Some(cache)) = (new_routes, app.registry.cache()) {
            cache.set_routes(routes);
            let mut parts = Vec::new();
            for (label, hosts) in [("added", &added), ("removed", &removed), ("changed", &modified)] {
                if !hosts.is_empty() {
                    parts.push(format!("{label}: {}", hosts.join(" ")));
                }
            }
            report.changed.push(format!("upstreams ({})", parts.join("; ")));
        }
        if old_validated.self_hosts != validated.self_hosts {
            if let Some(cache) = app.registry.cache() {
                cache.set_self_hosts(validated.self_hosts.clone());
            }
            report.changed.push("server.hostnames".into());
        }
        if get(&running.table, &["gc"]) != get(&effective_table, &["gc"]) {
            if let Some(ops) = app.ops.get() {
                ops.set_gc_settings(crate::config::GcSettings::from_config(&effective));
            }
            report.changed.push("gc".into());
        }
        if get(&running.table, &["metrics"]) != get(&effective_table, &["metrics"]) {
            if let Some(ops) = app.ops.get() {
                ops.set_metrics_enabled(effective.metrics.enabled);
            }
            report.changed.push("metrics".into());
        }
        if get(&running.table, &["retention"]) != get(&effective_table, &["retention"]) {
            crate::retention::reload(app, &effective);
            report.changed.push("retention".into());
        }
        if let Some((store, cert, key)) = new_tls {
            let outcome = tokio::task::spawn_blocking(move || store.reload_from(&cert, &key)).await;
            match outcome {
                Ok(Ok(())) => report.changed.push("server.tls_cert/server.tls_key".into()),
                Ok(Err(e)) => tracing::error!(error = %e, "TLS certificate not reloaded; keeping the previous one"),
                Err(e) => tracing::error!(error = %e, "TLS certificate reload failed"),
            }
        }
        running.config = effective;
        running.table = effective_table;
        Ok(report)
    }
}

fn read_table(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    toml::from_str(&text).map_err(|e| e.to_string())
}

fn get<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let mut v = table.get(*first)?;
    for k in rest {
        v = v.as_table()?.get(*k)?;
    }
    Some(v)
}

fn set_or_remove(table: &mut toml::Table, section: &str, key: &str, value: Option<toml::Value>) {
    let entry = table.entry(section.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(t) = entry.as_table_mut() {
        match value {
            Some(v) => {
                t.insert(key.to_owned(), v);
            }
            None => {
                t.remove(key);
            }
        }
    }
}

/// `POST /admin/reload`: 200 with the [`ReloadReport`], or 400 with
/// `{"errors": [...]}`.
pub async fn admin(app: &App) -> Response<Body> {
    let Some(reloader) = app.reloader.get() else {
        return json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"errors": ["reload is not set up"]}));
    };
    match reloader.reload(app).await {
        Ok(r) => json(
            StatusCode::OK,
            &serde_json::json!({"ok": true, "changed": r.changed, "needs_restart": r.needs_restart}),
        ),
        Err(reasons) => json(StatusCode::BAD_REQUEST, &serde_json::json!({"ok": false, "errors": reasons})),
    }
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

/// Reloads on every SIGHUP for the life of the process (unix only; the
/// admin endpoint works everywhere).
pub fn spawn_signal_handler(app: Arc<App>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; use `cove reload` instead");
                return;
            }
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                if let Some(r) = app.reloader.get() {
                    let _ = r.reload(&app).await;
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = app;
    }
}
