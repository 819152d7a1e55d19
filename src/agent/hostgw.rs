//! Pod routes between nodes on a shared L2, as flannel's `host-gw` backend programs them: for
//! every other Node with `spec.podCIDRs` whose InternalIP lies on a subnet this host is directly
//! connected to, the route `<podCIDR> via <nodeIP>` in the main table. The node's own pods are on
//! its bridge (the CNI configuration), so with these routes a pod reaches every other node's pods
//! without any encapsulation. Nodes that are not on a shared subnet get no route (flannel would
//! need vxlan there).
//!
//! Shaped as compute, then apply: [`desired_routes`] turns the Nodes and this host's subnets into
//! the wanted routes, [`plan`] compares them with the routes present and says what to replace and
//! what to delete, and a [`RouteTable`] applies it — [`NetlinkRouteTable`] through rtnetlink
//! (one `RTM_NEWROUTE` with `NLM_F_REPLACE` per added or changed route, one `RTM_DELROUTE` per
//! removed one). Every route it makes carries the route protocol [`ROUTE_PROTOCOL`], so the
//! routes it owns are found again after a restart (stale ones of removed nodes are deleted at the
//! first sync) and nobody else's are touched. The Node watch only pokes the sync; the sync also
//! runs every [`RESYNC_PERIOD`], so a route deleted by hand comes back (flannel's route check).
//!
//! The netlink socket is opened where [`NetlinkRouteTable::open`] runs: a thread that entered a
//! network namespace opens one bound to that namespace for good (the tests do this).
//! Self-contained (no `crate::` paths), so the integration tests include it with `#[path]`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// The route protocol (`ip route … proto 67`) that marks Capstan's host-gw routes; unassigned
/// in iproute2's `rt_protos`.
pub const ROUTE_PROTOCOL: u8 = 67;
/// How often the routes are checked even without Node changes.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(10);

/// Failures of the route controller.
#[derive(Debug, thiserror::Error)]
pub enum HostGwError {
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink: {op}: unexpected answer: {detail}")]
    Decode { op: String, detail: String },
}

fn nl_err(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> HostGwError {
    let op = op.into();
    move |source| HostGwError::Netlink { op, source }
}

/// One route this controller owns: `dst via gateway`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: IpAddr,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} via {}", self.dst, self.gateway)
    }
}

/// What a sync changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Added, or changed (another gateway): written with replace semantics.
    pub replace: Vec<Route>,
    /// Owned routes whose destination no node claims any more.
    pub delete: Vec<Route>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.replace.is_empty() && self.delete.is_empty()
    }
}

/// The pod CIDRs (`spec.podCIDRs`, else `spec.podCIDR`) of a node.
fn pod_cidrs(node: &Node) -> Vec<IpNet> {
    let spec = node.spec.as_ref();
    let mut raw: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if raw.is_empty() {
        raw.extend(spec.and_then(|s| s.pod_cidr.clone()));
    }
    raw.iter()
        .filter_map(|c| c.parse::<IpNet>().ok().map(|n| n.trunc()))
        .collect()
}

/// The node's InternalIPs.
fn internal_ips(node: &Node) -> Vec<IpAddr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// The routes wanted: for every node but `own`, each podCIDR via the node's first InternalIP of
/// the same family that is on one of `local_subnets` (and not an address of this host). A
/// podCIDR claimed by two nodes goes to the first by name.
pub fn desired_routes(
    nodes: &[Arc<Node>],
    own: &str,
    local_subnets: &[IpNet],
) -> BTreeMap<IpNet, IpAddr> {
    let mut nodes: Vec<&Arc<Node>> = nodes.iter().collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = BTreeMap::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(own) || node.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let ips = internal_ips(node);
        for cidr in pod_cidrs(node) {
            let gateway = ips.iter().find(|ip| {
                ip.is_ipv4() == cidr.addr().is_ipv4()
                    && local_subnets
                        .iter()
                        .any(|s| s.contains(*ip) && s.addr() != **ip)
            });
            if let Some(gw) = gateway {
                out.entry(cidr).or_insert(*gw);
            }
        }
    }
    out
}

