#!/usr/bin/env bash
# The main job: build Capstan (release) and start a single-node cluster on this host with
# `capstan server`: the API server, controller-manager, scheduler, kubelet (built-in runtime) and
# service proxy in one process. It prints the kubeconfig to point kubectl at
# (DIR/admin.kubeconfig) and runs until SIGTERM or Ctrl-C; pods keep running and the next start
# adopts them. `capstan uninstall --data-dir DIR` removes everything.
# Usage: scripts/run.sh [--data-dir /var/lib/capstan] [...capstan server flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
exec cargo run --release --locked --quiet --bin capstan -- server "$@"
