//! The ServiceAccount admission plugin (upstream `plugin/pkg/admission/serviceaccount`): a
//! mutating plugin that runs on pod CREATE before PodSecurity and the admission webhooks, as
//! upstream orders its plugins.
//!
//! - A pod without `serviceAccountName` gets `default` (the deprecated `serviceAccount` field is
//!   kept equal to it, as upstream's v1 conversion does).
//! - The account must exist; the `default` account is looked up ten times 100–200 ms apart,
//!   because its controller creates it right after the namespace. A missing one is refused with
//!   upstream's 403 `pods "p" is forbidden: error looking up service account ns/sa: serviceaccount
//!   "sa" not found`.
//! - Unless `automountServiceAccountToken` is false on the pod, or (when the pod leaves it unset)
//!   on the account, the pod gets the projected volume `kube-api-access-<5 random chars>` (a bound
//!   token of 3607 s, `ca.crt` from the `kube-root-ca.crt` ConfigMap and the namespace from the
//!   downward API, mode 0644) mounted read-only at
//!   `/var/run/secrets/kubernetes.io/serviceaccount` in every init and app container that does
//!   not already mount something there. A pod that already has a `kube-api-access-*` volume
//!   keeps it.
//! - A pod without `imagePullSecrets` gets the account's.
//! - An account annotated `kubernetes.io/enforce-mountable-secrets: "true"` limits the pod's
//!   secret volumes, secret env references and pull secrets to the ones it lists.
//! - Mirror pods (annotation `kubernetes.io/config.mirror`) are never changed (the kubelet would
//!   delete a mirror pod whose spec differs from its static pod), but may not name a service
//!   account, reference secrets or project service account tokens.
//!
//! The pure steps ([`mutate`], [`validate_mirror`], [`limit_secret_references`]) take the pod as
//! JSON and are table-tested; [`admit`] adds the lookups.

use std::time::Duration;

use serde_json::{json, Value};

use crate::registry::Registry;
use crate::request::RequestInfo;
use crate::resources::{self, ResourceInfo};
use crate::status::{ApiError, ApiResult};

/// The account a pod without `serviceAccountName` runs as.
pub const DEFAULT_SERVICE_ACCOUNT_NAME: &str = "default";
/// Where the token volume is mounted in every container.
pub const DEFAULT_API_TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The generated volume's name prefix (`kube-api-access-xxxxx`).
pub const SERVICE_ACCOUNT_VOLUME_NAME: &str = "kube-api-access";
/// The annotation that marks a kubelet's mirror of a static pod.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The ServiceAccount annotation that turns on the mountable-secrets limit.
pub const ENFORCE_MOUNTABLE_SECRETS_ANNOTATION: &str = "kubernetes.io/enforce-mountable-secrets";
/// Upstream's `WarnOnlyBoundTokenExpirationSeconds`: one hour and seven seconds, so the
/// apiserver can tell automounted tokens from requested ones.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The ConfigMap the root-ca-cert-publisher keeps in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// `corev1.ProjectedVolumeSourceDefaultMode` (0644).
const PROJECTED_DEFAULT_MODE: i64 = 0o644;
/// Lookups of the `default` account before giving up (upstream's `numAttempts`).
const DEFAULT_ACCOUNT_ATTEMPTS: usize = 10;

/// Whether the plugin looks at this request: pod creations (not subresources).
pub fn applies(res: &ResourceInfo, info: &RequestInfo) -> bool {
    res.group.is_empty() && res.plural == "pods" && info.subresource.is_empty()
}

