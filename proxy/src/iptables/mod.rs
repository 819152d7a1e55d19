//! The iptables backend (upstream's `pkg/proxy/iptables`). Every sync renders the rules of the
//! Service ports that changed ([`rules`]), compares them chain by chain with what the last
//! successful sync installed, and hands the difference to one `iptables-restore --noflush`:
//! a chain whose rules differ is declared (which flushes it) and written again, a chain no longer
//! rendered is declared and deleted, and the shared chains (KUBE-SERVICES, KUBE-NODEPORTS, …)
//! are only rewritten when a changed port's lines in them differ. That is upstream's
//! MinimizeIPTablesRestore taken one step further: an endpoint change rewrites one KUBE-SVC chain
//! and its KUBE-SEP chains, not KUBE-SERVICES.
//!
//! A full sync (the first, every hour, after a failed restore, and when the canary chain shows
//! that someone flushed a table) writes every chain, re-inserts the jumps from the built-in
//! chains and the canaries that `iptables-save` does not show, and deletes leftover
//! KUBE-SVC/SVL/EXT/FW/SEP chains found there: one save per table and one restore.
//! See README.md beside this file for the chain layout.

pub mod chain_names;
pub mod kernel;
pub mod rules;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Instant;

use crate::proxier::{Proxier, ProxyError, SyncReport, SyncRequest};
use crate::service_port::{NamespacedName, Protocol, ServicePortName};

use chain_names::*;
use kernel::Iptables;
use rules::{RenderContext, ServicePortRules};

/// The tables the canary chain lives in.
pub const CANARY_TABLES: &[&str] = &["mangle", "nat", "filter"];

/// The shared chains: (table, chain).
const SHARED: &[(&str, &str)] = &[
    ("nat", KUBE_SERVICES),
    ("nat", KUBE_NODEPORTS),
    ("filter", KUBE_SERVICES),
    ("filter", KUBE_EXTERNAL_SERVICES),
    ("filter", KUBE_NODEPORTS),
    ("filter", KUBE_PROXY_FIREWALL),
];

fn contribution<'a>(r: &'a ServicePortRules, table: &str, chain: &str) -> &'a [String] {
    match (table, chain) {
        ("nat", KUBE_SERVICES) => &r.nat_services,
        ("nat", KUBE_NODEPORTS) => &r.nat_nodeports,
        ("filter", KUBE_SERVICES) => &r.filter_services,
        ("filter", KUBE_EXTERNAL_SERVICES) => &r.filter_external,
        ("filter", KUBE_NODEPORTS) => &r.filter_nodeports,
        ("filter", KUBE_PROXY_FIREWALL) => &r.filter_firewall,
        _ => &[],
    }
}

/// The restore input being built, per table.
#[derive(Default)]
struct Restore {
    nat_chains: String,
    nat_rules: String,
    filter_chains: String,
    filter_rules: String,
    /// Only ever the canary chain's declaration.
    mangle_chains: String,
    /// `-X` lines of the nat table: after every rule, so no rule still jumps to them.
    nat_deletes: String,
}

impl Restore {
    fn chain(&mut self, table: &str, name: &str) {
        let out = match table {
            "nat" => &mut self.nat_chains,
            "mangle" => &mut self.mangle_chains,
            _ => &mut self.filter_chains,
        };
        let _ = writeln!(out, ":{name} - [0:0]");
    }

    fn rule(&mut self, table: &str, line: &str) {
        let out = if table == "nat" {
            &mut self.nat_rules
        } else {
            &mut self.filter_rules
        };
        out.push_str(line);
        out.push('\n');
    }

    fn render(&self) -> String {
        let mut s = String::with_capacity(
            self.nat_chains.len()
                + self.nat_rules.len()
                + self.filter_chains.len()
                + self.filter_rules.len()
                + self.mangle_chains.len()
                + 64,
        );
        if !self.mangle_chains.is_empty() {
            s.push_str("*mangle\n");
            s.push_str(&self.mangle_chains);
            s.push_str("COMMIT\n");
        }
        // Tables with nothing to change are left out: legacy iptables-restore rewrites every
        // table it is given as a whole.
        if !self.filter_chains.is_empty() {
            s.push_str("*filter\n");
            s.push_str(&self.filter_chains);
            s.push_str(&self.filter_rules);
            s.push_str("COMMIT\n");
        }
        if !self.nat_chains.is_empty() {
            s.push_str("*nat\n");
            s.push_str(&self.nat_chains);
            s.push_str(&self.nat_rules);
            s.push_str(&self.nat_deletes);
            s.push_str("COMMIT\n");
        }
        s
    }
}

