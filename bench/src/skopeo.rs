//! A real client: skopeo pushes a single-layer image from an OCI layout
//! directory to each registry and pulls it back into a `dir:` directory,
//! Cove and distribution in alternating pairs. The layout is written from
//! the harness's random data; the pulled manifest, config and layer are
//! compared byte for byte with what was pushed.
//!
//! `--preserve-digests` keeps skopeo from compressing the layer (random
//! bytes look uncompressed to it): like a client pushing an
//! already-compressed layer, it sends the bytes as they are.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bytes::Bytes;

use crate::data::{big_blob, Blob, Image, FRAME, OCI_MANIFEST};
use crate::plan::Plan;
use crate::report::{Run, WorkloadResult};
use crate::server::Meter;
use crate::workloads::Target;
use crate::{progress, BenchError, GIB, MIB};

/// skopeo push and pull rows; empty when skopeo is not installed.
pub(crate) async fn skopeo(
    skopeo: Option<&Path>,
    targets: &[Target; 2],
    run_dir: &Path,
    pool: &Bytes,
    plan: &Plan,
) -> Result<Vec<WorkloadResult>, BenchError> {
    let Some(bin) = skopeo else {
        eprintln!("skopeo not found: no skopeo push/pull rows (install skopeo or pass --skopeo)");
        return Ok(Vec::new());
    };
    let dir = run_dir.join("skopeo");
    std::fs::create_dir_all(dir.join("tmp"))?;
    let policy = dir.join("policy.json");
    std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#)?;
    let sk = Skopeo { bin: bin.to_owned(), policy, tmp: dir.join("tmp") };
    let mib = plan.skopeo_size / MIB;
    let mut push = WorkloadResult {
        name: format!("skopeo push {mib} MiB single-layer image (oci: → docker://)"),
        pairs: Vec::new(),
        against: targets[1].kind.name(),
    };
    let mut pull = WorkloadResult {
        name: format!("skopeo pull {mib} MiB single-layer image (docker:// → dir:)"),
        pairs: Vec::new(),
        against: targets[1].kind.name(),
    };
    for i in 0..plan.skopeo_pairs {
        // A new image for every pair (the same for both servers).
        let image = Image::new(80_000 + i as u64, vec![big_blob(pool, 80_000 + i as u64, plan.skopeo_size)]);
        let layout = dir.join(format!("layout-{i}"));
        write_layout(&layout, &image, "v1").await?;
        let order = if i % 2 == 0 { [0usize, 1] } else { [1, 0] };
        let reference = |t: &Target| format!("docker://{}/skopeo/big:p{i}", t.reg.base.trim_start_matches("http://"));
        let mut pushes = [Run::default(), Run::default()];
        for j in order {
            let t = &targets[j];
            let from = format!("oci:{}:v1", layout.display());
            pushes[j] = sk.timed(t, &["--dest-tls-verify=false", &from, &reference(t)], image.layers[0].len).await;
        }
        let mut pulls = [Run::default(), Run::default()];
        for j in order {
            let t = &targets[j];
            let into = dir.join(format!("pulled-{i}-{}", t.kind.name()));
            let to = format!("dir:{}", into.display());
            let mut run = sk.timed(t, &["--src-tls-verify=false", &reference(t), &to], image.layers[0].len).await;
            if run.failures == 0 {
                if let Err(e) = check_pulled(&into, &image).await {
                    run.fail(e);
                }
            }
            let _ = std::fs::remove_dir_all(&into);
            pulls[j] = run;
        }
        let _ = std::fs::remove_dir_all(&layout);
        push.pairs.push(pushes);
        pull.pairs.push(pulls);
    }
    progress(&push);
    progress(&pull);
    Ok(vec![push, pull])
}

struct Skopeo {
    bin: PathBuf,
    policy: PathBuf,
    tmp: PathBuf,
}

impl Skopeo {
    /// One `skopeo copy`, timed, with `t`'s CPU: MB/s and s/GiB of `bytes`.
    async fn timed(&self, t: &Target, args: &[&str], bytes: u64) -> Run {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--policy").arg(&self.policy).args(["copy", "--quiet", "--preserve-digests"]).args(args);
        cmd.env("TMPDIR", &self.tmp);
        let meter = Meter::start(t.pid);
        let start = Instant::now();
        let out = tokio::task::spawn_blocking(move || cmd.output()).await;
        let elapsed = start.elapsed();
        let usage = meter.finish();
        let mut run = Run::default();
        match out {
            Ok(Ok(o)) if o.status.success() => {
                run.m("MB/s", bytes as f64 / elapsed.as_secs_f64() / 1e6, true);
                run.m("total ms", elapsed.as_secs_f64() * 1e3, false);
                run.usage(&usage, "s/GiB", bytes as f64 / GIB, 1.0);
            }
            Ok(Ok(o)) => {
                let err = String::from_utf8_lossy(&o.stderr);
                run.fail(format!("skopeo copy {} failed ({}): {}", args.join(" "), o.status, err.trim()));
            }
            Ok(Err(e)) => run.fail(format!("cannot run skopeo: {e}")),
            Err(e) => run.fail(format!("skopeo task: {e}")),
        }
        run
    }
}

/// An OCI image layout in `dir`: `oci-layout`, `index.json` naming the
/// manifest by `tag`, and the manifest, config and layers under `blobs/`.
async fn write_layout(dir: &Path, image: &Image, tag: &str) -> Result<(), BenchError> {
    let blobs_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs_dir)?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string())?;
    let manifest = Blob::from_bytes(image.manifest.clone());
    let blobs: Vec<Blob> = image.layers.iter().chain([&image.config, &manifest]).cloned().collect();
    tokio::task::spawn_blocking(move || -> Result<(), BenchError> {
        for b in &blobs {
            let mut f = std::fs::File::create(blobs_dir.join(hex_of(&b.digest)?))?;
            for frame in b.frames(0, b.len) {
                f.write_all(&frame)?;
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| BenchError::Setup(e.to_string()))?
}

/// Checks what `skopeo copy … dir:DIR` wrote: the manifest, the config and
/// every layer (files named by their hex digest) byte for byte.
async fn check_pulled(dir: &Path, image: &Image) -> Result<(), BenchError> {
    let manifest = std::fs::read(dir.join("manifest.json"))?;
    if manifest != image.manifest {
        return Err(BenchError::Check("skopeo pull: manifest.json differs from the pushed manifest".into()));
    }
    let blobs: Vec<Blob> = image.layers.iter().chain([&image.config]).cloned().collect();
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || -> Result<(), BenchError> {
        for b in &blobs {
            let path = dir.join(hex_of(&b.digest)?);
            let mut f = std::fs::File::open(&path)
                .map_err(|e| BenchError::Check(format!("skopeo pull: {}: {e}", path.display())))?;
            let mut buf = vec![0u8; FRAME];
            let mut pos = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if !b.matches_at(pos, &buf[..n]) {
                    return Err(BenchError::Check(format!("skopeo pull: {} differs at byte {pos}", b.digest)));
                }
                pos += n as u64;
            }
            if pos != b.len {
                return Err(BenchError::Check(format!(
                    "skopeo pull: {} has {pos} bytes, {} expected",
                    b.digest, b.len
                )));
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| BenchError::Setup(e.to_string()))?
}

fn hex_of(digest: &str) -> Result<&str, BenchError> {
    digest.strip_prefix("sha256:").ok_or_else(|| BenchError::Setup(format!("not a sha256 digest: {digest}")))
}
