//! Node agent (kubelet): being built per the kubelet issue. So far the self-contained pod
//! machinery: restart back-off, QoS and pod cgroups, container environment and volumes.

pub mod backoff;
pub mod env;
pub mod qos;
pub mod volume;
