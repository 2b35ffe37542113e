//! Configuration reload: on SIGHUP (unix) or `POST /admin/reload`
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
//! - `server.hostnames`, `[gc]`, `[metrics]`, `[retention]`, `[[prefetch]]`;
//! - `server.tls_cert`/`tls_key` (the files are also re-read).
//!
//! `server.listen`, `server.log_format`, `server.public_url`, `[storage]` and
//! turning TLS on or off need a restart: a change is reported with a warning
//! and the running value kept, while the rest is applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::task::JoinHandle;

use cove_auth::AuthService;
use cove_core::cache::UpstreamRoute;
use cove_core::Registry;

use crate::auth_slot::AuthSlot;
use crate::config::{Config, ConfigError, GcSettings, Validated};
use crate::jobs::gc::GarbageCollector;
use crate::jobs::retention::RetentionJob;
use crate::metrics::Metrics;
use crate::tls::CertStore;

/// What a successful reload changed.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ReloadReport {
    /// Settings applied, e.g. `access`, `upstreams (added: quay.io)`.
    pub changed: Vec<String>,
    /// Keys whose change was not applied: they need a restart.
    pub needs_restart: Vec<String>,
}

/// Where the configuration comes from: the `--config` file (none: nothing
/// to reload) and the `--listen`/`--data-dir` overrides, which keep winning.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub listen_override: Option<String>,
    pub data_dir_override: Option<PathBuf>,
}

/// The running components a reload changes.
pub struct ReloadTargets {
    pub auth: Arc<AuthSlot>,
    pub registry: Registry,
    pub gc: Arc<GarbageCollector>,
    pub retention: Arc<RetentionJob>,
    pub prefetch: Arc<crate::jobs::prefetch::PrefetchJob>,
    pub metrics: Arc<Metrics>,
    pub tls: Option<Arc<CertStore>>,
}

/// The running configuration and how to read it again.
pub struct Reloader {
    source: ConfigSource,
    targets: ReloadTargets,
    /// The configuration in effect (and its TOML table, for comparisons);
    /// the async mutex also serialises reloads.
    running: tokio::sync::Mutex<Running>,
}

struct Running {
    config: Config,
    table: toml::Table,
}

/// A new configuration with the keys that need a restart set back to their
/// running values.
struct Effective {
    config: Config,
    table: toml::Table,
    validated: Validated,
}

/// Everything built from the new configuration before anything is applied,
/// so a failure leaves the running configuration untouched.
struct Prepared {
    /// The certificate store with the new files, already checked.
    tls: Option<(Arc<CertStore>, PathBuf, PathBuf)>,
    upstreams: UpstreamChange,
    auth: Option<Arc<AuthService>>,
}

/// How `[upstreams]` changed, and the new routes when it did.
struct UpstreamChange {
    added: Vec<String>,
    removed: Vec<String>,
    modified: Vec<String>,
    routes: Option<Vec<UpstreamRoute>>,
}

/// Top-level sections this module knows how to apply (or to refuse).
const APPLIED: [&str; 7] = ["auth", "access", "upstreams", "gc", "metrics", "retention", "prefetch"];

impl Reloader {
    /// `config` is the configuration in effect, as read from `source`.
    pub fn new(source: ConfigSource, config: &Config, targets: ReloadTargets) -> Reloader {
        let table = source.path.as_deref().and_then(|p| read_table(p).ok()).unwrap_or_default();
        Reloader { source, targets, running: tokio::sync::Mutex::new(Running { config: config.clone(), table }) }
    }

