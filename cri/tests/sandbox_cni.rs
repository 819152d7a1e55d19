//! CNI against the real plugins (Debian's containernetworking-plugins in /usr/lib/cni): bridge +
//! host-local + portmap (and the built-in cni-loopback network) into a network namespace made by
//! the test. Needs root. Every test works on its own bridge (`cni-t<random>`), 10.x subnet, IPAM
//! data dir under its tempdir and netns; a guard undoes all of it (DEL, then the bridge, left-over
//! portmap rules of this container, the netns) also when an assertion fails.
//!
//! The shared `CNI-HOSTPORT-*` chains portmap creates are left in place, as containerd does: other
//! users of portmap on the host (containerd, parallel tests) hang their rules there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cri::cni::{AttachRequest, Cni, PortMapping};
use cri::namespaces::{NamespaceRequest, PodNamespaces};

const BIN_DIR: &str = "/usr/lib/cni";

fn prerequisites() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (netns, bridges, iptables)");
        return false;
    }
    for bin in ["bridge", "host-local", "portmap", "loopback"] {
        if !Path::new(BIN_DIR).join(bin).exists() {
            eprintln!("skipped: {BIN_DIR}/{bin} missing (apt install containernetworking-plugins)");
            return false;
        }
    }
    true
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One test's network world.
struct Env {
    tmp: tempfile::TempDir,
    bridge: String,
    network: String,
    subnet_prefix: String,
    container_id: String,
    ns: PodNamespaces,
    host_port: u16,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let r: u32 = rand::random();
        let sfx = format!("{:06x}", r & 0xff_ffff);
        let subnet_prefix = format!("10.{}.{}", 200 + (r >> 24) % 50, (r >> 8) & 0xff);
        let ns = PodNamespaces::create(
            &tmp.path().join("ns"),
            &NamespaceRequest {
                net: true,
                ..Default::default()
            },
        )
        .expect("create test netns");
        let env = Env {
            bridge: format!("cni-t{sfx}"),
            network: format!("capstan-test-{sfx}"),
            subnet_prefix,
            container_id: format!("sandbox{sfx}{:08x}", rand::random::<u32>()),
            host_port: 20000 + (r % 10000) as u16,
            ns,
            tmp,
        };
        std::fs::create_dir_all(env.conf_dir()).unwrap();
        env
    }

    fn conf_dir(&self) -> PathBuf {
        self.tmp.path().join("net.d")
    }
    fn cache_dir(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }
    fn ipam_dir(&self) -> PathBuf {
        self.tmp.path().join("ipam")
    }
    fn netns(&self) -> PathBuf {
        self.ns.net_path().unwrap().to_path_buf()
    }

    fn conflist(&self, extra_plugin: Option<serde_json::Value>) -> serde_json::Value {
        let mut plugins = vec![
            serde_json::json!({
                "type": "bridge", "bridge": self.bridge, "isGateway": true, "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": format!("{}.0/24", self.subnet_prefix)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": self.ipam_dir(),
                }
            }),
            serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        ];
        plugins.extend(extra_plugin);
        serde_json::json!({"cniVersion": "1.0.0", "name": self.network, "plugins": plugins})
    }

    fn write_conf(&self, name: &str, v: &serde_json::Value) {
        std::fs::write(
            self.conf_dir().join(name),
            serde_json::to_vec_pretty(v).unwrap(),
        )
        .unwrap();
    }

    fn cni(&self) -> Cni {
        Cni::new(
            self.conf_dir(),
            vec![PathBuf::from(BIN_DIR)],
            self.cache_dir(),
        )
    }

    fn request(&self) -> AttachRequest {
        AttachRequest {
            container_id: self.container_id.clone(),
            netns: self.netns(),
            ifname: "eth0".into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            pod_uid: "uid-1".into(),
            port_mappings: vec![PortMapping {
                host_port: i32::from(self.host_port),
                container_port: 8080,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            ..Default::default()
        }
    }

    /// Host-side veths plugged into the test bridge.
    fn bridge_ports(&self) -> Vec<String> {
        std::fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// IPs host-local has handed out (its data dir holds one file per allocation).
    fn allocations(&self) -> Vec<String> {
        std::fs::read_dir(self.ipam_dir().join(&self.network))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn nat_rules_of_container(&self) -> Vec<String> {
        sh("iptables", &["-t", "nat", "-S"])
            .lines()
            .filter(|l| l.contains(&self.container_id))
            .map(str::to_string)
            .collect()
    }

    fn in_netns(&self, args: &[&str]) -> String {
        let netns = format!("--net={}", self.netns().display());
        let mut full = vec![netns.as_str()];
        full.extend_from_slice(args);
        sh("nsenter", &full)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // 1. DEL through the plugins (they know what they made); a separate thread because this
        //    may run inside the test's runtime.
        let cni = self.cni();
        let req = self.request();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), cni.del(&req)).await
            })
        })
        .join();
        // 2. Anything portmap left for this container (if DEL could not run).
        remove_nat_rules_mentioning(&self.container_id);
        // 3. The bridge and the netns (its veth end goes with it).
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        let _ = self.ns.remove();
    }
}

