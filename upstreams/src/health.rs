//! Per-upstream health: a circuit breaker that stops clients from waiting
//! on an upstream that has stopped answering.
//!
//! A request that ends without any HTTP answer (connection refused or never
//! completed, no response headers in time, the request deadline spent)
//! opens the circuit. While it is open every request fails at once with
//! [`UpstreamError::Unavailable`], so the cache serves what it has and
//! answers what it has not with an error in milliseconds instead of
//! repeating the wait for every client. One probe at a time (`GET /v2/`,
//! with exponential backoff) decides when the upstream answers again; any
//! HTTP answer, even an error status, closes the circuit. An HTTP error
//! status never opens it: an upstream that answers 5xx is reachable, and the
//! cache's stale-if-error already covers it.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use cove_core::upstream::{UpstreamError, UpstreamHealth};

/// First wait before probing an upstream whose circuit opened.
const FIRST_PROBE: Duration = Duration::from_millis(500);
/// Longest wait between two probes.
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// The health of one upstream, shared by its client and its probe task.
#[derive(Debug)]
pub(crate) struct Health {
    host: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the circuit opened (monotonic, wall clock); `None` while closed.
    open_since: Option<(Instant, SystemTime)>,
    /// Whether a probe task is running.
    probing: bool,
    /// Healthy ↔ unhealthy transitions so far.
    changes: u64,
    /// Time spent unhealthy in closed episodes.
    unhealthy_before: Duration,
    /// What the last transport failure was, and when.
    last_failure: Option<(SystemTime, String)>,
}

impl Health {
    pub(crate) fn new(host: &str) -> Arc<Health> {
        Arc::new(Health { host: host.to_owned(), state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err` at once while the circuit is open.
    pub(crate) fn check(&self) -> Result<(), UpstreamError> {
        let s = self.lock();
        match s.open_since {
            None => Ok(()),
            Some((at, _)) => Err(UpstreamError::Unavailable(format!(
                "{} has not answered for {}s (circuit open; a probe checks it in the background)",
                self.host,
                at.elapsed().as_secs()
            ))),
        }
    }

    /// Records that the upstream answered (any HTTP status). Closes the
    /// circuit if it was open.
    pub(crate) fn answered(&self) {
        let mut s = self.lock();
        if let Some((at, _)) = s.open_since.take() {
            let down = at.elapsed();
            s.unhealthy_before += down;
            s.changes += 1;
            tracing::info!(upstream = %self.host, unhealthy_ms = down.as_millis() as u64, "upstream answers again: circuit closed");
        }
    }

    /// Records a request that ended without an HTTP answer. Returns true if
    /// this opened the circuit and no probe runs yet: the caller starts one
    /// with [`spawn_probe`].
    pub(crate) fn silent(&self, error: &str) -> bool {
        let mut s = self.lock();
        s.last_failure = Some((SystemTime::now(), error.to_owned()));
        if s.open_since.is_none() {
            s.open_since = Some((Instant::now(), SystemTime::now()));
            s.changes += 1;
            tracing::warn!(upstream = %self.host, error, "upstream not answering: circuit open, cached content is served without waiting");
        }
        if s.probing {
            return false;
        }
        s.probing = true;
        true
    }

    /// A snapshot for status reports and metrics.
    pub(crate) fn snapshot(&self) -> UpstreamHealth {
        let s = self.lock();
        let open = s.open_since.map(|(at, _)| at.elapsed()).unwrap_or_default();
        UpstreamHealth {
            healthy: s.open_since.is_none(),
            unhealthy_since: s.open_since.map(|(_, wall)| wall),
            changes: s.changes,
            unhealthy_total: s.unhealthy_before + open,
            last_failure: s.last_failure.clone(),
        }
    }
}

/// Probes until the upstream answers, then closes the circuit. `probe`
/// returns true when the upstream gave any HTTP answer. The task ends when
/// the upstream answers or its client is dropped (e.g. removed by a reload).
pub(crate) fn spawn_probe<F, Fut>(health: &Arc<Health>, probe: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let weak: Weak<Health> = Arc::downgrade(health);
    tokio::spawn(async move {
        let mut wait = FIRST_PROBE;
        loop {
            tokio::time::sleep(wait).await;
            let Some(h) = weak.upgrade() else { return };
            if h.lock().open_since.is_none() {
                // A request got through meanwhile.
                h.lock().probing = false;
                return;
            }
            drop(h);
            let ok = probe().await;
            let Some(h) = weak.upgrade() else { return };
            if ok {
                h.answered();
                h.lock().probing = false;
                return;
            }
            tracing::debug!(upstream = %h.host, next_ms = (wait * 2).min(MAX_PROBE_INTERVAL).as_millis() as u64, "upstream probe failed");
            wait = (wait * 2).min(MAX_PROBE_INTERVAL);
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_silence_and_closes_on_an_answer() {
        let h = Health::new("up.example");
        assert!(h.check().is_ok());
        assert!(h.snapshot().healthy);
        assert!(h.silent("timed out"), "the first silence opens and asks for a probe");
        assert!(!h.silent("timed out"), "one probe at a time");
        let e = h.check().unwrap_err();
        assert!(matches!(e, UpstreamError::Unavailable(ref m) if m.contains("circuit open")), "{e}");
        let s = h.snapshot();
        assert!(!s.healthy && s.unhealthy_since.is_some() && s.changes == 1);
        assert_eq!(s.last_failure.map(|f| f.1).as_deref(), Some("timed out"));
        h.answered();
        assert!(h.check().is_ok());
        let s = h.snapshot();
        assert!(s.healthy && s.changes == 2 && s.unhealthy_since.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_with_backoff_closes_the_circuit() {
        let h = Health::new("up.example");
        assert!(h.silent("refused"));
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let c = calls.clone();
        spawn_probe(&h, move || {
            let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { n >= 2 }
        });
        // Probes at 0.5 s, 1.5 s (+1 s) and 3.5 s (+2 s); the third answers.
        tokio::time::sleep(Duration::from_millis(3400)).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(h.check().is_err());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(h.check().is_ok(), "closed by the probe");
        assert!(h.silent("again"), "a new episode may start a new probe");
    }
}
