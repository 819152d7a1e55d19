//! A DNS client for the suites (one query over UDP or TCP, hickory-proto's wire format) and a fake
//! upstream resolver on loopback that the cluster DNS server forwards to.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Sends one query (`RD` set) and returns the reply; panics naming the query when none comes.
pub fn query(server: SocketAddr, name: &str, qtype: RecordType, tcp: bool) -> Message {
    try_query(server, name, qtype, tcp).unwrap_or_else(|e| {
        panic!(
            "{name} {qtype} over {}: {e}",
            if tcp { "TCP" } else { "UDP" }
        )
    })
}

/// [`query`] that returns the error.
pub fn try_query(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    tcp: bool,
) -> std::io::Result<Message> {
    let mut q = Message::query();
    q.metadata.id = (std::process::id() as u16) ^ 0x5a5a;
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
    let bytes = q.to_vec().unwrap();
    let reply = if tcp {
        let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&bytes);
        s.write_all(&out)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf)?;
        buf
    } else {
        // Unbound: a query to a cluster IP must leave with a routable source (the proxy DNATs it).
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.send_to(&bytes, server)?;
        let mut buf = vec![0u8; 65535];
        let n = s.recv(&mut buf)?;
        buf.truncate(n);
        buf
    };
    let m = Message::from_vec(&reply).map_err(|e| std::io::Error::other(e.to_string()))?;
    if m.metadata.id != q.metadata.id {
        return Err(std::io::Error::other("reply with another id"));
    }
    Ok(m)
}

/// The answers' data as text (`10.0.0.1`, `0 100 80 web.ns.svc.cluster.local.`, …).
pub fn answers(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| rdata_text(&r.data)).collect()
}

pub fn rdata_text(r: &RData) -> String {
    match r {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::SRV(s) => format!("{} {} {} {}", s.priority, s.weight, s.port, s.target),
        RData::PTR(p) => p.0.to_string(),
        RData::CNAME(c) => format!("CNAME {}", c.0),
        RData::SOA(s) => format!("SOA {}", s.mname),
        other => format!("{other:?}"),
    }
}

/// The address every name but `big.*` and `nx.*` gets from the fake upstream.
pub const UPSTREAM_ANSWER: &str = "192.0.2.1";

/// A resolver on 127.0.0.1, UDP and TCP on one port: `nx.*` is NXDOMAIN, `big.*` has 60 A
/// records (over UDP only a truncated, empty reply with TC, as a real server without room),
/// everything else one A record, [`UPSTREAM_ANSWER`].
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub udp_queries: Arc<AtomicUsize>,
    pub tcp_queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

fn upstream_reply(query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.message_type = MessageType::Response;
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.add_query(question.clone());
    let name = question.name().to_ascii();
    if name.starts_with("nx.") {
        r.metadata.response_code = ResponseCode::NXDomain;
    } else if question.query_type() == RecordType::A {
        let n = if name.starts_with("big.") { 60 } else { 1 };
        for i in 0..n {
            let ip = if n == 1 {
                UPSTREAM_ANSWER.parse().unwrap()
            } else {
                std::net::Ipv4Addr::new(198, 51, 100, i as u8)
            };
            r.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(ip)),
            ));
        }
    }
    let bytes = r.to_vec().ok()?;
    if udp && bytes.len() > 512 {
        let mut t = Message::response(q.metadata.id, q.metadata.op_code);
        t.add_query(question);
        t.metadata.truncation = true;
        return t.to_vec().ok();
    }
    Some(bytes)
}

impl FakeUpstream {
    pub fn start() -> FakeUpstream {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).expect("TCP on the fake upstream's UDP port");
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (udp_queries, tcp_queries) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        {
            let (stop, count) = (stop.clone(), udp_queries.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((n, from)) = udp.recv_from(&mut buf) {
                        count.fetch_add(1, Ordering::SeqCst);
                        if let Some(r) = upstream_reply(&buf[..n], true) {
                            let _ = udp.send_to(&r, from);
                        }
                    }
                }
            });
        }
        {
            let (stop, count) = (stop.clone(), tcp_queries.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let count = count.clone();
                    std::thread::spawn(move || {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut len = [0u8; 2];
                        while s.read_exact(&mut len).is_ok() {
                            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                            if s.read_exact(&mut q).is_err() {
                                return;
                            }
                            count.fetch_add(1, Ordering::SeqCst);
                            let Some(r) = upstream_reply(&q, false) else {
                                return;
                            };
                            let mut out = (r.len() as u16).to_be_bytes().to_vec();
                            out.extend_from_slice(&r);
                            if s.write_all(&out).is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }
        FakeUpstream {
            addr,
            udp_queries,
            tcp_queries,
            stop,
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
