//! What an upstream failure becomes for the client when nothing cached can
//! stand in for it.

use super::routing::UpstreamRoute;
use super::PullThrough;
use crate::error::{ErrorCode, RegistryError};
use crate::upstream::UpstreamError;

/// What a client is told to wait before retrying content that is not cached
/// while its upstream is unavailable.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 10;

/// Maps an upstream failure to what the client sees; `not_found` is the
/// error for content upstream does not have.
pub fn upstream_error(e: UpstreamError, not_found: RegistryError) -> RegistryError {
    match e {
        UpstreamError::NotFound => not_found,
        // Docker Hub answers 401 for repositories that do not exist.
        UpstreamError::Unauthorized(m) => RegistryError::new(
            not_found.code,
            format!(
                "{} (upstream refused access: {m}; the repository may not exist or needs credentials)",
                not_found.message
            ),
        ),
        UpstreamError::TooManyRequests { retry_after } => {
            let e = RegistryError::new(ErrorCode::TooManyRequests, "upstream rate limit reached and nothing is cached");
            match retry_after {
                Some(r) => e.with_header("Retry-After", r),
                None => e,
            }
        }
        // Retry-After: a client (or containerd moving to its next host)
        // learns the outage at once; the circuit breaker probes meanwhile.
        UpstreamError::Unavailable(m) => RegistryError::new(
            ErrorCode::UpstreamUnavailable,
            format!("upstream unavailable and nothing is cached: {m}"),
        )
        .with_header("Retry-After", UNAVAILABLE_RETRY_AFTER_SECS.to_string()),
        UpstreamError::Invalid(m) => {
            RegistryError::new(ErrorCode::UpstreamUnavailable, format!("upstream sent an invalid response: {m}"))
                .with_status(502)
        }
    }
}

/// Upstream `host` answered, but with content Cove must not cache (`what`
/// it did wrong).
pub(crate) fn upstream_invalid(host: &str, what: &str) -> RegistryError {
    RegistryError::new(ErrorCode::UpstreamUnavailable, format!("upstream {host} {what}; not cached")).with_status(502)
}

impl PullThrough {
    /// Counts a failed upstream request and maps it for the client.
    pub(crate) fn upstream_failed(
        &self,
        route: &UpstreamRoute,
        e: UpstreamError,
        not_found: RegistryError,
    ) -> RegistryError {
        self.counters.upstream_failed(&route.host, &e);
        upstream_error(e, not_found)
    }
}
