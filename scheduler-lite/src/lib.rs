//! scheduler-lite: kube-scheduler's scheduling framework, default plugins, queue and cache, and
//! `capstan scheduler`.
//!
//! - `config`: the KubeSchedulerConfiguration file and its defaulting (profiles, plugins).
//! - `framework`: extension-point traits, `CycleState`, `Status`, a profile's `Framework`.
//! - `parallelize`: Filter and Score over many nodes on the configured number of threads.
//! - `plugins`: the in-tree plugins and their registry.
//! - `nodeinfo`, `labels`: the scheduler's compiled view of pods and nodes.
//! - `queue`: activeQ / backoffQ / unschedulable pods, moved by cluster events.
//! - `cache`: nodes, placed and assumed pods, incremental snapshots.
//! - `scheduler`: the scheduling and binding cycles.
//! - `informers`: the watches feeding the cache and queue.
//! - `metrics`, `server`: `/metrics` and `/healthz`.

pub mod cache;
pub mod config;
pub mod framework;
pub mod informers;
pub mod labels;
pub mod metrics;
pub mod nodeinfo;
pub mod parallelize;
pub mod plugins;
pub mod queue;
pub mod scheduler;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use scheduler::Scheduler;

/// `capstan scheduler`'s options.
#[derive(Debug, Clone)]
pub struct Options {
    pub kubeconfig: Option<PathBuf>,
    pub config: Option<PathBuf>,
    /// Where `/healthz` and `/metrics` are served (plain HTTP).
    pub bind_address: SocketAddr,
}

/// Runs the scheduler until `shutdown` resolves: informers, the health and metrics server,
/// leader election (when enabled), then the scheduling loop while leading.
pub async fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = match &opts.config {
        Some(p) => config::Config::load(p)?,
        None => config::Config::default(),
    };
    let client = machinery::client::build_client(
        opts.kubeconfig.as_deref(),
        &machinery::client::user_agent("scheduler"),
    )
    .await?;
    let recorder = machinery::events::EventRecorder::start(client.clone(), "default-scheduler", "");
    let sched = Scheduler::new(
        config.clone(),
        &plugins::registry(),
        Some(client.clone()),
        recorder,
    )
    .map_err(anyhow::Error::msg)?;
    let factory = machinery::informer::InformerFactory::new(client.clone());
    informers::register(&sched, &factory);
    factory.start();
    let server = server::serve(opts.bind_address, sched.clone()).await?;
    tracing::info!(
        "scheduler serving /healthz and /metrics on http://{}",
        server
    );
    factory.wait_synced().await;
    tracing::info!(
        "scheduler caches synced: {} nodes",
        sched.cache.node_count()
    );
    let work = async {
        let sched = sched.clone();
        let loop_thread = sched.start();
        shutdown.await;
        sched.queue.close();
        let _ = tokio::task::spawn_blocking(move || loop_thread.join()).await;
    };
    if config.leader_elect {
        let le = machinery::leaderelection::LeaderElectionConfig {
            namespace: config.lease_namespace.clone(),
            name: config.lease_name.clone(),
            identity: machinery::leaderelection::default_identity(),
            lease_duration: config.lease_duration,
            renew_deadline: config.renew_deadline,
            retry_period: config.retry_period,
        };
        let elector = machinery::leaderelection::LeaderElector::new(client, le);
        elector.run(work).await?;
    } else {
        work.await;
    }
    Ok(())
}

/// The scheduler's registry plus replacements (benchmarks swap the binder).
pub fn registry_with(extra: Vec<(&'static str, framework::PluginInfo)>) -> framework::Registry {
    let mut r = plugins::registry();
    for (name, info) in extra {
        r.insert(name, info);
    }
    r
}

/// Keeps `Arc` in the public API for embedders (benchmarks, tests).
pub type SharedScheduler = Arc<Scheduler>;
