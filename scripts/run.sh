#!/usr/bin/env bash
# The main job: build Capstan and start a single-node control plane (apiserver-lite on the
# embedded store) on this host. It prints the kubeconfig to point kubectl at.
# Usage: scripts/run.sh [--data-dir DIR] [--listen ADDR:PORT] [...capstan apiserver flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
exec cargo run --release --locked --quiet -- apiserver "$@"
