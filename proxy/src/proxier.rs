//! The seam between the backend-neutral half of the proxy (change trackers, runner, health and
//! metrics) and a dataplane backend. iptables is the first backend; ipvs, nftables and eBPF will
//! implement the same trait over the same [`ProxyState`], so nothing here knows about chains.
//!
//! A sync hands the backend the whole applied state plus the names of the Services that changed
//! since the last successful sync; a backend may reprogram only those (a partial sync) unless
//! `full` is set (the first sync, a periodic resync, after a failure, or when the backend said its
//! kernel state was lost).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::endpoints_change_tracker::EndpointsMap;
use crate::service_change_tracker::ServicePortMap;
use crate::service_port::NamespacedName;

/// The applied view every backend programs.
#[derive(Debug, Default, Clone)]
pub struct ProxyState {
    pub services: ServicePortMap,
    pub endpoints: EndpointsMap,
}

/// One sync's input besides the state.
#[derive(Debug, Clone, Copy)]
pub struct SyncRequest<'a> {
    pub state: &'a ProxyState,
    /// Services whose ports or endpoints changed since the last successful sync.
    pub changed: &'a BTreeSet<NamespacedName>,
    /// Reprogram everything and remove leftovers.
    pub full: bool,
}

/// What a sync did, for metrics and logs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SyncReport {
    /// Whether everything was rewritten.
    pub full: bool,
    /// Rules the backend now has, per table (or map).
    pub rules: BTreeMap<&'static str, usize>,
    /// Bytes handed to the kernel (0 when nothing changed).
    pub bytes_written: usize,
    /// Time spent in the kernel call itself.
    pub kernel_time: Duration,
    /// Service ports whose traffic policy is Local and that have no local endpoints:
    /// (internal, external), upstream's `sync_proxy_rules_no_local_endpoints_total`.
    pub no_local_endpoints: (usize, usize),
}

/// Errors of a backend.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("running {command}: {source}")]
    Exec {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

/// A dataplane backend.
pub trait Proxier: Send {
    /// The mode's name (`iptables`).
    fn mode(&self) -> &'static str;
    /// Programs the kernel for `req.state`.
    fn sync(&mut self, req: SyncRequest<'_>) -> Result<SyncReport, ProxyError>;
    /// A check, runnable on another thread, of whether the kernel state was lost behind our
    /// back (someone flushed the tables); the caller then forces a full sync. Run every sync
    /// period off the sync path, as upstream's canary monitor.
    fn kernel_state_probe(&self) -> Box<dyn FnMut() -> bool + Send>;
    /// Removes everything the backend ever installed.
    fn cleanup(&mut self) -> Result<(), ProxyError>;
}
