#!/usr/bin/env bash
# Provisions one Capstan VM of the Vagrantfile (runs as root inside the VM).
# Usage: vagrant-provision.sh server <ip> <token>
#        vagrant-provision.sh agent <ip> <token> <server-url>
set -euo pipefail
role=$1 ip=$2 token=$3 server_url=${4:-}
data_dir=/var/lib/capstan

# Dependencies: the project's own script (containerd is not needed; the built-in runtime is used).
bash /vagrant/scripts/install-deps.sh

# The binary: the host's release build when it was synced, else a build in the VM.
if [ -x /vagrant/target/release/capstan ]; then
  install -m 0755 /vagrant/target/release/capstan /usr/local/bin/capstan
elif ! command -v capstan >/dev/null; then
  if ! command -v cargo >/dev/null; then
    apt-get install -y -qq curl ca-certificates
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  fi
  . "$HOME/.cargo/env"
  cargo build --release --locked --manifest-path /vagrant/Cargo.toml --target-dir /root/capstan-target
  install -m 0755 /root/capstan-target/release/capstan /usr/local/bin/capstan
fi

case "$role" in
  server)
    mkdir -p "$data_dir/server"
    # The token the Vagrantfile made, so agents know it before the server starts.
    [ -s "$data_dir/server/token" ] || { echo "$token" > "$data_dir/server/token"; chmod 600 "$data_dir/server/token"; }
    args=(server --data-dir "$data_dir" --listen 0.0.0.0:6443 --advertise-address "$ip" --node-ip "$ip")
    ;;
  agent)
    args=(agent --server "$server_url" --token "$token" --data-dir "$data_dir" --node-ip "$ip"
          --discovery-token-unsafe-skip-ca-verification)
    ;;
  *) echo "vagrant-provision: unknown role $role" >&2; exit 2 ;;
esac

# A supervised service without depending on the init system: systemd where it is PID 1.
if [ -d /run/systemd/system ]; then
  cat > /etc/systemd/system/capstan.service <<UNIT
[Unit]
Description=Capstan $role
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/capstan ${args[*]}
KillMode=process
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now capstan.service
else
  nohup /usr/local/bin/capstan "${args[@]}" >/var/log/capstan.log 2>&1 &
fi

if [ "$role" = server ]; then
  for _ in $(seq 60); do [ -s "$data_dir/admin.kubeconfig" ] && break; sleep 1; done
  echo "capstan server is up; kubeconfig: vagrant ssh server -c 'sudo cat $data_dir/admin.kubeconfig'"
fi
