//! The ServiceAccounts controller and the root CA publisher (upstream's
//! pkg/controller/serviceaccount and pkg/controller/certificates/rootcacertpublisher).
//!
//! - Every active namespace has a `default` ServiceAccount; one that is deleted is recreated.
//! - Every active namespace has the `kube-root-ca.crt` ConfigMap whose `ca.crt` is the cluster's
//!   CA bundle, so that pods can verify the API server. The bundle is `--root-ca-file`, or, when
//!   that is not given, the certificate authority of the kubeconfig the controller-manager runs
//!   with (`certificate-authority-data` or `certificate-authority` of its current cluster). With
//!   neither, the publisher has nothing to publish and says so once (upstream refuses to start
//!   without a root CA).
//!
//! Terminating namespaces are skipped, as upstream: creating in them is refused anyway.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use machinery::informer::{key_of, HandlerFns};
use machinery::workqueue::{run_workers, WorkQueue};

use crate::ControllerContext;

/// The name of the account every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap the root CA is published as, and its key.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
pub const ROOT_CA_KEY: &str = "ca.crt";
/// Upstream's annotation on the ConfigMap (kubernetes.io/description).
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

fn active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

/// Queues the namespace of every namespace event, and of every event on a namespaced object
/// named `watched` (its deletion or change must be repaired).
fn namespace_queue<K: machinery::informer::Object>(
    ctx: &ControllerContext,
    name: &'static str,
    watched: &'static str,
) -> WorkQueue<String> {
    let queue = WorkQueue::new(name);
    let q = queue.clone();
    ctx.informers
        .informer::<Namespace>()
        .add_handler(HandlerFns {
            add: Some(Box::new(move |ns: &Arc<Namespace>| {
                q.add(key_of(ns.as_ref()))
            })),
            update: Some(Box::new({
                let q = queue.clone();
                move |_, ns: &Arc<Namespace>| q.add(key_of(ns.as_ref()))
            })),
            delete: None,
        });
    let enqueue_ns = move |q: &WorkQueue<String>, o: &K| {
        if o.meta().name.as_deref() == Some(watched) {
            if let Some(ns) = &o.meta().namespace {
                q.add(ns.clone());
            }
        }
    };
    let (q1, q2, q3) = (queue.clone(), queue.clone(), queue.clone());
    let (e1, e2, e3) = (enqueue_ns, enqueue_ns, enqueue_ns);
    ctx.informers.informer::<K>().add_handler(HandlerFns {
        add: Some(Box::new(move |o: &Arc<K>| e1(&q1, o))),
        update: Some(Box::new(move |_, o: &Arc<K>| e2(&q2, o))),
        delete: Some(Box::new(move |o: &Arc<K>| e3(&q3, o))),
    });
    queue
}

/// Runs the ServiceAccounts controller.
pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let queue = namespace_queue::<ServiceAccount>(&ctx, "serviceaccount", DEFAULT_SERVICE_ACCOUNT);
    let namespaces = ctx.informers.informer::<Namespace>();
    let accounts = ctx.informers.informer::<ServiceAccount>();
    ctx.informers.start();
    ctx.informers.wait_synced().await;
    let client = ctx.client.clone();
    run_workers(queue, 5, move |ns: String| {
        let (namespaces, accounts, client) = (namespaces.clone(), accounts.clone(), client.clone());
        async move {
            let Some(namespace) = namespaces.get("", &ns) else {
                return Ok(());
            };
            if !active(&namespace) || accounts.get(&ns, DEFAULT_SERVICE_ACCOUNT).is_some() {
                return Ok(());
            }
            let mut sa = ServiceAccount::default();
            sa.metadata.name = Some(DEFAULT_SERVICE_ACCOUNT.into());
            match Api::<ServiceAccount>::namespaced(client, &ns)
                .create(&PostParams::default(), &sa)
                .await
            {
                Ok(_) => Ok(()),
                // Created meanwhile, or the namespace began terminating: nothing to do.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => Ok(()),
                Err(e) => Err(e),
            }
        }
    })
    .await;
    Ok(())
}

