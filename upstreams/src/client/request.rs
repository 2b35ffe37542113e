//! One request to an upstream, end to end: credentials and the 401
//! challenge flow ([`OciUpstream::send`]), the single HTTP exchange under
//! `response_timeout`, and [`OciUpstream::retrying`]: attempts with
//! exponential backoff and jitter within `request_deadline`, failing at once
//! while the circuit breaker ([`crate::health`]) is open.

use std::time::{Duration, Instant, SystemTime};

use cove_core::upstream::UpstreamError;
use reqwest::header::ACCEPT;
use reqwest::{Method, Response, StatusCode, Url};

use super::response::{check_status, transport_failure, Failure};
use super::OciUpstream;
use crate::auth::Authorization;
use crate::health::spawn_probe;

impl OciUpstream {
    /// Runs `attempt` up to `1 + retries` times, sleeping between transient
    /// failures, all within `request_deadline`. Fails at once while the
    /// circuit is open; a request that ends without any answer opens it.
    pub(super) async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let deadline = Instant::now() + self.request_deadline;
        let mut n: u32 = 0;
        loop {
            self.health.check()?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = match tokio::time::timeout(remaining, attempt()).await {
                Ok(r) => r,
                Err(_) => Err(Failure::Silent(UpstreamError::Unavailable(format!(
                    "no answer from {} within {:?} (upstreams.\"{}\".request_deadline)",
                    self.host, self.request_deadline, self.host
                )))),
            };
            // Any HTTP answer, even an error status, means the upstream is there.
            if !matches!(outcome, Err(Failure::Silent(_))) {
                self.health.answered();
            }
            let (err, wait, silent) = match outcome {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => (e, self.backoff(n), false),
                Err(Failure::Silent(e)) => (e, self.backoff(n), true),
                Err(Failure::RetryAfter(e, wait)) if wait > self.max_retry_after => return Err(e),
                Err(Failure::RetryAfter(e, wait)) => (e, wait, false),
            };
            let out_of_time = Instant::now() + wait >= deadline;
            if n >= self.retries || out_of_time {
                if silent {
                    self.went_silent(&err);
                }
                return Err(err);
            }
            n += 1;
            tracing::debug!(
                upstream = %self.host, what, attempt = n, wait_ms = wait.as_millis() as u64,
                error = %err, "retrying upstream request"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Opens the circuit after a request got no answer, and starts the one
    /// probe that closes it again.
    fn went_silent(&self, err: &UpstreamError) {
        if !self.health.silent(&err.to_string()) {
            return;
        }
        let (client, timeout) = (self.client.clone(), self.response_timeout);
        let url = format!("{}/v2/", self.base.as_str().trim_end_matches('/'));
        spawn_probe(&self.health, move || {
            let request = client.get(url.clone()).send();
            async move { matches!(tokio::time::timeout(timeout, request).await, Ok(Ok(_))) }
        });
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.backoff_base.saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        exp.min(self.backoff_max).mul_f64(0.5 + 0.5 * jitter())
    }

    /// One attempt of a request, with the auth flow: sends with cached
    /// credentials; on 401 answers the challenge once and sends again.
    /// Returns the response if its status is 2xx.
    pub(super) async fn send(
        &self,
        method: &Method,
        url: &Url,
        accept: Option<&'static str>,
        scope: &str,
    ) -> Result<Response, Failure> {
        check_status(self.send_answered(method, url, accept, scope).await?)
    }

    /// [`Self::send`] without the status check: the response whatever its
    /// status, except a refusal after authentication.
    pub(super) async fn send_answered(
        &self,
        method: &Method,
        url: &Url,
        accept: Option<&'static str>,
        scope: &str,
    ) -> Result<Response, Failure> {
        let auth = self.auth.authorize(&self.client, scope).await?;
        let resp = self.send_once(method, url, accept, auth.as_ref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let rejected = match &auth {
            Some(Authorization::Bearer(t)) => Some(t.clone()),
            _ => None,
        };
        let auth = self.auth.answer_challenge(&self.client, resp.headers(), scope, rejected.as_deref()).await?;
        let resp = self.send_once(method, url, accept, Some(&auth)).await?;
        match resp.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(Failure::Fatal(UpstreamError::Unauthorized(
                format!("{} answered {} after authentication", self.host, resp.status()),
            ))),
            _ => Ok(resp),
        }
    }

    pub(super) async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        accept: Option<&'static str>,
        auth: Option<&Authorization>,
    ) -> Result<Response, Failure> {
        tracing::debug!(upstream = %self.host, %method, %url, "upstream request");
        let mut rb = self.client.request(method.clone(), url.clone());
        if let Some(a) = accept {
            rb = rb.header(ACCEPT, a);
        }
        if let Some(a) = auth {
            rb = a.apply(rb, self.auth.credentials());
        }
        let started = Instant::now();
        let resp = match tokio::time::timeout(self.response_timeout, rb.send()).await {
            Ok(r) => r.map_err(transport_failure)?,
            Err(_) => {
                return Err(Failure::Silent(UpstreamError::Unavailable(format!(
                    "no response headers from {} within {:?} (upstreams.\"{}\".response_timeout)",
                    self.host, self.response_timeout, self.host
                ))))
            }
        };
        tracing::debug!(
            upstream = %self.host, %method, %url, status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64, "upstream response"
        );
        Ok(resp)
    }
}

/// A random number in [0, 1) from the standard library's hasher keys.
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let x = std::collections::hash_map::RandomState::new().hash_one(SystemTime::now());
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResolvedUpstream;

    #[test]
    fn backoff_grows_and_is_capped() {
        let u = ResolvedUpstream {
            host: "x.example".into(),
            url: Url::parse("http://127.0.0.1:1").expect("url"),
            config: crate::config::UpstreamConfig::with_url("http://127.0.0.1:1"),
        };
        let up =
            OciUpstream::new(&u).expect("build").with_backoff(Duration::from_millis(100), Duration::from_millis(1000));
        for (attempt, lo, hi) in [(0, 50, 100), (1, 100, 200), (2, 200, 400), (5, 500, 1000), (40, 500, 1000)] {
            let d = up.backoff(attempt).as_millis() as u64;
            assert!((lo..=hi).contains(&d), "attempt {attempt}: {d}");
        }
    }
}
