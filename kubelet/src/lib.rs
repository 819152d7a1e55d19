//! Capstan's kubelet: the node agent that registers this machine as a Node and runs the pods
//! bound to it.
//!
//! - `config`: KubeletConfiguration files and upstream's flags, resolved into the effective
//!   [`config::Config`] (paths of the root dir, the built-in runtime, logs, CNI, cgroups).
//! - `client`: the API client (kube-rs) built from a kubeconfig.
//! - `node`: Node registration, status and the node Lease.
//! - `agent`: [`Kubelet`], what `capstan kubelet` runs.

pub mod agent;
pub mod client;
pub mod config;
pub mod node;

pub use agent::Kubelet;
