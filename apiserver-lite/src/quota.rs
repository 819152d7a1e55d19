//! ResourceQuota admission (upstream's plugin/pkg/admission/resourcequota with the core
//! evaluators of pkg/quota/v1/evaluator/core): a create in a namespace with ResourceQuotas is
//! charged to every quota that constrains what it uses — `pods`, `services`,
//! `services.loadbalancers`, `services.nodeports`, `configmaps`, `secrets`,
//! `persistentvolumeclaims`, `replicationcontrollers`, `resourcequotas`, `count/<resource>`,
//! `requests.cpu`/`cpu`, `requests.memory`/`memory`, `limits.cpu`, `limits.memory`,
//! `requests.ephemeral-storage`, `requests.storage`. When the sum would exceed `spec.hard` the
//! create is refused with upstream's 403 ("exceeded quota: q, requested: pods=1, used: pods=2,
//! limited: pods=2"); a quota whose status the controller has not filled yet refuses too
//! ("status unknown for quota"). Otherwise the usage is added to the quota's `status.used`
//! before the object is stored, through the store's optimistic concurrency (a concurrent
//! charge re-reads the quota and checks again), so two racing creates cannot both take the
//! last unit. Quota scopes are not implemented.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::cacher::Filter;
use crate::registry::{Registry, WriteOptions};
use crate::resources::{self, ResourceInfo};
use crate::status::{ApiError, ApiResult};
use machinery::quantity::{format_quantity, parse_quantity, NANO};

/// What creating `obj` (of `info`'s kind) adds to quota usage, in nano-units per resource.
pub fn usage(info: &ResourceInfo, obj: &Value) -> BTreeMap<String, i128> {
    let mut u = BTreeMap::new();
    let count_name = if info.group.is_empty() {
        format!("count/{}", info.plural)
    } else {
        format!("count/{}.{}", info.plural, info.group)
    };
    u.insert(count_name, NANO);
    match (info.group, info.plural) {
        ("", "pods") => {
            // count/pods counts every pod; the rest only pods that are not terminal.
            if matches!(
                obj["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            ) {
                return u;
            }
            u.insert("pods".into(), NANO);
            for (kind, prefix) in [("requests", "requests."), ("limits", "limits.")] {
                for res in ["cpu", "memory", "ephemeral-storage"] {
                    let v = pod_resource(obj, kind, res);
                    if v > 0 {
                        u.insert(format!("{prefix}{res}"), v);
                        if kind == "requests" {
                            u.insert(res.to_string(), v);
                        }
                    }
                }
            }
        }
        ("", "services") => {
            u.insert("services".into(), NANO);
            let t = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
            if t == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), NANO);
            }
            if t == "NodePort" || t == "LoadBalancer" {
                let n = obj["spec"]["ports"].as_array().map_or(0, Vec::len) as i128;
                u.insert("services.nodeports".into(), n * NANO);
            }
        }
        ("", "persistentvolumeclaims") => {
            u.insert("persistentvolumeclaims".into(), NANO);
            if let Some(s) = obj["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .and_then(parse_quantity)
            {
                u.insert("requests.storage".into(), s);
            }
        }
        ("", p @ ("configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas")) => {
            u.insert(p.to_string(), NANO);
        }
        _ => {}
    }
    u
}