/// Compares the wanted routes with the owned routes present.
pub fn plan(desired: &BTreeMap<IpNet, IpAddr>, present: &[Route]) -> Plan {
    let mut plan = Plan::default();
    let mut satisfied = std::collections::BTreeSet::new();
    for r in present {
        match desired.get(&r.dst) {
            Some(gw) if *gw == r.gateway && satisfied.insert(r.dst) => {}
            // Another gateway: the replace below overwrites it.
            Some(gw) if *gw != r.gateway => {}
            // Gone, or a duplicate of a satisfied one.
            _ => plan.delete.push(*r),
        }
    }
    for (dst, gw) in desired {
        if !satisfied.contains(dst) {
            plan.replace.push(Route {
                dst: *dst,
                gateway: *gw,
            });
        }
    }
    plan
}

/// The kernel side: this host's subnets and the owned routes, and changing them.
pub trait RouteTable: Send {
    /// The subnets of this host's addresses (address/prefix, e.g. 10.0.0.5/24).
    fn local_subnets(&mut self) -> Result<Vec<IpNet>, HostGwError>;
    /// The routes in the main table marked with [`ROUTE_PROTOCOL`].
    fn routes(&mut self) -> Result<Vec<Route>, HostGwError>;
    /// Adds the route, or replaces the one to the same destination.
    fn replace(&mut self, route: &Route) -> Result<(), HostGwError>;
    fn delete(&mut self, route: &Route) -> Result<(), HostGwError>;
}

/// One sync: reads the kernel, plans, applies. Returns the plan applied.
pub fn sync(
    table: &mut dyn RouteTable,
    nodes: &[Arc<Node>],
    own: &str,
) -> Result<Plan, HostGwError> {
    let subnets = table.local_subnets()?;
    let present = table.routes()?;
    let plan = plan(&desired_routes(nodes, own, &subnets), &present);
    // Deletes first: a destination moving between nodes is a replace, never both.
    for r in &plan.delete {
        tracing::info!(route = %r, "host-gw: deleting the route of a removed node");
        table.delete(r)?;
    }
    for r in &plan.replace {
        tracing::info!(route = %r, "host-gw: adding route");
        table.replace(r)?;
    }
    Ok(plan)
}

