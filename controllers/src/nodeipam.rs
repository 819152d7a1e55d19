//! Node IPAM (upstream's pkg/controller/nodeipam with the range allocator,
//! ipam/range_allocator.go and ipam/cidrset): with `--allocate-node-cidrs`, every node gets
//! `spec.podCIDR` / `spec.podCIDRs`, one subnet of `--node-cidr-mask-size` (IPv4; /64 for IPv6)
//! per cluster CIDR in `--cluster-cidr` (comma-separated for dual stack).
//!
//! The allocator first takes note of the subnets nodes already have, hands out the next free
//! subnet (cycling on from the last one given, as upstream's `nextCandidate`), releases a node's
//! subnets when the node is deleted, and records a `CIDRNotAvailable` event on a node when the
//! range is exhausted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use machinery::informer::{key_of, HandlerFns};
use machinery::workqueue::{run_workers, WorkQueue};
use parking_lot::Mutex;

use crate::ControllerContext;

/// A CIDR: base address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR address: {s}"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("invalid CIDR address: {s}"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("invalid CIDR address: {s}"))?;
        if prefix > bits(&addr) {
            return Err(format!("invalid CIDR address: {s}"));
        }
        // The network address (host bits cleared).
        let v = to_u128(addr) & mask(bits(&addr), prefix);
        Ok(Cidr {
            addr: from_u128(v, addr.is_ipv6()),
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn bits(a: &IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(v.into())
    } else {
        IpAddr::V4((v as u32).into())
    }
}

fn mask(bits: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        let all: u128 = if bits == 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        all & !((1u128 << (bits - prefix)) - 1) & all
    }
}

/// Upstream's `cidrset.CidrSet`: the subnets of one cluster CIDR and which are taken.
#[derive(Debug)]
pub struct CidrSet {
    cluster: Cidr,
    sub_prefix: u8,
    used: Vec<bool>,
    next: usize,
}

impl CidrSet {
    pub fn new(cluster: Cidr, sub_prefix: u8) -> Result<CidrSet, String> {
        if sub_prefix < cluster.prefix {
            return Err(format!(
                "the node CIDR mask size /{sub_prefix} is smaller than the cluster CIDR {cluster}"
            ));
        }
        if sub_prefix > bits(&cluster.addr) {
            return Err(format!("invalid node CIDR mask size /{sub_prefix}"));
        }
        let diff = sub_prefix - cluster.prefix;
        // Upstream caps the difference at 16 bits (65536 subnets).
        if diff > 16 {
            return Err(format!(
                "the node CIDR mask size /{sub_prefix} is more than 16 bits longer than the cluster CIDR {cluster}"
            ));
        }
        Ok(CidrSet {
            cluster,
            sub_prefix,
            used: vec![false; 1 << diff],
            next: 0,
        })
    }

    fn subnet(&self, i: usize) -> Cidr {
        let b = bits(&self.cluster.addr);
        let base = to_u128(self.cluster.addr) + ((i as u128) << (b - self.sub_prefix));
        Cidr {
            addr: from_u128(base, self.cluster.addr.is_ipv6()),
            prefix: self.sub_prefix,
        }
    }

    /// The index of `c` in this set, if it is one of its subnets.
    fn index(&self, c: &Cidr) -> Option<usize> {
        if c.addr.is_ipv6() != self.cluster.addr.is_ipv6() || c.prefix != self.sub_prefix {
            return None;
        }
        let b = bits(&c.addr);
        let off = to_u128(c.addr).checked_sub(to_u128(self.cluster.addr))?;
        let i = (off >> (b - self.sub_prefix)) as usize;
        (i < self.used.len()).then_some(i)
    }

    /// The next free subnet, or `None` when all are taken (upstream's `ErrCIDRRangeNoCIDRsRemaining`).
    pub fn allocate_next(&mut self) -> Option<Cidr> {
        let n = self.used.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if !self.used[i] {
                self.used[i] = true;
                self.next = (i + 1) % n;
                return Some(self.subnet(i));
            }
        }
        None
    }

    /// Marks `c` taken (a node that already has it); false when it is not in this set.
    pub fn occupy(&mut self, c: &Cidr) -> bool {
        match self.index(c) {
            Some(i) => {
                self.used[i] = true;
                true
            }
            None => false,
        }
    }

    pub fn release(&mut self, c: &Cidr) {
        if let Some(i) = self.index(c) {
            self.used[i] = false;
        }
    }

    fn contains_family(&self, c: &Cidr) -> bool {
        c.addr.is_ipv6() == self.cluster.addr.is_ipv6()
    }
}

/// The range allocator: one CIDR set per cluster CIDR.
pub struct RangeAllocator {
    sets: Vec<CidrSet>,
}

impl RangeAllocator {
    pub fn new(cluster_cidrs: &str, mask_v4: u8) -> Result<RangeAllocator, String> {
        let mut sets = Vec::new();
        for c in cluster_cidrs.split(',').filter(|s| !s.trim().is_empty()) {
            let cidr = Cidr::parse(c)?;
            let mask = if cidr.addr.is_ipv6() { 64 } else { mask_v4 };
            sets.push(CidrSet::new(cidr, mask)?);
        }
        if sets.is_empty() {
            return Err("--cluster-cidr is required with --allocate-node-cidrs".into());
        }
        Ok(RangeAllocator { sets })
    }

    /// Takes note of a node's existing podCIDRs.
    pub fn occupy(&mut self, cidrs: &[String]) {
        for c in cidrs {
            if let Ok(c) = Cidr::parse(c) {
                for s in &mut self.sets {
                    if s.occupy(&c) {
                        break;
                    }
                }
            }
        }
    }