/// The iptables backend over a kernel seam.
pub struct IptablesProxier<I: Iptables> {
    ipt: I,
    ctx: RenderContext,
    /// What the last successful sync installed, per Service port.
    applied: BTreeMap<ServicePortName, ServicePortRules>,
    /// The shared chains' rules as installed.
    shared: HashMap<(&'static str, &'static str), String>,
    /// False until a full sync succeeded (and again after a failure).
    in_sync: bool,
}

impl<I: Iptables> IptablesProxier<I> {
    pub fn new(ipt: I, ctx: RenderContext) -> Self {
        IptablesProxier {
            ipt,
            ctx,
            applied: BTreeMap::new(),
            shared: HashMap::new(),
            in_sync: false,
        }
    }

    /// The kernel seam (tests inspect the fake through it).
    pub fn kernel(&mut self) -> &mut I {
        &mut self.ipt
    }

    /// The flavour of the binaries in use.
    pub fn flavour(&self) -> &'static str {
        self.ipt.flavour()
    }

    /// Adds to a full sync's restore the jumps from the built-in chains into ours and the canary
    /// chains that `saved` (this table's `iptables-save`) lacks. Upstream runs one `iptables -C`
    /// (and `-I`) per jump and one `-S`/`-N` per chain at every sync; reading the save that the
    /// leftover sweep needs anyway makes a full sync one save per table and one restore. The
    /// jumps are inserted (`-I`) in upstream's order, so the built-in chains end up as after
    /// upstream's prepends; a built-in chain is never declared, which would flush what other
    /// software keeps in it.
    fn ensure_base(out: &mut Restore, table: &str, saved: &str) {
        for (t, builtin, chain, extra, comment) in rules::jump_rules() {
            if t != table {
                continue;
            }
            let head = format!("-A {builtin} ");
            let tail = format!(" -j {chain}");
            let present = saved
                .lines()
                .any(|l| l.starts_with(&head) && l.ends_with(&tail) && l.contains(comment));
            if !present {
                let mut line = format!("-I {builtin}");
                for a in rules::jump_args(extra, comment, chain) {
                    if a.contains(' ') {
                        let _ = write!(line, " \"{a}\"");
                    } else {
                        let _ = write!(line, " {a}");
                    }
                }
                out.rule(table, &line);
            }
        }
        if !saved_chains(saved).any(|c| c == KUBE_PROXY_CANARY) {
            out.chain(table, KUBE_PROXY_CANARY);
        }
    }

    fn shared_rules(
        &self,
        table: &'static str,
        chain: &'static str,
        rendered: &BTreeMap<ServicePortName, ServicePortRules>,
    ) -> String {
        let mut s = String::new();
        for r in rendered.values() {
            for line in contribution(r, table, chain) {
                s.push_str(line);
                s.push('\n');
            }
        }
        if (table, chain) == ("nat", KUBE_SERVICES) {
            for line in rules::nodeports_jump(&self.ctx) {
                s.push_str(&line);
                s.push('\n');
            }
        }
        s
    }

    fn full_sync(&mut self, req: SyncRequest<'_>) -> Result<(String, SyncState), ProxyError> {
        let rendered = render_all(&self.ctx, req);
        let mut out = Restore::default();
        for c in rules::NAT_CHAINS {
            out.chain("nat", c);
        }
        for c in rules::FILTER_CHAINS {
            out.chain("filter", c);
        }
        for (table, chain, lines) in rules::static_rules(&self.ctx) {
            for l in lines {
                out.rule(table, &l);
            }
            let _ = chain;
        }
        let mut shared = HashMap::new();
        for (table, chain) in SHARED {
            let body = self.shared_rules(table, chain, &rendered);
            for l in body.lines() {
                out.rule(table, l);
            }
            shared.insert((*table, *chain), body);
        }
        let mut active = BTreeSet::new();
        for r in rendered.values() {
            for c in &r.nat_chains {
                out.chain("nat", &c.name);
                active.insert(c.name.as_str());
                for l in &c.rules {
                    out.rule("nat", l);
                }
            }
        }
        for table in CANARY_TABLES {
            let saved = self.ipt.save(table)?;
            Self::ensure_base(&mut out, table, &saved);
            if *table != "nat" {
                continue;
            }
            // Leftovers from earlier runs or deleted Services.
            for name in saved_chains(&saved) {
                if is_service_chain(name) && !active.contains(name) {
                    out.chain("nat", name);
                    out.nat_deletes.push_str(&format!("-X {name}\n"));
                }
            }
        }
        Ok((out.render(), SyncState { rendered, shared }))
    }

    fn partial_sync(&mut self, req: SyncRequest<'_>) -> (String, SyncState) {
        let mut rendered = std::mem::take(&mut self.applied);
        let mut out = Restore::default();
        let mut touched_shared: BTreeSet<(&'static str, &'static str)> = BTreeSet::new();
        for svc in req.changed {
            let old_ports: Vec<ServicePortName> = ports_of(&rendered, svc).cloned().collect();
            let new_ports: Vec<ServicePortName> =
                ports_of(&req.state.services, svc).cloned().collect();
            let mut old: BTreeMap<ServicePortName, ServicePortRules> = BTreeMap::new();
            for p in old_ports {
                if let Some(r) = rendered.remove(&p) {
                    old.insert(p, r);
                }
            }
            let mut new: BTreeMap<ServicePortName, ServicePortRules> = BTreeMap::new();
            for p in new_ports {
                let info = &req.state.services[&p];
                let eps = req
                    .state
                    .endpoints
                    .get(&p)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                new.insert(
                    p.clone(),
                    rules::render_service_port(&self.ctx, &p, info, eps),
                );
            }
            // Owned chains: write the ones that differ, delete the ones gone.
            let old_chains: HashMap<&str, &Vec<String>> = old
                .values()
                .flat_map(|r| r.nat_chains.iter().map(|c| (c.name.as_str(), &c.rules)))
                .collect();
            let mut new_names = BTreeSet::new();
            for c in new.values().flat_map(|r| r.nat_chains.iter()) {
                new_names.insert(c.name.as_str());
                if old_chains.get(c.name.as_str()) != Some(&&c.rules) {
                    out.chain("nat", &c.name);
                    for l in &c.rules {
                        out.rule("nat", l);
                    }
                }
            }
            let mut gone: Vec<&str> = old_chains
                .keys()
                .filter(|n| !new_names.contains(*n))
                .copied()
                .collect();
            gone.sort_unstable();
            for name in gone {
                out.chain("nat", name);
                // Deletions go last: the chains jumping to them are rewritten first.
                out.nat_deletes.push_str(&format!("-X {name}\n"));
            }
            for (table, chain) in SHARED {
                let a: Vec<&String> = old
                    .values()
                    .flat_map(|r| contribution(r, table, chain))
                    .collect();
                let b: Vec<&String> = new
                    .values()
                    .flat_map(|r| contribution(r, table, chain))
                    .collect();
                if a != b {
                    touched_shared.insert((table, chain));
                }
            }
            rendered.extend(new);
        }
        let mut shared = std::mem::take(&mut self.shared);
        for (table, chain) in touched_shared {
            let body = self.shared_rules(table, chain, &rendered);
            if shared.get(&(table, chain)) != Some(&body) {
                out.chain(table, chain);
                for l in body.lines() {
                    out.rule(table, l);
                }
                shared.insert((table, chain), body);
            }
        }
        (out.render(), SyncState { rendered, shared })
    }

    fn count_rules(&self) -> BTreeMap<&'static str, usize> {
        let mut nat = 0;
        let mut filter = 0;
        for ((table, _), body) in &self.shared {
            let n = body.lines().count();
            if *table == "nat" {
                nat += n;
            } else {
                filter += n;
            }
        }
        for r in self.applied.values() {
            nat += r.nat_chains.iter().map(|c| c.rules.len()).sum::<usize>();
        }
        for (table, _, lines) in rules::static_rules(&self.ctx) {
            if table == "nat" {
                nat += lines.len();
            } else {
                filter += lines.len();
            }
        }
        BTreeMap::from([("nat", nat), ("filter", filter)])
    }

    /// The Service ports whose rules say "no local endpoints": (internal, external) counts.
    pub fn no_local_endpoints(&self) -> (usize, usize) {
        self.applied.values().fold((0, 0), |(i, e), r| {
            (
                i + r.no_local_endpoints.0 as usize,
                e + r.no_local_endpoints.1 as usize,
            )
        })
    }
}