/// Runs the plugin on a pod about to be created in `info.namespace`: defaults and checks the
/// service account and mounts its token. Not a pod creation: nothing happens.
pub async fn admit(
    reg: &Registry,
    res: &'static ResourceInfo,
    info: &RequestInfo,
    pod: &mut Value,
) -> ApiResult<()> {
    if !applies(res, info) || !pod.is_object() {
        return Ok(());
    }
    // NamespaceLifecycle runs first upstream: a missing or terminating namespace is refused
    // as such, not as a missing service account.
    reg.namespace_lifecycle(res, &info.namespace).await?;
    let forbidden = |pod: &Value, why: &str| {
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        ApiError::forbidden("", "pods", name, why)
    };
    if is_mirror_pod(pod) {
        return validate_mirror(pod).map_err(|why| forbidden(pod, &why));
    }
    let sa_name = default_service_account_name(pod);
    let sa = match lookup_service_account(reg, &info.namespace, &sa_name).await? {
        Some(sa) => sa,
        None => {
            let why = format!(
                "error looking up service account {}/{sa_name}: serviceaccount {sa_name:?} not found",
                info.namespace
            );
            return Err(forbidden(pod, &why));
        }
    };
    mutate(pod, &sa, &crate::registry::random_suffix());
    if enforce_mountable_secrets(&sa) {
        limit_secret_references(&sa, pod).map_err(|why| forbidden(pod, &why))?;
    }
    Ok(())
}

/// Reads the account from the watch cache (which has caught up with every acknowledged write);
/// the `default` account is tried several times, as its controller may not have made it yet.
async fn lookup_service_account(reg: &Registry, ns: &str, name: &str) -> ApiResult<Option<Value>> {
    let info = resources::find("", "v1", "serviceaccounts").expect("serviceaccounts are served");
    let attempts = if name == DEFAULT_SERVICE_ACCOUNT_NAME {
        DEFAULT_ACCOUNT_ATTEMPTS
    } else {
        1
    };
    let retry = Duration::from_millis(100 + rand::random_range(0..100));
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(retry).await;
        }
        match reg.get(info, ns, name).await {
            Ok(o) => return Ok(Some(o.value.clone())),
            Err(e) if e.code == 404 => continue,
            Err(e) => {
                let why = format!(
                    "error looking up service account {ns}/{name}: {}",
                    e.message
                );
                return Err(ApiError::forbidden("", "pods", "", &why));
            }
        }
    }
    Ok(None)
}

/// Whether `pod` is a kubelet's mirror pod.
pub fn is_mirror_pod(pod: &Value) -> bool {
    pod["metadata"]["annotations"]
        .get(MIRROR_POD_ANNOTATION)
        .is_some()
}

/// Sets `serviceAccountName` to `default` when empty (taking the deprecated `serviceAccount`
/// when only that is set) and keeps `serviceAccount` equal to it; returns the name.
pub fn default_service_account_name(pod: &mut Value) -> String {
    let spec = &pod["spec"];
    let name = [&spec["serviceAccountName"], &spec["serviceAccount"]]
        .iter()
        .filter_map(|v| v.as_str())
        .find(|s| !s.is_empty())
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT_NAME)
        .to_string();
    if let Some(spec) = ensure_object(pod, "spec") {
        spec.insert("serviceAccountName".into(), json!(name));
        spec.insert("serviceAccount".into(), json!(name));
    }
    name
}

fn ensure_object<'a>(
    v: &'a mut Value,
    key: &str,
) -> Option<&'a mut serde_json::Map<String, Value>> {
    let o = v.as_object_mut()?;
    let e = o.entry(key).or_insert_with(|| json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e.as_object_mut()
}

/// Upstream's `shouldAutomount`: the pod's preference wins, then the account's, else true.
pub fn should_automount(sa: &Value, pod: &Value) -> bool {
    pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true)
}

