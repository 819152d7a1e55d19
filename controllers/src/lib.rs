//! Capstan's controller-manager: the controllers that make a cluster behave like Kubernetes,
//! with upstream kube-controller-manager's semantics, on the shared client machinery
//! ([`machinery`]: informers, the work queue, leader election, events).
//!
//! - `options`: the flags (upstream's names and defaults).
//! - `controller_manager`: what `capstan controller-manager` runs — leader election, then every
//!   enabled controller from [`controllers`].
//! - `history`: ControllerRevisions, the template history of DaemonSets and StatefulSets.
//! - `expectations`: creations and deletions a controller waits to see in its informer, so a slow
//!   watch never makes it act twice.
//! - One module per controller, named as upstream names it in `--controllers`.

pub mod bootstrapsigner;
pub mod certificates;
pub mod controller_manager;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod expectations;
pub mod garbagecollector;
pub mod history;
pub mod job;
pub mod localpath;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod options;
pub mod persistentvolume;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod serviceaccount;
pub mod statefulset;
pub mod ttlafterfinished;

use std::sync::Arc;

use futures::future::BoxFuture;
use machinery::events::EventRecorder;
use machinery::informer::InformerFactory;

pub use options::Options;

/// What every controller is started with.
#[derive(Clone)]
pub struct ControllerContext {
    pub client: kube::Client,
    /// The process's shared informers (one watch per resource type for all controllers).
    pub informers: InformerFactory,
    pub options: Arc<Options>,
}

impl ControllerContext {
    /// An event recorder for `component` (upstream's per-controller event source, e.g.
    /// `deployment-controller`).
    pub fn recorder(&self, component: &str) -> EventRecorder {
        EventRecorder::start(self.client.clone(), component, "")
    }
}

/// A controller's entry point: sets up its informers and workers, and runs until the process ends.
pub type StartFn = fn(ControllerContext) -> BoxFuture<'static, anyhow::Result<()>>;

/// One controller as `--controllers` names it.
pub struct Controller {
    pub name: &'static str,
    pub enabled_by_default: bool,
    pub start: StartFn,
}

/// Every controller this controller-manager has, with upstream's names.
pub fn controllers() -> Vec<Controller> {
    fn c(name: &'static str, start: StartFn) -> Controller {
        Controller {
            name,
            enabled_by_default: true,
            start,
        }
    }
    vec![
        c("replicaset", |ctx| {
            Box::pin(replicaset::start_replicaset(ctx))
        }),
        c("replicationcontroller", |ctx| {
            Box::pin(replicaset::start_replication_controller(ctx))
        }),
        c("deployment", |ctx| Box::pin(deployment::start(ctx))),
        c("garbagecollector", |ctx| {
            Box::pin(garbagecollector::start(ctx))
        }),
        c("endpoint", |ctx| Box::pin(endpoints::start(ctx))),
        c("endpointslice", |ctx| Box::pin(endpointslice::start(ctx))),
        c("namespace", |ctx| Box::pin(namespace::start(ctx))),
        c("serviceaccount", |ctx| Box::pin(serviceaccount::start(ctx))),
        c("root-ca-cert-publisher", |ctx| {
            Box::pin(serviceaccount::start_root_ca_publisher(ctx))
        }),
        c("nodeipam", |ctx| Box::pin(nodeipam::start(ctx))),
        c("nodelifecycle", |ctx| Box::pin(nodelifecycle::start(ctx))),
        c("podgc", |ctx| Box::pin(podgc::start(ctx))),
        c("disruption", |ctx| Box::pin(disruption::start(ctx))),
        c("resourcequota", |ctx| Box::pin(resourcequota::start(ctx))),
        c("daemonset", |ctx| Box::pin(daemonset::start(ctx))),
        c("statefulset", |ctx| Box::pin(statefulset::start(ctx))),
        c("persistentvolume-binder", |ctx| {
            Box::pin(persistentvolume::start(ctx))
        }),
        c("local-path-provisioner", |ctx| {
            Box::pin(localpath::start(ctx))
        }),
        c("job", |ctx| Box::pin(job::start(ctx))),
        c("cronjob", |ctx| Box::pin(cronjob::start(ctx))),
        c("ttl-after-finished", |ctx| {
            Box::pin(ttlafterfinished::start(ctx))
        }),
        c("csrsigning", |ctx| {
            Box::pin(certificates::signer::start(ctx))
        }),
        c("csrapproving", |ctx| {
            Box::pin(certificates::approver::start(ctx))
        }),
        c("csrcleaner", |ctx| {
            Box::pin(certificates::cleaner::start(ctx))
        }),
        // Off by default as upstream's; kubeadm (and `capstan server`) turn it on.
        Controller {
            name: "bootstrapsigner",
            enabled_by_default: false,
            start: |ctx| Box::pin(bootstrapsigner::start(ctx)),
        },
    ]
}
