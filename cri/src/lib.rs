//! Capstan's built-in container runtime, shaped like CRI v1 and served over it.
//!
//! - Images: `reference` (name normalisation), `registry_config` (containerd's `hosts.toml`),
//!   `content` (digest-verified blobs), `unpack` (layers into overlayfs snapshot dirs), `image`
//!   (pull, store, snapshots, import, the CRI ImageService) and `image_config` (what an image
//!   tells a container).
//! - Sandboxes: `namespaces` (pinned network/IPC/UTS namespaces), `cni` (CNI plugin calls),
//!   `cgroups` (v1 and v2 cgroupfs: pod parents, stats, live updates).
//! - Containers: `spec` (the OCI runtime spec from a CRI ContainerConfig), `supervisor` (the per-pod
//!   single-threaded process that creates containers with libcontainer, reaps them and writes their
//!   logs; `capstan supervise`), `logs` (the CRI log format and rotation).
//! - `runtime`: the CRI RuntimeService, tying sandboxes and containers together, keeping their
//!   state across restarts; `server`: both services on a unix socket (`capstan cri`).

pub mod cgroups;
pub mod cni;
pub mod content;
pub mod image;
pub mod image_config;
pub mod logs;
pub mod namespaces;
pub mod reference;
pub mod registry_config;
pub mod runtime;
pub mod server;
pub mod spec;
pub mod supervisor;
pub mod unpack;

/// The CRI v1 protocol types and gRPC services (upstream's `api.proto`, compiled by `k8s-cri`).
pub use k8s_cri::v1 as pb;
