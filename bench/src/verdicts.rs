//! The performance targets of the performance issue, each checked against
//! the figures measured in this run (ratios to the references measured
//! alongside, not to fixed numbers where a reference exists).

use crate::cache::{ALL_DONE_VS_DIRECT, CONCURRENT_CLIENTS};
use crate::limits::Limits;
use crate::report::{fmt_num, summary, WorkloadResult};
use crate::server::Kind;
use crate::GIB;

/// The performance targets, each as measured in this run.
pub(crate) fn targets_summary(out: &mut String, results: &[WorkloadResult], limits: &Limits, idle_cove: Option<u64>) {
    out.push_str("\ntargets (performance issue: ratios to references measured in this run)\n");
    fn find<'a>(results: &'a [WorkloadResult], prefix: &'a str) -> impl Iterator<Item = &'a WorkloadResult> + 'a {
        results.iter().filter(move |r| r.name.starts_with(prefix))
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let floor = GIB / (limits.sha_mbs * 1e6);
    out.push_str(&format!(
        "  SHA-256 floor: {floor:.2} s CPU per GiB ({} MB/s on one core); writing a new file through the page cache: {:.2} s CPU per GiB\n",
        fmt_num(limits.sha_mbs),
        limits.write_cpu_s_per_gib
    ));
    // What a push costs beyond those two floors (both measured in this run).
    let floors = floor + limits.write_cpu_s_per_gib;
    for r in find(results, "push ") {
        if let Some(cpu) = r.median(0, "CPU s/GiB") {
            out.push_str(&format!(
                "  {:<62} {:.2} s CPU/GiB (target ≤ 1.2): {}; {:.2} s above hashing + page-cache write; {:.2} × distribution's MB/s\n",
                r.name,
                cpu,
                verdict(cpu <= 1.2),
                cpu - floors,
                r.ratio("MB/s").map(|x| x.0).unwrap_or(f64::NAN)
            ));
        }
    }
    for r in find(results, "pull-through cache miss") {
        if let (Some(t), Some(cpu)) = (r.ratio("total ms"), r.median(0, "CPU s/GiB")) {
            let ttfb = r.median(0, "TTFB ms").zip(r.median(1, "TTFB ms")).map(|(c, d)| c - d);
            // A miss hashes and spools every byte: the push's two floors.
            out.push_str(&format!(
                "  {:<62} {:.2} × direct time (target ≤ 1.25): {}; {:.2} s CPU/GiB (target ≤ 1.2): {}; \
                 {:.2} s above hashing + page-cache write; TTFB direct + {:.1} ms (target ≤ 2): {}\n",
                r.name,
                t.0,
                verdict(t.0 <= 1.25),
                cpu,
                verdict(cpu <= 1.2),
                cpu - floors,
                ttfb.unwrap_or(f64::NAN),
                verdict(ttfb.is_some_and(|x| x <= 2.0))
            ));
        }
    }
    for r in find(results, "pull-through cache hit") {
        if let Some((m, _, _)) = r.ratio("MB/s") {
            out.push_str(&format!("  {:<62} {:.2} × direct (target ≥ 1.5): {}\n", r.name, m, verdict(m >= 1.5)));
        }
    }
    for r in find(results, "pull-through cache, ") {
        if let Some((m, _, _)) = r.ratio("all done ms") {
            let gets = r.spread(0, "upstream blob GETs");
            let one = gets.is_some_and(|(_, lo, hi)| lo == 1.0 && hi == 1.0);
            // What the clients cost themselves (each compares its copy) is
            // in both sides of this ratio; it is reported, not a target.
            let at_once = r.ratio(ALL_DONE_VS_DIRECT).map(|x| x.0).unwrap_or(f64::NAN);
            out.push_str(&format!(
                "  {:<62} all done in {:.2} × one direct pull (target ≤ 1.25): {}; upstream GETs {} (target 1): {}; \
                 {:.2} × {CONCURRENT_CLIENTS} clients pulling straight from distribution at once\n",
                r.name,
                m,
                verdict(m <= 1.25),
                gets.map(|(_, _, hi)| format!("{hi:.0}")).unwrap_or_else(|| "-".into()),
                verdict(one),
                at_once
            ));
        }
    }
    for r in find(results, "pull-through cold pull") {
        if let Some((m, _, _)) = r.ratio("total ms") {
            let above = r
                .median(0, "CPU s/GiB")
                .map(|cpu| format!("; {cpu:.2} s CPU/GiB, {:.2} s above hashing + page-cache write", cpu - floors))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<62} {:.2} × direct time (target ≤ 1.25, as for one blob's miss): {}{above}\n",
                r.name,
                m,
                verdict(m <= 1.25)
            ));
        }
    }
    for r in find(results, "skopeo push ") {
        if let Some(cpu) = r.median(0, "CPU s/GiB") {
            out.push_str(&format!(
                "  {:<62} {:.2} s CPU/GiB (target ≤ 1.2, the push target): {}; {:.2} × distribution's MB/s\n",
                r.name,
                cpu,
                verdict(cpu <= 1.2),
                r.ratio("MB/s").map(|x| x.0).unwrap_or(f64::NAN)
            ));
        }
    }
    for r in results.iter().filter(|r| r.against == Kind::Nginx.name()) {
        if let Some((m, lo, _)) = r.ratio("MB/s") {
            out.push_str(&format!(
                "  {:<62} {:.2} × nginx (min {:.2}) (target ≥ 0.9): {}\n",
                r.name,
                m,
                lo,
                verdict(m >= 0.9)
            ));
        }
    }
    let mut idle: Vec<f64> = idle_cove.map(|k| k as f64 / 1024.0).into_iter().collect();
    if let Some(r) = find(results, "start-up").next() {
        idle.extend(
            r.pairs.iter().filter_map(|p| p[0].metrics.iter().find(|m| m.name == "idle RSS MiB")).map(|m| m.value),
        );
        if let Some(ms) = r.median(0, "ready ms") {
            out.push_str(&format!("  {:<62} {:.1} ms (target < 100): {}\n", r.name, ms, verdict(ms < 100.0)));
        }
    }
    let anon = find(results, "start-up").next().and_then(|r| r.median(0, "idle anonymous RSS MiB"));
    if let Some((med, _, hi)) = summary(idle) {
        let anon = anon
            .map(|a| format!("; anonymous (heap, stacks) median {a:.1} MiB, the rest file-backed pages of the binary and libraries"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {:<62} median {:.1} MiB, max {:.1} (target ≤ 10): {}{anon}\n",
            "idle RSS",
            med,
            hi,
            verdict(hi <= 10.0)
        ));
    }
    let peak = results
        .iter()
        .flat_map(|r| r.pairs.iter().map(move |p| (r, &p[0])))
        .flat_map(|(r, run)| run.metrics.iter().filter(|m| m.name == "peak RSS MiB").map(move |m| (m.value, &r.name)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((v, name)) = peak {
        out.push_str(&format!(
            "  {:<62} {:.1} MiB, in \"{}\" (target ≤ 48): {}\n",
            "peak RSS under load (max over all runs, filesystem backend)",
            v,
            name,
            verdict(v <= 48.0)
        ));
    }
}
