//! Cove's HTTP server, in layers (see ARCHITECTURE.md):
//!
//! - [`config`]: every configuration section; depends on nothing else here;
//! - [`app`]: the HTTP layer (one router, one access check, handlers,
//!   over [`body`]; [`error`] is the one RegistryError → HTTP mapping and
//!   [`range`] parses `Range`/`Content-Range`;
//! - [`jobs`]: background components (GC and retention schedules, the
//!   activity log's saver, upload expiry, the certificate watcher);
//! - [`reload`], [`status`], [`metrics`], [`tls`], [`upstreams`],
//!   [`auth_slot`]: the state those share, each built with explicit handles;
//! - [`ui`]: the web interface, a part of the HTTP layer that [`app`]
//!   dispatches `/` and `/ui/…` to;
//! - [`serve`] and [`listener`]: the composition root and the accept loop;
//!   [`conn`]: connection hygiene (timeouts, the request body type).
//!
//! The library prints nothing; the `cove` binary (src/bin/cove) owns the
//! command line and everything a user reads.

pub mod app;
pub mod auth_slot;
pub mod body;
pub mod config;
pub mod conn;
pub mod error;
pub mod jobs;
pub mod listener;
pub mod metrics;
pub mod mirror;
pub mod range;
pub mod reload;
pub mod serve;
pub mod status;
pub mod tls;
pub mod ui;
pub mod upstreams;