    /// Re-reads the config file and applies it, or keeps everything and
    /// returns every reason (each naming its key or the file).
    pub async fn reload(&self) -> Result<ReloadReport, Vec<String>> {
        let result = self.reload_locked().await;
        self.targets.metrics.record_reload(result.is_ok());
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

    async fn reload_locked(&self) -> Result<ReloadReport, Vec<String>> {
        let mut running = self.running.lock().await;
        let mut report = ReloadReport::default();
        self.reload_changed_cert_files(&mut report).await;
        let Some(path) = self.source.path.clone() else {
            return Ok(report);
        };
        let (new, new_table) = self.read(&path).await?;
        let effective = keep_restart_keys(&running, new, new_table, &mut report)?;
        let old_validated = running.config.validate().map_err(|e| vec![format!("the running configuration: {e}")])?;
        let prepared = self.prepare(&running, &effective, &old_validated).await?;
        self.apply(prepared, &running, &effective, &old_validated, &mut report).await;
        running.config = effective.config;
        running.table = effective.table;
        Ok(report)
    }

    /// The certificate files may have changed without the config.
    async fn reload_changed_cert_files(&self, report: &mut ReloadReport) {
        if let Some(store) = &self.targets.tls {
            let s = store.clone();
            let outcome = tokio::task::spawn_blocking(move || s.reload_if_changed()).await.ok().flatten();
            if matches!(outcome, Some(Ok(()))) {
                report.changed.push("TLS certificate (files changed)".into());
            }
            crate::tls::log_outcome(outcome, "reload");
        }
    }

    /// Reads, parses and validates the file, with the command-line overrides applied.
    async fn read(&self, path: &Path) -> Result<(Config, toml::Table), Vec<String>> {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| vec![format!("cannot read config file {}: {e}", path.display())])?;
        let new_table: toml::Table =
            toml::from_str(&text).map_err(|e| vec![format!("invalid config file {}: {e}", path.display())])?;
        let mut new = Config::parse(&text).map_err(|e| vec![format!("invalid config file {}: {e}", path.display())])?;
        if let Some(l) = &self.source.listen_override {
            new.server.listen = l.clone();
        }
        if let Some(d) = &self.source.data_dir_override {
            new.storage.root = d.clone();
        }
        new.validate().map_err(|e| match e {
            ConfigError::Invalid(problems) => problems,
            other => vec![other.to_string()],
        })?;
        Ok((new, new_table))
    }

