//! What `capstan controller-manager` runs (upstream `cmd/kube-controller-manager/app`): the API
//! client, the /healthz and /metrics server, leader election through a Lease, then every enabled
//! controller on one shared [`InformerFactory`].
//!
//! Controllers register their informer handlers first; the informers start afterwards, so no
//! controller misses the initial list. When leader election is on and the lease is lost, the
//! process ends with an error (upstream exits with `klog.Fatalf("leaderelection lost")`), so a
//! supervisor restarts it as a fresh candidate; so does a panic in any controller. The health and
//! metrics server speaks plain HTTP (upstream serves HTTPS on 10257 with delegated
//! authentication).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use machinery::informer::InformerFactory;
use machinery::leaderelection::{default_identity, LeaderElectionConfig, LeaderElector};

use crate::{controllers, ControllerContext, Options};

/// Runs the controller-manager until it fails or loses its lease.
pub async fn run(options: Options) -> anyhow::Result<()> {
    // A panicking controller ends the process, as a Go panic ends upstream's: a worker that died
    // would otherwise leave its key marked as processing and its controller silently stuck.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(2);
    }));
    let client = machinery::client::build_client(
        options.kubeconfig.as_deref(),
        &machinery::client::user_agent("controller-manager"),
    )
    .await?;
    let leading = Arc::new(AtomicBool::new(!options.leader_elect));
    let listener = tokio::net::TcpListener::bind(&options.bind_address)
        .await
        .with_context(|| format!("binding --bind-address {}", options.bind_address))?;
    tracing::info!(
        "controller-manager serving /healthz and /metrics on http://{}",
        listener.local_addr()?
    );
    tokio::spawn(serve_health(
        listener,
        leading.clone(),
        options.leader_elect_resource_name.clone(),
    ));
    let options = Arc::new(options);
    if !options.leader_elect {
        return run_controllers(client, options).await;
    }
    let mut config = LeaderElectionConfig::new(
        &options.leader_elect_resource_namespace,
        &options.leader_elect_resource_name,
        &default_identity(),
    );
    config.lease_duration = options.leader_elect_lease_duration;
    config.renew_deadline = options.leader_elect_renew_deadline;
    config.retry_period = options.leader_elect_retry_period;
    let elector = LeaderElector::new(client.clone(), config);
    let work = async {
        leading.store(true, Ordering::SeqCst);
        run_controllers(client, options.clone()).await
    };
    match elector.run(work).await {
        Ok(r) => r,
        Err(e) => {
            leading.store(false, Ordering::SeqCst);
            anyhow::bail!("leaderelection lost: {e}")
        }
    }
}

/// Starts every enabled controller, then the informers, and waits until one controller fails.
pub async fn run_controllers(client: kube::Client, options: Arc<Options>) -> anyhow::Result<()> {
    let informers = InformerFactory::new(client.clone());
    let ctx = ControllerContext {
        client,
        informers: informers.clone(),
        options: options.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for c in controllers() {
        if !options.is_enabled(c.name, c.enabled_by_default) {
            tracing::info!("controller {:?} is disabled", c.name);
            continue;
        }
        tracing::info!("starting controller {:?}", c.name);
        let name = c.name;
        let fut = (c.start)(ctx.clone());
        tasks.spawn(async move { (name, fut.await) });
    }
    // The controllers create their informers and register handlers as they start; give every
    // start function a turn before the watches begin, then keep starting informers created later.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    informers.start();
    let late = informers.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            late.start();
        }
    });
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((name, Ok(()))) => tracing::info!("controller {name:?} ended"),
            Ok((name, Err(e))) => return Err(e.context(format!("controller {name:?}"))),
            Err(e) => return Err(anyhow::anyhow!("a controller task panicked: {e}")),
        }
    }
    Ok(())
}

/// Serves /healthz (and /readyz, /livez) and /metrics over plain HTTP.
async fn serve_health(listener: tokio::net::TcpListener, leading: Arc<AtomicBool>, lease: String) {
    use axum::routing::get;
    let metrics = move || {
        let leading = leading.clone();
        let lease = lease.clone();
        async move {
            format!(
                "# HELP leader_election_master_status Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master.\n\
                 # TYPE leader_election_master_status gauge\n\
                 leader_election_master_status{{name=\"{lease}\"}} {}\n",
                u8::from(leading.load(Ordering::SeqCst))
            )
        }
    };
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(metrics));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("health server: {e}");
    }
}
