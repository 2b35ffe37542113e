//! Cove's HTTP server: configuration, the OCI Distribution API over hyper,
//! and the pieces of the `cove` binary.

pub mod app;
pub mod body;
pub mod config;
pub mod error;
pub mod metrics; // operations (issue 7)
pub mod mirror;
pub mod ops; // operations (issue 7)
pub mod range;
pub mod reload; // operations (issue 7): config reload
pub mod retention; // operations (issue 7): cache and tag retention
pub mod routes;
pub mod serve;
pub mod tls; // operations (issue 7): TLS termination
