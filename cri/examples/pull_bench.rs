//! Pull+unpack into a cold store, Capstan's image store against containerd in the same run.
//!
//! ```text
//! bash scripts/test-images.sh
//! CARGO_TARGET_DIR=/work/target-images cargo run --release -p cri --example pull_bench -- \
//!     [IMAGE] [RUNS] [--containerd ADDRESS]
//! ```
//!
//! IMAGE defaults to `docker.io/library/busybox:latest` (through the docker.io mirror in
//! `/var/lib/capstan-test/certs.d`), RUNS to 5. Each Capstan run opens a fresh store in a new
//! temporary root. With `--containerd ADDRESS` (a running containerd's socket), each run also
//! does `ctr images pull` (which unpacks into the overlayfs snapshotter) in a fresh namespace with
//! the same hosts dir, removing the image and its content afterwards. Prints median and max.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], *v.last().unwrap())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let containerd = args
        .iter()
        .position(|a| a == "--containerd")
        .and_then(|i| args.get(i + 1).cloned());
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--containerd"))
        .map(|(_, a)| a)
        .collect();
    let image = positional
        .first()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "docker.io/library/busybox:latest".to_string());
    let runs: usize = positional.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let hosts = PathBuf::from("/var/lib/capstan-test/certs.d");

    let mut capstan = Vec::new();
    let mut ctr = Vec::new();
    for run in 0..runs {
        let root = tempfile::tempdir()?;
        capstan.push(cri::image::bench_pull(root.path(), Some(hosts.clone()), &image).await?);
        if let Some(address) = &containerd {
            let ns = format!("capstan-bench-{}-{run}", std::process::id());
            let start = Instant::now();
            let out = Command::new("ctr")
                .args([
                    "--address",
                    address,
                    "-n",
                    &ns,
                    "images",
                    "pull",
                    "--hosts-dir",
                ])
                .arg(&hosts)
                .arg(&image)
                .output()?;
            ctr.push(start.elapsed());
            anyhow::ensure!(
                out.status.success(),
                "ctr pull: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = Command::new("ctr")
                .args([
                    "--address",
                    address,
                    "-n",
                    &ns,
                    "images",
                    "rm",
                    "--sync",
                    &image,
                ])
                .output();
            let _ = Command::new("ctr")
                .args(["--address", address, "namespaces", "rm", &ns])
                .output();
        }
    }
    println!("pull+unpack of {image}, cold store, {runs} runs");
    println!("{:<12} {:>12} {:>12}", "runtime", "median", "max");
    let (m, x) = stats(capstan.clone());
    println!("{:<12} {:>12.1?} {:>12.1?}", "capstan", m, x);
    if !ctr.is_empty() {
        let (cm, cx) = stats(ctr);
        println!("{:<12} {:>12.1?} {:>12.1?}", "containerd", cm, cx);
        println!(
            "ratio capstan/containerd (median): {:.2}",
            m.as_secs_f64() / cm.as_secs_f64()
        );
    }
    Ok(())
}