/// Deletes every nat rule that mentions `needle` and flushes/removes the chains they jump to.
fn remove_nat_rules_mentioning(needle: &str) {
    let rules = sh("iptables", &["-t", "nat", "-S"]);
    let mut chains = Vec::new();
    for line in rules
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains(needle))
    {
        let mut args = split_quoted(line);
        args[0] = "-D".into();
        if let Some(i) = args.iter().position(|a| a == "-j") {
            if let Some(target) = args.get(i + 1).filter(|t| t.starts_with("CNI-DN-")) {
                chains.push(target.clone());
            }
        }
        let mut full = vec!["-t".to_string(), "nat".to_string()];
        full.extend(args);
        let _ = Command::new("iptables").args(&full).output();
    }
    for chain in chains {
        let _ = Command::new("iptables")
            .args(["-t", "nat", "-F", &chain])
            .output();
        let _ = Command::new("iptables")
            .args(["-t", "nat", "-X", &chain])
            .output();
    }
}

/// Splits an `iptables -S` line into arguments, honouring double quotes and `\"`.
fn split_quoted(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Serves `n` connections with "hello" from inside the pod netns on port 8080.
fn serve_in_netns(netns: PathBuf, n: usize) -> std::thread::JoinHandle<()> {
    let listener = std::thread::spawn(move || {
        let f = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        TcpListener::bind("0.0.0.0:8080").unwrap()
    })
    .join()
    .unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut served = 0;
        while served < n && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(b"hello");
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })
}

