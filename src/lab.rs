//! `capstan lab up|down`: a multi-node cluster on this one machine, each node in a network
//! namespace of its own (kind's idea, with namespaces instead of containers): node 0 runs
//! `capstan server`, the others `capstan agent`, each with its own data dir (root dir, runtime
//! state, pod logs, CNI config and cache), cgroup root and kubelet ports. A bridge on the host
//! joins them (the host holds the first address of `--bridge-cidr`, node `i` the `i+2`th), so
//! nodes reach each other and the host — a registry the host serves on its bridge address works
//! as the lab's mirror — and host-gw routes carry pod traffic between nodes.
//!
//! Processes start inside a namespace with `setns(CLONE_NEWNET)` only, not `ip netns exec`: they
//! share the host's mount namespace, so `/sys/fs/cgroup` stays mounted and `lab down` sees their
//! mounts. `lab down` runs `capstan uninstall` for each node inside its namespace (so the proxy's
//! chains and the CNI bridge it removes are the node's), then deletes the namespaces (their veths
//! and iptables rules go with them), the host bridge, the host FORWARD rule that lets bridged
//! lab traffic through, and the lab's data dir.
//!
//! The lab shortens what makes a cluster slow to react — the controller-manager's
//! `--node-monitor-grace-period` (20 s) and the API server's default not-ready/unreachable
//! tolerations (10 s) — as kind and k3d users do with their flags.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use serde::{Deserialize, Serialize};

#[derive(clap::Subcommand, Debug)]
pub enum LabCommand {
    /// Start a lab of N nodes and wait until every node is Ready.
    Up(UpArgs),
    /// Stop the lab and remove every trace of it.
    Down(DownArgs),
}

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// How many nodes (the server's own node counts).
    #[arg(long, default_value_t = 3)]
    pub nodes: u8,
    /// Where the lab keeps everything (`DIR/admin.kubeconfig`, `DIR/node-<i>/`, logs).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The lab bridge's network: the host takes its first address, the nodes the next ones.
    #[arg(long, default_value = "10.89.0.0/24")]
    pub bridge_cidr: String,
    /// Prefix of the lab's namespaces, links and node names (at most 8 characters).
    #[arg(long, default_value = "caplab")]
    pub name: String,
    /// Registry host configuration for every node (the cri issue's hosts.toml layout).
    #[arg(long)]
    pub registry_config_dir: Option<PathBuf>,
    /// The controller-manager's --node-monitor-grace-period in the lab.
    #[arg(long, default_value = "20s")]
    pub node_monitor_grace_period: String,
    /// The API server's default not-ready and unreachable tolerations in the lab (seconds a pod
    /// stays on a node that stopped answering).
    #[arg(long, default_value_t = 10)]
    pub default_toleration_seconds: i64,
    /// How long to wait for every node to be Ready.
    #[arg(long, default_value = "180")]
    pub timeout_seconds: u64,
}

