//! The harness in its smallest mode (`--smoke`): every workload runs once
//! with tiny sizes against real servers (Cove, distribution, nginx) and a
//! real client (skopeo), and every answer is verified. No figure is
//! asserted: this checks that a fresh clone can run `scripts/bench.sh`, not
//! how fast anything is.

use std::path::Path;
use std::process::Command;

#[test]
fn smoke_run_verifies_every_answer_and_prints_the_table() {
    let registry = Path::new("/usr/bin/docker-registry");
    assert!(registry.is_file(), "docker-registry missing: run scripts/install-test-deps.sh");
    let nginx = Path::new("/usr/sbin/nginx");
    assert!(nginx.is_file(), "nginx missing: run scripts/install-test-deps.sh");
    let skopeo = Path::new("/usr/bin/skopeo");
    assert!(skopeo.is_file(), "skopeo missing: run scripts/install-test-deps.sh");
    let s3s_fs = cove_testkit::util::peers_bin().join("s3s-fs");
    assert!(s3s_fs.is_file(), "s3s-fs missing: run scripts/install-test-deps.sh");
    let cove = cove_testkit::cove_bin::cove_bin();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_cove-bench"))
        .arg("--smoke")
        .arg("--cove")
        .arg(&cove)
        .arg("--registry")
        .arg(registry)
        .arg("--nginx")
        .arg(nginx)
        .arg("--skopeo")
        .arg(skopeo)
        .arg("--s3s-fs")
        .arg(&s3s_fs)
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run cove-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cove-bench --smoke failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("correctness: 0 failures"), "{stdout}");
    for row in [
        "cove-bench (smoke mode)",
        "physical limits: SHA-256",
        "GET /v2/",
        "manifest HEAD by tag",
        "pull check",
        "blob GET, size mix",
        "Cove vs nginx (sendfile, same files)",
        "push 16 MiB blob, monolithic",
        "push 16 MiB blob, chunked",
        "push storm",
        "mixed 75% pull",
        "start-up with 20 repositories",
        "pull-through cache miss",
        "pull-through cache hit",
        "pull-through cache, 8 clients pull one uncached 8 MiB blob at once",
        "upstream blob GETs",
        "pull-through cold pull, 10-layer image",
        "skopeo push 8 MiB single-layer image",
        "skopeo pull 8 MiB single-layer image",
        "targets (performance issue",
        "× one direct pull (target ≤ 1.25)",
        "upstream GETs 1 (target 1)",
        "all done ms vs 8 direct",
        "× 8 clients pulling straight from distribution at once",
        "× direct time (target ≤ 1.25, as for one blob's miss)",
        "(target ≤ 1.2, the push target)",
        "scale: 300 repositories and 60 tags in one repository",
        "_catalog?n=100, middle page",
        "tags/list?n=100, middle page",
        "web interface list, filtered",
        "GC dry run, after one push",
        "retention dry run, nothing changed since",
        "scale on s3s-fs: 40 repositories and 20 tags in one repository",
        "_catalog?n=100, middle page: bucket requests",
        "GC dry run, nothing changed since: bucket requests",
    ] {
        assert!(stdout.contains(row), "no {row:?} row in the table:\n{stdout}");
    }
    // The run directory is removed unless --keep.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read temp dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
        .collect();
    assert!(left.is_empty(), "run directory left behind: {left:?}");
}
