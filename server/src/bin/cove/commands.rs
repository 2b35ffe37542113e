//! `cove serve`, `cove mirror-config`, `cove storage copy` and
//! `cove check-config`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cove_server::config::Config;
use cove_server::reload::ConfigSource;
use cove_server::serve;

use crate::report::Progress;

/// `cove serve`: runs the registry until SIGINT/SIGTERM.
pub fn serve(config: Option<PathBuf>, listen: Option<String>, data_dir: Option<PathBuf>) -> Result<ExitCode, String> {
    let mut cfg = match &config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(l) = &listen {
        cfg.server.listen = l.clone();
    }
    if let Some(d) = &data_dir {
        cfg.storage.root = d.clone();
    }
    crate::init_logging(cfg.server.log_format);
    let source = ConfigSource {
        path: config.map(|p| std::path::absolute(&p).unwrap_or(p)),
        listen_override: listen,
        data_dir_override: data_dir,
    };
    crate::runtime()?
        .block_on(serve::serve(cfg, source, cove_server::listener::shutdown_signal()))
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// `cove mirror-config containerd`: prints (or writes) a `hosts.toml` per
/// upstream.
pub fn mirror_config(url: &str, config: Option<PathBuf>, out_dir: Option<PathBuf>) -> Result<ExitCode, String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("--url {url:?} must start with http:// or https://"));
    }
    let validated = load_validated(config)?;
    let files = cove_server::mirror::containerd_hosts(&validated, url);
    match out_dir {
        Some(dir) => {
            cove_server::mirror::write_all(&dir, &files).map_err(|e| e.to_string())?;
            for f in &files {
                println!("wrote {}", dir.join(&f.host).join("hosts.toml").display());
            }
        }
        None => {
            for f in &files {
                println!("{}", f.contents);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_validated(config: Option<PathBuf>) -> Result<cove_server::config::Validated, String> {
    let cfg = config.map(|p| Config::load(&p)).transpose().map_err(|e| e.to_string())?.unwrap_or_default();
    cfg.validate().map_err(|e| e.to_string())
}

/// `cove mirror-config podman|buildah|crio`: prints (or writes) the
/// registries.conf.d drop-in.
pub fn mirror_config_containers(
    args: crate::cli::ContainersArgs,
    tool: cove_server::mirror::ContainersTool,
) -> Result<ExitCode, String> {
    let validated = load_validated(args.config)?;
    let text = cove_server::mirror::registries_conf(&validated, &args.url, tool)?;
    match args.out {
        Some(path) => {
            std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `cove mirror-config docker`: prints the daemon.json fragment, and warns
/// on stderr when the configuration does not make Cove a Docker Hub mirror.
pub fn mirror_config_docker(url: &str, config: Option<PathBuf>) -> Result<ExitCode, String> {
    let validated = load_validated(config)?;
    if validated.default_upstream.as_deref() != Some("docker.io") {
        eprintln!(
            "note: Docker Engine sends Docker Hub names unqualified (/v2/library/nginx/...); \
             set [mirror] default_upstream = \"docker.io\" in Cove's config for it to cache them"
        );
    }
    println!("{}", cove_server::mirror::docker_daemon_json(url)?);
    Ok(ExitCode::SUCCESS)
}

/// `cove storage copy`: copies everything from one config's storage to
/// another's, with progress on stderr.
pub fn storage_copy(from: &Path, to: &Path) -> Result<ExitCode, String> {
    let load = |p: &Path| Config::load(p).and_then(|c| c.validate().map(|_| c)).map_err(|e| e.to_string());
    let (src_cfg, dst_cfg) = (load(from)?, load(to)?);
    crate::runtime()?.block_on(async move {
        let src = serve::open_storage(&src_cfg).map_err(|e| e.to_string())?;
        let dst = serve::open_storage(&dst_cfg).map_err(|e| e.to_string())?;
        eprintln!("copying {} -> {}", src_cfg.storage.describe(), dst_cfg.storage.describe());
        let mut shown = Progress::new();
        let mut progress = |p: &cove_core::copy::CopyProgress<'_>| {
            shown.show(p.repo_index >= p.repo_count, true, || {
                format!(
                    "[{}/{}] {}: {} blobs copied ({:.1} MiB), {} present, {} manifests",
                    p.repo_index,
                    p.repo_count,
                    p.repository,
                    p.stats.blobs_copied,
                    p.stats.bytes_copied as f64 / 1048576.0,
                    p.stats.blobs_present,
                    p.stats.manifests_copied + p.stats.manifests_present
                )
            });
        };
        let s = cove_core::copy::copy_all(src.as_ref(), dst.as_ref(), &mut progress)
            .await
            .map_err(|e| format!("copy failed (run the same command again to resume): {e}"))?;
        shown.finish();
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
        Ok(ExitCode::SUCCESS)
    })
}

/// `cove check-config`: validates a file and prints the effective basics.
pub fn check_config(config: &Path) -> Result<ExitCode, String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let v = cfg.validate().map_err(|e| e.to_string())?;
    println!("configuration is valid: listen {}, storage {}", v.listen, cfg.storage.describe());
    Ok(ExitCode::SUCCESS)
}
