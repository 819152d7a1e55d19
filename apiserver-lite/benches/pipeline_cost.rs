//! Prints the CPU cost of each step of a pod create on the API server's request path (run with
//! `cargo bench -p apiserver-lite --bench pipeline_cost`). A profiling aid, not a test.

use std::time::Instant;

use apiserver_lite::resources;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct NoLookup;
impl apiserver_lite::strategy::AdmissionLookup for NoLookup {
    fn priority_class(&self, _: &str) -> Option<serde_json::Value> {
        None
    }
    fn global_default_priority_class(&self) -> Option<serde_json::Value> {
        None
    }
    fn limit_ranges(&self, _: &str) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

fn per_op(n: usize, t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let info = resources::find("", "v1", "pods").unwrap();
    let body = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "uid": "x", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/bench/app:1.0",
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}})
    .to_string();
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        let _: serde_json::Value = serde_json::from_str(&body).unwrap();
    }
    println!("parse            {:>7.1} us", per_op(n, t));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let _ = (info.roundtrip)(&v).unwrap();
    }
    println!("roundtrip        {:>7.1} us", per_op(n, t));
    let typed = (info.roundtrip)(&v).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let mut o = typed.clone();
        apiserver_lite::strategy::prepare_create(info, &mut o, &NoLookup).unwrap();
    }
    println!("prepare_create   {:>7.1} us", per_op(n, t));
    let mut o = typed.clone();
    apiserver_lite::strategy::prepare_create(info, &mut o, &NoLookup).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let _ = serde_json::to_vec(&o).unwrap();
    }
    let len = serde_json::to_vec(&o).unwrap().len();
    println!("serialize        {:>7.1} us ({len} bytes)", per_op(n, t));
    let bytes = serde_json::to_vec(&o).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let _ = apiserver_lite::cacher::CachedObject::decode(info, "/registry/pods/d/p", &bytes, 5);
    }
    println!("cache decode     {:>7.1} us", per_op(n, t));
    let t = Instant::now();
    for _ in 0..n {
        let _ = apiserver_lite::selectors::field_set(info, &o);
    }
    println!("field_set        {:>7.1} us", per_op(n, t));
}