    /// Builds everything that can fail before applying anything.
    async fn prepare(
        &self,
        running: &Running,
        effective: &Effective,
        old_validated: &Validated,
    ) -> Result<Prepared, Vec<String>> {
        let tls = match (&self.targets.tls, &effective.config.server.tls_cert, &effective.config.server.tls_key) {
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
        let upstreams = self.upstream_change(running, effective, old_validated)?;
        let new_hosts = effective.validated.upstream_hosts();
        let auth_changed = get(&running.table, &["auth"]) != get(&effective.table, &["auth"])
            || get(&running.table, &["access"]) != get(&effective.table, &["access"]);
        let auth = if auth_changed || upstreams.added.len() + upstreams.removed.len() > 0 {
            let auth = AuthService::from_config_with_state(
                &effective.config.auth,
                &effective.config.access,
                &new_hosts,
                effective.validated.public_url.as_deref(),
                Some(self.targets.registry.storage().clone()),
                effective.config.ui.signed_credential_ttl(),
            )
            .await
            .map_err(|e| vec![format!("auth: {e}")])?;
            Some(Arc::new(auth))
        } else {
            None
        };
        Ok(Prepared { tls, upstreams, auth })
    }

    /// Which upstreams were added, removed or changed; new routes when any
    /// was (hosts that remain unchanged keep their client and its tokens).
    fn upstream_change(
        &self,
        running: &Running,
        effective: &Effective,
        old_validated: &Validated,
    ) -> Result<UpstreamChange, Vec<String>> {
        let old_hosts = old_validated.upstream_hosts();
        let new_hosts = effective.validated.upstream_hosts();
        let added: Vec<String> = new_hosts.iter().filter(|h| !old_hosts.contains(h)).cloned().collect();
        let removed: Vec<String> = old_hosts.iter().filter(|h| !new_hosts.contains(h)).cloned().collect();
        let modified: Vec<String> = new_hosts
            .iter()
            .filter(|h| {
                old_hosts.contains(h)
                    && get(&running.table, &["upstreams", h.as_str()])
                        != get(&effective.table, &["upstreams", h.as_str()])
            })
            .cloned()
            .collect();
        let routes = if added.is_empty() && removed.is_empty() && modified.is_empty() {
            None
        } else {
            let current = self.targets.registry.cache().map(|c| c.routes()).unwrap_or_default();
            let build: Vec<_> = effective
                .validated
                .upstreams
                .iter()
                .filter(|u| added.contains(&u.host) || modified.contains(&u.host))
                .cloned()
                .collect();
            let mut routes = crate::upstreams::build_routes(&build)?;
            routes.extend(current.into_iter().filter(|r| new_hosts.contains(&r.host) && !modified.contains(&r.host)));
            routes.sort_by(|a, b| a.host.cmp(&b.host));
            Some(routes)
        };
        Ok(UpstreamChange { added, removed, modified, routes })
    }

    /// Swaps the prepared settings in and says what changed.
    async fn apply(
        &self,
        prepared: Prepared,
        running: &Running,
        effective: &Effective,
        old_validated: &Validated,
        report: &mut ReloadReport,
    ) {
        let section_changed = |section: &str| get(&running.table, &[section]) != get(&effective.table, &[section]);
        let t = &self.targets;
        if let Some(auth) = prepared.auth {
            t.auth.replace(auth);
            for section in ["auth", "access"] {
                if section_changed(section) {
                    report.changed.push(section.into());
                }
            }
        }
        let u = prepared.upstreams;
        if let (Some(routes), Some(cache)) = (u.routes, t.registry.cache()) {
            cache.set_routes(routes);
            let mut parts = Vec::new();
            for (label, hosts) in [("added", &u.added), ("removed", &u.removed), ("changed", &u.modified)] {
                if !hosts.is_empty() {
                    parts.push(format!("{label}: {}", hosts.join(" ")));
                }
            }
            report.changed.push(format!("upstreams ({})", parts.join("; ")));
        }
        if old_validated.name_rules() != effective.validated.name_rules() {
            if let Some(cache) = t.registry.cache() {
                cache.set_name_rules(effective.validated.name_rules());
            }
            if old_validated.self_hosts != effective.validated.self_hosts {
                report.changed.push("server.hostnames".into());
            }
            if section_changed("mirror") {
                report.changed.push("mirror".into());
            }
        }
        if section_changed("gc") {
            t.gc.set_settings(GcSettings::from_config(&effective.config));
            report.changed.push("gc".into());
        }
        if section_changed("metrics") {
            t.metrics.set_enabled(effective.config.metrics.enabled);
            report.changed.push("metrics".into());
        }
        if section_changed("retention") || section_changed("prefetch") {
            // Pinned prefetch entries are part of the retention settings.
            t.retention.set_settings(&effective.config);
        }
        if section_changed("retention") {
            report.changed.push("retention".into());
        }
        if section_changed("gc") || section_changed("retention") {
            t.gc.keeper().set_contend(crate::jobs::maintenance::contends(&effective.config));
        }
        if section_changed("prefetch") {
            t.prefetch.set_specs(&effective.config);
            report.changed.push("prefetch".into());
        }
        if let Some((store, cert, key)) = prepared.tls {
            let outcome = tokio::task::spawn_blocking(move || store.reload_from(&cert, &key)).await;
            match outcome {
                Ok(Ok(())) => report.changed.push("server.tls_cert/server.tls_key".into()),
                Ok(Err(e)) => tracing::error!(error = %e, "TLS certificate not reloaded; keeping the previous one"),
                Err(e) => tracing::error!(error = %e, "TLS certificate reload failed"),
            }
        }
    }
}

/// Keys that need a restart keep their running values: each one that
/// differs is listed in `report.needs_restart`.
fn keep_restart_keys(
    running: &Running,
    new: Config,
    new_table: toml::Table,
    report: &mut ReloadReport,
) -> Result<Effective, Vec<String>> {
    let old = &running.config;
    let mut effective = new.clone();
    let mut effective_table = new_table.clone();
    let mut restart = |key: &str, differs: bool| {
        if differs {
            report.needs_restart.push(key.to_owned());
        }
    };
    restart("server.listen", old.server.listen != new.server.listen);
    effective.server.listen = old.server.listen.clone();
    restart("server.log_format", old.server.log_format != new.server.log_format);
    effective.server.log_format = old.server.log_format;
    restart("server.public_url", old.server.public_url != new.server.public_url);
    effective.server.public_url = old.server.public_url.clone();
    // The connection and request limits are given to the listener and the
    // application at start.
    for key in LIMIT_KEYS {
        restart(&format!("server.{key}"), get(&running.table, &["server", key]) != get(&new_table, &["server", key]));
    }
    keep_limits(&mut effective.server, &old.server);
    let storage_differs =
        get(&running.table, &["storage"]) != get(&new_table, &["storage"]) || old.storage.root != new.storage.root;
    restart("storage", storage_differs);
    effective.storage = old.storage.clone();
    let tls_toggled = old.server.tls_cert.is_some() != new.server.tls_cert.is_some();
    restart("server.tls_cert/server.tls_key (turning TLS on or off)", tls_toggled);
    if tls_toggled {
        effective.server.tls_cert = old.server.tls_cert.clone();
        effective.server.tls_key = old.server.tls_key.clone();
    }
    let unknown = |key: &String| key != "server" && key != "storage" && !APPLIED.contains(&key.as_str());
    for (key, value) in &new_table {
        if unknown(key) && running.table.get(key) != Some(value) {
            report.needs_restart.push(key.clone());
        }
    }
    for key in running.table.keys() {
        if unknown(key) && !new_table.contains_key(key) {
            report.needs_restart.push(key.clone());
        }
    }
    for key in ["listen", "log_format", "public_url"].iter().chain(LIMIT_KEYS) {
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
    Ok(Effective { config: effective, table: effective_table, validated })
}

/// The `[server]` keys of [`crate::config::HttpLimits`] and the replica
/// name, which need a restart.
const LIMIT_KEYS: &[&str] = &[
    "header_timeout",
    "idle_timeout",
    "body_timeout",
    "max_connections",
    "max_header_size",
    "drain_limit",
    "drain_timeout",
    "refuse_untrusted",
    "max_uploads",
    "max_uploads_per_source",
    "max_blob_size",
    "replica",
];

/// Keeps the running values of the [`LIMIT_KEYS`].
fn keep_limits(effective: &mut crate::config::ServerConfig, old: &crate::config::ServerConfig) {
    effective.header_timeout = old.header_timeout.clone();
    effective.idle_timeout = old.idle_timeout.clone();
    effective.body_timeout = old.body_timeout.clone();
    effective.max_connections = old.max_connections;
    effective.max_header_size = old.max_header_size.clone();
    effective.drain_limit = old.drain_limit.clone();
    effective.drain_timeout = old.drain_timeout.clone();
    effective.refuse_untrusted = old.refuse_untrusted;
    effective.max_uploads = old.max_uploads;
    effective.max_uploads_per_source = old.max_uploads_per_source;
    effective.max_blob_size = old.max_blob_size.clone();
    effective.replica = old.replica.clone();
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

/// Reloads on every SIGHUP for the life of the process (unix only; the
/// admin endpoint works everywhere).
pub fn spawn_sighup_handler(reloader: Arc<Reloader>) -> Option<JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; use `cove reload` instead");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = reloader.reload().await;
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        None
    }
}
