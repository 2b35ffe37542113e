//! The `cove` binary: parses the command line, runs one command, prints
//! its outcome and turns it into the exit code. The library below prints
//! nothing; everything a user reads is written here.

mod admin;
mod admin_client;
mod alloc;
mod cli;
mod commands;
mod report;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, MirrorRuntime, StorageCommand};
use cove_server::config::LogFormat;

fn main() -> ExitCode {
    alloc::tune();
    let outcome = match Cli::parse().command {
        Command::Serve { config, listen, data_dir } => commands::serve(config, listen, data_dir),
        Command::MirrorConfig { runtime: MirrorRuntime::Containerd { url, config, out_dir } } => {
            commands::mirror_config(&url, config, out_dir)
        }
        Command::MirrorConfig { runtime: MirrorRuntime::Podman(a) } => {
            commands::mirror_config_containers(a, cove_server::mirror::ContainersTool::Podman)
        }
        Command::MirrorConfig { runtime: MirrorRuntime::Buildah(a) } => {
            commands::mirror_config_containers(a, cove_server::mirror::ContainersTool::Buildah)
        }
        Command::MirrorConfig { runtime: MirrorRuntime::Crio(a) } => {
            commands::mirror_config_containers(a, cove_server::mirror::ContainersTool::Crio)
        }
        Command::MirrorConfig { runtime: MirrorRuntime::Docker { url, config } } => {
            commands::mirror_config_docker(&url, config)
        }
        Command::Storage { command: StorageCommand::Copy { from, to } } => {
            init_logging(LogFormat::Text);
            commands::storage_copy(&from, &to)
        }
        Command::Ops(cmd) => {
            init_logging(LogFormat::Text);
            admin::run(cmd)
        }
        Command::Reload { config, addr } => admin::reload(config, addr),
        Command::Prefetch(args) => {
            init_logging(LogFormat::Text);
            admin::prefetch(args)
        }
        Command::CheckConfig { config } => commands::check_config(&config),
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("cove: {e}");
        ExitCode::FAILURE
    })
}

/// The multi-threaded runtime the async commands run on.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())
}

/// Logs to stderr (`COVE_LOG` filters, default `info`), in colour on a terminal.
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
