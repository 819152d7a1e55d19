//! One scrape of a kubelet's `/metrics/resource` (the Prometheus text format), parsed into the
//! points metrics-server keeps (its `pkg/scraper/client/resource` decoder): the node's and each
//! container's cumulative CPU seconds and working set with their sample timestamps, and the
//! containers' start times.

use std::collections::HashMap;
use std::time::Instant;

/// A cumulative or instant value with the time it was read (milliseconds since the epoch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub value: f64,
    pub ts_ms: i64,
}

/// A container's points.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerPoints {
    pub cpu: Option<Point>,
    pub memory: Option<Point>,
    /// Seconds since the epoch.
    pub start_time: Option<f64>,
}

/// (namespace, pod, container).
pub type ContainerKey = (String, String, String);

/// One scrape of one kubelet.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// When the answer arrived (for the cache's freshness).
    pub at: Instant,
    pub node_cpu: Option<Point>,
    pub node_memory: Option<Point>,
    pub containers: HashMap<ContainerKey, ContainerPoints>,
}

impl Scrape {
    /// Parses the text format; unknown families and malformed lines are skipped.
    pub fn parse(text: &str, at: Instant) -> Scrape {
        let mut s = Scrape {
            at,
            node_cpu: None,
            node_memory: None,
            containers: HashMap::new(),
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some(sample) = parse_line(line) else {
                continue;
            };
            let point = sample.ts_ms.map(|ts_ms| Point {
                value: sample.value,
                ts_ms,
            });
            let container = |labels: &HashMap<String, String>| -> Option<ContainerKey> {
                Some((
                    labels.get("namespace")?.clone(),
                    labels.get("pod")?.clone(),
                    labels.get("container")?.clone(),
                ))
            };
            match sample.name.as_str() {
                "node_cpu_usage_seconds_total" => s.node_cpu = point,
                "node_memory_working_set_bytes" => s.node_memory = point,
                "container_cpu_usage_seconds_total" => {
                    if let Some(k) = container(&sample.labels) {
                        s.containers.entry(k).or_default().cpu = point;
                    }
                }
                "container_memory_working_set_bytes" => {
                    if let Some(k) = container(&sample.labels) {
                        s.containers.entry(k).or_default().memory = point;
                    }
                }
                "container_start_time_seconds" => {
                    if let Some(k) = container(&sample.labels) {
                        s.containers.entry(k).or_default().start_time = Some(sample.value);
                    }
                }
                _ => {}
            }
        }
        s
    }
}

/// One sample line.
#[derive(Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
    pub ts_ms: Option<i64>,
}

/// `name{k="v",…} value [timestamp]`.
pub fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = HashMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let mut end = None;
        loop {
            // Skip separators.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || *c == ' ' {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => return None,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return None;
            }
            labels.insert(key.trim().to_string(), value);
        }
        rest = &r[end? + 1..];
    }
    let mut fields = rest.split_whitespace();
    let value = parse_float(fields.next()?)?;
    let ts_ms = fields.next().and_then(|t| t.parse().ok());
    Some(Sample {
        name,
        labels,
        value,
        ts_ms,
    })
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_labels_escapes_and_timestamps() {
        let s = parse_line(r#"container_cpu_usage_seconds_total{container="c",namespace="n",pod="p \"q\""} 1.5e+01 1624396278302"#).unwrap();
        assert_eq!(s.name, "container_cpu_usage_seconds_total");
        assert_eq!(s.labels["pod"], "p \"q\"");
        assert_eq!(s.value, 15.0);
        assert_eq!(s.ts_ms, Some(1624396278302));
        let s = parse_line("scrape_error 0").unwrap();
        assert!(s.labels.is_empty() && s.ts_ms.is_none());
        assert!(parse_line("broken{a=\"x} 1").is_none());
    }

    #[test]
    fn a_kubelets_answer() {
        let text =
            "# HELP node_cpu_usage_seconds_total x\n# TYPE node_cpu_usage_seconds_total counter\n\
node_cpu_usage_seconds_total 10 1000\nnode_memory_working_set_bytes 2048 1000\n\
container_cpu_usage_seconds_total{container=\"c\",namespace=\"n\",pod=\"p\"} 2 1000\n\
container_memory_working_set_bytes{container=\"c\",namespace=\"n\",pod=\"p\"} 4096 1000\n\
container_start_time_seconds{container=\"c\",namespace=\"n\",pod=\"p\"} 1.5e+09\nscrape_error 0\n";
        let s = Scrape::parse(text, Instant::now());
        assert_eq!(
            s.node_cpu,
            Some(Point {
                value: 10.0,
                ts_ms: 1000
            })
        );
        assert_eq!(s.node_memory.unwrap().value, 2048.0);
        let c = &s.containers[&("n".into(), "p".into(), "c".into())];
        assert_eq!(c.cpu.unwrap().value, 2.0);
        assert_eq!(c.memory.unwrap().value, 4096.0);
        assert_eq!(c.start_time, Some(1.5e9));
    }
}
