//! Cluster DNS: the built-in DNS server each Capstan node runs in place of CoreDNS.
//!
//! It answers the Kubernetes DNS-Based Service Discovery specification's names in the cluster
//! domain from an in-memory cache that watches Services, EndpointSlices and (optionally) Pods
//! ([`watch`] → [`cache`] → [`records`]), forwards every other name to the node's resolvers
//! ([`forward`]), and serves over UDP and TCP through hickory-server ([`handler`]). [`kube_dns`]
//! holds the `kube-dns` Service the control plane keeps and the per-node EndpointSlice each
//! server keeps, through which the service proxy routes the cluster DNS IP to the nodes' servers.
//!
//! [`start`] binds the listeners, waits (at most [`SYNC_WAIT`], as CoreDNS) until the watches
//! have listed, serves, and registers the node's slice; it all stops with `shutdown`.

pub mod cache;
pub mod forward;
pub mod handler;
pub mod kube_dns;
pub mod records;
pub mod watch;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use kube::Client;
use tokio::net::{TcpListener, UdpSocket};

pub use cache::RecordCache;
pub use records::{PodRecords, Zone, DEFAULT_TTL};

/// How long [`start`] waits for the watches' first lists before serving anyway (CoreDNS: 5 s).
pub const SYNC_WAIT: Duration = Duration::from_secs(5);

/// An idle TCP client is dropped after this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server is given.
#[derive(Clone, Debug)]
pub struct Options {
    /// The node this server runs on (names its EndpointSlice).
    pub node_name: String,
    /// Where to listen, UDP and TCP on the same port; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The address put in the node's EndpointSlice; default the listen address (which then must
    /// not be unspecified).
    pub advertise: Option<IpAddr>,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// Resolvers for other names; empty: the nameservers of `resolv_conf`.
    pub upstreams: Vec<SocketAddr>,
    pub resolv_conf: PathBuf,
    pub ttl: u32,
    pub pods: PodRecords,
    /// Keep the node's `kube-dns` EndpointSlice.
    pub register: bool,
}

impl Options {
    /// Defaults for `node_name` listening on `listen`.
    pub fn new(node_name: &str, listen: SocketAddr) -> Options {
        Options {
            node_name: node_name.into(),
            listen,
            advertise: None,
            domain: "cluster.local".into(),
            upstreams: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            ttl: DEFAULT_TTL,
            pods: PodRecords::default(),
            register: true,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid cluster domain {domain:?}: {source}")]
    Domain {
        domain: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the node's DNS address is needed: listening on {0}, give an advertise address")]
    NoAdvertise(SocketAddr),
}

/// A started server.
pub struct DnsServer {
    /// The UDP and TCP address it listens on.
    pub local_addr: SocketAddr,
    pub cache: RecordCache,
    done: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    /// Resolves when the server has stopped (after `shutdown`).
    pub async fn stopped(self) {
        let _ = self.done.await;
    }
}

/// Binds UDP and TCP on one port (when the port is 0, the TCP port is the one UDP got; retried
/// when another socket holds it).
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let err = |source| DnsError::Listen {
        addr: listen,
        source,
    };
    let mut tries = 0;
    loop {
        let udp = UdpSocket::bind(listen).await.map_err(err)?;
        let addr = udp.local_addr().map_err(err)?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 && tries < 20 => {
                tries += 1;
                tracing::debug!(%addr, error = %e, "TCP port taken; trying another");
            }
            Err(e) => return Err(err(e)),
        }
    }
}

/// Starts the cluster DNS server (see the crate docs); it runs until `shutdown` resolves.
pub async fn start(
    client: Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<DnsServer, DnsError> {
    let zone = Zone::new(&options.domain, options.ttl, options.pods).map_err(|source| {
        DnsError::Domain {
            domain: options.domain.clone(),
            source,
        }
    })?;
    let advertise = match options.advertise {
        Some(a) => a,
        None if !options.listen.ip().is_unspecified() => options.listen.ip(),
        None if !options.register => options.listen.ip(),
        None => return Err(DnsError::NoAdvertise(options.listen)),
    };
    let (udp, tcp) = bind(options.listen).await?;
    let local_addr = udp.local_addr().map_err(|source| DnsError::Listen {
        addr: options.listen,
        source,
    })?;

    let cache = RecordCache::new();
    let (watches, synced) = watch::spawn(
        client.clone(),
        cache.clone(),
        options.pods == PodRecords::Verified,
    );
    if tokio::time::timeout(SYNC_WAIT, synced.wait())
        .await
        .is_err()
    {
        tracing::warn!("starting the DNS server with unsynced caches");
    }

    let upstreams = if options.upstreams.is_empty() {
        forward::from_resolv_conf(&options.resolv_conf)
    } else {
        options.upstreams.clone()
    };
    // Our own address among the upstreams would loop.
    let upstreams: Vec<SocketAddr> = upstreams.into_iter().filter(|u| *u != local_addr).collect();
    if upstreams.is_empty() {
        tracing::warn!(resolv_conf = %options.resolv_conf.display(), "no upstream resolvers: names outside the cluster get SERVFAIL");
    }
    let handler = handler::ClusterDnsHandler {
        zone,
        cache: cache.clone(),
        forwarder: forward::Forwarder::new(upstreams.clone()),
    };
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT, 64);
    tracing::info!(addr = %local_addr, domain = %options.domain, upstreams = ?upstreams, "cluster DNS serving");

    let slice = options.register.then(|| {
        tokio::spawn(kube_dns::keep_node_slice(
            client,
            kube_dns::node_slice(&options.node_name, advertise, local_addr.port()),
        ))
    });
    let done = tokio::spawn(async move {
        shutdown.await;
        if let Some(t) = slice {
            t.abort();
        }
        for w in watches {
            w.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), server.shutdown_gracefully()).await;
    });
    Ok(DnsServer {
        local_addr,
        cache,
        done,
    })
}