struct SyncState {
    rendered: BTreeMap<ServicePortName, ServicePortRules>,
    shared: HashMap<(&'static str, &'static str), String>,
}

/// The chains an `iptables-save` of one table declares.
fn saved_chains(saved: &str) -> impl Iterator<Item = &str> {
    saved.lines().filter_map(|l| {
        l.strip_prefix(':')
            .and_then(|l| l.split_whitespace().next())
    })
}

/// The ports of one Service in a map keyed by [`ServicePortName`] (its entries are contiguous).
fn ports_of<'a, V>(
    map: &'a BTreeMap<ServicePortName, V>,
    svc: &'a NamespacedName,
) -> impl Iterator<Item = &'a ServicePortName> + 'a {
    let start = ServicePortName {
        service: svc.clone(),
        port: String::new(),
        protocol: Protocol::Tcp,
    };
    map.range(start..)
        .map(|(k, _)| k)
        .take_while(move |k| &k.service == svc)
}

fn render_all(
    ctx: &RenderContext,
    req: SyncRequest<'_>,
) -> BTreeMap<ServicePortName, ServicePortRules> {
    req.state
        .services
        .iter()
        .map(|(spn, info)| {
            let eps = req
                .state
                .endpoints
                .get(spn)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            (spn.clone(), rules::render_service_port(ctx, spn, info, eps))
        })
        .collect()
}

