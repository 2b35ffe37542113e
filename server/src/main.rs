//! The `cove` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cove_server::config::{Config, LogFormat};
use cove_server::serve;

/// Cove: an OCI registry and pull-through cache.
#[derive(Parser)]
#[command(name = "cove", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Print (or write) the containerd hosts.toml files that use Cove as the
    /// mirror of every configured upstream.
    MirrorConfig {
        #[command(subcommand)]
        runtime: MirrorRuntime,
    },
    /// Storage maintenance.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    // operations (issue 7): `cove gc`, `cove scrub`, `cove status`
    #[command(flatten)]
    Ops(cove_server::ops::OpsCommand),
    /// Ask the running server to reload its configuration file (the same as
    /// `kill -HUP`): prints what changed, or why the file was rejected.
    Reload {
        /// The configuration file (for the listen address and TLS).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The running server's address (default: server.listen on loopback).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
    /// Check a configuration file and print the effective settings.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum StorageCommand {
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
enum MirrorRuntime {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen, data_dir } => {
            let config_path = config.clone();
            let overrides = (listen.clone(), data_dir.clone());
            let mut cfg = match config {
                Some(path) => match Config::load(&path) {
                    Ok(c) => c,
                    Err(e) => return fail(&e),
                },
                None => Config::default(),
            };
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.storage.root = d;
            }
            init_logging(cfg.server.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            runtime.block_on(async move {
                let validated = match cfg.validate() {
                    Ok(v) => v,
                    Err(e) => return fail(&e),
                };
                let tls = match serve::open_tls(&cfg) {
                    Ok(t) => t,
                    Err(e) => return fail(&e),
                };
                let app = match serve::build_app(&cfg, &validated).await {
                    Ok(a) => a,
                    Err(e) => return fail(&e),
                };
                // config reload (issue 7): SIGHUP and POST /admin/reload
                let reloader = cove_server::reload::Reloader::new(
                    config_path.map(|p| std::path::absolute(&p).unwrap_or(p)),
                    overrides.0,
                    overrides.1,
                    &cfg,
                    tls.clone(),
                );
                let _ = app.reloader.set(std::sync::Arc::new(reloader));
                cove_server::reload::spawn_signal_handler(app.clone());
                let tls_config = match &tls {
                    Some(store) => {
                        store.watch();
                        match store.server_config() {
                            Ok(c) => Some(c),
                            Err(e) => return fail(&e),
                        }
                    }
                    None => None,
                };
                let listener = match serve::bind(&validated).await {
                    Ok(l) => l,
                    Err(e) => return fail(&e),
                };
                let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
                let scheme = if tls_config.is_some() { "https" } else { "http" };
                tracing::info!(listen = %addr, scheme, storage = %cfg.storage.describe(), "cove is serving");
                serve::run(app.clone(), listener, validated.upload_ttl, tls_config, serve::shutdown_signal()).await;
                cove_server::retention::flush(&app).await; // retention (issue 7): save the activity log
                ExitCode::SUCCESS
            })
        }
        Command::MirrorConfig { runtime: MirrorRuntime::Containerd { url, config, out_dir } } => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return fail(&format!("--url {url:?} must start with http:// or https://"));
            }
            let cfg = match config.map(|p| Config::load(&p)).transpose() {
                Ok(c) => c.unwrap_or_default(),
                Err(e) => return fail(&e),
            };
            let validated = match cfg.validate() {
                Ok(v) => v,
                Err(e) => return fail(&e),
            };
            let files = cove_server::mirror::containerd_hosts(&validated, &url);
            match out_dir {
                Some(dir) => match cove_server::mirror::write_all(&dir, &files) {
                    Ok(()) => {
                        for f in &files {
                            println!("wrote {}", dir.join(&f.host).join("hosts.toml").display());
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                },
                None => {
                    for f in &files {
                        println!("{}", f.contents);
                    }
                    ExitCode::SUCCESS
                }
            }
        }
        Command::Storage { command: StorageCommand::Copy { from, to } } => {
            init_logging(LogFormat::Text);
            let load = |p: &PathBuf| Config::load(p).and_then(|c| c.validate().map(|_| c));
            let (src_cfg, dst_cfg) = match (load(&from), load(&to)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => return fail(&e),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            runtime.block_on(async move {
                let (src, dst) = match (serve::open_storage(&src_cfg), serve::open_storage(&dst_cfg)) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => return fail(&e),
                };
                eprintln!("copying {} -> {}", src_cfg.storage.describe(), dst_cfg.storage.describe());
                let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
                let mut last = std::time::Instant::now();
                let mut progress = |p: &cove_core::copy::CopyProgress<'_>| {
                    if tty && last.elapsed().as_millis() < 100 && p.repo_index < p.repo_count {
                        return;
                    }
                    last = std::time::Instant::now();
                    let line = format!(
                        "[{}/{}] {}: {} blobs copied ({:.1} MiB), {} present, {} manifests",
                        p.repo_index,
                        p.repo_count,
                        p.repository,
                        p.stats.blobs_copied,
                        p.stats.bytes_copied as f64 / 1048576.0,
                        p.stats.blobs_present,
                        p.stats.manifests_copied + p.stats.manifests_present
                    );
                    if tty {
                        eprint!("\r\x1b[2K{line}");
                    } else {
                        eprintln!("{line}");
                    }
                };
                match cove_core::copy::copy_all(src.as_ref(), dst.as_ref(), &mut progress).await {
                    Ok(s) => {
                        if tty {
                            eprintln!();
                        }
                        println!(
                            "copied {} repositories: {} manifests copied ({} already present), {} blobs copied \
                             ({:.1} MiB, {} already present, {} not in the source), {} tags, {} referrers",
                            s.repositories,
                            s.manifests_copied,
                            s.manifests_present,
                            s.blobs_copied,
                            s.bytes_copied as f64 / 1048576.0,
                            s.blobs_present,
                            s.blobs_missing_in_source,
                            s.tags,
                            s.referrers
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&format!("copy failed (run the same command again to resume): {e}")),
                }
            })
        }
        Command::Ops(cmd) => {
            init_logging(LogFormat::Text);
            cove_server::ops::run_command(cmd)
        }
        Command::Reload { config, addr } => cove_server::reload::run_command(config, addr),
        Command::CheckConfig { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            match cfg.validate() {
                Ok(v) => {
                    println!("configuration is valid: listen {}, storage {}", v.listen, cfg.storage.describe());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("cove: {e}");
    ExitCode::FAILURE
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
