//! The client-go and apimachinery pieces that Capstan's components share, so that the kubelet,
//! the proxy, the scheduler and the controllers do not each grow their own:
//!
//! - `bootstraptoken`: bootstrap tokens as `k8s.io/cluster-bootstrap` has them (the Secret's
//!   keys, validity for signing, the detached JWS of `cluster-info`), shared by the bootstrap
//!   signer and the join discovery.
//! - `client`: the API client (kube-rs) from a kubeconfig or in-cluster, with a per-component
//!   user agent.
//! - `informer`: shared informers (list + watch into a local store, with add/update/delete
//!   handlers) and the per-process informer factory.
//! - `workqueue`: the rate-limited, de-duplicating work queue controllers sync keys from.
//! - `leaderelection`: leader election through a Lease, for replicated control-plane components.
//! - `metrics`: Prometheus counters, gauges, histograms and families in the text format.
//! - `events`: the event recorder (core/v1 Events, aggregated, written in the background).
//! - `duration`: Go's duration text form (`1m30s`), for configuration files and flags.
//! - `quantity`: resource quantities (`100m`, `1.5Gi`) as exact numbers.
//! - `persistentvolume`: claim/volume matching and the binding annotations, shared by the
//!   PersistentVolume binder and the scheduler's VolumeBinding.

pub mod bootstraptoken;
pub mod client;
pub mod duration;
pub mod events;
pub mod informer;
pub mod leaderelection;
pub mod metrics;
pub mod persistentvolume;
pub mod quantity;
pub mod workqueue;
