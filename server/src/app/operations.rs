//! The operations endpoints: `/healthz`, `/readyz`, `/metrics` and the
//! loopback-only `/admin/*` (GC, scrub, retention, reload, status,
//! prefetch). They
//! call the background components the application was built with.

use http::{Response, StatusCode};

use cove_core::{ErrorCode, RegistryError};

use crate::app::request::Query;
use crate::app::response::{json, set, text};
use crate::app::router::AdminOp;
use crate::app::App;
use crate::body::{self, Body};

impl App {
    /// `GET /healthz`: 200 while the process serves (liveness).
    pub(super) fn health(&self) -> Response<Body> {
        text(StatusCode::OK, "ok\n")
    }

    /// `GET /readyz`: 200 when storage is reachable and writable, else 503
    /// (`storage full` when the disk has no room at all). Below the
    /// `storage.min_free` floor it stays 200 (pulls are served) and says
    /// that space is low and pushes are refused.
    pub(super) async fn ready(&self) -> Response<Body> {
        let storage = self.registry.storage();
        match storage.check().await {
            Ok(()) => match storage.space().await {
                Ok(Some(s)) if s.low() => {
                    tracing::warn!(
                        available = s.available,
                        floor = s.floor,
                        "readiness: free space below storage.min_free"
                    );
                    let msg = format!(
                        "ready\nlow free space: {} bytes available, below storage.min_free ({} bytes): pushes are refused\n",
                        s.available, s.floor
                    );
                    let mut resp = text(StatusCode::OK, "");
                    *resp.body_mut() = body::full(bytes::Bytes::from(msg));
                    resp
                }
                _ => text(StatusCode::OK, "ready\n"),
            },
            Err(cove_core::StorageError::Full(why)) => {
                tracing::warn!(error = %why, "readiness check failed: storage is full");
                text(StatusCode::SERVICE_UNAVAILABLE, "storage full: no space left for writes\n")
            }
            Err(e) => {
                tracing::warn!(error = %e, "readiness check failed: storage not reachable");
                text(StatusCode::SERVICE_UNAVAILABLE, "storage not reachable\n")
            }
        }
    }

    /// `GET /metrics`: Prometheus text; an unknown endpoint while
    /// `[metrics] enabled = false`.
    pub(super) async fn metrics(&self) -> Result<Response<Body>, RegistryError> {
        let metrics = &self.ops.metrics;
        if !metrics.enabled() {
            return Err(RegistryError::new(ErrorCode::NameUnknown, "no such API endpoint"));
        }
        let counters = self.registry.cache().map(|c| c.counters()).unwrap_or_default();
        let space = self.registry.storage().space().await.ok().flatten();
        metrics.record_storage(self.registry.storage_full_count(), space, self.registry.storage().store_requests());
        metrics.record_lease(self.ops.gc.keeper());
        let fetches = self.registry.cache().map(|c| c.inflight_digests().len()).unwrap_or(0);
        let uploads = self.registry.storage().upload_list().await.ok().map(|l| l.len());
        let limits: Vec<_> = self
            .registry
            .cache()
            .map(|c| c.routes().into_iter().map(|r| (r.host, r.upstream.rate_limit())).collect())
            .unwrap_or_default();
        metrics.record_rate_limits(&limits);
        let health: Vec<_> = self
            .registry
            .cache()
            .map(|c| c.routes().into_iter().map(|r| (r.host, r.upstream.health())).collect())
            .unwrap_or_default();
        let mut resp = Response::new(body::full(metrics.render(&counters, uploads, fetches, &health)));
        set(resp.headers_mut(), http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE);
        Ok(resp)
    }

