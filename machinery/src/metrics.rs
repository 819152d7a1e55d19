//! Prometheus metrics for Capstan's components, in the text format 0.0.4 with upstream's names,
//! help texts (with component-base's `[ALPHA]` stability prefix), label names and buckets: the
//! kubelet's, the proxy's, the scheduler's and the controller-manager's registries are built from
//! these counters, gauges, histograms and families.
//!
//! Hand-written rather than the `prometheus-client` crate: the components need counters, gauges
//! and histograms with at most one label, and the exposition must match Go's client byte for byte
//! where tools compare it (float formatting as Go's `strconv.FormatFloat(f, 'g', -1, 64)`,
//! families sorted by name). That is ~300 lines with no dependency, and every hot-path update is
//! one or two relaxed atomic operations (a labelled child is found under a read lock without
//! allocating).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

/// Prometheus' default buckets (`metrics.DefBuckets`).
pub const DEF_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `count` buckets from `start`, each `factor` times the one before.
pub fn exponential_buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(count);
    let mut b = start;
    for _ in 0..count {
        out.push(b);
        b *= factor;
    }
    out
}

/// A monotonically increasing integer count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An integer value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A float value that goes up and down (timestamps in seconds, ratios).
#[derive(Debug, Default)]
pub struct FloatGauge(AtomicU64);

impl FloatGauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl Metric for FloatGauge {
    fn new_child(_: &FamilyInfo) -> Self {
        FloatGauge::default()
    }
    fn render(&self, info: &FamilyInfo, label: Option<(&str, &str)>, out: &mut String) {
        sample(out, info.name, label, &format_float(self.get()));
    }
}

/// Observations counted into fixed buckets, with their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: Box<[AtomicU64]>,
    /// The sum, as f64 bits.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let mut cur = self.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(cur) + v).to_bits();
            match self
                .sum
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    /// Writes the samples (buckets, sum, count) of family `name`, with one optional label.
    pub fn render(&self, name: &str, label: Option<(&str, &str)>, out: &mut String) {
        let prefix = label
            .map(|(k, v)| format!("{k}=\"{}\",", escape(v)))
            .unwrap_or_default();
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| format_float(*b));
            let _ = writeln!(out, "{name}_bucket{{{prefix}le=\"{le}\"}} {cumulative}");
        }
        let braces = label
            .map(|(k, v)| format!("{{{k}=\"{}\"}}", escape(v)))
            .unwrap_or_default();
        let _ = writeln!(out, "{name}_sum{braces} {}", format_float(self.sum()));
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// What a labelled family holds per label value.
pub trait Metric: Send + Sync {
    fn new_child(family: &FamilyInfo) -> Self;
    fn render(&self, info: &FamilyInfo, label: Option<(&str, &str)>, out: &mut String);
}

impl Metric for Counter {
    fn new_child(_: &FamilyInfo) -> Self {
        Counter::default()
    }
    fn render(&self, info: &FamilyInfo, label: Option<(&str, &str)>, out: &mut String) {
        sample(out, info.name, label, &self.get().to_string());
    }
}

impl Metric for Gauge {
    fn new_child(_: &FamilyInfo) -> Self {
        Gauge::default()
    }
    fn render(&self, info: &FamilyInfo, label: Option<(&str, &str)>, out: &mut String) {
        sample(out, info.name, label, &self.get().to_string());
    }
}

impl Metric for Histogram {
    fn new_child(family: &FamilyInfo) -> Self {
        Histogram::new(family.buckets)
    }
    fn render(&self, info: &FamilyInfo, label: Option<(&str, &str)>, out: &mut String) {
        Histogram::render(self, info.name, label, out);
    }
}

/// A family's name, help, type and (for histograms) buckets.
#[derive(Debug)]
pub struct FamilyInfo {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: &'static str,
    pub buckets: &'static [f64],
}

/// A metric with one label: one child per label value, made on first use.
pub struct Family<M: Metric> {
    pub info: FamilyInfo,
    label: &'static str,
    children: RwLock<HashMap<String, Arc<M>>>,
}

impl<M: Metric> Family<M> {
    pub fn new(info: FamilyInfo, label: &'static str) -> Self {
        Family {
            info,
            label,
            children: RwLock::new(HashMap::new()),
        }
    }

    /// The child for `value` (no allocation once it exists).
    pub fn with(&self, value: &str) -> Arc<M> {
        if let Some(c) = self.children.read().get(value) {
            return c.clone();
        }
        self.children
            .write()
            .entry(value.to_string())
            .or_insert_with(|| Arc::new(M::new_child(&self.info)))
            .clone()
    }

    pub fn render(&self, out: &mut String) {
        header(out, &self.info);
        let children = self.children.read();
        let mut values: Vec<&String> = children.keys().collect();
        values.sort();
        for v in values {
            children[v].render(&self.info, Some((self.label, v)), out);
        }
    }
}

/// An unlabelled metric with its family information.
pub struct Single<M: Metric> {
    pub info: FamilyInfo,
    pub metric: M,
}

impl<M: Metric> Single<M> {
    pub fn new(info: FamilyInfo) -> Self {
        let metric = M::new_child(&info);
        Single { info, metric }
    }
    pub fn render(&self, out: &mut String) {
        header(out, &self.info);
        self.metric.render(&self.info, None, out);
    }
}