/// The resources every container must state when a quota constrains them (upstream's pod
/// evaluator `validationSet`: its backward-compatible `Constraints`).
const MUST_SPECIFY: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// Upstream's pod evaluator `Constraints`: with cpu or memory in a quota, every container must
/// request (or limit) it. `Err("must specify limits.cpu for: a,b; …")`.
pub fn constraints(info: &ResourceInfo, obj: &Value, quota: &Value) -> Result<(), String> {
    if !info.group.is_empty() || info.plural != "pods" {
        return Ok(());
    }
    let Some(hard) = quota["spec"]["hard"].as_object() else {
        return Ok(());
    };
    let required: Vec<&str> = MUST_SPECIFY
        .iter()
        .copied()
        .filter(|r| hard.contains_key(*r))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for list in ["containers", "initContainers"] {
        for c in obj["spec"][list].as_array().into_iter().flatten() {
            let has = |kind: &str, res: &str| !c["resources"][kind][res].is_null();
            for r in &required {
                let present = match *r {
                    "cpu" | "requests.cpu" => has("requests", "cpu"),
                    "memory" | "requests.memory" => has("requests", "memory"),
                    "limits.cpu" => has("limits", "cpu"),
                    _ => has("limits", "memory"),
                };
                if !present {
                    let name = c["name"].as_str().unwrap_or_default().to_string();
                    let names = missing.entry(r).or_default();
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(r, mut names)| {
            names.sort();
            format!("{r} for: {}", names.join(","))
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

/// A pod's request or limit of `res`: the containers' sum, or the largest init container's
/// when that is more (upstream's `PodRequests` without overhead).
fn pod_resource(pod: &Value, kind: &str, res: &str) -> i128 {
    let of = |c: &Value| {
        c["resources"][kind][res]
            .as_str()
            .and_then(parse_quantity)
            .or_else(|| {
                c["resources"][kind][res]
                    .as_f64()
                    .map(|f| (f * NANO as f64) as i128)
            })
            .unwrap_or(0)
    };
    let list = |k: &str| pod["spec"][k].as_array().cloned().unwrap_or_default();
    let sum: i128 = list("containers").iter().map(of).sum();
    let init = list("initContainers").iter().map(of).max().unwrap_or(0);
    sum.max(init)
}

fn quantity_of(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => parse_quantity(s),
        Value::Number(n) => parse_quantity(&n.to_string()),
        _ => None,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// "a=1,b=2" as upstream's `prettyPrint` (sorted).
fn pretty(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks `delta` against one quota; the quota with the usage charged, or the refusal.
pub fn charge(quota: &Value, delta: &BTreeMap<String, i128>) -> Result<Option<Value>, String> {
    let name = quota["metadata"]["name"].as_str().unwrap_or_default();
    let hard = quota["spec"]["hard"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let relevant: Vec<&String> = delta.keys().filter(|k| hard.contains_key(*k)).collect();
    if relevant.is_empty() {
        return Ok(None);
    }
    let status_hard = quota["status"]["hard"].as_object();
    let unknown: Vec<&str> = relevant
        .iter()
        .filter(|k| status_hard.is_none_or(|h| !h.contains_key(k.as_str())))
        .map(|k| k.as_str())
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "status unknown for quota: {name}, resources: {}",
            unknown.join(",")
        ));
    }
    let used = quota["status"]["used"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut new_used = used.clone();
    let (mut req, mut was, mut lim) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for k in relevant {
        let cur = used.get(k).and_then(quantity_of).unwrap_or(0);
        let max = quantity_of(&hard[k]).unwrap_or(0);
        let next = cur + delta[k];
        if next > max {
            req.insert(k.clone(), format_quantity(k, delta[k]));
            was.insert(
                k.clone(),
                used.get(k).map(text).unwrap_or_else(|| "0".into()),
            );
            lim.insert(k.clone(), text(&hard[k]));
        }
        new_used.insert(k.clone(), json!(format_quantity(k, next)));
    }
    if !req.is_empty() {
        return Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            pretty(&req),
            pretty(&was),
            pretty(&lim)
        ));
    }
    let mut q = quota.clone();
    q["status"]["used"] = Value::Object(new_used);
    Ok(Some(q))
}

/// Admission of a create of `obj` in namespace `ns`: refuses what exceeds a quota, charges the
/// rest (not on a dry run).
pub async fn admit_create(
    reg: &Registry,
    info: &'static ResourceInfo,
    ns: &str,
    obj: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    if !info.namespaced || ns.is_empty() {
        return Ok(());
    }
    let Some(qinfo) = resources::find("", "v1", "resourcequotas") else {
        return Ok(());
    };
    let all: Filter = Arc::new(|_| true);
    let quotas = reg
        .cacher(qinfo)
        .list(&Registry::key(qinfo, ns, ""), &all, None, 0)
        .items;
    if quotas.is_empty() {
        return Ok(());
    }
    let delta = usage(info, obj);
    if delta.is_empty() {
        return Ok(());
    }
    let obj_name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let refuse = |why: String| ApiError::forbidden(info.group, info.plural, obj_name, &why);
    for q in &quotas {
        let name = q.value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Err(why) = constraints(info, obj, &q.value) {
            return Err(refuse(format!("failed quota: {name}: {why}")));
        }
        // Checked against the cache first (cheap refusal), then charged on the stored quota.
        match charge(&q.value, &delta) {
            Err(why) => return Err(refuse(why)),
            Ok(None) => continue,
            Ok(Some(_)) if dry_run => continue,
            Ok(Some(_)) => {}
        }
        let mut refused: Option<String> = None;
        let result = reg
            .update(
                qinfo,
                ns,
                &name,
                Some("status"),
                &WriteOptions::default(),
                |cur| match charge(cur, &delta) {
                    Ok(Some(new)) => Ok(new),
                    Ok(None) => Ok(cur.clone()),
                    Err(why) => {
                        refused = Some(why.clone());
                        Err(ApiError::forbidden(info.group, info.plural, obj_name, &why))
                    }
                },
            )
            .await;
        match result {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(refused.map(refuse).unwrap_or(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_usage_and_the_refusal_message_are_upstreams() {
        let pods = resources::find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m"}}}
        ], "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "500m"}}}]}});
        let u = usage(pods, &pod);
        assert_eq!(u["pods"], NANO);
        assert_eq!(u["count/pods"], NANO);
        assert_eq!(format_quantity("requests.cpu", u["requests.cpu"]), "500m");
        assert_eq!(format_quantity("memory", u["memory"]), "64Mi");
        assert_eq!(
            format_quantity("limits.memory", u["limits.memory"]),
            "128Mi"
        );
        let quota = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2", "cpu": "1"}},
            "status": {"hard": {"pods": "2", "cpu": "1"}, "used": {"pods": "1", "cpu": "400m"}}});
        let charged = charge(&quota, &u).unwrap().unwrap();
        assert_eq!(charged["status"]["used"]["pods"], "2");
        assert_eq!(charged["status"]["used"]["cpu"], "900m");
        assert_eq!(
            charge(&charged, &u).unwrap_err(),
            "exceeded quota: q, requested: cpu=500m,pods=1, used: cpu=900m,pods=2, limited: cpu=1,pods=2"
        );
        let fresh = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2"}}});
        assert_eq!(
            charge(&fresh, &u).unwrap_err(),
            "status unknown for quota: q, resources: pods"
        );
        // A quota on cpu needs every container to request it.
        let bare = json!({"spec": {"containers": [{"name": "b"}, {"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        let q =
            json!({"spec": {"hard": {"requests.cpu": "1", "limits.memory": "1Gi", "pods": "3"}}});
        assert_eq!(
            constraints(pods, &bare, &q).unwrap_err(),
            "must specify limits.memory for: a,b; requests.cpu for: b"
        );
        assert!(constraints(pods, &bare, &json!({"spec": {"hard": {"pods": "3"}}})).is_ok());
        // A terminal pod still counts for count/pods, not for pods.
        let done = usage(pods, &json!({"status": {"phase": "Succeeded"}}));
        assert_eq!(done.keys().collect::<Vec<_>>(), ["count/pods"]);
        // Nothing the quota constrains: no charge.
        let cm = resources::find("", "v1", "configmaps").unwrap();
        assert!(charge(&quota, &usage(cm, &json!({}))).unwrap().is_none());
    }
}
