#!/usr/bin/env bash
# A private instance of Debian's containerd (with runc) as the reference CRI runtime for the
# conformance suite (tests/cri_conformance.rs). Everything it keeps is under one directory, so
# several instances (and the host's own containerd, if any) never see each other.
#
#   containerd.sh start DIR   writes DIR/config.toml, starts containerd on DIR/containerd.sock,
#                             imports the sandbox ("pause") image, waits until CRI answers;
#                             the CNI config must already be in DIR/net.d (the caller writes it)
#   containerd.sh stop DIR    stops containerd and removes whatever it left behind: shims and
#                             containers (runc state is in DIR/runc), mounts under DIR, network
#                             namespaces whose interfaces sit on the bridge named in DIR/bridge,
#                             that bridge, and DIR itself
#
# Settings (see the config below): restrict_oom_score_adj (root here lacks CAP_SYS_RESOURCE),
# cgroupfs driver, overlayfs snapshotter, registry mirrors from $CAPSTAN_TEST_DIR/certs.d, CNI
# binaries from /usr/lib/cni (Debian's place; CAPSTAN_CNI_BIN_DIR overrides it, e.g. for the kubelet
# bench's timing wrappers). The sandbox image is busybox with
# `sleep 2147483647` as its command: containerd runs the sandbox image's process as the pod's
# "pause" process, and busybox's default `sh` would exit at once without a terminal.
set -euo pipefail

TEST_DIR=${CAPSTAN_TEST_DIR:-/var/lib/capstan-test}
PAUSE_IMAGE=capstan.test/pause:1.0
cmd=${1:?usage: containerd.sh start|stop DIR}
DIR=${2:?usage: containerd.sh start|stop DIR}

