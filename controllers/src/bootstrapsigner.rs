//! The bootstrap signer (upstream's `pkg/controller/bootstrap/bootstrapsigner.go`): keeps the
//! public ConfigMap `kube-public/cluster-info` signed for every bootstrap token that may sign, so a
//! joining node that knows a token can trust the `kubeconfig` it reads there (kubeadm's token
//! discovery).
//!
//! For each `bootstrap.kubernetes.io/token` Secret in kube-system that is valid for signing
//! (named `bootstrap-token-<id>`, `usage-bootstrap-signing: "true"`, not expired) the ConfigMap
//! holds `jws-kubeconfig-<id>`, the detached JWS of its `kubeconfig` with the token secret as key
//! ([`machinery::bootstraptoken`]); signatures of tokens that are gone, expired or no longer
//! allowed to sign are removed. Every Secret or ConfigMap event queues the one key; the sync
//! ([`resign`]) is a pure function of the ConfigMap's data and the tokens, written back with an
//! update only when something changed. Upstream leaves expiry to the token cleaner deleting the
//! Secret; here the sync also requeues itself at the next expiry, so an expired token's signature
//! goes away on time without one.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use machinery::bootstraptoken::{self as bt};
use machinery::informer::HandlerFns;
use machinery::workqueue::{run_workers, WorkQueue};

use crate::ControllerContext;

/// The queue's one key.
const KEY: &str = "kube-public/cluster-info";

