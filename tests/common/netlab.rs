//! A network lab out of namespaces for the proxy suites: a bridge in a namespace of its own,
//! "hosts" (network namespaces) plugged into it with veth pairs, one veth from the bridge to the
//! test's own namespace (so a process in a host can reach a server the test runs on the host side,
//! such as apiserver-lite through a [`Forwarder`]), and small TCP/UDP echo servers that answer with
//! their identity and the peer address they saw. Threads enter a namespace with `setns`, so no
//! helper binaries or images are needed.
//!
//! Every namespace, link, thread and process is removed by a guard's `Drop`, also when a test
//! fails; deleting a namespace removes the links and iptables rules inside it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("running ip")
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = ip(&["netns", "del", name]);
        ip_ok(&["netns", "add", name]);
        let ns = Netns { name: name.into() };
        ns.sh("ip link set lo up");
        ns
    }

    /// `ip netns exec NAME cmd...` (not checked).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("running ip netns exec")
    }

    /// Runs a shell command inside; panics with its output when it fails.
    pub fn sh(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-c", script]);
        assert!(
            out.status.success(),
            "in {}: {script} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A command that runs inside (for `spawn`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that has entered the namespace.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
        .join()
        .expect("the thread in the namespace panicked")
    }

    /// Starts a thread inside the namespace.
    pub fn spawn_thread(&self, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
    }
}

fn enter_netns(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A host plugged into the lab's bridge.
pub struct Host {
    pub ns: Netns,
    /// Its address on the bridge.
    pub ip: String,
}

/// The lab: a bridge namespace, the hosts, and the uplink to the test's namespace.
pub struct Lab {
    /// Short unique tag: the prefix of every name the lab makes.
    pub tag: String,
    /// `10.x.y.` of the lab's /24.
    pub prefix: String,
    /// The test namespace's address on the lab network (`<prefix>1`).
    pub uplink_ip: String,
    uplink: String,
    hosts: usize,
    // Dropped last: the bridge.
    bridge: Netns,
}

static LABS: AtomicUsize = AtomicUsize::new(0);

impl Lab {
    /// A new lab on a free /24; `seed` spreads concurrent tests over different subnets.
    pub fn new(seed: usize) -> Lab {
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("cpl{}{}", std::process::id() % 10000, n);
        let prefix = super::free_subnet(seed * 7 + n * 131 + std::process::id() as usize % 97);
        let bridge = Netns::new(&format!("{tag}-br"));
        bridge.sh("ip link add br0 type bridge && ip link set br0 up");
        let uplink = format!("{tag}u");
        let _ = ip(&["link", "del", &uplink]);
        ip_ok(&[
            "link",
            "add",
            &uplink,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{tag}v"),
        ]);
        ip_ok(&["link", "set", &format!("{tag}v"), "netns", &bridge.name]);
        bridge.sh(&format!(
            "ip link set {tag}v master br0 && ip link set {tag}v up"
        ));
        let uplink_ip = format!("{prefix}1");
        ip_ok(&["addr", "add", &format!("{uplink_ip}/24"), "dev", &uplink]);
        ip_ok(&["link", "set", &uplink, "up"]);
        Lab {
            tag,
            prefix,
            uplink_ip,
            uplink,
            hosts: 0,
            bridge,
        }
    }

    /// A host named `name` (namespace `<tag>-<name>`) at `<prefix><octet>`, interface `eth0`.
    pub fn host(&mut self, name: &str, octet: u8) -> Host {
        self.hosts += 1;
        let ns = Netns::new(&format!("{}-{name}", self.tag));
        let a = format!("{}a{}", self.tag, self.hosts);
        let b = format!("{}b{}", self.tag, self.hosts);
        ip_ok(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip_ok(&["link", "set", &a, "netns", &ns.name]);
        ip_ok(&["link", "set", &b, "netns", &self.bridge.name]);
        self.bridge
            .sh(&format!("ip link set {b} master br0 && ip link set {b} up"));
        let ip = format!("{}{octet}", self.prefix);
        ns.sh(&format!(
            "ip link set {a} name eth0 && ip addr add {ip}/24 dev eth0 && ip link set eth0 up"
        ));
        Host { ns, ip }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.uplink]);
    }
}

