//! CRI conformance: the same cases, written once against the CRI v1 gRPC API, run against
//! Capstan's built-in runtime (`capstan cri`) and against Debian's containerd + runc, each started
//! privately for this run (own root, socket, CNI bridge and subnet, cgroup parent). Trials are
//! named `capstan::<case>` and `containerd::<case>`, so `cargo test --test cri_conformance
//! containerd` runs the reference side alone. `scripts/cri-conformance-report.sh` publishes both
//! columns in docs/cri-conformance.md.
//!
//! Needs root, the packages of scripts/install-deps.sh and the test images, which it builds itself
//! (scripts/test-images.sh, idempotent) before the first case.

mod common;
mod cri;

use cri::instance::Kind;

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    for kind in [Kind::Capstan, Kind::Containerd] {
        for case in cri::cases::ALL {
            trials.push(libtest_mimic::Trial::test(
                format!("{}::{}", kind.name(), case.name),
                move || cri::run_trial(kind, case),
            ));
        }
    }
    if !args.list {
        prepare();
    }
    let conclusion = libtest_mimic::run(&args, trials);
    cri::stop_shared();
    conclusion.exit();
}

/// The test images and registries (idempotent), and leftovers of runs that were killed.
fn prepare() {
    let script = cri::instance::repo_dir().join("scripts/test-images.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running scripts/test-images.sh");
    assert!(
        out.status.success(),
        "scripts/test-images.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cri::instance::clean_stale_runs();
}
