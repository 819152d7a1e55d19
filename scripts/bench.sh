#!/usr/bin/env bash
# Benchmarks of Capstan's API server against a local etcd (see BENCHMARKS.md).
# Installs etcd and protoc (idempotently), raises the fd limit, builds the bench in release and
# runs it. Tables go to stdout, progress to stderr.
# Usage: [CAPSTAN_BENCH_SECS=10] [CAPSTAN_BENCH_ONLY=create,watch,list] scripts/bench.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server etcd-client)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler) # etcd-client's build script
if ((${#need_apt[@]})); then
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
    # The Debian package enables a system etcd on the default ports; the bench starts its own.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
    fi
fi

# ~1,100 watch connections on each side of the loopback, plus the server's own files.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4096 ]; then
    echo "warning: open-files limit is $(ulimit -n); the watch section needs about 2,300" >&2
fi

# Build quietly, then run the binary itself so its output is only the tables.
cargo bench --locked --bench apiserver --no-run >&2
bin=$(cargo bench --locked --bench apiserver --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*apiserver-[^"]*\)".*/\1/p' | tail -n1)
if [ -z "$bin" ]; then
    echo "could not find the bench binary" >&2
    exit 1
fi
exec "$bin" "$@"
