//! Node agent (kubelet): being built; see the kubelet issue.
//!
//! - `runtime`: the kubelet's view of a CRI runtime (built-in in-process, or remote over gRPC);
//! - `plan`: upstream's computePodActions as a pure function, and the CRI configs for a pod;
//! - `pod_status`: upstream's generateAPIPodStatus as pure functions;
//! - `probe`: liveness, readiness and startup probe workers.

pub mod plan;
pub mod pod_status;
pub mod probe;
pub mod runtime;
