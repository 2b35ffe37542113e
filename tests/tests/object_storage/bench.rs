//! Throughput and peak RSS of a big blob, object store vs filesystem
//! (`COVE_OBJECT_BENCH_MIB`, default 256; `COVE_OBJECT_BENCH_GARAGE=1` adds
//! Garage).

use super::*;

/// Resets the peak RSS (VmHWM) of `pid` (Linux ≥ 4.0); false elsewhere.
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_blob_throughput_and_memory_object_vs_filesystem() {
    let mib: u64 = std::env::var("COVE_OBJECT_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let garage = std::env::var_os("COVE_OBJECT_BENCH_GARAGE").is_some_and(|v| v == "1");
    let pattern = Pattern::new(mib * MIB as u64);
    let digest = pattern.digest();
    let s3s = S3Peer::s3s_fs();
    let garage_peer = garage.then(S3Peer::garage);
    let mut backends: Vec<(&str, Option<&S3Peer>)> = vec![("filesystem", None), ("s3s-fs", Some(&s3s))];
    if let Some(g) = &garage_peer {
        backends.push(("garage", Some(g)));
    }
    report(&format!("object storage: {mib} MiB blob, binary {}", cove_bin().display()));
    for (label, peer) in backends {
        // Default part size (8 MiB), as a user would run it.
        let config = peer.map(|p| s3_config(p, PREFIX).replace(&format!("part_size = {PART}\n"), ""));
        let s = Server::start_with(ServerOptions { config, ..Default::default() }).await;
        let idle = s.memory();
        let (patch, put) = push_pattern(&s, "bench/big", &pattern, &digest).await;
        let push = patch + put;
        let after_push = s.memory();
        let reset = reset_peak_rss(s.pid());
        let t = Instant::now();
        let r = s.get(&format!("/v2/bench/big/blobs/{digest}")).await;
        assert_eq!(r.status(), 200, "{label}: GET big blob");
        assert_eq!(verify_stream_equals(r, &pattern, 0).await, pattern.total, "{label}: pulled length");
        let pull = t.elapsed();
        let after_pull = s.memory();
        let rate = |d: Duration| mib as f64 / d.as_secs_f64();
        report(&format!(
            "object storage: {label:<10} push {:6.1} MiB/s ({:.2} s: PATCH {:.2} s + final PUT {:.2} s), \
             pull {:6.1} MiB/s ({:.2} s); RSS idle {} MiB, after push {} MiB, peak during push {} MiB, \
             peak during pull {} MiB{}",
            rate(push),
            push.as_secs_f64(),
            patch.as_secs_f64(),
            put.as_secs_f64(),
            rate(pull),
            pull.as_secs_f64(),
            idle.rss_kib / 1024,
            after_push.rss_kib / 1024,
            after_push.peak_kib / 1024,
            after_pull.peak_kib / 1024,
            if reset { "" } else { " (pull peak includes the push: VmHWM not resettable here)" }
        ));
        // Memory stays flat whatever the size: a few parts, never the blob.
        let bound_mib = 200;
        assert!(
            after_push.peak_kib / 1024 < bound_mib && after_pull.peak_kib / 1024 < bound_mib,
            "{label}: peak RSS {} / {} MiB for a {mib} MiB blob (bound {bound_mib} MiB)",
            after_push.peak_kib / 1024,
            after_pull.peak_kib / 1024
        );
    }
}