/// Runs the controller for node `own` until `stop`: watches Nodes, syncs on changes and every
/// [`RESYNC_PERIOD`]. The first sync waits for the Node list, so stale routes are only judged
/// against the full set of nodes.
pub async fn run(
    client: kube::Client,
    own: String,
    table: impl RouteTable + 'static,
    stop: impl Future<Output = ()>,
) -> Result<(), HostGwError> {
    let informers = machinery::informer::InformerFactory::new(client);
    let nodes = informers.informer::<Node>();
    let poke = Arc::new(tokio::sync::Notify::new());
    let (p1, p2, p3) = (poke.clone(), poke.clone(), poke.clone());
    nodes.add_handler(machinery::informer::HandlerFns {
        add: Some(Box::new(move |_: &Arc<Node>| p1.notify_one())),
        update: Some(Box::new(move |old: &Arc<Node>, new: &Arc<Node>| {
            if pod_cidrs(old) != pod_cidrs(new) || internal_ips(old) != internal_ips(new) {
                p2.notify_one()
            }
        })),
        delete: Some(Box::new(move |_: &Arc<Node>| p3.notify_one())),
    });
    informers.start();
    let table = Arc::new(std::sync::Mutex::new(table));
    let work = async {
        nodes.wait_synced().await;
        loop {
            let list = nodes.list();
            let (t, own) = (table.clone(), own.clone());
            let result = tokio::task::spawn_blocking(move || {
                let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
                sync(&mut *t, &list, &own)
            })
            .await;
            match result {
                Ok(Ok(plan)) if !plan.is_empty() => tracing::debug!(?plan, "host-gw: synced"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("host-gw: sync failed: {e}"),
                Err(e) => tracing::warn!("host-gw: sync panicked: {e}"),
            }
            let _ = tokio::time::timeout(RESYNC_PERIOD, poke.notified()).await;
            // Let a burst of Node events settle into one sync.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        _ = stop => Ok(()),
        r = work => r,
    }
}

/// [`run`] on this process's network namespace, for `capstan server` and `capstan agent`.
pub async fn run_here(
    client: kube::Client,
    own: String,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let table = NetlinkRouteTable::open()?;
    Ok(run(client, own, table, stop).await?)
}

/// [`RouteTable`] over an rtnetlink socket (`NETLINK_ROUTE`), bound to the network namespace of
/// the thread that opened it.
pub struct NetlinkRouteTable {
    socket: netlink_sys::Socket,
    seq: u32,
}

impl NetlinkRouteTable {
    pub fn open() -> Result<NetlinkRouteTable, HostGwError> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
            .map_err(nl_err("opening a NETLINK_ROUTE socket"))?;
        socket.bind_auto().map_err(nl_err("binding"))?;
        socket
            .connect(&netlink_sys::SocketAddr::new(0, 0))
            .map_err(nl_err("connecting"))?;
        Ok(NetlinkRouteTable { socket, seq: 0 })
    }

    /// Sends one request and collects the answers: the messages of a dump (until `NLMSG_DONE`),
    /// or nothing for an acknowledged change.
    fn request(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, HostGwError> {
        self.seq = self.seq.wrapping_add(1);
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut buf = vec![0; req.header.length as usize];
        req.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(nl_err(op))?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(nl_err(op))?;
            let mut offset = 0;
            while offset < data.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| HostGwError::Decode {
                        op: op.into(),
                        detail: e.to_string(),
                    })?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number == self.seq {
                    match msg.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out),
                        NetlinkPayload::Error(e) => {
                            return Err(HostGwError::Netlink {
                                op: op.into(),
                                source: e.to_io(),
                            })
                        }
                        NetlinkPayload::InnerMessage(m) => out.push(m),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
            }
            // A dump goes on until NLMSG_DONE, a change until its ACK or error.
        }
    }

    fn route_message(route: &Route) -> RouteMessage {
        let header = RouteHeader {
            address_family: if route.dst.addr().is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            },
            destination_prefix_length: route.dst.prefix_len(),
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::from(ROUTE_PROTOCOL),
            scope: RouteScope::Universe,
            kind: RouteType::Unicast,
            ..Default::default()
        };
        let mut m = RouteMessage::default();
        m.header = header;
        m.attributes = vec![
            RouteAttribute::Destination(RouteAddress::from(route.dst.addr())),
            RouteAttribute::Gateway(RouteAddress::from(route.gateway)),
        ];
        m
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl RouteTable for NetlinkRouteTable {
    fn local_subnets(&mut self) -> Result<Vec<IpNet>, HostGwError> {
        let answers = self.request(
            "listing addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            // IFA_LOCAL is the host's own address on point-to-point links; IFA_ADDRESS else.
            let ip = a
                .attributes
                .iter()
                .find_map(|x| match x {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                })
                .or_else(|| {
                    a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                });
            if let Some(net) = ip.and_then(|ip| IpNet::new(ip, a.header.prefix_len).ok()) {
                if !net.addr().is_loopback() {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    fn routes(&mut self) -> Result<Vec<Route>, HostGwError> {
        let answers = self.request(
            "listing routes",
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if u8::from(r.header.protocol) != ROUTE_PROTOCOL {
                continue;
            }
            let table = r
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(r.header.table as u32);
            if table != RouteHeader::RT_TABLE_MAIN as u32 {
                continue;
            }
            let mut dst = None;
            let mut gw = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(d) => dst = route_ip(d),
                    RouteAttribute::Gateway(g) => gw = route_ip(g),
                    _ => {}
                }
            }
            if let (Some(dst), Some(gateway)) = (dst, gw) {
                if let Ok(dst) = IpNet::new(dst, r.header.destination_prefix_length) {
                    out.push(Route { dst, gateway });
                }
            }
        }
        Ok(out)
    }

    fn replace(&mut self, route: &Route) -> Result<(), HostGwError> {
        self.request(
            &format!("adding route {route}"),
            RouteNetlinkMessage::NewRoute(Self::route_message(route)),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    fn delete(&mut self, route: &Route) -> Result<(), HostGwError> {
        match self.request(
            &format!("deleting route {route}"),
            RouteNetlinkMessage::DelRoute(Self::route_message(route)),
            NLM_F_REQUEST | NLM_F_ACK,
        ) {
            Ok(_) => Ok(()),
            // Gone already.
            Err(HostGwError::Netlink { source, .. })
                if source.raw_os_error() == Some(libc::ESRCH) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidrs: &[&str], ips: &[&str]) -> Arc<Node> {
        let mut n = Node {
            spec: Some(NodeSpec {
                pod_cidrs: Some(cidrs.iter().map(|c| c.to_string()).collect()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    ips.iter()
                        .map(|ip| NodeAddress {
                            type_: "InternalIP".into(),
                            address: ip.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        n.metadata.name = Some(name.into());
        Arc::new(n)
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn route(dst: &str, gw: &str) -> Route {
        Route {
            dst: net(dst),
            gateway: ip(gw),
        }
    }

    /// A table case: name, nodes, the routes expected.
    type DesiredCase<'a> = (&'a str, Vec<Arc<Node>>, Vec<(&'a str, &'a str)>);
    /// A table case: name, desired routes, routes present, the plan expected.
    type PlanCase<'a> = (&'a str, BTreeMap<IpNet, IpAddr>, Vec<Route>, Plan);

    #[test]
    fn desired_routes_table() {
        let local = vec![net("192.168.5.1/24"), net("fd00:5::1/64")];
        let cases: Vec<DesiredCase> = vec![
            (
                "own node skipped, other routed",
                vec![
                    node("me", &["10.42.0.0/24"], &["192.168.5.1"]),
                    node("b", &["10.42.1.0/24"], &["192.168.5.2"]),
                ],
                vec![("10.42.1.0/24", "192.168.5.2")],
            ),
            (
                "node on another subnet gets no route",
                vec![node("c", &["10.42.2.0/24"], &["172.16.0.9"])],
                vec![],
            ),
            (
                "node without podCIDR gets no route",
                vec![node("d", &[], &["192.168.5.4"])],
                vec![],
            ),
            (
                "dual stack: each family via its own address",
                vec![node(
                    "e",
                    &["10.42.3.0/24", "fd42:3::/64"],
                    &["192.168.5.5", "fd00:5::5"],
                )],
                vec![
                    ("10.42.3.0/24", "192.168.5.5"),
                    ("fd42:3::/64", "fd00:5::5"),
                ],
            ),
            (
                "first on-link address wins",
                vec![node("f", &["10.42.4.0/24"], &["172.16.0.9", "192.168.5.6"])],
                vec![("10.42.4.0/24", "192.168.5.6")],
            ),
            (
                "a node claiming this host's own address gets no route",
                vec![node("g", &["10.42.5.0/24"], &["192.168.5.1"])],
                vec![],
            ),
            (
                "a duplicated podCIDR goes to the first node by name",
                vec![
                    node("z", &["10.42.6.0/24"], &["192.168.5.9"]),
                    node("h", &["10.42.6.0/24"], &["192.168.5.8"]),
                ],
                vec![("10.42.6.0/24", "192.168.5.8")],
            ),
            (
                "a non-canonical CIDR is truncated",
                vec![node("i", &["10.42.7.1/24"], &["192.168.5.7"])],
                vec![("10.42.7.0/24", "192.168.5.7")],
            ),
        ];
        for (name, nodes, want) in cases {
            let want: BTreeMap<IpNet, IpAddr> = want.iter().map(|(d, g)| (net(d), ip(g))).collect();
            assert_eq!(desired_routes(&nodes, "me", &local), want, "{name}");
        }
    }

    #[test]
    fn plan_table() {
        let desired = |pairs: &[(&str, &str)]| -> BTreeMap<IpNet, IpAddr> {
            pairs.iter().map(|(d, g)| (net(d), ip(g))).collect()
        };
        let cases: Vec<PlanCase> = vec![
            (
                "nothing to do",
                desired(&[("10.42.1.0/24", "192.168.5.2")]),
                vec![route("10.42.1.0/24", "192.168.5.2")],
                Plan::default(),
            ),
            (
                "missing route added",
                desired(&[("10.42.1.0/24", "192.168.5.2")]),
                vec![],
                Plan {
                    replace: vec![route("10.42.1.0/24", "192.168.5.2")],
                    delete: vec![],
                },
            ),
            (
                "changed gateway replaced, not deleted",
                desired(&[("10.42.1.0/24", "192.168.5.3")]),
                vec![route("10.42.1.0/24", "192.168.5.2")],
                Plan {
                    replace: vec![route("10.42.1.0/24", "192.168.5.3")],
                    delete: vec![],
                },
            ),
            (
                "stale route of a removed node deleted",
                desired(&[]),
                vec![route("10.42.9.0/24", "192.168.5.9")],
                Plan {
                    replace: vec![],
                    delete: vec![route("10.42.9.0/24", "192.168.5.9")],
                },
            ),
            (
                "duplicate present route deleted once satisfied",
                desired(&[("10.42.1.0/24", "192.168.5.2")]),
                vec![
                    route("10.42.1.0/24", "192.168.5.2"),
                    route("10.42.1.0/24", "192.168.5.2"),
                ],
                Plan {
                    replace: vec![],
                    delete: vec![route("10.42.1.0/24", "192.168.5.2")],
                },
            ),
        ];
        for (name, desired, present, want) in cases {
            assert_eq!(plan(&desired, &present), want, "{name}");
        }
    }

    /// A recording fake of the kernel side.
    #[derive(Default)]
    struct FakeTable {
        subnets: Vec<IpNet>,
        routes: Vec<Route>,
        log: Vec<String>,
    }

    impl RouteTable for FakeTable {
        fn local_subnets(&mut self) -> Result<Vec<IpNet>, HostGwError> {
            Ok(self.subnets.clone())
        }
        fn routes(&mut self) -> Result<Vec<Route>, HostGwError> {
            Ok(self.routes.clone())
        }
        fn replace(&mut self, r: &Route) -> Result<(), HostGwError> {
            self.routes.retain(|x| x.dst != r.dst);
            self.routes.push(*r);
            self.log.push(format!("replace {r}"));
            Ok(())
        }
        fn delete(&mut self, r: &Route) -> Result<(), HostGwError> {
            self.routes.retain(|x| x != r);
            self.log.push(format!("delete {r}"));
            Ok(())
        }
    }

    #[test]
    fn sync_applies_deletes_then_replaces_and_converges() {
        let mut t = FakeTable {
            subnets: vec![net("192.168.5.1/24")],
            routes: vec![route("10.42.9.0/24", "192.168.5.9")],
            ..Default::default()
        };
        let nodes = vec![node("b", &["10.42.1.0/24"], &["192.168.5.2"])];
        sync(&mut t, &nodes, "me").unwrap();
        assert_eq!(
            t.log,
            vec![
                "delete 10.42.9.0/24 via 192.168.5.9",
                "replace 10.42.1.0/24 via 192.168.5.2"
            ]
        );
        assert!(sync(&mut t, &nodes, "me").unwrap().is_empty());
    }
}
