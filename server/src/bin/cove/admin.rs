//! The operations commands: `cove gc`, `scrub`, `retention` and `status`
//! ask the running server's admin endpoints when one answers; `gc`, `scrub`
//! and `retention` otherwise work on the storage directly. `cove reload`
//! asks the server to reload its configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use cove_core::gc::{self, GcGuard, GcReport};
use cove_core::scrub::ScrubReport;
use cove_server::config::{Config, GcSettings};
use cove_server::jobs::retention::RunReport;

use crate::admin_client;
use crate::cli::{OpsCommand, PrefetchArgs, RetentionArgs};
use crate::report::{self, Progress};

/// Runs an operations subcommand.
pub fn run(cmd: OpsCommand) -> Result<ExitCode, String> {
    let (config, addr) = match &cmd {
        OpsCommand::Gc { config, addr, .. }
        | OpsCommand::Scrub { config, addr, .. }
        | OpsCommand::Retention(RetentionArgs { config, addr, .. })
        | OpsCommand::Status { config, addr, .. } => {
            let c = load_valid(config)?;
            let a = addr.or_else(|| admin_client::local_addr(&c));
            (c, a)
        }
    };
    crate::runtime()?.block_on(async move {
        let (method, path) = admin_request(&cmd);
        let online = match addr {
            Some(a) => match admin_client::send(&config, a, method, &path).await {
                Ok(r) => Some((a, r)),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => None,
                Err(e) => return Err(format!("cannot ask the server at {a}: {e}")),
            },
            None => None,
        };
        if let Some((a, (status, body))) = online {
            if status != 200 {
                return Err(format!("server at {a} answered {status}: {}", body.trim()));
            }
            eprintln!("(ran by the server at {a})");
            return print_answer(&cmd, a, &body);
        }
        if matches!(cmd, OpsCommand::Status { .. }) {
            return Err("no server answers at the configured address (status needs a running server)".into());
        }
        eprintln!(
            "no server answers at {}; working on {} directly",
            addr.map(|a| a.to_string()).unwrap_or_default(),
            config.storage.describe()
        );
        run_offline(cmd, &config).await
    })
}

