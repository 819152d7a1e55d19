//! Forwarding: every name outside the cluster zone goes to the node's resolvers, as CoreDNS's
//! `forward . /etc/resolv.conf` in kubeadm's Corefile. The resolvers are the `nameserver` lines of
//! the node's resolv.conf (or the upstreams given), tried in order, each with a timeout.
//!
//! The query travels as the client sent it (same id, EDNS and flags) over UDP from a fresh
//! socket (a random source port per query); a truncated UDP reply is asked again over TCP, so the
//! whole answer is in hand, and the request handler re-encodes it for the client's transport —
//! truncated again (TC set) when it does not fit the client's UDP payload size, which makes the
//! client retry over TCP. A client that came over TCP is forwarded over TCP.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer before the next one is asked.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Why forwarding failed (the client then gets SERVFAIL).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolvers")]
    NoUpstreams,
    #[error("upstream {upstream}: {source}")]
    Io {
        upstream: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream {upstream} timed out")]
    Timeout { upstream: SocketAddr },
    #[error("upstream {upstream} sent an unreadable reply: {reason}")]
    BadReply {
        upstream: SocketAddr,
        reason: String,
    },
}

/// The nameservers of a resolv.conf, on port 53.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        // A scoped IPv6 address (`fe80::1%eth0`) keeps only its address.
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Reads the nameservers of `path` (none when it cannot be read).
pub fn from_resolv_conf(path: &Path) -> Vec<SocketAddr> {
    std::fs::read_to_string(path)
        .map(|t| resolv_conf_nameservers(&t))
        .unwrap_or_default()
}

/// The transport a query came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Forwards to a list of upstream resolvers.
#[derive(Clone, Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Forwarder {
            upstreams,
            timeout: UPSTREAM_TIMEOUT,
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Sends the raw query to the upstreams in turn; the first readable reply wins.
    pub async fn forward(
        &self,
        query: &[u8],
        transport: Transport,
    ) -> Result<Message, ForwardError> {
        let mut last = ForwardError::NoUpstreams;
        for &upstream in &self.upstreams {
            match self.ask(upstream, query, transport).await {
                Ok(m) => return Ok(m),
                Err(e) => {
                    tracing::debug!(%upstream, error = %e, "upstream failed; trying the next");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn ask(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        transport: Transport,
    ) -> Result<Message, ForwardError> {
        let id = u16::from_be_bytes([query[0], query[1]]);
        if transport == Transport::Udp {
            let reply = self
                .timed(upstream, udp_exchange(upstream, query, id))
                .await?;
            let msg = parse(upstream, &reply)?;
            if !msg.metadata.truncation {
                return Ok(msg);
            }
            tracing::debug!(%upstream, "truncated UDP reply; asking again over TCP");
        }
        let reply = self.timed(upstream, tcp_exchange(upstream, query)).await?;
        parse(upstream, &reply)
    }

    async fn timed(
        &self,
        upstream: SocketAddr,
        f: impl std::future::Future<Output = std::io::Result<Vec<u8>>>,
    ) -> Result<Vec<u8>, ForwardError> {
        match tokio::time::timeout(self.timeout, f).await {
            Err(_) => Err(ForwardError::Timeout { upstream }),
            Ok(Err(source)) => Err(ForwardError::Io { upstream, source }),
            Ok(Ok(b)) => Ok(b),
        }
    }
}

fn parse(upstream: SocketAddr, reply: &[u8]) -> Result<Message, ForwardError> {
    Message::from_vec(reply).map_err(|e| ForwardError::BadReply {
        upstream,
        reason: e.to_string(),
    })
}

/// One UDP exchange from a fresh socket; replies with another id (stale or spoofed) are skipped.
async fn udp_exchange(upstream: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// One TCP exchange (two-byte length prefix, RFC 1035 4.2.2).
async fn tcp_exchange(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    s.write_all(&out).await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_of_resolv_conf() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver  fe80::1%eth0\nnameserver bogus\noptions ndots:2\n";
        assert_eq!(
            resolv_conf_nameservers(text),
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert!(resolv_conf_nameservers("").is_empty());
    }
}
