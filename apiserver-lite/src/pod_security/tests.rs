use super::*;
use serde_json::json;

fn spec_with(container_sc: Value, pod: Value) -> Value {
    let mut spec =
        json!({"containers": [{"name": "c", "image": "busybox", "securityContext": container_sc}]});
    for (k, v) in pod.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

/// A pod that passes restricted.
fn compliant() -> Value {
    spec_with(
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
        json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}}),
    )
}

fn reasons(level: Level, spec: &Value) -> Vec<String> {
    evaluate(level, &json!({}), spec)
        .into_iter()
        .map(|v| format!("{} ({})", v.reason, v.detail))
        .collect()
}

#[test]
fn compliant_pod_passes_every_level() {
    for level in [Level::Privileged, Level::Baseline, Level::Restricted] {
        assert!(reasons(level, &compliant()).is_empty(), "{level:?}");
    }
}

#[test]
fn baseline_checks_table() {
    let base = compliant();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/hostNetwork", json!(true), "host namespaces (hostNetwork=true)"),
        ("/hostPID", json!(true), "host namespaces (hostPID=true)"),
        ("/containers/0/securityContext/privileged", json!(true),
         "privileged (container \"c\" must not set securityContext.privileged=true)"),
        ("/containers/0/securityContext/capabilities/add", json!(["SYS_ADMIN", "CHOWN", "NET_ADMIN"]),
         "non-default capabilities (container \"c\" must not include \"NET_ADMIN\", \"SYS_ADMIN\" in securityContext.capabilities.add)"),
        ("/volumes", json!([{"name": "h", "hostPath": {"path": "/"}}]), "hostPath volumes (volume \"h\")"),
        ("/containers/0/ports", json!([{"containerPort": 80, "hostPort": 8080}]),
         "hostPort (container \"c\" uses hostPort 8080)"),
        ("/containers/0/securityContext/appArmorProfile", json!({"type": "Unconfined"}),
         "forbidden AppArmor profile (container \"c\" must not set appArmorProfile.type to \"Unconfined\")"),
        ("/securityContext/seLinuxOptions", json!({"type": "spc_t"}),
         "seLinuxOptions (pod sets forbidden securityContext.seLinuxOptions: type \"spc_t\")"),
        ("/containers/0/securityContext/procMount", json!("Unmasked"),
         "procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")"),
        ("/containers/0/securityContext/seccompProfile", json!({"type": "Unconfined"}),
         "seccompProfile (container \"c\" must not set securityContext.seccompProfile.type to \"Unconfined\")"),
        ("/securityContext/sysctls", json!([{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}]),
         "forbidden sysctls (kernel.msgmax)"),
    ];
    for (ptr, value, want) in cases {
        let mut spec = base.clone();
        set(&mut spec, ptr, value);
        assert_eq!(
            reasons(Level::Baseline, &spec),
            vec![want.to_string()],
            "{ptr}"
        );
        assert!(reasons(Level::Privileged, &spec).is_empty());
        // Restricted includes every baseline check.
        assert!(
            reasons(Level::Restricted, &spec).contains(&want.to_string()),
            "{ptr}"
        );
    }
}

#[test]
fn restricted_checks_table() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/containers/0/securityContext/allowPrivilegeEscalation", json!(true),
         "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)"),
        ("/containers/0/securityContext/capabilities", json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}),
         "unrestricted capabilities (container \"c\" must not include \"CHOWN\" in securityContext.capabilities.add)"),
        ("/containers/0/securityContext/capabilities", json!({}),
         "unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"])"),
        ("/securityContext/runAsNonRoot", json!(false),
         "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false; pod or container \"c\" must set securityContext.runAsNonRoot=true)"),
        ("/containers/0/securityContext/runAsUser", json!(0),
         "runAsUser=0 (container \"c\" must not set runAsUser=0)"),
        ("/securityContext/seccompProfile", json!(null),
         "seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"),
        ("/volumes", json!([{"name": "n", "nfs": {"server": "s", "path": "/"}}, {"name": "e", "emptyDir": {}}]),
         "restricted volume types (volume \"n\" uses restricted volume type \"nfs\")"),
    ];
    for (ptr, value, want) in cases {
        let mut spec = compliant();
        set(&mut spec, ptr, value);
        assert_eq!(
            reasons(Level::Restricted, &spec),
            vec![want.to_string()],
            "{ptr}"
        );
        assert!(reasons(Level::Baseline, &spec).is_empty(), "{ptr}");
    }
}