    /// `/admin/*`: JSON answers; failures are internal errors (logged).
    pub(super) async fn admin(&self, op: AdminOp, query: &Query) -> Result<Response<Body>, RegistryError> {
        let ops = &self.ops;
        match op {
            AdminOp::Gc => match ops.gc.run(query.flag("dry_run")).await {
                Ok(r) => Ok(json(StatusCode::OK, &serde_json::to_value(&r).unwrap_or_default())),
                Err(e) => Err(job_error("garbage collection", &e)),
            },
            AdminOp::Scrub => {
                let dir = query.flag("quarantine").then_some(ops.quarantine_dir.as_path());
                match cove_core::scrub::scrub(self.registry.storage().as_ref(), dir, &mut |_| {}).await {
                    Ok(r) => Ok(json(StatusCode::OK, &serde_json::to_value(&r).unwrap_or_default())),
                    Err(e) => Err(RegistryError::internal(format!("scrub failed: {e}"))),
                }
            }
            AdminOp::Retention => match ops.retention.run(query.flag("dry_run")).await {
                Ok(r) => Ok(json(StatusCode::OK, &serde_json::to_value(&r).unwrap_or_default())),
                Err(e) => Err(job_error("retention", &e)),
            },
            AdminOp::Reload => Ok(self.reload().await),
            AdminOp::Status => {
                let mut v = crate::status::status(&self.registry, &ops.gc, &ops.retention, &ops.identity).await;
                crate::status::add_prefetch(&ops.prefetch, &mut v);
                Ok(json(StatusCode::OK, &v))
            }
            AdminOp::Prefetch => self.prefetch(query),
        }
    }

    /// `POST /admin/prefetch?ref=IMAGE…[&platform=os/arch…]`: pulls the
    /// images into the cache, answering one JSON line per event as it goes
    /// (`application/x-ndjson`) and a last `{"event":"done",…}` line with
    /// the totals. The prefetch finishes even if the client hangs up.
    fn prefetch(&self, query: &Query) -> Result<Response<Body>, RegistryError> {
        use crate::config::prefetch::{parse_image_ref, PrefetchSpec, PrefetchWhat};
        use cove_core::registry::prefetch::Platform;
        let mut platforms = Vec::new();
        for p in query.get_all("platform") {
            platforms.push(p.parse::<Platform>().map_err(|m| RegistryError::new(ErrorCode::NameInvalid, m))?);
        }
        let mut specs = Vec::new();
        for r in query.get_all("ref") {
            let (name, reference) = parse_image_ref(r).map_err(|m| RegistryError::new(ErrorCode::NameInvalid, m))?;
            let repo = self.registry.resolve_name(name.as_str(), None)?;
            specs.push(PrefetchSpec {
                repo,
                what: PrefetchWhat::Reference(reference),
                platforms: platforms.clone(),
                pin: false,
                interval: std::time::Duration::from_secs(3600),
            });
        }
        if specs.is_empty() {
            return Err(RegistryError::new(
                ErrorCode::NameInvalid,
                "name at least one image: ?ref=docker.io/library/alpine:3.20",
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<bytes::Bytes>();
        let job = self.ops.prefetch.clone();
        tokio::spawn(async move {
            let line = |v: serde_json::Value| bytes::Bytes::from(format!("{v}\n"));
            let progress = |e: cove_core::registry::prefetch::PrefetchEvent| {
                let _ = tx.send(line(serde_json::to_value(&e).unwrap_or_default()));
            };
            let report = job.run(&specs, &progress).await;
            let mut done = serde_json::to_value(&report).unwrap_or_default();
            if let Some(o) = done.as_object_mut() {
                o.insert("event".into(), "done".into());
            }
            let _ = tx.send(line(done));
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) });
        let mut resp = Response::new(body::stream(Box::pin(stream)));
        set(resp.headers_mut(), http::header::CONTENT_TYPE, "application/x-ndjson");
        Ok(resp)
    }

    /// `POST /admin/reload`: 200 with the [`ReloadReport`], or the spec's
    /// error body with one `CONFIG_INVALID` error per reason the file was
    /// rejected.
    ///
    /// [`ReloadReport`]: crate::reload::ReloadReport
    async fn reload(&self) -> Response<Body> {
        match self.ops.reloader.reload().await {
            Ok(r) => json(
                StatusCode::OK,
                &serde_json::json!({"ok": true, "changed": r.changed, "needs_restart": r.needs_restart}),
            ),
            Err(reasons) => {
                let errors: Vec<RegistryError> =
                    reasons.into_iter().map(|r| RegistryError::new(ErrorCode::ConfigInvalid, r)).collect();
                crate::error::errors_response(&errors, false)
            }
        }
    }
}

/// A GC or retention run that did not happen or failed: refused with
/// `UNAVAILABLE` (503, the holder named) while another replica holds the
/// maintenance lease, else an internal error.
fn job_error(what: &str, e: &crate::jobs::maintenance::JobError) -> RegistryError {
    if e.is_busy() {
        RegistryError::new(ErrorCode::Unavailable, format!("{what} {e}"))
    } else {
        RegistryError::internal(format!("{what} failed: {e}"))
    }
}