    /// One subnet per cluster CIDR, or none at all when one is exhausted.
    pub fn allocate(&mut self) -> Option<Vec<Cidr>> {
        let mut got: Vec<Cidr> = Vec::new();
        for i in 0..self.sets.len() {
            match self.sets[i].allocate_next() {
                Some(c) => got.push(c),
                None => {
                    for c in &got {
                        self.release_one(c);
                    }
                    return None;
                }
            }
        }
        Some(got)
    }

    fn release_one(&mut self, c: &Cidr) {
        if let Some(s) = self
            .sets
            .iter_mut()
            .find(|s| s.contains_family(c) && s.index(c).is_some())
        {
            s.release(c);
        }
    }

    pub fn release(&mut self, cidrs: &[String]) {
        for c in cidrs {
            if let Ok(c) = Cidr::parse(c) {
                self.release_one(&c);
            }
        }
    }
}

fn node_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match &spec.pod_cidrs {
        Some(c) if !c.is_empty() => c.clone(),
        _ => spec.pod_cidr.iter().cloned().collect(),
    }
}

/// Runs the node IPAM controller (only with `--allocate-node-cidrs`).
pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    if !ctx.options.allocate_node_cidrs {
        return std::future::pending().await;
    }
    let allocator = RangeAllocator::new(
        ctx.options.cluster_cidr.as_deref().unwrap_or_default(),
        ctx.options.node_cidr_mask_size,
    )
    .map_err(|e| anyhow::anyhow!("nodeipam: {e}"))?;
    let allocator = Arc::new(Mutex::new(allocator));
    let nodes = ctx.informers.informer::<Node>();
    ctx.informers.start();
    ctx.informers.wait_synced().await;
    // Existing allocations first, so that nobody gets a subnet already in use.
    for n in nodes.list() {
        allocator.lock().occupy(&node_cidrs(&n));
    }
    // Subnets of nodes given one by this controller (to release on delete).
    let queue: WorkQueue<String> = WorkQueue::new("nodeipam");
    let (q1, q2) = (queue.clone(), queue.clone());
    let a = allocator.clone();
    nodes.add_handler(HandlerFns {
        add: Some(Box::new(move |n: &Arc<Node>| {
            if node_cidrs(n).is_empty() {
                q1.add(key_of(n.as_ref()))
            }
        })),
        update: Some(Box::new(move |_, n: &Arc<Node>| {
            if node_cidrs(n).is_empty() {
                q2.add(key_of(n.as_ref()))
            }
        })),
        delete: Some(Box::new(move |n: &Arc<Node>| {
            a.lock().release(&node_cidrs(n))
        })),
    });
    let client = ctx.client.clone();
    let recorder = Arc::new(ctx.recorder("cidrAllocator"));
    let in_flight: Arc<Mutex<HashMap<String, Vec<String>>>> = Default::default();
    run_workers(queue, 1, move |name: String| {
        let (nodes, allocator, client, recorder, in_flight) = (
            nodes.clone(),
            allocator.clone(),
            client.clone(),
            recorder.clone(),
            in_flight.clone(),
        );
        async move {
            let Some(node) = nodes.get("", &name) else {
                return Ok(());
            };
            if !node_cidrs(&node).is_empty() {
                in_flight.lock().remove(&name);
                return Ok(());
            }
            // A subnet patched earlier that the informer has not shown yet is used again.
            let cidrs = match in_flight.lock().get(&name).cloned() {
                Some(c) => c,
                None => {
                    let Some(got) = allocator.lock().allocate() else {
                        recorder.normal(
                            node.as_ref(),
                            "CIDRNotAvailable",
                            format!("Node {name} status is now: CIDRNotAvailable"),
                        );
                        anyhow::bail!(
                            "failed to allocate cidr from cluster cidr: cidr range is exhausted"
                        );
                    };
                    got.iter().map(Cidr::to_string).collect()
                }
            };
            in_flight.lock().insert(name.clone(), cidrs.clone());
            let patch = serde_json::json!({"spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs}});
            match Api::<Node>::all(client)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    allocator.lock().release(&cidrs);
                    in_flight.lock().remove(&name);
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_handed_out_in_order_skipping_taken_ones_and_reused_after_release() {
        let mut a = RangeAllocator::new("10.244.0.0/22", 24).unwrap();
        a.occupy(&["10.244.1.0/24".into()]);
        let got: Vec<String> = (0..3)
            .map(|_| a.allocate().unwrap()[0].to_string())
            .collect();
        assert_eq!(got, ["10.244.0.0/24", "10.244.2.0/24", "10.244.3.0/24"]);
        assert!(a.allocate().is_none(), "exhausted");
        a.release(&["10.244.2.0/24".into()]);
        assert_eq!(a.allocate().unwrap()[0].to_string(), "10.244.2.0/24");
    }

    #[test]
    fn dual_stack_gets_one_of_each_and_bad_input_is_refused() {
        let mut a = RangeAllocator::new("10.0.0.0/16,fd00::/48", 24).unwrap();
        let got = a.allocate().unwrap();
        assert_eq!(got[0].to_string(), "10.0.0.0/24");
        assert_eq!(got[1].to_string(), "fd00::/64");
        assert!(RangeAllocator::new("10.0.0.0/24", 16).is_err());
        assert!(RangeAllocator::new("nonsense", 24).is_err());
        assert!(RangeAllocator::new("10.0.0.0/8", 30).is_err());
        assert_eq!(
            Cidr::parse("10.1.2.3/16").unwrap().to_string(),
            "10.1.0.0/16"
        );
    }
}