pause_tar() { # builds (once per version of this script) a docker-archive of the pause image
  local out=$TEST_DIR/cri-conformance/pause.tar stamp
  stamp=$(cat "$TEST_DIR/stamp" 2>/dev/null)-$(sha256sum "$0" | cut -c1-16)
  if [ -f "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$out"
    return
  fi
  mkdir -p "$TEST_DIR/cri-conformance"
  local w
  w=$(mktemp -d "$TEST_DIR/cri-conformance/pause.XXXXXX")
  skopeo copy -q "oci:$TEST_DIR/layout:busybox" "oci:$w/layout:pause"
  umoci config --image "$w/layout:pause" --clear=config.cmd \
    --config.cmd /bin/sleep --config.cmd 2147483647 >/dev/null
  rm -f "$out.tmp"
  skopeo copy -q "oci:$w/layout:pause" "docker-archive:$out.tmp:$PAUSE_IMAGE"
  mv "$out.tmp" "$out"
  echo "$stamp" >"$out.stamp"
  rm -rf "$w"
  echo "$out"
}

start() {
  mkdir -p "$DIR/root" "$DIR/state" "$DIR/runc" "$DIR/net.d"
  cat >"$DIR/config.toml" <<EOF
version = 2
root = "$DIR/root"
state = "$DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$DIR/containerd.sock"

[ttrpc]
  address = "$DIR/containerd.sock.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$DIR/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${CAPSTAN_CNI_BIN_DIR:-/usr/lib/cni}"
    conf_dir = "$DIR/net.d"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$TEST_DIR/certs.d"
EOF
  local tar
  tar=$(pause_tar)
  setsid containerd --config "$DIR/config.toml" >"$DIR/containerd.log" 2>&1 </dev/null &
  echo $! >"$DIR/containerd.pid"
  for _ in $(seq 200); do
    if [ -S "$DIR/containerd.sock" ] && ctr -a "$DIR/containerd.sock" version >/dev/null 2>&1; then
      ctr -a "$DIR/containerd.sock" -n k8s.io images import "$tar" >/dev/null
      return 0
    fi
    if ! kill -0 "$(cat "$DIR/containerd.pid")" 2>/dev/null; then break; fi
    sleep 0.05
  done
  echo "containerd.sh: containerd did not start; its log:" >&2
  tail -n 30 "$DIR/containerd.log" >&2
  exit 1
}

# Processes whose command line names DIR (containerd and its shims, capstan cri and its
# supervisors) — ours by construction — and all their descendants.
our_pids() {
  local p roots=()
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "$DIR/"; then roots+=("${p#/proc/}"); fi
  done
  [ ${#roots[@]} -gt 0 ] || return 0
  ps -e -o pid=,ppid= | awk -v roots="${roots[*]}" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) ours[r[i]] = 1 }
    { parent[$1] = $2 }
    END {
      do { grew = 0; for (p in parent) if (!(p in ours) && (parent[p] in ours)) { ours[p] = 1; grew = 1 } } while (grew)
      for (p in ours) print p
    }'
}

stop() {
  [ -d "$DIR" ] || return 0
  local pid
  pid=$(cat "$DIR/containerd.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # Containers first (their processes are not children of anything we know), then the shims.
  if [ -d "$DIR/runc" ]; then
    for id in $(runc --root "$DIR/runc/k8s.io" list -q 2>/dev/null); do
      runc --root "$DIR/runc/k8s.io" kill -a "$id" KILL 2>/dev/null || true
      runc --root "$DIR/runc/k8s.io" delete -f "$id" 2>/dev/null || true
    done
  fi
  for p in $(our_pids); do kill -KILL "$p" 2>/dev/null || true; done
  # Network namespaces with an interface on our bridge (containerd names them cni-<uuid>).
  local bridge ns
  bridge=$(cat "$DIR/bridge" 2>/dev/null || true)
  if [ -n "$bridge" ] && [ -d /run/netns ]; then
    for ns in /run/netns/cni-*; do
      [ -e "$ns" ] || continue
      if ip -n "${ns##*/}" -o addr 2>/dev/null | grep -qF " $(cat "$DIR/subnet-prefix" 2>/dev/null || echo none)"; then
        ip netns delete "${ns##*/}" 2>/dev/null || true
      fi
    done
  fi
  # Mounts under DIR, deepest first.
  awk -v d="$DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if [ -n "$bridge" ]; then ip link delete "$bridge" 2>/dev/null || true; fi
  rm -rf "$DIR"
  remove_portmap_chains
  remove_shared_cgroups
}

# Capstan's runtime keeps its supervisors under /capstan/supervisors and default pod cgroups under
# /capstan/pods, shared by every instance on the host and left in place by it (as containerd and
# the kubelet leave theirs). Once no other instance of this suite runs, remove them if empty.
remove_shared_cgroups() {
  local others h
  others=$(find "$(dirname "$DIR")" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
  [ "$others" -eq 0 ] || return 0
  for h in /sys/fs/cgroup/*/; do
    rmdir "$h/capstan/supervisors" "$h/capstan/pods" "$h/capstan" 2>/dev/null || true
  done
}

# The portmap plugin's top-level nat chains (CNI-HOSTPORT-*) are shared by every user of the
# plugin on this host and are never removed by it. Remove them once no pod uses a host port any
# more (no per-pod CNI-DN-* chain hangs off them) and no other instance of this suite is running.
remove_portmap_chains() {
  command -v iptables >/dev/null || return 0
  local others
  others=$(find "$(dirname "$DIR")" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
  [ "$others" -eq 0 ] || return 0
  iptables -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1 || return 0
  if iptables -t nat -S 2>/dev/null | grep -q -- '-j CNI-DN-'; then return 0; fi
  local chain rule
  for chain in PREROUTING OUTPUT POSTROUTING; do
    iptables -t nat -S "$chain" | grep -E -- '-j CNI-HOSTPORT-(DNAT|MASQ|SETMARK)$' |
      while read -r rule; do
        # shellcheck disable=SC2086 # the rule is split into iptables arguments on purpose
        eval iptables -t nat ${rule/-A /-D } 2>/dev/null || true
      done
  done
  for chain in CNI-HOSTPORT-DNAT CNI-HOSTPORT-SETMARK CNI-HOSTPORT-MASQ; do
    iptables -t nat -F "$chain" 2>/dev/null || true
    iptables -t nat -X "$chain" 2>/dev/null || true
  done
}

case $cmd in
start) start ;;
stop) stop ;;
*)
  echo "usage: containerd.sh start|stop DIR" >&2
  exit 2
  ;;
esac
