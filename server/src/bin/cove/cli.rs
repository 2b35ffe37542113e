//! The command line: every subcommand of `cove` and its arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Cove: an OCI registry and pull-through cache.
#[derive(Parser)]
#[command(name = "cove", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the registry (works with no config file at all).
    Serve {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides server.listen; default 0.0.0.0:5050).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory (overrides storage.root; default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print (or write) the client configuration that uses Cove as the
    /// mirror of every configured upstream: containerd, podman, buildah,
    /// CRI-O or Docker Engine.
    MirrorConfig {
        #[command(subcommand)]
        runtime: MirrorRuntime,
    },
    /// Storage maintenance.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// `cove gc`, `cove scrub`, `cove retention`, `cove status`.
    #[command(flatten)]
    Ops(OpsCommand),
    /// Ask the running server to reload its configuration file (the same as
    /// `kill -HUP`): prints what changed, or why the file was rejected.
    Reload {
        /// The configuration file (for the listen address and TLS).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The running server's address (default: server.listen on loopback).
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Pull images into the cache now (keep-warm), printing progress: asks
    /// the running server when one answers; otherwise works on the storage
    /// directly (only with the server stopped).
    Prefetch(PrefetchArgs),
    /// Check a configuration file and print the effective settings.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum StorageCommand {
    /// Copy every repository, manifest, tag, referrer and blob from the
    /// storage of one config to that of another (e.g. filesystem to S3).
    /// Digests are verified; run it again to resume an interrupted copy.
    Copy {
        /// Config file whose [storage] is the source.
        #[arg(long)]
        from: PathBuf,
        /// Config file whose [storage] is the destination.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum MirrorRuntime {
    /// containerd's hosts.toml (config_path = "/etc/containerd/certs.d").
    Containerd {
        /// The URL clients reach Cove at, e.g. http://cove.lan:5050.
        #[arg(long)]
        url: String,
        /// Configuration file (for the upstreams and host names).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Write DIR/<host>/hosts.toml instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// podman's registries.conf.d drop-in (also read by skopeo).
    Podman(ContainersArgs),
    /// buildah's registries.conf.d drop-in.
    Buildah(ContainersArgs),
    /// CRI-O's registries.conf.d drop-in.
    Crio(ContainersArgs),
    /// Docker Engine's daemon.json fragment (Docker mirrors only Docker Hub;
    /// Cove needs [mirror] default_upstream = "docker.io" for it).
    Docker {
        /// The URL clients reach Cove at, e.g. http://cove.lan:5050.
        #[arg(long)]
        url: String,
        /// Configuration file (to check that Docker Hub mirror mode is on).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Arguments of the registries.conf drop-ins.
#[derive(clap::Args)]
pub struct ContainersArgs {
    /// The URL clients reach Cove at, e.g. http://cove.lan:5050.
    #[arg(long)]
    pub url: String,
    /// Configuration file (for the upstreams).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Write the drop-in to FILE instead of printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The operations subcommands of the `cove` binary.
#[derive(Debug, clap::Subcommand)]
pub enum OpsCommand {
    /// Remove unreferenced blobs (and, with `[gc] untagged`, untagged
    /// manifests) and expired upload sessions. Asks the running server when
    /// one answers at the configured address; otherwise works on the storage
    /// directly (only do that with the server stopped).
    Gc {
        /// TOML configuration file (storage, [gc] settings, listen address).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// The running server's address (default: server.listen on loopback).
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Verify every blob and manifest against its digest. Exits non-zero
    /// when something is corrupt.
    Scrub {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Copy corrupt objects to <storage.root>/quarantine and remove them.
        #[arg(long)]
        quarantine: bool,
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Evict cached images (per-upstream max_size/max_age, least recently
    /// pulled first) and remove tags (per-repository keep_last /
    /// keep_pulled_within), then sweep blobs nothing references. Asks the
    /// running server when one answers; otherwise works on the storage
    /// directly (only with the server stopped).
    Retention(RetentionArgs),
    /// Show a running server's upstreams (reachability, last error, hit
    /// rate, bytes saved) and the last garbage collection.
    Status {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        addr: Option<SocketAddr>,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `cove prefetch REF…`
#[derive(Debug, clap::Args)]
pub struct PrefetchArgs {
    /// Images in an upstream's namespace: `docker.io/library/alpine:3.20`,
    /// `ghcr.io/owner/app@sha256:…` (no tag: `latest`).
    #[arg(required = true)]
    pub refs: Vec<String>,
    /// Only these platforms of a multi-platform image (`linux/amd64`,
    /// `linux/arm64/v8`; repeatable). Default: every platform.
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// TOML configuration file (upstreams, storage, listen address).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The running server's address (default: server.listen on loopback).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
}

/// `cove retention`: evict cached images and remove tags by the
/// `[retention]` policies (see README "Cache retention").
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// TOML configuration file ([retention], [upstreams], storage, listen).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// List what would be evicted or removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The running server's address (default: server.listen on loopback).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
}