#[test]
fn plural_details_and_user_namespaces() {
    let spec = json!({"containers": [
        {"name": "a", "securityContext": {"privileged": true}, "ports": [{"hostPort": 80}]},
        {"name": "b", "securityContext": {"privileged": true}, "ports": [{"hostPort": 443}]},
    ]});
    assert_eq!(
        reasons(Level::Baseline, &spec),
        vec![
            "hostPort (containers \"a\", \"b\" use hostPorts 80, 443)",
            "privileged (containers \"a\", \"b\" must not set securityContext.privileged=true)",
        ]
    );
    let mut userns = compliant();
    set(&mut userns, "/securityContext/runAsNonRoot", json!(null));
    set(&mut userns, "/hostUsers", json!(false));
    assert!(reasons(Level::Restricted, &userns).is_empty());
}

fn pods() -> &'static ResourceInfo {
    crate::resources::find("", "v1", "pods").unwrap()
}

#[test]
fn enforce_refuses_with_upstream_message_and_warn_warns() {
    let mut pod = json!({"metadata": {"name": "x", "namespace": "n"}, "spec": compliant()});
    set(
        &mut pod,
        "/spec/containers/0/securityContext/privileged",
        json!(true),
    );
    let labels = json!({"pod-security.kubernetes.io/enforce": "restricted"});
    let err = admit(pods(), &pod, None, &labels).unwrap_err();
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
    );
    let labels = json!({"pod-security.kubernetes.io/warn": "baseline", "pod-security.kubernetes.io/warn-version": "v1.33"});
    assert_eq!(
        admit(pods(), &pod, None, &labels).unwrap(),
        vec!["would violate PodSecurity \"baseline:v1.33\": privileged (container \"c\" must not set securityContext.privileged=true)"]
    );
    // An image-only update is not evaluated again.
    let mut newer = pod.clone();
    set(&mut newer, "/spec/containers/0/image", json!("busybox:2"));
    let labels = json!({"pod-security.kubernetes.io/enforce": "restricted"});
    assert!(admit(pods(), &newer, Some(&pod), &labels)
        .unwrap()
        .is_empty());
    // No labels: privileged.
    assert!(admit(pods(), &pod, None, &json!({})).unwrap().is_empty());
}

#[test]
fn workloads_only_warn() {
    let deploy = crate::resources::find("apps", "v1", "deployments").unwrap();
    let d = json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"hostNetwork": true, "containers": [{"name": "c"}]}}}});
    let labels = json!({"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/warn": "baseline"});
    assert_eq!(
        admit(deploy, &d, None, &labels).unwrap(),
        vec!["would violate PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"]
    );
}

#[test]
fn namespace_label_change_lists_violating_pods() {
    let pod = json!({"metadata": {"name": "p"}, "spec": {"hostPID": true, "containers": [{"name": "c"}]}});
    let w = namespace_update_warnings(
        "n",
        &json!({}),
        &json!({"pod-security.kubernetes.io/enforce": "baseline"}),
        &[pod],
    );
    assert_eq!(
        w,
        vec![
            "existing pods in namespace \"n\" violate the new PodSecurity enforce level \"baseline:latest\"",
            "p: host namespaces",
        ]
    );
}

/// Sets `value` at a JSON pointer, creating objects on the way.
fn set(v: &mut Value, ptr: &str, value: Value) {
    let mut cur = v;
    let parts: Vec<&str> = ptr.split('/').skip(1).collect();
    for p in &parts[..parts.len() - 1] {
        cur = match cur {
            Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
            other => {
                if !other.is_object() {
                    *other = json!({});
                }
                other
                    .as_object_mut()
                    .unwrap()
                    .entry(*p)
                    .or_insert(json!({}))
            }
        };
    }
    let last = parts[parts.len() - 1];
    match cur {
        Value::Array(a) => a[last.parse::<usize>().unwrap()] = value,
        other => {
            if !other.is_object() {
                *other = json!({});
            }
            other.as_object_mut().unwrap().insert(last.into(), value);
        }
    }
}
