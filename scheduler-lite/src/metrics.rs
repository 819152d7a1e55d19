//! The scheduler's metrics (upstream `pkg/scheduler/metrics`) in the Prometheus text format,
//! hand-written (two-label families, which [`machinery::metrics`] does not have; its float
//! formatting is shared): `scheduler_scheduling_attempt_duration_seconds{profile,result}` (one
//! cycle: scheduled, unschedulable or error),
//! `scheduler_pod_scheduling_sli_duration_seconds{attempts}` (first attempt → bound, the
//! end-to-end SLI), `scheduler_pending_pods{queue}` and
//! `scheduler_schedule_attempts_total{profile,result}`, with upstream's buckets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use machinery::metrics::format_float;
use parking_lot::Mutex;

use crate::queue::Pending;

struct Histogram {
    buckets: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(buckets: &'static [f64]) -> Self {
        Histogram {
            buckets,
            counts: vec![0; buckets.len()],
            sum: 0.0,
            count: 0,
        }
    }
    fn observe(&mut self, v: f64) {
        for (i, b) in self.buckets.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// `ExponentialBuckets(0.001, 2, 15)`.
const ATTEMPT_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384,
];
/// `ExponentialBuckets(0.01, 2, 20)`.
const SLI_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84,
    327.68, 655.36, 1310.72, 2621.44, 5242.88,
];

#[derive(Default)]
struct Inner {
    attempts: BTreeMap<(String, &'static str), Histogram>,
    sli: BTreeMap<String, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn write_hist(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, b) in h.buckets.iter().enumerate() {
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{}\"}} {}",
            format_float(*b),
            h.counts[i]
        );
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", format_float(h.sum));
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

impl Metrics {
    /// One scheduling attempt: `result` is `scheduled`, `unschedulable` or `error`.
    pub fn attempt(&self, profile: &str, result: &'static str, d: Duration) {
        self.inner
            .lock()
            .attempts
            .entry((profile.to_string(), result))
            .or_insert_with(|| Histogram::new(ATTEMPT_BUCKETS))
            .observe(d.as_secs_f64());
    }

    /// A pod bound `d` after its first attempt began, after `attempts` attempts.
    pub fn scheduled(&self, attempts: u32, d: Duration) {
        let bucket = if attempts >= 16 {
            "15+".to_string()
        } else {
            attempts.to_string()
        };
        self.inner
            .lock()
            .sli
            .entry(bucket)
            .or_insert_with(|| Histogram::new(SLI_BUCKETS))
            .observe(d.as_secs_f64());
    }

    /// The `q` quantile (0–1) of the attempt durations of `profile`/`result` in seconds,
    /// interpolated within the histogram's buckets as Prometheus' `histogram_quantile` and
    /// upstream's scheduler_perf do.
    pub fn attempt_quantile(&self, profile: &str, result: &'static str, q: f64) -> Option<f64> {
        let inner = self.inner.lock();
        let h = inner.attempts.get(&(profile.to_string(), result))?;
        if h.count == 0 {
            return None;
        }
        let rank = q * h.count as f64;
        let mut prev_bound = 0.0;
        let mut prev_count = 0u64;
        for (i, b) in h.buckets.iter().enumerate() {
            if h.counts[i] as f64 >= rank {
                let in_bucket = (h.counts[i] - prev_count) as f64;
                let frac = if in_bucket > 0.0 {
                    (rank - prev_count as f64) / in_bucket
                } else {
                    0.0
                };
                return Some(prev_bound + (b - prev_bound) * frac);
            }
            prev_bound = *b;
            prev_count = h.counts[i];
        }
        Some(prev_bound)
    }

    /// The exposition, with the queue's current pending counts.
    pub fn render(&self, pending: Pending) -> String {
        let inner = self.inner.lock();
        let mut out = String::new();
        out.push_str("# HELP scheduler_pending_pods [STABLE] Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods that the scheduler attempted to schedule and failed; 'gated' is the number of unschedulable pods that the scheduler never attempted to schedule because they are gated.\n");
        out.push_str("# TYPE scheduler_pending_pods gauge\n");
        for (q, n) in [
            ("active", pending.active),
            ("backoff", pending.backoff),
            ("gated", pending.gated),
            ("unschedulable", pending.unschedulable),
        ] {
            let _ = writeln!(out, "scheduler_pending_pods{{queue=\"{q}\"}} {n}");
        }
        out.push_str("# HELP scheduler_pod_scheduling_sli_duration_seconds [BETA] E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue and might involve multiple scheduling attempts.\n");
        out.push_str("# TYPE scheduler_pod_scheduling_sli_duration_seconds histogram\n");
        for (attempts, h) in &inner.sli {
            write_hist(
                &mut out,
                "scheduler_pod_scheduling_sli_duration_seconds",
                &format!("attempts=\"{attempts}\""),
                h,
            );
        }
        out.push_str("# HELP scheduler_schedule_attempts_total [STABLE] Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.\n");
        out.push_str("# TYPE scheduler_schedule_attempts_total counter\n");
        for ((profile, result), h) in &inner.attempts {
            let _ = writeln!(
                out,
                "scheduler_schedule_attempts_total{{profile=\"{profile}\",result=\"{result}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP scheduler_scheduling_attempt_duration_seconds [STABLE] Scheduling attempt latency in seconds (scheduling algorithm + binding)\n");
        out.push_str("# TYPE scheduler_scheduling_attempt_duration_seconds histogram\n");
        for ((profile, result), h) in &inner.attempts {
            write_hist(
                &mut out,
                "scheduler_scheduling_attempt_duration_seconds",
                &format!("profile=\"{profile}\",result=\"{result}\""),
                h,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition() {
        let m = Metrics::default();
        m.attempt("default-scheduler", "scheduled", Duration::from_millis(3));
        m.scheduled(1, Duration::from_millis(50));
        let text = m.render(Pending {
            active: 2,
            ..Default::default()
        });
        assert!(
            text.contains("scheduler_pending_pods{queue=\"active\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "scheduler_scheduling_attempt_duration_seconds_bucket{profile=\"default-scheduler\",result=\"scheduled\",le=\"0.004\"} 1"
        ));
        assert!(text.contains("scheduler_scheduling_attempt_duration_seconds_bucket{profile=\"default-scheduler\",result=\"scheduled\",le=\"0.002\"} 0"));
        assert!(
            text.contains("scheduler_pod_scheduling_sli_duration_seconds_count{attempts=\"1\"} 1")
        );
    }
}
