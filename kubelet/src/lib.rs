//! Node agent (kubelet): being built per the kubelet issue.
//!
//! - `runtime`: the kubelet's view of a CRI runtime (built-in in-process, or remote over gRPC);
//! - `plan`: upstream's computePodActions as a pure function, and the CRI configs for a pod;
//! - `pod_status`: upstream's generateAPIPodStatus as pure functions;
//! - `probe`: liveness, readiness and startup probe workers;
//! - `backoff`: the container restart back-off (CrashLoopBackOff) with an injectable clock;
//! - `qos`: QoS classes, the pod cgroup hierarchy and the CPU shares / quota conversions;
//! - `quantity`: resource quantities (`100m`, `1.5Gi`) as exact numbers;
//! - `env`: container environment variables;
//! - `volume`: volumes, the atomic writer, per-pod DNS files.

pub mod backoff;
pub mod env;
pub mod plan;
pub mod pod_status;
pub mod probe;
pub mod qos;
pub mod quantity;
pub mod runtime;
pub mod volume;