/// The mutations of a non-mirror pod whose account `sa` exists: the token volume and mounts
/// (when automounted, named with `suffix` unless the pod has one already) and the account's
/// pull secrets when the pod names none.
pub fn mutate(pod: &mut Value, sa: &Value, suffix: &str) {
    if should_automount(sa, pod) {
        mount_service_account_token(pod, suffix);
    }
    let has_pull_secrets = pod["spec"]["imagePullSecrets"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    if !has_pull_secrets {
        if let Some(list) = sa["imagePullSecrets"].as_array().filter(|a| !a.is_empty()) {
            let refs: Vec<Value> = list
                .iter()
                .map(|r| json!({"name": r["name"].as_str().unwrap_or("")}))
                .collect();
            if let Some(spec) = ensure_object(pod, "spec") {
                spec.insert("imagePullSecrets".into(), Value::Array(refs));
            }
        }
    }
}

/// The projected volume upstream's `TokenVolumeSource` describes.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": PROJECTED_DEFAULT_MODE,
            "sources": [
                {"serviceAccountToken": {
                    "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                    "path": "token",
                }},
                {"configMap": {
                    "name": ROOT_CA_CONFIGMAP,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }},
                {"downwardAPI": {
                    "items": [{
                        "path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                    }],
                }},
            ],
        },
    })
}

fn mount_service_account_token(pod: &mut Value, suffix: &str) {
    let prefix = format!("{SERVICE_ACCOUNT_VOLUME_NAME}-");
    let existing = pod["spec"]["volumes"].as_array().and_then(|vols| {
        vols.iter()
            .filter_map(|v| v["name"].as_str())
            .find(|n| n.starts_with(&prefix))
            .map(str::to_string)
    });
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{prefix}{suffix}"));
    let mount = json!({
        "name": volume_name,
        "readOnly": true,
        "mountPath": DEFAULT_API_TOKEN_MOUNT_PATH,
    });
    let mut needs_volume = false;
    for list in ["initContainers", "containers"] {
        let containers = pod
            .get_mut("spec")
            .and_then(|s| s.get_mut(list))
            .and_then(Value::as_array_mut);
        let Some(containers) = containers else {
            continue;
        };
        for c in containers.iter_mut().filter(|c| c.is_object()) {
            let mounted = c["volumeMounts"].as_array().is_some_and(|ms| {
                ms.iter()
                    .any(|m| m["mountPath"] == DEFAULT_API_TOKEN_MOUNT_PATH)
            });
            if mounted {
                continue;
            }
            let mounts = c
                .as_object_mut()
                .expect("checked above")
                .entry("volumeMounts")
                .or_insert_with(|| json!([]));
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            mounts
                .as_array_mut()
                .expect("made an array")
                .push(mount.clone());
            needs_volume = true;
        }
    }
    if existing.is_none() && needs_volume {
        if let Some(spec) = ensure_object(pod, "spec") {
            let vols = spec.entry("volumes").or_insert_with(|| json!([]));
            if !vols.is_array() {
                *vols = json!([]);
            }
            vols.as_array_mut()
                .expect("made an array")
                .push(token_volume(&volume_name));
        }
    }
}

/// Every container list of a pod spec (upstream's `podutil.AllContainers`).
fn all_containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |l| spec[l].as_array().into_iter().flatten())
}

/// Whether the pod names any secret (upstream's `VisitPodSecretNames`: pull secrets, env and
/// envFrom references, and secret references of volumes).
fn references_secrets(pod: &Value) -> bool {
    let spec = &pod["spec"];
    if spec["imagePullSecrets"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        return true;
    }
    let env_refs = all_containers(spec).any(|c| {
        c["envFrom"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["secretRef"].is_object())
            || c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["valueFrom"]["secretKeyRef"].is_object())
    });
    if env_refs {
        return true;
    }
    spec["volumes"].as_array().into_iter().flatten().any(|v| {
        let Some(v) = v.as_object() else {
            return false;
        };
        v.iter().any(|(kind, src)| match kind.as_str() {
            "secret" | "azureFile" => true,
            "projected" => src["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["secret"].is_object()),
            "csi" => src["nodePublishSecretRef"].is_object(),
            _ => src["secretRef"].is_object(),
        })
    })
}