/// A config file (or the defaults) that passed validation.
fn load_valid(path: &Option<PathBuf>) -> Result<Config, String> {
    let c = match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// The admin endpoint that runs `cmd` on a running server.
fn admin_request(cmd: &OpsCommand) -> (&'static str, String) {
    match cmd {
        OpsCommand::Gc { dry_run, .. } => ("POST", format!("/admin/gc?dry_run={dry_run}")),
        OpsCommand::Scrub { quarantine, .. } => ("POST", format!("/admin/scrub?quarantine={quarantine}")),
        OpsCommand::Status { .. } => ("GET", "/admin/status".to_owned()),
        OpsCommand::Retention(RetentionArgs { dry_run, .. }) => ("POST", format!("/admin/retention?dry_run={dry_run}")),
    }
}

/// Prints the server's answer to `cmd`.
fn print_answer(cmd: &OpsCommand, a: SocketAddr, body: &str) -> Result<ExitCode, String> {
    let unexpected = |e: serde_json::Error| format!("unexpected answer from {a}: {e}");
    match cmd {
        OpsCommand::Gc { .. } => Ok(report::print_gc(&serde_json::from_str::<GcReport>(body).map_err(unexpected)?)),
        OpsCommand::Scrub { .. } => {
            Ok(report::print_scrub(&serde_json::from_str::<ScrubReport>(body).map_err(unexpected)?))
        }
        OpsCommand::Retention(_) => {
            Ok(report::print_retention(&serde_json::from_str::<RunReport>(body).map_err(unexpected)?))
        }
        OpsCommand::Status { json: true, .. } => {
            println!("{body}");
            Ok(ExitCode::SUCCESS)
        }
        OpsCommand::Status { json: false, .. } => {
            let v = serde_json::from_str::<serde_json::Value>(body).map_err(unexpected)?;
            print!("{}", report::format_status(&v));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `cmd` on the storage itself (no server answers).
async fn run_offline(cmd: OpsCommand, config: &Config) -> Result<ExitCode, String> {
    let storage = cove_server::serve::open_storage(config).map_err(|e| e.to_string())?;
    match cmd {
        OpsCommand::Gc { dry_run, .. } => {
            let settings = GcSettings::from_config(config);
            let guard = GcGuard::offline();
            let r = gc::collect(storage.as_ref(), &guard, &|_| false, &settings.options(dry_run))
                .await
                .map_err(|e| e.to_string())?;
            Ok(report::print_gc(&r))
        }
        OpsCommand::Scrub { quarantine, .. } => {
            let dir = config.storage.root.join("quarantine");
            let mut shown = Progress::new();
            let mut progress = |p: cove_core::scrub::ScrubProgress| {
                shown.show(p.done >= p.total, p.done == p.total || p.done.is_multiple_of(1000), || {
                    let width = 30usize;
                    let filled = (p.done * width).checked_div(p.total).unwrap_or(width);
                    format!(
                        "[{}{}] {}/{} objects, {:.1} MiB",
                        "#".repeat(filled),
                        " ".repeat(width - filled),
                        p.done,
                        p.total,
                        p.bytes as f64 / 1048576.0
                    )
                });
            };
            let result =
                cove_core::scrub::scrub(storage.as_ref(), quarantine.then_some(dir.as_path()), &mut progress).await;
            shown.finish();
            Ok(report::print_scrub(&result.map_err(|e| e.to_string())?))
        }
        OpsCommand::Retention(RetentionArgs { dry_run, .. }) => {
            let r = cove_server::jobs::retention::run_offline(config, storage, dry_run).await?;
            Ok(report::print_retention(&r))
        }
        OpsCommand::Status { .. } => Ok(ExitCode::FAILURE),
    }
}

/// `cove prefetch REF…`: through the running server (its answer streams
/// one JSON event per line, printed as it comes), or on the storage
/// directly when no server answers. Fails when anything could not be
/// fetched or the rate-limit headroom paused it.
pub fn prefetch(args: PrefetchArgs) -> Result<ExitCode, String> {
    use cove_core::registry::prefetch::{PrefetchEvent, PrefetchReport};
    let config = load_valid(&args.config)?;
    let addr = args.addr.or_else(|| admin_client::local_addr(&config));
    let mut query = form_urlencoded::Serializer::new(String::new());
    for r in &args.refs {
        query.append_pair("ref", r);
    }
    for p in &args.platforms {
        query.append_pair("platform", p);
    }
    let path = format!("/admin/prefetch?{}", query.finish());
    crate::runtime()?.block_on(async move {
        if let Some(a) = addr {
            let mut report: Option<PrefetchReport> = None;
            let mut on_line = |line: &str| {
                if let Ok(e) = serde_json::from_str::<PrefetchEvent>(line) {
                    report::print_prefetch_event(&e);
                } else if let Ok(r) = serde_json::from_str::<PrefetchReport>(line) {
                    report = Some(r);
                }
            };
            match admin_client::send_streaming(&config, a, "POST", &path, &mut on_line).await {
                Ok((200, _)) => {
                    eprintln!("(ran by the server at {a})");
                    let r = report.ok_or_else(|| format!("the server at {a} ended the answer before the totals"))?;
                    return Ok(report::print_prefetch(&r));
                }
                Ok((status, body)) => return Err(format!("server at {a} answered {status}: {}", body.trim())),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(format!("cannot ask the server at {a}: {e}")),
            }
        }
        eprintln!(
            "no server answers at {}; working on {} directly",
            addr.map(|a| a.to_string()).unwrap_or_default(),
            config.storage.describe()
        );
        let registry = cove_server::serve::open_registry_offline(&config).await.map_err(|e| e.to_string())?;
        let progress = |e: PrefetchEvent| report::print_prefetch_event(&e);
        let mut total = PrefetchReport::default();
        for r in &args.refs {
            let (name, reference) = cove_server::config::prefetch::parse_image_ref(r)?;
            let repo = registry.resolve_name(name.as_str(), None).map_err(|e| e.message)?;
            let mut platforms = Vec::new();
            for p in &args.platforms {
                platforms.push(p.parse()?);
            }
            let req = cove_core::registry::prefetch::PrefetchRequest {
                repo,
                target: cove_core::registry::prefetch::PrefetchTarget::Reference(reference),
                platforms,
            };
            total.add(&registry.prefetch(&req, &progress).await.map_err(|e| e.message)?);
        }
        Ok(report::print_prefetch(&total))
    })
}

/// `cove reload`: asks the server at `addr` to reload; prints what changed
/// or why the new config was rejected.
pub fn reload(config: Option<PathBuf>, addr: Option<SocketAddr>) -> Result<ExitCode, String> {
    // Only the listen address (and TLS) is needed: the server validates the file.
    let cfg = match &config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let Some(addr) = addr.or_else(|| admin_client::local_addr(&cfg)) else {
        return Err("no server address: pass --addr or a config with server.listen".into());
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let (status, body) = runtime
        .block_on(admin_client::send(&cfg, addr, "POST", "/admin/reload"))
        .map_err(|e| format!("cannot reach the server at {addr}: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let list = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(|a| a.as_array())
            // `changed`/`needs_restart` hold strings; `errors` the spec's
            // error objects, whose messages are the reasons.
            .map(|a| a.iter().filter_map(|s| s.as_str().or_else(|| s["message"].as_str()).map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    match status {
        200 => {
            let changed = list("changed");
            if changed.is_empty() {
                println!("configuration reloaded: nothing changed");
            } else {
                println!("configuration reloaded: {}", changed.join(", "));
            }
            for k in list("needs_restart") {
                println!("warning: {k} changed: needs a restart");
            }
            Ok(ExitCode::SUCCESS)
        }
        400 => {
            eprintln!("cove: the server rejected the new configuration and keeps the running one:");
            for e in list("errors") {
                eprintln!("  {e}");
            }
            Ok(ExitCode::FAILURE)
        }
        s => Err(format!("server at {addr} answered {s}: {}", body.trim())),
    }
}