impl<I: Iptables + Clone + 'static> Proxier for IptablesProxier<I> {
    fn mode(&self) -> &'static str {
        "iptables"
    }

    fn sync(&mut self, req: SyncRequest<'_>) -> Result<SyncReport, ProxyError> {
        let full = req.full || !self.in_sync;
        let (text, state) = if full {
            match self.full_sync(req) {
                Ok(x) => x,
                Err(e) => {
                    self.in_sync = false;
                    return Err(e);
                }
            }
        } else {
            self.partial_sync(req)
        };
        let mut kernel_time = std::time::Duration::ZERO;
        if !text.is_empty() {
            let started = Instant::now();
            let result = self.ipt.restore(&text);
            kernel_time = started.elapsed();
            if let Err(e) = result {
                // What is in the kernel is unknown now: start over with a full sync.
                self.in_sync = false;
                self.applied.clear();
                self.shared.clear();
                return Err(e);
            }
        }
        self.applied = state.rendered;
        self.shared = state.shared;
        self.in_sync = true;
        Ok(SyncReport {
            full,
            rules: self.count_rules(),
            bytes_written: text.len(),
            kernel_time,
            no_local_endpoints: self.no_local_endpoints(),
        })
    }

    fn kernel_state_probe(&self) -> Box<dyn FnMut() -> bool + Send> {
        let mut ipt = self.ipt.clone();
        Box::new(move || {
            CANARY_TABLES
                .iter()
                .any(|t| !ipt.chain_exists(t, KUBE_PROXY_CANARY))
        })
    }

    fn cleanup(&mut self) -> Result<(), ProxyError> {
        for (table, builtin, chain, extra, comment) in rules::jump_rules() {
            let args = rules::jump_args(extra, comment, chain);
            self.ipt.delete_rule(table, builtin, &args)?;
        }
        // Flush every chain first, then delete them all, in one transaction: chains jump to
        // each other, so deleting them one by one would fail.
        let mut out = Restore::default();
        for table in ["nat", "filter"] {
            let saved = self.ipt.save(table)?;
            for name in saved_chains(&saved) {
                let ours = is_service_chain(name)
                    || (table == "nat" && rules::NAT_CHAINS.contains(&name))
                    || (table == "filter" && rules::FILTER_CHAINS.contains(&name));
                if ours {
                    out.chain(table, name);
                    if table == "nat" {
                        out.nat_deletes.push_str(&format!("-X {name}\n"));
                    } else {
                        out.rule(table, &format!("-X {name}"));
                    }
                }
            }
        }
        let text = out.render();
        if !text.is_empty() {
            self.ipt.restore(&text)?;
        }
        for t in CANARY_TABLES {
            self.ipt.delete_chain(t, KUBE_PROXY_CANARY)?;
        }
        self.applied.clear();
        self.shared.clear();
        self.in_sync = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