impl<M: Metric> std::ops::Deref for Single<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.metric
    }
}

pub fn info(name: &'static str, help: &'static str, kind: &'static str) -> FamilyInfo {
    FamilyInfo {
        name,
        help,
        kind,
        buckets: &[],
    }
}

pub fn histogram_info(
    name: &'static str,
    help: &'static str,
    buckets: &'static [f64],
) -> FamilyInfo {
    FamilyInfo {
        name,
        help,
        kind: "histogram",
        buckets,
    }
}

pub fn header(out: &mut String, info: &FamilyInfo) {
    let _ = writeln!(out, "# HELP {} [ALPHA] {}", info.name, info.help);
    let _ = writeln!(out, "# TYPE {} {}", info.name, info.kind);
}

pub fn sample(out: &mut String, name: &str, label: Option<(&str, &str)>, value: &str) {
    match label {
        Some((k, v)) => {
            let _ = writeln!(out, "{name}{{{k}=\"{}\"}} {value}", escape(v));
        }
        None => {
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

/// A label value escaped as the text format wants (backslash, quote, newline).
pub fn escape(v: &str) -> String {
    if !v.contains(['\\', '"', '\n']) {
        return v.to_string();
    }
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A float as Go's `strconv.FormatFloat(f, 'g', -1, 64)` writes it (what Prometheus' Go client
/// puts in the text format): the shortest digits that round-trip, in exponent form (sign, at
/// least two exponent digits) when the decimal exponent is below -4 or at least 6 (Go's `%g`
/// uses 6 as the precision limit for the shortest form).
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits as `d.ddde<exp>`.
    let e = format!("{f:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    // Plain decimal notation: Rust's `{}` is shortest round-trip without an exponent.
    format!("{f}")
}

/// `process_*` metrics of this process from `/proc/self` (as the Go client's process
/// collector): CPU seconds, resident and virtual memory, open fds, start time.
pub fn process_metrics() -> String {
    let mut out = String::new();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Field n (1-based, man proc) is fields[n - 3].
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    // USER_HZ is 100 on every Linux ABI.
    const TICKS: f64 = 100.0;
    let page = 4096.0;
    if let (Some(u), Some(s)) = (field(14), field(15)) {
        let _ = write!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}\n",
            format_float((u + s) / TICKS)
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = write!(
            out,
            "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}\n",
            fds.count()
        );
    }
    if let Some(rss) = field(24) {
        let _ = write!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n",
            format_float(rss * page)
        );
    }
    if let Some(start) = field(22) {
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        let _ = write!(
            out,
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}\n",
            format_float(btime + start / TICKS)
        );
    }
    if let Some(vsize) = field(23) {
        let _ = write!(
            out,
            "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes {}\n",
            format_float(vsize)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_formatted_as_go_does() {
        for (f, want) in [
            (0.0, "0"),
            (10.0, "10"),
            (1000.0, "1000"),
            (0.005, "0.005"),
            (0.5, "0.5"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1.2e7, "1.2e+07"),
            (1.6243962483020916e9, "1.6243962483020916e+09"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (2.5, "2.5"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(format_float(f), want, "{f}");
        }
    }

    #[test]
    fn histograms_render_cumulative_buckets() {
        let h = Single::<Histogram>::new(histogram_info("x_seconds", "Help.", &[0.1, 1.0]));
        h.observe(0.05);
        h.observe(0.5);
        h.observe(3.0);
        let mut out = String::new();
        h.render(&mut out);
        assert_eq!(
            out,
            "# HELP x_seconds [ALPHA] Help.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"0.1\"} 1\nx_seconds_bucket{le=\"1\"} 2\n\
             x_seconds_bucket{le=\"+Inf\"} 3\nx_seconds_sum 3.55\nx_seconds_count 3\n"
        );
        assert_eq!(h.count(), 3);
        // A value on a bound falls into that bucket (le).
        h.observe(1.0);
        let mut out = String::new();
        h.render(&mut out);
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 3\n"), "{out}");
    }

    #[test]
    fn labelled_families_render_sorted_children() {
        let f = Family::<Counter>::new(info("ops_total", "Ops.", "counter"), "operation_type");
        f.with("version").inc();
        f.with("list_containers").inc();
        f.with("list_containers").inc();
        let h = Family::<Histogram>::new(histogram_info("d_seconds", "D.", &[1.0]), "op");
        h.with("a\"b").observe(2.0);
        let mut out = String::new();
        f.render(&mut out);
        h.render(&mut out);
        assert_eq!(
            out,
            "# HELP ops_total [ALPHA] Ops.\n# TYPE ops_total counter\n\
             ops_total{operation_type=\"list_containers\"} 2\n\
             ops_total{operation_type=\"version\"} 1\n\
             # HELP d_seconds [ALPHA] D.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{op=\"a\\\"b\",le=\"1\"} 0\n\
             d_seconds_bucket{op=\"a\\\"b\",le=\"+Inf\"} 1\n\
             d_seconds_sum{op=\"a\\\"b\"} 2\nd_seconds_count{op=\"a\\\"b\"} 1\n"
        );
    }
}