/// The ConfigMap data with the signatures `tokens` (id → secret) call for, or `None` when the
/// data already has exactly those (upstream's `signConfigMap`). Without a `kubeconfig` there is
/// nothing to sign (`None`).
pub fn resign(
    data: &BTreeMap<String, String>,
    tokens: &BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    let content = data.get(bt::KUBECONFIG_KEY)?;
    let mut out: BTreeMap<String, String> = data
        .iter()
        .filter(|(k, _)| !k.starts_with(bt::JWS_SIGNATURE_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (id, secret) in tokens {
        out.insert(
            format!("{}{id}", bt::JWS_SIGNATURE_PREFIX),
            bt::compute_detached_signature(content, id, secret),
        );
    }
    (&out != data).then_some(out)
}

/// The tokens that may sign at `now` (id → secret; the first Secret of a duplicated id wins, as
/// upstream), and the earliest expiry among them.
pub fn signing_tokens(
    secrets: &[Arc<Secret>],
    now: Timestamp,
) -> (BTreeMap<String, String>, Option<Timestamp>) {
    let mut tokens = BTreeMap::new();
    let mut next = None::<Timestamp>;
    for s in secrets {
        if s.metadata.namespace.as_deref() != Some(bt::SECRET_NAMESPACE) {
            continue;
        }
        let Some((id, secret)) = bt::signing_token(s, now) else {
            continue;
        };
        if tokens.contains_key(&id) {
            tracing::debug!(token_id = %id, "duplicate bootstrap token, ignoring the second Secret");
            continue;
        }
        if let Some(t) = bt::expiration(s) {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        tokens.insert(id, secret);
    }
    (tokens, next)
}

/// Runs the bootstrap signer.
pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let queue: WorkQueue<&'static str> = WorkQueue::new("bootstrap_signer_queue");
    let secrets = ctx.informers.informer::<Secret>();
    let config_maps = ctx.informers.informer::<ConfigMap>();
    let poke_secret = {
        let q = queue.clone();
        move |s: &Arc<Secret>| {
            if s.type_.as_deref() == Some(bt::SECRET_TYPE)
                && s.metadata.namespace.as_deref() == Some(bt::SECRET_NAMESPACE)
            {
                q.add(KEY);
            }
        }
    };
    let (p1, p2, p3) = (poke_secret.clone(), poke_secret.clone(), poke_secret);
    secrets.add_handler(HandlerFns {
        add: Some(Box::new(move |s: &Arc<Secret>| p1(s))),
        update: Some(Box::new(move |_, s: &Arc<Secret>| p2(s))),
        delete: Some(Box::new(move |s: &Arc<Secret>| p3(s))),
    });
    let poke_cm = {
        let q = queue.clone();
        move |c: &Arc<ConfigMap>| {
            if c.metadata.namespace.as_deref() == Some(bt::CLUSTER_INFO_NAMESPACE)
                && c.metadata.name.as_deref() == Some(bt::CLUSTER_INFO_NAME)
            {
                q.add(KEY);
            }
        }
    };
    let (c1, c2) = (poke_cm.clone(), poke_cm);
    config_maps.add_handler(HandlerFns {
        add: Some(Box::new(move |c: &Arc<ConfigMap>| c1(c))),
        update: Some(Box::new(move |_, c: &Arc<ConfigMap>| c2(c))),
        delete: None,
    });
    ctx.informers.start();
    ctx.informers.wait_synced().await;
    queue.add(KEY);
    let client = ctx.client.clone();
    let q = queue.clone();
    run_workers(queue, 1, move |_key: &'static str| {
        let (secrets, config_maps, client, q) = (
            secrets.clone(),
            config_maps.clone(),
            client.clone(),
            q.clone(),
        );
        async move {
            let Some(cm) = config_maps.get(bt::CLUSTER_INFO_NAMESPACE, bt::CLUSTER_INFO_NAME)
            else {
                return Ok::<(), kube::Error>(());
            };
            let now = Timestamp::now();
            let (tokens, next_expiry) =
                signing_tokens(&secrets.list_namespace(bt::SECRET_NAMESPACE), now);
            if let Some(t) = next_expiry {
                let wait = t.duration_since(now).unsigned_abs();
                q.add_after(KEY, wait + std::time::Duration::from_millis(100));
            }
            let data = cm.data.clone().unwrap_or_default();
            let Some(signed) = resign(&data, &tokens) else {
                return Ok(());
            };
            let mut updated = (*cm).clone();
            updated.data = Some(signed);
            match Api::<ConfigMap>::namespaced(client, bt::CLUSTER_INFO_NAMESPACE)
                .replace(bt::CLUSTER_INFO_NAME, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {
                    tracing::info!(tokens = tokens.len(), "signed cluster-info");
                    Ok(())
                }
                // A newer ConfigMap or a deleted one comes back through the informer.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
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

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resign_adds_replaces_and_removes_signatures() {
        let kc = "apiVersion: v1\nkind: Config\n";
        let sig_a = bt::compute_detached_signature(kc, "aaaaaa", "0123456789abcdef");
        let sig_b = bt::compute_detached_signature(kc, "bbbbbb", "fedcba9876543210");
        let a = ("aaaaaa", "0123456789abcdef");
        let b = ("bbbbbb", "fedcba9876543210");
        type Case<'a> = (
            &'a str,
            BTreeMap<String, String>,
            BTreeMap<String, String>,
            Option<BTreeMap<String, String>>,
        );
        let cases: Vec<Case> = vec![
            (
                "no kubeconfig: nothing to sign",
                map(&[("other", "x")]),
                map(&[a]),
                None,
            ),
            (
                "a new token is signed",
                map(&[("kubeconfig", kc)]),
                map(&[a]),
                Some(map(&[
                    ("kubeconfig", kc),
                    ("jws-kubeconfig-aaaaaa", &sig_a),
                ])),
            ),
            (
                "signed already: no update",
                map(&[("kubeconfig", kc), ("jws-kubeconfig-aaaaaa", &sig_a)]),
                map(&[a]),
                None,
            ),
            (
                "a stale signature is replaced",
                map(&[("kubeconfig", kc), ("jws-kubeconfig-aaaaaa", "x..y")]),
                map(&[a]),
                Some(map(&[
                    ("kubeconfig", kc),
                    ("jws-kubeconfig-aaaaaa", &sig_a),
                ])),
            ),
            (
                "a gone token's signature is removed, others kept",
                map(&[
                    ("kubeconfig", kc),
                    ("jws-kubeconfig-aaaaaa", &sig_a),
                    ("jws-kubeconfig-bbbbbb", &sig_b),
                    ("keep", "me"),
                ]),
                map(&[b]),
                Some(map(&[
                    ("kubeconfig", kc),
                    ("jws-kubeconfig-bbbbbb", &sig_b),
                    ("keep", "me"),
                ])),
            ),
            (
                "no tokens: every signature goes",
                map(&[("kubeconfig", kc), ("jws-kubeconfig-aaaaaa", &sig_a)]),
                map(&[]),
                Some(map(&[("kubeconfig", kc)])),
            ),
        ];
        for (name, data, tokens, want) in cases {
            assert_eq!(resign(&data, &tokens), want, "{name}");
        }
    }

    #[test]
    fn signing_tokens_skip_other_namespaces_and_report_the_next_expiry() {
        use k8s_openapi::ByteString;
        let mk = |ns: &str, id: &str, exp: Option<&str>| {
            let mut data: BTreeMap<String, ByteString> = [
                ("token-id", id),
                ("token-secret", "0123456789abcdef"),
                ("usage-bootstrap-signing", "true"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect();
            if let Some(e) = exp {
                data.insert("expiration".into(), ByteString(e.as_bytes().to_vec()));
            }
            let mut s = Secret {
                type_: Some(bt::SECRET_TYPE.into()),
                data: Some(data),
                ..Default::default()
            };
            s.metadata.name = Some(format!("bootstrap-token-{id}"));
            s.metadata.namespace = Some(ns.into());
            Arc::new(s)
        };
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let secrets = vec![
            mk("kube-system", "aaaaaa", Some("2026-01-03T00:00:00Z")),
            mk("kube-system", "bbbbbb", Some("2026-01-02T00:00:00Z")),
            mk("kube-system", "cccccc", None),
            mk("kube-system", "dddddd", Some("2025-01-01T00:00:00Z")),
            mk("default", "eeeeee", None),
        ];
        let (tokens, next) = signing_tokens(&secrets, now);
        assert_eq!(
            tokens.keys().cloned().collect::<Vec<_>>(),
            vec!["aaaaaa", "bbbbbb", "cccccc"]
        );
        assert_eq!(next, Some("2026-01-02T00:00:00Z".parse().unwrap()));
    }
}