/// The CA bundle to publish: `--root-ca-file`, else the kubeconfig's certificate authority.
pub fn root_ca(options: &crate::Options) -> anyhow::Result<Option<String>> {
    if let Some(path) = &options.root_ca_file {
        let data = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading --root-ca-file {}: {e}", path.display()))?;
        return Ok(Some(data));
    }
    let Some(path) = &options.kubeconfig else {
        // In cluster: the service account's CA.
        return Ok(
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt").ok(),
        );
    };
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let context = kc.current_context.clone().unwrap_or_default();
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let Some(cluster) = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
    else {
        return Ok(None);
    };
    if let Some(data) = &cluster.certificate_authority_data {
        use base64::Engine;
        let pem = base64::engine::general_purpose::STANDARD.decode(data)?;
        return Ok(Some(String::from_utf8(pem)?));
    }
    if let Some(file) = &cluster.certificate_authority {
        let file = std::path::Path::new(file);
        let file = if file.is_relative() {
            path.parent()
                .unwrap_or(std::path::Path::new("."))
                .join(file)
        } else {
            file.to_path_buf()
        };
        return Ok(Some(std::fs::read_to_string(file)?));
    }
    Ok(None)
}

/// Runs the root CA publisher.
pub async fn start_root_ca_publisher(ctx: ControllerContext) -> anyhow::Result<()> {
    let Some(ca) = root_ca(&ctx.options)? else {
        tracing::warn!(
            "root-ca-cert-publisher: no --root-ca-file and no certificate authority in the client configuration; nothing to publish"
        );
        return std::future::pending().await;
    };
    let queue = namespace_queue::<ConfigMap>(&ctx, "root_ca_cert_publisher", ROOT_CA_CONFIGMAP);
    let namespaces = ctx.informers.informer::<Namespace>();
    let configmaps = ctx.informers.informer::<ConfigMap>();
    ctx.informers.start();
    ctx.informers.wait_synced().await;
    let client = ctx.client.clone();
    let ca = Arc::new(ca);
    run_workers(queue, 5, move |ns: String| {
        let (namespaces, configmaps, client, ca) = (
            namespaces.clone(),
            configmaps.clone(),
            client.clone(),
            ca.clone(),
        );
        async move {
            let Some(namespace) = namespaces.get("", &ns) else {
                return Ok(());
            };
            if !active(&namespace) {
                return Ok(());
            }
            let api = Api::<ConfigMap>::namespaced(client, &ns);
            let data = BTreeMap::from([(ROOT_CA_KEY.to_string(), ca.to_string())]);
            let annotations =
                BTreeMap::from([("kubernetes.io/description".to_string(), DESCRIPTION.into())]);
            let result = match configmaps.get(&ns, ROOT_CA_CONFIGMAP) {
                None => {
                    let mut cm = ConfigMap::default();
                    cm.metadata.name = Some(ROOT_CA_CONFIGMAP.into());
                    cm.metadata.annotations = Some(annotations);
                    cm.data = Some(data);
                    api.create(&PostParams::default(), &cm).await.map(|_| ())
                }
                Some(cm) => {
                    let has_description = cm
                        .metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key("kubernetes.io/description"));
                    if cm.data.as_ref() == Some(&data) && has_description {
                        return Ok(());
                    }
                    // Upstream overwrites the data (other keys go) and keeps the metadata.
                    let mut cm = (*cm).clone();
                    cm.data = Some(data);
                    cm.binary_data = None;
                    cm.metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .extend(annotations);
                    api.replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &cm)
                        .await
                        .map(|_| ())
                }
            };
            match result {
                Ok(()) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => Ok(()),
                Err(e) => Err(e),
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: crate::Options,
    }

    #[test]
    fn the_root_ca_comes_from_the_flag_else_the_kubeconfig() {
        use base64::Engine;
        let dir = std::env::temp_dir().join(format!("capstan-rootca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\nclusters:\n- name: k\n  cluster: {{server: 'https://127.0.0.1:6443', certificate-authority-data: {}}}\nusers:\n- name: u\n  user: {{}}\n",
                base64::engine::general_purpose::STANDARD.encode(pem)
            ),
        )
        .unwrap();
        let o = Cli::parse_from(["x", &format!("--kubeconfig={}", kubeconfig.display())]).options;
        assert_eq!(root_ca(&o).unwrap().as_deref(), Some(pem));
        let file = dir.join("ca.crt");
        std::fs::write(&file, "from the flag").unwrap();
        let o = Cli::parse_from([
            "x".to_string(),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-ca-file={}", file.display()),
        ])
        .options;
        assert_eq!(root_ca(&o).unwrap().as_deref(), Some("from the flag"));
        let o = Cli::parse_from(["x", "--root-ca-file=/nonexistent/ca.crt"]).options;
        assert!(root_ca(&o)
            .unwrap_err()
            .to_string()
            .contains("--root-ca-file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
