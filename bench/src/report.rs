//! Results of runs, pairs of runs, and the printed table.

use std::fmt::Write as _;
use std::time::Duration;

/// One figure of one run.
#[derive(Clone, Debug)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    /// Whether a larger value is better (throughput) or worse (latency, CPU, RSS).
    pub higher_better: bool,
}

/// What one run of a workload against one server measured.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub metrics: Vec<Metric>,
    /// Wrong answers and failed requests.
    pub failures: u64,
    pub first_error: Option<String>,
}

impl Run {
    /// Adds a metric.
    pub fn m(&mut self, name: &str, value: f64, higher_better: bool) -> &mut Run {
        self.metrics.push(Metric { name: name.to_owned(), value, higher_better });
        self
    }

    /// Adds the server's CPU per unit and peak RSS.
    pub fn usage(&mut self, u: &crate::server::Usage, per: &str, units: f64, scale: f64) -> &mut Run {
        if let Some(cpu) = u.cpu_secs {
            if units > 0.0 {
                self.m(&format!("CPU {per}"), cpu * scale / units, false);
            }
        }
        if let Some(rss) = u.peak_rss_mib {
            self.m("peak RSS MiB", rss, false);
        }
        self
    }

    /// Counts a failure, keeping the first message.
    pub fn fail(&mut self, msg: impl std::fmt::Display) {
        self.failures += 1;
        if self.first_error.is_none() {
            self.first_error = Some(msg.to_string());
        }
    }

    /// Merges failures from a loop result.
    pub fn add_failures(&mut self, n: u64, first: Option<String>) {
        self.failures += n;
        if self.first_error.is_none() {
            self.first_error = first;
        }
    }

    fn get(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.name == name).map(|m| m.value)
    }
}

/// All runs of one workload: `pairs[i] = [cove, reference]`, where the
/// reference is distribution unless `against` names another server.
pub struct WorkloadResult {
    pub name: String,
    pub pairs: Vec<[Run; 2]>,
    /// The second column's server ("distribution" or "nginx").
    pub against: &'static str,
}

/// Median, min, max of the values (which must not be empty).
pub fn summary(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Some((med, v[0], v[n - 1]))
}

/// The `q` quantile (0..=1) of sorted durations, in milliseconds.
pub fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

impl WorkloadResult {
    /// Median of a metric over the runs of server `i` (0 = cove).
    pub fn median(&self, i: usize, metric: &str) -> Option<f64> {
        summary(self.pairs.iter().filter_map(|p| p[i].get(metric)).collect()).map(|s| s.0)
    }

    /// Median, min and max of a metric over the runs of server `i`.
    pub fn spread(&self, i: usize, metric: &str) -> Option<(f64, f64, f64)> {
        summary(self.pairs.iter().filter_map(|p| p[i].get(metric)).collect())
    }

    /// Median, min and max of the per-pair ratio cove/distribution.
    pub fn ratio(&self, metric: &str) -> Option<(f64, f64, f64)> {
        summary(
            self.pairs
                .iter()
                .filter_map(|p| Some(p[0].get(metric)? / p[1].get(metric)?))
                .filter(|r| r.is_finite())
                .collect(),
        )
    }

    /// Total failures of server `i`.
    pub fn failures(&self, i: usize) -> u64 {
        self.pairs.iter().map(|p| p[i].failures).sum()
    }

    /// Appends this workload's rows to the table.
    pub fn render(&self, out: &mut String) {
        let names: Vec<(String, bool)> = {
            let mut v: Vec<(String, bool)> = Vec::new();
            for p in &self.pairs {
                for r in p {
                    for m in &r.metrics {
                        if !v.iter().any(|(n, _)| *n == m.name) {
                            v.push((m.name.clone(), m.higher_better));
                        }
                    }
                }
            }
            v
        };
        let _ = if self.against == "distribution" {
            writeln!(out, "{} ({} pairs)", self.name, self.pairs.len())
        } else {
            writeln!(out, "{} ({} pairs; second column and ratio: {})", self.name, self.pairs.len(), self.against)
        };
        for (name, higher) in &names {
            let c = self.median(0, name).map(fmt_num).unwrap_or_else(|| "-".into());
            let d = self.median(1, name).map(fmt_num).unwrap_or_else(|| "-".into());
            let r = self
                .ratio(name)
                .map(|(m, lo, hi)| format!("{} [{}–{}]", fmt_ratio(m), fmt_ratio(lo), fmt_ratio(hi)))
                .unwrap_or_else(|| "-".into());
            let arrow = if *higher { "↑" } else { "↓" };
            let _ = writeln!(out, "  {:<24} {arrow} {:>12} {:>14}   {}", name, c, d, r);
        }
        let (fc, fd) = (self.failures(0), self.failures(1));
        if fc + fd > 0 {
            let _ = writeln!(out, "  FAILURES                   cove {fc}, {} {fd}", self.against);
            for (i, name) in ["cove", self.against].iter().enumerate() {
                if let Some(e) = self.pairs.iter().find_map(|p| p[i].first_error.clone()) {
                    let _ = writeln!(out, "    {name}: {e}");
                }
            }
        }
    }
}

/// A number with 3 significant digits (no exponent).
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn fmt_ratio(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}