#[derive(clap::Args, Debug)]
pub struct DownArgs {
    /// The lab's data dir (as given to `lab up`).
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// What `lab up` made, for `lab down` (`DIR/lab.json`).
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct LabRecord {
    bridge: String,
    host_address: Ipv4Addr,
    prefix_len: u8,
    nodes: Vec<LabNode>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
struct LabNode {
    name: String,
    netns: String,
    veth: String,
    address: Ipv4Addr,
    data_dir: PathBuf,
}

fn record_path(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

fn save(dir: &Path, record: &LabRecord) -> anyhow::Result<()> {
    let path = record_path(dir);
    std::fs::write(&path, serde_json::to_vec_pretty(record)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs `program args`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The same, ignoring failure (clean-up of what may not exist).
fn run_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The host FORWARD rule that lets traffic between lab nodes cross the bridge when bridged
/// frames go through iptables (br_netfilter, with Docker's FORWARD policy DROP, say).
fn forward_rule(bridge: &str) -> [String; 6] {
    ["-i", bridge, "-o", bridge, "-j", "ACCEPT"].map(String::from)
}

/// `(network, prefix length)` of an IPv4 CIDR.
fn parse_cidr(cidr: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let net: ipnet::Ipv4Net = cidr
        .parse()
        .with_context(|| format!("--bridge-cidr {cidr:?}: not an IPv4 CIDR"))?;
    Ok((net.network(), net.prefix_len()))
}

/// `capstan lab up`.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    anyhow::ensure!(
        !args.name.is_empty()
            && args.name.len() <= 8
            && args
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "--name {:?}: 1 to 8 lowercase letters or digits (it prefixes link names)",
        args.name
    );
    anyhow::ensure!((1..=50).contains(&args.nodes), "--nodes must be 1 to 50");
    let (network, prefix_len) = parse_cidr(&args.bridge_cidr)?;
    anyhow::ensure!(
        prefix_len <= 30 && (1u32 << (32 - prefix_len)) > u32::from(args.nodes) + 2,
        "--bridge-cidr {} is too small for {} nodes",
        args.bridge_cidr,
        args.nodes
    );
    let dir = std::path::absolute(&args.data_dir).context("--data-dir")?;
    if record_path(&dir).exists() {
        anyhow::bail!(
            "a lab is already up in {} (run `capstan lab down --data-dir {}` first)",
            dir.display(),
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let host_address = Ipv4Addr::from(u32::from(network) + 1);
    let record = LabRecord {
        bridge: format!("{}-br", args.name),
        host_address,
        prefix_len,
        nodes: (0..args.nodes)
            .map(|i| LabNode {
                name: format!("{}-{i}", args.name),
                netns: format!("{}-{i}", args.name),
                veth: format!("{}-{i}", args.name),
                address: Ipv4Addr::from(u32::from(network) + 2 + u32::from(i)),
                data_dir: dir.join(format!("node-{i}")),
            })
            .collect(),
    };
    // Saved before anything is made, so `lab down` after a failed `up` cleans up.
    save(&dir, &record)?;

    // The bridge and the nodes' namespaces.
    let bridge = record.bridge.clone();
    run_quiet("ip", &["link", "delete", &bridge]);
    run("ip", &["link", "add", &bridge, "type", "bridge"])?;
    run(
        "ip",
        &[
            "addr",
            "add",
            &format!("{host_address}/{prefix_len}"),
            "dev",
            &bridge,
        ],
    )?;
    run("ip", &["link", "set", &bridge, "up"])?;
    let rule = forward_rule(&bridge);
    let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
    run(
        "iptables",
        &[&["-w", "-I", "FORWARD", "1"], &rule[..]].concat(),
    )?;
    for n in &record.nodes {
        run_quiet("ip", &["netns", "delete", &n.netns]);
        run("ip", &["netns", "add", &n.netns])?;
        run(
            "ip",
            &[
                "link", "add", &n.veth, "type", "veth", "peer", "name", "eth0", "netns", &n.netns,
            ],
        )?;
        run("ip", &["link", "set", &n.veth, "master", &bridge, "up"])?;
        let addr = format!("{}/{prefix_len}", n.address);
        let host = host_address.to_string();
        for cmd in [
            vec!["addr", "add", addr.as_str(), "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "default", "via", host.as_str()],
        ] {
            run("ip", &[&["-n", n.netns.as_str()], &cmd[..]].concat())?;
        }
        in_netns(&n.netns, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .context("turning on IPv4 forwarding")
        })??;
        std::fs::create_dir_all(n.data_dir.join("cni/net.d"))?;
    }

    // The server in node 0.
    let exe = std::env::current_exe().context("locating the capstan binary")?;
    let server = record.nodes[0].clone();
    let mut server_args = vec![
        "server".to_string(),
        format!("--data-dir={}", server.data_dir.display()),
        "--listen=0.0.0.0:6443".into(),
        format!("--advertise-address={}", server.address),
        format!(
            "--kube-controller-manager-arg=node-monitor-grace-period={}",
            args.node_monitor_grace_period
        ),
        format!(
            "--default-not-ready-toleration-seconds={}",
            args.default_toleration_seconds
        ),
        format!(
            "--default-unreachable-toleration-seconds={}",
            args.default_toleration_seconds
        ),
    ];
    server_args.extend(node_flags(&server, &args));
    spawn_in(&server, &exe, &server_args, &dir)?;
    let token = server.data_dir.join("server/token");
    let admin = server.data_dir.join("admin.kubeconfig");
    let ca = server.data_dir.join("server/ca.crt");
    wait_for(
        || token.exists() && admin.exists() && ca.exists(),
        Duration::from_secs(60),
    )
    .await
    .with_context(|| {
        format!(
            "the server did not start; see {}",
            log_path(&dir, &server).display()
        )
    })?;
    let url = format!("https://{}:6443", server.address);
    let kubeconfig = dir.join("admin.kubeconfig");
    let text = std::fs::read_to_string(&admin)?;
    let text: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                format!("    server: {url}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    crate::agent::node::write_private(&kubeconfig, &(text + "\n"))?;

    // The agents, trusting the CA they pin.
    let ca_pem = std::fs::read_to_string(&ca)?;
    let pin = crate::agent::discovery::ca_cert_hashes(&ca_pem)?
        .into_iter()
        .next()
        .context("the cluster CA")?;
    for n in &record.nodes[1..] {
        let mut agent_args = vec![
            "agent".to_string(),
            format!("--server={url}"),
            format!("--token-file={}", token.display()),
            format!("--discovery-token-ca-cert-hash={pin}"),
            format!("--data-dir={}", n.data_dir.display()),
        ];
        agent_args.extend(node_flags(n, &args));
        spawn_in(n, &exe, &agent_args, &dir)?;
    }

    // Every node Ready.
    let client = machinery::client::build_client(Some(&kubeconfig), "capstan-lab").await?;
    let nodes: kube::Api<Node> = kube::Api::all(client);
    let want = usize::from(args.nodes);
    let ready = wait_for_async(
        || async {
            let Ok(list) = nodes.list(&Default::default()).await else {
                return false;
            };
            list.items.iter().filter(|n| is_ready(n)).count() >= want
        },
        Duration::from_secs(args.timeout_seconds),
    )
    .await;
    if ready.is_err() {
        anyhow::bail!(
            "not every node was Ready within {}s; the nodes' logs are {}/node-*.log (`capstan lab down --data-dir {}` removes the lab)",
            args.timeout_seconds,
            dir.display(),
            dir.display()
        );
    }
    println!(
        "capstan lab: {} nodes Ready in {:.1}s",
        args.nodes,
        started.elapsed().as_secs_f64()
    );
    println!("kubeconfig: {}", kubeconfig.display());
    println!("host address on the lab bridge: {host_address}");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get nodes -o wide");
    Ok(())
}

/// The flags every lab node takes: its name, address, dirs, cgroup root and registry config.
fn node_flags(n: &LabNode, args: &UpArgs) -> Vec<String> {
    let mut flags = vec![
        format!("--node-name={}", n.name),
        format!("--node-ip={}", n.address),
        format!("--cni-conf-dir={}", n.data_dir.join("cni/net.d").display()),
        format!("--cgroup-root=/capstan-lab-{}", n.name),
    ];
    if let Some(d) = &args.registry_config_dir {
        let d = std::path::absolute(d).unwrap_or_else(|_| d.clone());
        flags.push(format!("--registry-config-dir={}", d.display()));
    }
    flags
}

fn log_path(dir: &Path, n: &LabNode) -> PathBuf {
    dir.join(format!("{}.log", n.name))
}

/// Opens a named network namespace.
fn open_netns(name: &str) -> anyhow::Result<std::fs::File> {
    let path = format!("/run/netns/{name}");
    std::fs::File::open(&path).with_context(|| format!("opening {path}"))
}

/// Runs `f` on a thread inside the network namespace `name`.
fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let ns = open_netns(name)?;
    std::thread::spawn(move || {
        // SAFETY: setns on an open namespace file changes only this thread's namespace.
        #[allow(unsafe_code)]
        let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if entered != 0 {
            anyhow::bail!(
                "entering the network namespace: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in the network namespace panicked"))?
}

/// A `Command` for the capstan binary that starts inside node `n`'s network namespace.
fn command_in(n: &LabNode, exe: &Path, args: &[String]) -> anyhow::Result<Command> {
    let ns = open_netns(&n.netns)?;
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (setns, setsid) between fork and exec; `ns` is moved
    // into the closure and stays open until the command is dropped.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setsid();
            Ok(())
        });
    }
    Ok(cmd)
}

/// Starts a node's process in the background, its output in `DIR/<node>.log`.
fn spawn_in(n: &LabNode, exe: &Path, args: &[String], dir: &Path) -> anyhow::Result<()> {
    let log = std::fs::File::create(log_path(dir, n))?;
    let mut cmd = command_in(n, exe, args)?;
    cmd.stdout(log.try_clone()?).stderr(log);
    cmd.spawn()
        .with_context(|| format!("starting node {}", n.name))?;
    Ok(())
}

/// Ready, and no longer carrying the taints the node lifecycle controller puts on a node that
/// was not (so the scheduler may place pods on it the moment `lab up` returns).
fn is_ready(n: &Node) -> bool {
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            use controllers::nodelifecycle::{TAINT_NOT_READY, TAINT_UNREACHABLE};
            ts.iter()
                .any(|t| t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE)
        });
    ready && !tainted
}

async fn wait_for(mut f: impl FnMut() -> bool, timeout: Duration) -> anyhow::Result<()> {
    wait_for_async(|| std::future::ready(f()), timeout).await
}

async fn wait_for_async<F: std::future::Future<Output = bool>>(
    mut f: impl FnMut() -> F,
    timeout: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + timeout;
    loop {
        if f().await {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < until, "timed out");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `capstan lab down`.
pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    let dir = std::path::absolute(&args.data_dir).context("--data-dir")?;
    let Ok(text) = std::fs::read(record_path(&dir)) else {
        println!("capstan lab: no lab in {}; nothing to do", dir.display());
        return Ok(());
    };
    let record: LabRecord = serde_json::from_slice(&text)
        .with_context(|| format!("reading {}", record_path(&dir).display()))?;
    let exe = std::env::current_exe().context("locating the capstan binary")?;
    // Agents first, the server last (its API is what the agents would keep asking).
    for n in record.nodes.iter().rev() {
        if !Path::new(&format!("/run/netns/{}", n.netns)).exists() {
            // Uninstall runs inside a namespace even when the node's is gone, so that it never
            // touches the host's own iptables chains.
            run_quiet("ip", &["netns", "add", &n.netns]);
        }
        let args = vec![
            "uninstall".to_string(),
            format!("--data-dir={}", n.data_dir.display()),
        ];
        let status = command_in(n, &exe, &args)?
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("uninstalling node {}", n.name))?;
        if !status.success() {
            tracing::warn!(node = %n.name, "capstan uninstall failed");
        }
        run_quiet("ip", &["netns", "delete", &n.netns]);
        run_quiet("ip", &["link", "delete", &n.veth]);
    }
    let rule = forward_rule(&record.bridge);
    let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
    while run("iptables", &[&["-w", "-D", "FORWARD"], &rule[..]].concat()).is_ok() {}
    run_quiet("ip", &["link", "delete", &record.bridge]);
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    println!("capstan lab: removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_cidr() {
        assert_eq!(
            parse_cidr("10.89.0.0/24").unwrap(),
            (Ipv4Addr::new(10, 89, 0, 0), 24)
        );
        assert_eq!(
            parse_cidr("10.89.0.7/24").unwrap(),
            (Ipv4Addr::new(10, 89, 0, 0), 24)
        );
        assert!(parse_cidr("10.89.0.0").is_err());
        assert!(parse_cidr("fd00::/64").is_err());
    }
}
