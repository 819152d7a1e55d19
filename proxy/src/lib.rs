//! Capstan's service proxy (kube-proxy). The backend-neutral half watches Services and
//! EndpointSlices ([`server`]), records changes in the change trackers
//! ([`service_change_tracker`], [`endpoints_change_tracker`]) and applies them through a
//! [`bounded_frequency_runner`] to a [`proxier::Proxier`] backend; [`iptables`] is the first
//! backend. Health ([`proxier_health`], [`service_health`]), [`metrics`] and UDP
//! [`conntrack`] clean-up are shared by every backend.

pub mod bounded_frequency_runner;
pub mod config;
pub mod conntrack;
pub mod endpoint;
pub mod endpoints_change_tracker;
pub mod iptables;
pub mod metrics;
pub mod proxier;
pub mod proxier_health;
pub mod server;
pub mod service_change_tracker;
pub mod service_health;
pub mod service_port;

pub use config::{Config, ProxyArgs};
pub use server::run;