fn fetch(addr: SocketAddr) -> Result<String, std::io::Error> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_portmap_add_check_del_with_real_plugins() {
    if !prerequisites() {
        return;
    }
    let env = Env::new();
    env.write_conf("10-test.conflist", &env.conflist(None));
    let cni = env.cni();
    cni.status().expect("status with a valid config");
    let req = env.request();

    let res = tokio::time::timeout(Duration::from_secs(60), cni.add(&req))
        .await
        .expect("ADD timed out")
        .expect("ADD");
    assert_eq!(res.network, env.network);
    let ip = res.ips.first().expect("an IP in the result").address;
    assert!(
        ip.to_string().starts_with(&env.subnet_prefix),
        "IP {ip} not in the test subnet"
    );
    assert_eq!(
        res.interface.as_ref().map(|i| i.name.as_str()),
        Some("eth0")
    );

    // Configured inside the netns, lo up (cni-loopback), one veth on the bridge, one allocation.
    let eth0 = env.in_netns(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        eth0.contains(&format!("{ip}/24")),
        "eth0 in the netns: {eth0:?}"
    );
    let lo = env.in_netns(&["ip", "-o", "link", "show", "dev", "lo"]);
    assert!(lo.contains("UP"), "lo must be up: {lo:?}");
    assert_eq!(env.bridge_ports().len(), 1, "veths on {}", env.bridge);
    assert_eq!(env.allocations(), vec![ip.to_string()]);
    let cache = env
        .cache_dir()
        .join(format!("results/{}-{}-eth0", env.network, env.container_id));
    assert!(cache.exists(), "result cache {cache:?}");

    // Traffic: straight to the pod, and through the host port on loopback.
    assert!(
        !env.nat_rules_of_container().is_empty(),
        "portmap rules for the container"
    );
    let server = serve_in_netns(env.netns(), 2);
    let direct = fetch(SocketAddr::new(ip, 8080));
    let mapped = fetch(SocketAddr::from(([127, 0, 0, 1], env.host_port)));
    // Unblock the server if the mapped fetch failed.
    if mapped.is_err() {
        let _ = fetch(SocketAddr::new(ip, 8080));
    }
    server.join().unwrap();
    assert_eq!(direct.expect("pod IP reachable from the host"), "hello");
    assert_eq!(
        mapped.expect("hostPort on 127.0.0.1 reaches the pod"),
        "hello"
    );

    // CHECK: loopback and bridge must pass. Debian's portmap 1.1.1 fails CHECK on IPv4-only pods
    // looking for an ip6tables chain it never made (containernetworking/plugins#819, fixed
    // upstream later); accept exactly that failure, which also shows bridge's CHECK passed.
    if let Err(e) = cni.check(&req).await {
        let msg = e.to_string();
        assert!(
            msg.contains("portmap") && msg.contains("could not check ipv6 dnat"),
            "CHECK after ADD: {msg}"
        );
    }

    // DEL removes veth, allocation, rules and cache; a second DEL is fine.
    cni.del(&req).await.expect("DEL");
    assert!(
        env.bridge_ports().is_empty(),
        "veth left: {:?}",
        env.bridge_ports()
    );
    assert!(
        env.allocations().is_empty(),
        "IPAM allocation left: {:?}",
        env.allocations()
    );
    assert!(
        env.nat_rules_of_container().is_empty(),
        "{:?}",
        env.nat_rules_of_container()
    );
    assert!(!cache.exists());
    cni.del(&req).await.expect("second DEL");
    let missing_ns = AttachRequest {
        netns: env.tmp.path().join("gone"),
        ..req.clone()
    };
    cni.del(&missing_ns).await.expect("DEL with the netns gone");
    let err = cni
        .check(&req)
        .await
        .expect_err("CHECK without an attachment");
    assert!(err.to_string().contains("no cached result"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_after_restart_uses_the_cache_even_with_the_config_changed() {
    if !prerequisites() {
        return;
    }
    let env = Env::new();
    env.write_conf("10-test.conflist", &env.conflist(None));
    let req = env.request();
    let res = tokio::time::timeout(Duration::from_secs(60), env.cni().add(&req))
        .await
        .unwrap()
        .expect("ADD");
    assert_eq!(env.allocations().len(), 1, "{res:?}");

    // The config is replaced by another network; a new Cni (a restarted runtime) still DELs the
    // old attachment from the cache.
    std::fs::remove_file(env.conf_dir().join("10-test.conflist")).unwrap();
    env.write_conf(
        "05-other.conf",
        &serde_json::json!({"cniVersion":"1.0.0","name":"other","type":"loopback"}),
    );
    env.cni().del(&req).await.expect("DEL after config change");
    assert!(
        env.bridge_ports().is_empty(),
        "veth left: {:?}",
        env.bridge_ports()
    );
    assert!(env.allocations().is_empty(), "IPAM allocation left");
    assert!(env.nat_rules_of_container().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_add_names_the_problem_and_leaves_nothing_behind() {
    if !prerequisites() {
        return;
    }
    let env = Env::new();
    let cni = env.cni();
    let req = env.request();

    // No config at all.
    let err = cni.add(&req).await.expect_err("ADD without config");
    assert!(
        err.to_string().contains("no network config found in"),
        "{err}"
    );
    let err = cni.status().expect_err("status without config");
    assert!(
        err.to_string().contains(&*env.conf_dir().to_string_lossy()),
        "{err}"
    );

    // Bad config: the error names the file and the field.
    env.write_conf(
        "10-test.conflist",
        &serde_json::json!({"cniVersion":"1.0.0","name":"x","plugins":[{"bridge":"b"}]}),
    );
    let err = cni
        .add(&req)
        .await
        .expect_err("ADD with a bad config")
        .to_string();
    assert!(
        err.contains("10-test.conflist") && err.contains("\"type\""),
        "{err}"
    );

    // A missing plugin after bridge: bridge's veth and IP must be undone.
    env.write_conf(
        "10-test.conflist",
        &env.conflist(Some(serde_json::json!({"type": "no-such-plugin"}))),
    );
    let err = cni
        .status()
        .expect_err("status with a missing plugin")
        .to_string();
    assert!(err.contains("no-such-plugin"), "{err}");
    let err = tokio::time::timeout(Duration::from_secs(60), cni.add(&req))
        .await
        .unwrap()
        .expect_err("ADD with a missing plugin")
        .to_string();
    assert!(
        err.contains("no-such-plugin") && err.contains(BIN_DIR),
        "{err}"
    );
    assert!(
        env.bridge_ports().is_empty(),
        "veth left: {:?}",
        env.bridge_ports()
    );
    assert!(
        env.allocations().is_empty(),
        "IPAM allocation left: {:?}",
        env.allocations()
    );
    assert!(
        env.nat_rules_of_container().is_empty(),
        "{:?}",
        env.nat_rules_of_container()
    );
    let eth0 = env.in_netns(&["ip", "-o", "link", "show"]);
    assert!(!eth0.contains("eth0"), "eth0 left in the netns: {eth0}");
    assert!(std::fs::read_dir(env.cache_dir().join("results"))
        .map(|d| d.count() == 0)
        .unwrap_or(true));

    // A plugin that fails with a CNI error: its message comes through.
    let mut conf = env.conflist(None);
    conf["plugins"][0]["ipam"]["ranges"] = serde_json::json!([[{"subnet": "not-a-subnet"}]]);
    env.write_conf("10-test.conflist", &conf);
    let err = cni
        .add(&req)
        .await
        .expect_err("ADD with a bad subnet")
        .to_string();
    assert!(err.contains("bridge") && err.contains("ADD"), "{err}");
    assert!(env.bridge_ports().is_empty());
}

#[test]
fn iptables_lines_split_like_a_shell() {
    assert_eq!(
        split_quoted(
            r#"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"n\" id: \"x\"" -j CNI-DN-1"#
        ),
        vec![
            "-A",
            "CNI-HOSTPORT-DNAT",
            "-p",
            "tcp",
            "-m",
            "comment",
            "--comment",
            r#"dnat name: "n" id: "x""#,
            "-j",
            "CNI-DN-1"
        ]
    );
}