/// A thread that stops when the guard drops.
struct StopGuard {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Forwards TCP connections from an address in the test's namespace to another (the
/// apiserver on loopback), so hosts in the lab can reach it.
pub struct Forwarder {
    pub addr: SocketAddr,
    _guard: StopGuard,
}

impl Forwarder {
    pub fn start(listen: &str, target: &str) -> Forwarder {
        let l = TcpListener::bind(listen).unwrap_or_else(|e| panic!("binding {listen}: {e}"));
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let target = target.to_string();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let Ok(u) = TcpStream::connect(&target) else {
                            continue;
                        };
                        let (c2, u2) = (c.try_clone().unwrap(), u.try_clone().unwrap());
                        std::thread::spawn(move || pipe(c, u));
                        std::thread::spawn(move || pipe(u2, c2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Forwarder {
            addr,
            _guard: StopGuard {
                stop,
                thread: Some(thread),
            },
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// TCP and UDP echo servers in a namespace: each answers `<identity> <peer ip>`.
pub struct EchoServer {
    _tcp: StopGuard,
    _udp: StopGuard,
}

impl EchoServer {
    pub fn start(ns: &Netns, identity: &str, tcp_port: u16, udp_port: u16) -> EchoServer {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop_t = Arc::new(AtomicBool::new(false));
        let (s, id, tx) = (stop_t.clone(), identity.to_string(), ready_tx.clone());
        let tcp = ns.spawn_thread(move || {
            let l = TcpListener::bind(("0.0.0.0", tcp_port)).expect("binding the TCP echo port");
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, peer)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = writeln!(c, "{id} {}", peer.ip());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let stop_u = Arc::new(AtomicBool::new(false));
        let (s, id, tx) = (stop_u.clone(), identity.to_string(), ready_tx);
        let udp = ns.spawn_thread(move || {
            let u = UdpSocket::bind(("0.0.0.0", udp_port)).expect("binding the UDP echo port");
            u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = u.recv_from(&mut buf) {
                    let _ = u.send_to(format!("{id} {}", peer.ip()).as_bytes(), peer);
                }
            }
        });
        for _ in 0..2 {
            ready_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("echo server did not start");
        }
        EchoServer {
            _tcp: StopGuard {
                stop: stop_t,
                thread: Some(tcp),
            },
            _udp: StopGuard {
                stop: stop_u,
                thread: Some(udp),
            },
        }
    }
}

/// One TCP request from inside `ns`: the echo line, or the error (refused, timed out).
pub fn tcp_request(ns: &Netns, to: &str, timeout: Duration) -> std::io::Result<String> {
    let to: SocketAddr = to.parse().expect("a socket address");
    ns.enter(move || {
        let mut c = TcpStream::connect_timeout(&to, timeout)?;
        c.set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        BufReader::new(&mut c).read_line(&mut line)?;
        Ok(line.trim().to_string())
    })
}

/// One UDP request from `ns`, from local port `from_port` (0 = any): the reply, or the error.
pub fn udp_request(
    ns: &Netns,
    from_port: u16,
    to: &str,
    timeout: Duration,
) -> std::io::Result<String> {
    let to: SocketAddr = to.parse().expect("a socket address");
    ns.enter(move || {
        let u = UdpSocket::bind(("0.0.0.0", from_port))?;
        u.set_read_timeout(Some(timeout))?;
        u.send_to(b"hello", to)?;
        let mut buf = [0u8; 1500];
        let (n, _) = u.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
    })
}

/// A process killed (and reaped) on drop.
pub struct ProcessGuard {
    pub child: Child,
}

impl ProcessGuard {
    pub fn spawn(mut cmd: Command, log: &std::path::Path) -> ProcessGuard {
        let f = std::fs::File::create(log).expect("creating the log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawning");
        ProcessGuard { child }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port-less bridge with one address (`ip link add … type bridge`; the kernel here has no
/// dummy links), deleted on drop: a host address
/// that is neither loopback nor the host's own, for a server that pods must reach.
pub struct DummyAddress {
    pub link: String,
    pub addr: std::net::Ipv4Addr,
}

impl DummyAddress {
    /// Creates `link` with `addr/24` (the /24 route marks the subnet as taken for
    /// [`super::free_subnet`]).
    pub fn new(link: &str, addr: std::net::Ipv4Addr) -> DummyAddress {
        let _ = ip(&["link", "del", link]);
        ip_ok(&["link", "add", link, "type", "bridge"]);
        let guard = DummyAddress {
            link: link.to_string(),
            addr,
        };
        ip_ok(&["addr", "add", &format!("{addr}/24"), "dev", link]);
        ip_ok(&["link", "set", link, "up"]);
        guard
    }
}

impl Drop for DummyAddress {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.link]);
    }
}
