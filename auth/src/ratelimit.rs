//! Failed-login rate limiting per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cove_core::{ErrorCode, ErrorDetail, RegistryError};

/// Entries kept before expired ones are swept (bounds memory under a spray).
const SWEEP_AT: usize = 10_000;

/// Counts failed attempts per source in a fixed window; a source with
/// `max_failures` failures is refused (`TOOMANYREQUESTS`) until its window
/// ends.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    state: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    /// `max_failures = 0` disables the limiter.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        FailureLimiter { max_failures, window, state: Mutex::new(HashMap::new()) }
    }

    /// `Err(TOOMANYREQUESTS)` with how long to wait if `ip` is currently
    /// blocked.
    pub fn check(&self, ip: IpAddr) -> Result<(), RegistryError> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((start, count)) = state.get(&ip) {
            let end = *start + self.window;
            if *count >= self.max_failures && end > now {
                let secs = (end - now).as_secs().max(1);
                return Err(RegistryError::new(
                    ErrorCode::TooManyRequests,
                    format!("too many failed login attempts from {ip}; retry in {secs}s"),
                )
                .with_detail(ErrorDetail::RetryAfter(Duration::from_secs(secs))));
            }
        }
        Ok(())
    }

    /// Records one failed attempt from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.len() >= SWEEP_AT {
            let window = self.window;
            state.retain(|_, (start, _)| *start + window > now);
        }
        let e = state.entry(ip).or_insert((now, 0));
        if e.0 + self.window <= now {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
        if e.1 == self.max_failures {
            tracing::warn!(%ip, "failed-login limit reached; source blocked for the window");
        }
    }
}
