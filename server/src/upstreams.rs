//! From `[upstreams]` to the pull-through cache's routes.

use cove_core::cache::UpstreamRoute;
use cove_core::Upstream;
use cove_upstreams::{OciUpstream, ResolvedUpstream};

/// Builds a client and a route per upstream; every problem is reported.
pub fn build_routes(upstreams: &[ResolvedUpstream]) -> Result<Vec<UpstreamRoute>, Vec<String>> {
    let clients =
        OciUpstream::build_all(upstreams).map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    Ok(clients
        .into_iter()
        .map(|u| UpstreamRoute {
            host: u.host().to_owned(),
            tag_ttl: u.tag_ttl(),
            revalidate_wait: u.revalidate_wait(),
            ratelimit_floor: u.ratelimit_floor(),
            upstream: u,
        })
        .collect())
}
