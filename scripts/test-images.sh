#!/usr/bin/env bash
# Test images and the local registries they are pulled from. Idempotent: run it as often as you
# like; it rebuilds only when this script changed and starts a registry only when none answers.
#
# What it leaves behind (under $CAPSTAN_TEST_DIR, default /var/lib/capstan-test):
#   layout/                  an OCI image layout with every test image (built with umoci from
#                            Debian's busybox-static; no image comes from the internet)
#   registry/, registry.yml  Debian's docker-registry on 127.0.0.1:5000, plain HTTP, no auth
#   registry-auth/, …        a second one on 127.0.0.1:5001 with basic auth (capstan / s3cret)
#   certs.d/docker.io/hosts.toml  containerd-style mirror config: docker.io → http://127.0.0.1:5000
#   busybox-oci.tar, busybox-docker.tar  the busybox image as OCI-archive and docker-archive
#
# Images on 127.0.0.1:5000 (so `busybox` resolves through the docker.io mirror):
#   library/busybox:latest, library/busybox:1.36   OCI manifest, gzip layer; Cmd ["sh"]
#   library/busybox-docker:latest                  the same as Docker schema 2 media types
#   library/busybox-zstd:latest                    the same with a zstd-compressed layer
#   capstan-test/config:1.0    Entrypoint/Cmd/Env/WorkingDir/User/StopSignal/Labels all set
#   capstan-test/layers:1.0    a second layer that adds, replaces and deletes (whiteout) files
# On 127.0.0.1:5001 (auth): private/busybox:latest
set -euo pipefail

DIR=${CAPSTAN_TEST_DIR:-/var/lib/capstan-test}
REG=127.0.0.1:5000
REG_AUTH=127.0.0.1:5001
STAMP_WANT=$(sha256sum "$0" | cut -c1-16)
mkdir -p "$DIR"

need=()
for c in umoci skopeo docker-registry htpasswd curl; do command -v "$c" >/dev/null || need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
  pkgs=()
  for c in "${need[@]}"; do
    case $c in htpasswd) pkgs+=(apache2-utils) ;; *) pkgs+=("$c") ;; esac
  done
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" busybox-static >/dev/null
fi

# --- registries -------------------------------------------------------------------------------
start_registry() { # name addr [auth]
  local name=$1 addr=$2 auth=${3:-}
  if curl -s -o /dev/null "http://$addr/v2/"; then return 0; fi
  mkdir -p "$DIR/$name"
  {
    echo "version: 0.1"
    echo "log: {level: error}"
    echo "storage:"
    echo "  filesystem: {rootdirectory: $DIR/$name}"
    echo "  delete: {enabled: true}"
    echo "http: {addr: $addr}"
    if [ -n "$auth" ]; then
      echo "auth:"
      echo "  htpasswd: {realm: capstan-test, path: $DIR/$name.htpasswd}"
    fi
  } >"$DIR/$name.yml"
  if [ -n "$auth" ]; then htpasswd -Bbn capstan s3cret >"$DIR/$name.htpasswd"; fi
  setsid nohup docker-registry serve "$DIR/$name.yml" >"$DIR/$name.log" 2>&1 </dev/null &
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://$addr/v2/" && return 0
    sleep 0.1
  done
  echo "test-images: docker-registry on $addr did not start; see $DIR/$name.log" >&2
  exit 1
}
start_registry registry "$REG"
start_registry registry-auth "$REG_AUTH" auth

mkdir -p "$DIR/certs.d/docker.io"
cat >"$DIR/certs.d/docker.io/hosts.toml" <<EOF
server = "https://registry-1.docker.io"

[host."http://$REG"]
  capabilities = ["pull", "resolve"]
EOF

# --- images -----------------------------------------------------------------------------------
if [ "$(cat "$DIR/stamp" 2>/dev/null)" = "$STAMP_WANT" ] &&
  curl -sf -o /dev/null "http://$REG/v2/capstan-test/layers/manifests/1.0" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json'; then
  exit 0
fi

L=$DIR/layout
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
rm -rf "$L"
umoci init --layout "$L"
umoci new --image "$L:base"

# busybox: the static binary, one symlink per applet, a minimal /etc.
umoci unpack --image "$L:base" "$W/bb" >/dev/null
R=$W/bb/rootfs
mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/root" "$R/home/capstan" "$R/var/log" "$R/proc" "$R/sys" "$R/dev"
chmod 1777 "$R/tmp"
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\ncapstan:x:1000:1000:capstan:/home/capstan:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\ncapstan:x:1000:\nextra:x:2000:capstan\nnogroup:x:65534:\n' >"$R/etc/group"
chown 1000:1000 "$R/home/capstan"
umoci repack --image "$L:busybox" "$W/bb" >/dev/null
umoci config --image "$L:busybox" --tag busybox \
  --config.cmd sh --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --architecture amd64 --os linux >/dev/null

# config: every field of the image config that shapes a container.
umoci config --image "$L:busybox" --tag config \
  --config.entrypoint /bin/sh --config.entrypoint -c \
  --clear=config.cmd --config.cmd 'echo configured; id; pwd; env' \
  --config.env FROM_IMAGE=yes --config.workingdir /home/capstan --config.user 1000:1000 \
  --config.stopsignal SIGINT --config.label org.capstan.test=config >/dev/null

# layers: adds a file, replaces one, deletes one (an OCI whiteout in the second layer).
umoci unpack --image "$L:busybox" "$W/ly" >/dev/null
echo "added in layer 2" >"$W/ly/rootfs/etc/layer2"
echo "replaced in layer 2" >"$W/ly/rootfs/etc/group.new" && mv "$W/ly/rootfs/etc/group.new" "$W/ly/rootfs/etc/motd"
rm "$W/ly/rootfs/bin/vi"
umoci repack --image "$L:layers" "$W/ly" >/dev/null

copy() { skopeo copy -q --dest-tls-verify=false "$@"; }
copy "oci:$L:busybox" "docker://$REG/library/busybox:latest"
copy "oci:$L:busybox" "docker://$REG/library/busybox:1.36"
copy --format v2s2 "oci:$L:busybox" "docker://$REG/library/busybox-docker:latest"
# skopeo would reuse the registry's gzip blob for the same content (its blob-info cache), so the
# zstd variant is made in a layout of its own and pushed with that cache out of the way.
skopeo copy -q --dest-compress --dest-compress-format zstd "oci:$L:busybox" "oci:$W/zstd:busybox"
rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
copy "oci:$W/zstd:busybox" "docker://$REG/library/busybox-zstd:latest"
copy "oci:$L:config" "docker://$REG/capstan-test/config:1.0"
copy "oci:$L:layers" "docker://$REG/capstan-test/layers:1.0"
copy --dest-creds capstan:s3cret "oci:$L:busybox" "docker://$REG_AUTH/private/busybox:latest"
rm -f "$DIR/busybox-oci.tar" "$DIR/busybox-docker.tar"
skopeo copy -q "oci:$L:busybox" "oci-archive:$DIR/busybox-oci.tar:docker.io/library/busybox:latest"
skopeo copy -q "oci:$L:busybox" "docker-archive:$DIR/busybox-docker.tar:docker.io/library/busybox:latest"

echo "$STAMP_WANT" >"$DIR/stamp"
echo "test-images: images built and pushed to $REG and $REG_AUTH (layout in $L)"
