//! A stand-in for kubelets in controller tests: watches every pod, binds new ones to a fake node
//! (through the binding subresource), marks them Running and Ready through the status API, and
//! confirms graceful deletions with a grace-0 delete, as a kubelet does once containers stopped.
//! Readiness can be switched off to hold rollouts mid-way; it runs on its own thread and stops on
//! `Drop`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use super::ApiServer;

pub struct FakeKubelet {
    ready: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl FakeKubelet {
    /// Starts marking pods of every namespace; `ready_after` is how long a new pod stays
    /// unready first.
    pub fn start(api: &ApiServer, node: &str, ready_after: Duration) -> FakeKubelet {
        let kubeconfig = api.kubeconfig();
        let node = node.to_string();
        let ready = Arc::new(AtomicBool::new(true));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let r = ready.clone();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fake kubelet runtime");
            rt.block_on(async move {
                let client = machinery::client::build_client(Some(&kubeconfig), "fake-kubelet")
                    .await
                    .expect("fake kubelet client");
                let _ = started_tx.send(());
                tokio::select! {
                    _ = run(client, node, r, ready_after) => {}
                    _ = stop_rx => {}
                }
            });
        });
        started_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("fake kubelet started");
        FakeKubelet {
            ready,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Whether new pods are marked ready (pods seen meanwhile are marked once switched back on).
    pub fn set_ready(&self, on: bool) {
        self.ready.store(on, Ordering::SeqCst);
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Pending = Arc<parking_lot::Mutex<HashMap<String, (String, String, Instant)>>>;

async fn run(client: kube::Client, node: String, ready: Arc<AtomicBool>, ready_after: Duration) {
    let pending: Pending = Default::default();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let ticker = {
        let (client, pending, limit, ready) = (
            client.clone(),
            pending.clone(),
            limit.clone(),
            ready.clone(),
        );
        let node = node.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if !ready.load(Ordering::SeqCst) {
                    continue;
                }
                let due: Vec<(String, String, String)> = {
                    let mut p = pending.lock();
                    let due: Vec<String> = p
                        .iter()
                        .filter(|(_, (_, _, at))| at.elapsed() >= ready_after)
                        .map(|(k, _)| k.clone())
                        .collect();
                    due.into_iter()
                        .filter_map(|uid| p.remove(&uid).map(|(ns, name, _)| (uid, ns, name)))
                        .collect()
                };
                for (_, ns, name) in due {
                    let permit = limit.clone().acquire_owned().await.expect("semaphore");
                    let (client, node) = (client.clone(), node.clone());
                    tokio::spawn(async move {
                        mark_ready(client, &ns, &name, &node).await;
                        drop(permit);
                    });
                }
            }
        }
    };
    let watch = async {
        let stream = watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default());
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let pod = match ev {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => p,
                Ok(watcher::Event::Delete(p)) => {
                    pending
                        .lock()
                        .remove(p.metadata.uid.as_deref().unwrap_or(""));
                    continue;
                }
                _ => continue,
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                pending.lock().remove(&uid);
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                tokio::spawn(async move {
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    };
                    let _ = api.delete(&name, &dp).await;
                });
                continue;
            }
            if !is_ready(&pod) {
                pending
                    .lock()
                    .entry(uid)
                    .or_insert((ns, name, Instant::now()));
            }
        }
    };
    tokio::join!(ticker, watch);
}

async fn mark_ready(client: kube::Client, ns: &str, name: &str, node: &str) {
    let api: Api<Pod> = Api::namespaced(client, ns);
    if !node.is_empty() {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        // Already bound (a retry) is fine.
        let _ = api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding,
            )
            .await;
    }
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    let patch = json!({"status": {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": "10.0.0.1",
        "startTime": now,
        "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
    }});
    let _ = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await;
}
