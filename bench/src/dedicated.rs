//! The workloads that start servers of their own rather than using the
//! pair every other workload shares: start-up time with many repositories
//! in storage and blob GETs against nginx serving the same files (the
//! pull-through cache ones are in `cache`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::client::Registry;
use crate::data::{Blob, Image};
use crate::plan::Plan;
use crate::report::{Run, WorkloadResult};
use crate::server::{self, Binaries, Kind, Server};
use crate::workloads::{self, Target};
use crate::{progress, BenchError};

/// Time from spawn until `/v2/` answers, with `repos` repositories in
/// storage, and idle RSS. The storage is built once and kept in `base/`.
pub(crate) async fn startup(bins: &Binaries, base: &Path, plan: &Plan) -> Result<WorkloadResult, BenchError> {
    let root = base.join(format!("startup-{}", plan.startup_repos));
    let image = Image::new(3, vec![Blob::from_bytes(Bytes::from_static(b"a tiny layer for start-up"))]);
    for kind in [Kind::Cove, Kind::Distribution] {
        let dir = root.join(kind.name());
        if dir.join("ready").exists() {
            continue;
        }
        eprintln!("building {} repositories for {}…", plan.startup_repos, kind.name());
        let _ = std::fs::remove_dir_all(&dir);
        let (mut s, _) = Server::start(kind, bins, &dir, "")?;
        Registry::new(s.base(), "").push_image("many/r00000", "latest", &image).await?;
        s.stop();
        let repos = match kind {
            Kind::Cove => dir.join("storage/repositories/many"),
            Kind::Distribution => dir.join("storage/docker/registry/v2/repositories/many"),
            Kind::Nginx => continue,
        };
        let n = plan.startup_repos;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for i in 1..n {
                copy_dir(&repos.join("r00000"), &repos.join(format!("r{i:05}")))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))??;
        std::fs::write(dir.join("ready"), b"")?;
    }
    let last = format!("many/r{:05}", plan.startup_repos - 1);
    let name = format!("start-up with {} repositories in storage", plan.startup_repos);
    let kinds = [Kind::Cove, Kind::Distribution];
    let mut pairs = Vec::new();
    for i in 0..plan.startup_pairs {
        let mut slots = [Run::default(), Run::default()];
        let order = if i % 2 == 0 { [0usize, 1] } else { [1, 0] };
        for j in order {
            let mut run = Run::default();
            match Server::start(kinds[j], bins, &root.join(kinds[j].name()), "") {
                Ok((s, ready)) => {
                    run.m("ready ms", ready.as_secs_f64() * 1e3, false);
                    if let Err(e) =
                        Registry::new(s.base(), "").get_manifest(&last, "latest", &image.manifest_digest).await
                    {
                        run.fail(e);
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if let Some(k) = server::rss_kib(s.pid) {
                        run.m("idle RSS MiB", k as f64 / 1024.0, false);
                    }
                    if let Some(k) = server::rss_anon_kib(s.pid) {
                        run.m("idle anonymous RSS MiB", k as f64 / 1024.0, false);
                    }
                }
                Err(e) => run.fail(e),
            }
            slots[j] = run;
        }
        pairs.push(slots);
    }
    let w = WorkloadResult { name, pairs, against: Kind::Distribution.name() };
    progress(&w);
    Ok(w)
}

pub(crate) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

/// Blob GETs from Cove vs nginx serving the same files from the same disk
/// (the physical reference), for single sizes at 1, 4 and 32 clients. Empty
/// when nginx is not installed.
pub(crate) async fn blob_get_vs_nginx(
    bins: &Binaries,
    run_dir: &Path,
    cove: &Target,
    mix: &Arc<Vec<(usize, Blob)>>,
    plan: &Plan,
) -> Result<Vec<WorkloadResult>, BenchError> {
    if bins.nginx.is_none() {
        eprintln!("nginx not found: no blob GET reference rows (install nginx or pass --nginx)");
        return Ok(Vec::new());
    }
    let cove_storage = run_dir.join("cove").join("storage");
    let (nginx, _) = Server::start(Kind::Nginx, bins, &run_dir.join("nginx"), &cove_storage.to_string_lossy())?;
    let targets = [
        Target { kind: Kind::Cove, pid: cove.pid, reg: cove.reg.clone() },
        Target { kind: Kind::Nginx, pid: nginx.pid, reg: Registry::new(nginx.base(), "") },
    ];
    let mut results = Vec::new();
    // One size class at a time: the smallest and the largest blob of the mix.
    let by_len = |pick: fn(&Blob, &Blob) -> bool| {
        mix.iter().enumerate().fold(None::<usize>, |best, (i, (_, b))| match best {
            Some(j) if !pick(b, &mix[j].1) => Some(j),
            _ => Some(i),
        })
    };
    let sizes = [by_len(|a, b| a.len < b.len), by_len(|a, b| a.len > b.len)];
    for index in sizes.into_iter().flatten() {
        let kib = mix[index].1.len / 1024;
        for c in [1usize, 4, 32] {
            let name = format!("blob GET {kib} KiB, c={c}: Cove vs nginx (sendfile, same files)");
            results.push(interleave!(name, targets, plan.pairs, |t, _i| {
                let seq = Arc::new(vec![index; plan.blob_requests.max(c * 4)]);
                async move { workloads::blob_get(t, mix, &seq, c).await }
            }));
        }
    }
    Ok(results)
}