/// Upstream's checks of a mirror pod; the reason when refused.
pub fn validate_mirror(pod: &Value) -> Result<(), String> {
    let spec = &pod["spec"];
    if spec["serviceAccountName"]
        .as_str()
        .is_some_and(|s| !s.is_empty())
    {
        return Err("a mirror pod may not reference service accounts".into());
    }
    if references_secrets(pod) {
        return Err("a mirror pod may not reference secrets".into());
    }
    let projects_token = spec["volumes"].as_array().into_iter().flatten().any(|v| {
        v["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["serviceAccountToken"].is_object())
    });
    if projects_token {
        return Err("a mirror pod may not use ServiceAccountToken volume projections".into());
    }
    Ok(())
}

/// Whether the account asks for the mountable-secrets limit.
pub fn enforce_mountable_secrets(sa: &Value) -> bool {
    sa["metadata"]["annotations"][ENFORCE_MOUNTABLE_SECRETS_ANNOTATION]
        .as_str()
        .is_some_and(|v| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// Upstream's `limitSecretReferences`: secret volumes, secret env references and pull secrets
/// must be ones the account lists; the reason when not.
pub fn limit_secret_references(sa: &Value, pod: &Value) -> Result<(), String> {
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect()
    };
    let mountable = names(&sa["secrets"]);
    let sa_name = sa["metadata"]["name"].as_str().unwrap_or("");
    let spec = &pod["spec"];
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if let Some(secret) = v["secret"]["secretName"].as_str() {
            if !mountable.iter().any(|m| m == secret) {
                return Err(format!(
                    "volume with secret.secretName=\"{secret}\" is not allowed because service account {sa_name} does not reference that secret"
                ));
            }
        }
    }
    for (list, what) in [
        ("initContainers", "init container"),
        ("containers", "container"),
    ] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                let Some(secret) = e["valueFrom"]["secretKeyRef"]["name"].as_str() else {
                    continue;
                };
                if !mountable.iter().any(|m| m == secret) {
                    return Err(format!(
                        "{what} {} with envVar {} referencing secret.secretName=\"{secret}\" is not allowed because service account {sa_name} does not reference that secret",
                        c["name"].as_str().unwrap_or(""),
                        e["name"].as_str().unwrap_or(""),
                    ));
                }
            }
        }
    }
    let pull = names(&sa["imagePullSecrets"]);
    for (i, r) in spec["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = r["name"].as_str().unwrap_or("");
        if !pull.iter().any(|p| p == name) {
            return Err(format!(
                "imagePullSecrets[{i}].name=\"{name}\" is not allowed because service account {sa_name} does not reference that imagePullSecret"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
    }

    fn sa(extra: Value) -> Value {
        let mut sa = json!({"metadata": {"name": "default", "namespace": "ns"}});
        if let (Some(o), Some(e)) = (sa.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        sa
    }

    fn mount() -> Value {
        json!({"name": "kube-api-access-abcde", "readOnly": true,
               "mountPath": DEFAULT_API_TOKEN_MOUNT_PATH})
    }

    #[test]
    fn defaults_the_service_account_name() {
        let cases = [
            (json!({}), "default"),
            (json!({"serviceAccountName": ""}), "default"),
            (json!({"serviceAccountName": "builder"}), "builder"),
            (json!({"serviceAccount": "legacy"}), "legacy"),
            (
                json!({"serviceAccountName": "new", "serviceAccount": "old"}),
                "new",
            ),
        ];
        for (spec, want) in cases {
            let mut p = pod(spec.clone());
            assert_eq!(default_service_account_name(&mut p), want, "{spec}");
            assert_eq!(p["spec"]["serviceAccountName"], want, "{spec}");
            assert_eq!(p["spec"]["serviceAccount"], want, "{spec}");
        }
    }

    #[test]
    fn automount_preference() {
        let cases = [
            (json!({}), json!({}), true),
            (
                json!({"automountServiceAccountToken": false}),
                json!({}),
                false,
            ),
            (
                json!({}),
                json!({"automountServiceAccountToken": false}),
                false,
            ),
            (
                json!({"automountServiceAccountToken": true}),
                json!({"automountServiceAccountToken": false}),
                true,
            ),
            (
                json!({"automountServiceAccountToken": false}),
                json!({"automountServiceAccountToken": true}),
                false,
            ),
        ];
        for (spec, account, want) in cases {
            assert_eq!(
                should_automount(&sa(account.clone()), &pod(spec.clone())),
                want,
                "pod {spec} account {account}"
            );
        }
    }

    #[test]
    fn mounts_the_token_volume() {
        struct Case {
            name: &'static str,
            spec: Value,
            account: Value,
            want: Value,
        }
        let vol = token_volume("kube-api-access-abcde");
        let other = json!({"name": "x", "mountPath": DEFAULT_API_TOKEN_MOUNT_PATH});
        let cases = [
            Case {
                name: "every container and init container",
                spec: json!({"initContainers": [{"name": "i"}],
                             "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}]}),
                account: json!({}),
                want: json!({"initContainers": [{"name": "i", "volumeMounts": [mount()]}],
                             "containers": [{"name": "a", "volumeMounts": [mount()]},
                                            {"name": "b", "volumeMounts": [{"name": "d", "mountPath": "/d"}, mount()]}],
                             "volumes": [vol]}),
            },
            Case {
                name: "a container that mounts the path already is left alone",
                spec: json!({"containers": [{"name": "a", "volumeMounts": [other]}, {"name": "b"}]}),
                account: json!({}),
                want: json!({"containers": [{"name": "a", "volumeMounts": [other]},
                                            {"name": "b", "volumeMounts": [mount()]}],
                             "volumes": [vol]}),
            },
            Case {
                name: "no volume when no container needs it",
                spec: json!({"containers": [{"name": "a", "volumeMounts": [other]}]}),
                account: json!({}),
                want: json!({"containers": [{"name": "a", "volumeMounts": [other]}]}),
            },
            Case {
                name: "an existing kube-api-access volume is reused",
                spec: json!({"containers": [{"name": "a"}],
                             "volumes": [{"name": "kube-api-access-zzzzz", "emptyDir": {}}]}),
                account: json!({}),
                want: json!({"containers": [{"name": "a", "volumeMounts": [
                                 {"name": "kube-api-access-zzzzz", "readOnly": true,
                                  "mountPath": DEFAULT_API_TOKEN_MOUNT_PATH}]}],
                             "volumes": [{"name": "kube-api-access-zzzzz", "emptyDir": {}}]}),
            },
            Case {
                name: "pod opts out",
                spec: json!({"automountServiceAccountToken": false, "containers": [{"name": "a"}]}),
                account: json!({}),
                want: json!({"automountServiceAccountToken": false, "containers": [{"name": "a"}]}),
            },
            Case {
                name: "account opts out",
                spec: json!({"containers": [{"name": "a"}]}),
                account: json!({"automountServiceAccountToken": false}),
                want: json!({"containers": [{"name": "a"}]}),
            },
            Case {
                name: "the account's pull secrets when the pod has none",
                spec: json!({"automountServiceAccountToken": false, "containers": [{"name": "a"}]}),
                account: json!({"imagePullSecrets": [{"name": "reg"}]}),
                want: json!({"automountServiceAccountToken": false, "containers": [{"name": "a"}],
                             "imagePullSecrets": [{"name": "reg"}]}),
            },
            Case {
                name: "the pod's own pull secrets stay",
                spec: json!({"automountServiceAccountToken": false, "containers": [{"name": "a"}],
                             "imagePullSecrets": [{"name": "mine"}]}),
                account: json!({"imagePullSecrets": [{"name": "reg"}]}),
                want: json!({"automountServiceAccountToken": false, "containers": [{"name": "a"}],
                             "imagePullSecrets": [{"name": "mine"}]}),
            },
        ];
        for c in cases {
            let mut p = pod(c.spec);
            mutate(&mut p, &sa(c.account), "abcde");
            assert_eq!(p["spec"], c.want, "{}", c.name);
        }
    }

    #[test]
    fn token_volume_is_upstreams() {
        let v = token_volume("kube-api-access-abcde");
        assert_eq!(v["projected"]["defaultMode"], 420);
        let s = &v["projected"]["sources"];
        assert_eq!(s[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(s[0]["serviceAccountToken"]["path"], "token");
        assert_eq!(s[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            s[1]["configMap"]["items"][0],
            json!({"key": "ca.crt", "path": "ca.crt"})
        );
        assert_eq!(
            s[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        // The volume decodes as the real API type.
        let typed: k8s_openapi::api::core::v1::Volume = serde_json::from_value(v).unwrap();
        assert_eq!(typed.projected.unwrap().sources.unwrap().len(), 3);
    }

    #[test]
    fn mirror_pods() {
        let cases = [
            (json!({"containers": [{"name": "a"}]}), Ok(())),
            (
                json!({"serviceAccountName": "default"}),
                Err("a mirror pod may not reference service accounts"),
            ),
            (
                json!({"volumes": [{"name": "s", "secret": {"secretName": "x"}}]}),
                Err("a mirror pod may not reference secrets"),
            ),
            (
                json!({"imagePullSecrets": [{"name": "x"}]}),
                Err("a mirror pod may not reference secrets"),
            ),
            (
                json!({"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "x"}}]}]}),
                Err("a mirror pod may not reference secrets"),
            ),
            (
                json!({"initContainers": [{"name": "a", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "x", "key": "k"}}}]}]}),
                Err("a mirror pod may not reference secrets"),
            ),
            (
                json!({"volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": "x"}}]}}]}),
                Err("a mirror pod may not reference secrets"),
            ),
            (
                json!({"volumes": [{"name": "c", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "x"}}}]}),
                Err("a mirror pod may not reference secrets"),
            ),
            (
                json!({"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}),
                Err("a mirror pod may not use ServiceAccountToken volume projections"),
            ),
            (
                json!({"volumes": [{"name": "c", "configMap": {"name": "x"}}]}),
                Ok(()),
            ),
        ];
        for (spec, want) in cases {
            let p = pod(spec.clone());
            assert_eq!(validate_mirror(&p), want.map_err(str::to_string), "{spec}");
        }
        let mut p = pod(json!({}));
        assert!(!is_mirror_pod(&p));
        p["metadata"]["annotations"] = json!({MIRROR_POD_ANNOTATION: "abc"});
        assert!(is_mirror_pod(&p));
    }

    #[test]
    fn mountable_secrets() {
        let account = sa(json!({
            "metadata": {"name": "builder",
                         "annotations": {ENFORCE_MOUNTABLE_SECRETS_ANNOTATION: "true"}},
            "secrets": [{"name": "ok"}],
            "imagePullSecrets": [{"name": "pull"}],
        }));
        assert!(enforce_mountable_secrets(&account));
        assert!(!enforce_mountable_secrets(&sa(json!({}))));
        let cases = [
            (json!({"volumes": [{"name": "v", "secret": {"secretName": "ok"}}]}), Ok(())),
            (
                json!({"volumes": [{"name": "v", "secret": {"secretName": "no"}}]}),
                Err("volume with secret.secretName=\"no\" is not allowed because service account builder does not reference that secret"),
            ),
            (
                json!({"containers": [{"name": "c", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "no", "key": "k"}}}]}]}),
                Err("container c with envVar E referencing secret.secretName=\"no\" is not allowed because service account builder does not reference that secret"),
            ),
            (
                json!({"initContainers": [{"name": "i", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "no", "key": "k"}}}]}]}),
                Err("init container i with envVar E referencing secret.secretName=\"no\" is not allowed because service account builder does not reference that secret"),
            ),
            (json!({"imagePullSecrets": [{"name": "pull"}]}), Ok(())),
            (
                json!({"imagePullSecrets": [{"name": "pull"}, {"name": "other"}]}),
                Err("imagePullSecrets[1].name=\"other\" is not allowed because service account builder does not reference that imagePullSecret"),
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(
                limit_secret_references(&account, &pod(spec.clone())),
                want.map_err(str::to_string),
                "{spec}"
            );
        }
    }
}
