#!/usr/bin/env bash
# Pull+unpack of one image from the local registry into a cold store: Capstan's image store
# against containerd (`ctr images pull`, which unpacks into the overlayfs snapshotter), same image,
# same registry, same run (see BENCHMARKS.md, "Runtime (cri)"). Starts a private containerd with
# scripts/containerd.sh, runs cri/examples/pull_bench.rs against its socket, and stops it again
# (also when the bench fails or is interrupted).
# Usage: scripts/pull-bench.sh [IMAGE] [RUNS]     (as root; defaults: busybox through the mirror, 5)
set -euo pipefail
cd "$(dirname "$0")/.."

TEST_DIR=${CAPSTAN_TEST_DIR:-/var/lib/capstan-test}
bash scripts/test-images.sh >/dev/null
cargo build --release --locked --quiet -p cri --example pull_bench >&2
DIR=$TEST_DIR/pull-bench-$$
trap 'bash scripts/containerd.sh stop "$DIR"' EXIT
bash scripts/containerd.sh start "$DIR"
# Capstan's stores go beside containerd's root: same file system for both.
export TMPDIR=$DIR
cargo run --release --locked --quiet -p cri --example pull_bench -- "$@" \
  --containerd "$DIR/containerd.sock"
