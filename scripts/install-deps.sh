#!/usr/bin/env bash
# Installs what the build and the test suites need on a Debian 12 host, idempotently.
# Run as root. Safe to run again: it only installs what is missing.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }

# C toolchain for the bundled SQLite (rusqlite) and other -sys crates.
have cc || need_apt+=(gcc libc6-dev)
have pkg-config || need_apt+=(pkg-config)
# etcd-client (the benchmarks' etcd peer, later the etcd backend) generates its gRPC code with protoc.
have protoc || need_apt+=(protobuf-compiler)
# The runtime (cri/): libcontainer's seccomp support links libseccomp.
dpkg -s libseccomp-dev >/dev/null 2>&1 || need_apt+=(libseccomp-dev)
# The runtime's test suite: containerd + runc as the reference CRI runtime, crun for the lifecycle
# benchmark, the local registry and the tools that build and push test images, the standard CNI
# plugins, busybox-static for test images, iptables for portmap, User-Mode Linux for cgroup v2.
have containerd || need_apt+=(containerd)
have runc || need_apt+=(runc)
have crun || need_apt+=(crun)
have docker-registry || need_apt+=(docker-registry)
have skopeo || need_apt+=(skopeo)
have umoci || need_apt+=(umoci)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
have iptables || need_apt+=(iptables)
# The service proxy removes stale UDP conntrack entries with conntrack-tools.
have conntrack || need_apt+=(conntrack)
have linux.uml || need_apt+=(user-mode-linux)
# The Vagrantfile (the multi-VM lab) is checked with `vagrant validate`, libvirt provider included.
have vagrant || need_apt+=(vagrant)
dpkg -s vagrant-libvirt >/dev/null 2>&1 || need_apt+=(vagrant-libvirt)
# The benchmarks run Debian's etcd as the reference store.
if [ "${CAPSTAN_BENCH:-0}" = 1 ]; then
  have etcd || need_apt+=(etcd-server)
  have etcdctl || need_apt+=(etcd-client)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# kubectl drives every end-to-end suite. It is part of the machine image (1.32); Debian 12 has no
# package for it, so say so plainly instead of failing later.
if ! have kubectl; then
  echo "install-deps: kubectl is required (the end-to-end suites drive the server with it) and is not on PATH" >&2
  exit 1
fi
if ! have cargo; then
  echo "install-deps: cargo (the Rust toolchain) is required and is not on PATH" >&2
  exit 1
fi
if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
  rustup component add clippy rustfmt 2>/dev/null || { echo "install-deps: clippy and rustfmt are required" >&2; exit 1; }
fi

# The kubelet-server suite runs exec through the official Python client (its WebSocket stream),
# from PyPI into a venv of its own so the system Python stays untouched.
PYVENV=/var/lib/capstan-test/pyvenv
if ! "$PYVENV/bin/python" -c 'import kubernetes' >/dev/null 2>&1; then
  if ! /usr/bin/python3 -m venv --help >/dev/null 2>&1 || ! dpkg -s python3-venv >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv
  fi
  rm -rf "$PYVENV"
  /usr/bin/python3 -m venv "$PYVENV"
  "$PYVENV/bin/pip" install -q --disable-pip-version-check 'kubernetes==33.1.0'
fi
