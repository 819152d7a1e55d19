//! The resource table: every REST resource apiserver-lite serves, with the facts that discovery,
//! OpenAPI, storage and the handlers need (group/version/kind, plural and short names, scope,
//! subresources, the storage prefix), bound to its k8s-openapi type.
//!
//! Upstream registers a `rest.Storage` per resource in each API group's `RESTStorageProvider`; here
//! one static table plays that part, so adding a resource is one line.

use k8s_openapi::api::admissionregistration::v1 as admissionregistration;
use k8s_openapi::api::certificates::v1 as certificates;
use k8s_openapi::api::{
    apps::v1 as apps, batch::v1 as batch, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, events::v1 as events, networking::v1 as networking,
    policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// One served resource.
#[derive(Debug)]
pub struct ResourceInfo {
    /// API group; "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Plural lower-case name used in URLs (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served besides the main resource (`status`, `scale`, `binding`, `eviction`,
    /// `log`).
    pub subresources: &'static [&'static str],
    /// Key prefix in the store, as upstream lays out etcd (`/registry/pods`). Two resources may
    /// share one (core/v1 and events.k8s.io/v1 events): they are two views of one store.
    pub storage_prefix: &'static str,
    /// Decodes a JSON object as the k8s-openapi type and encodes it again: drops unknown fields
    /// and normalises, so what is stored is exactly what the type can hold.
    pub roundtrip: fn(&Value) -> Result<Value, serde_json::Error>,
    /// The OpenAPI schema of the type (k8s-openapi's schemars impls).
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// Name of the type's OpenAPI definition (`io.k8s.api.core.v1.Pod`).
    pub definition: &'static str,
}

impl ResourceInfo {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `pods` for the core group.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Kind of the list type (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// The verbs served on the main resource, as discovery lists them.
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, serde_json::Error> {
    let typed: T = T::deserialize(v)?;
    serde_json::to_value(typed)
}

fn schema<T: schemars::JsonSchema>(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    T::json_schema(gen)
}

macro_rules! resource {
    ($ty:ty, $group:expr, $version:expr, $kind:expr, $plural:expr, $namespaced:expr,
     short: [$($short:expr),*], cat: [$($cat:expr),*], sub: [$($sub:expr),*],
     prefix: $prefix:expr, def: $def:expr) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: const_lower($kind),
            namespaced: $namespaced,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$($sub),*],
            storage_prefix: $prefix,
            roundtrip: roundtrip::<$ty>,
            schema: schema::<$ty>,
            definition: $def,
        }
    };
}

/// Lower-cases an ASCII kind at compile time for the singular name.
const fn const_lower(kind: &'static str) -> &'static str {
    // Singular names are the lower-cased kinds; they are listed explicitly in SINGULARS because
    // a const fn cannot allocate.
    let mut i = 0;
    while i < SINGULARS.len() {
        if str_eq(SINGULARS[i].0, kind) {
            return SINGULARS[i].1;
        }
        i += 1;
    }
    panic!("kind without a singular name")
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const SINGULARS: &[(&str, &str)] = &[
    ("Namespace", "namespace"),
    ("Pod", "pod"),
    ("Node", "node"),
    ("Service", "service"),
    ("Endpoints", "endpoints"),
    ("ConfigMap", "configmap"),
    ("Secret", "secret"),
    ("ServiceAccount", "serviceaccount"),
    ("ReplicationController", "replicationcontroller"),
    ("Event", "event"),
    ("LimitRange", "limitrange"),
    ("ResourceQuota", "resourcequota"),
    ("PersistentVolume", "persistentvolume"),
    ("PersistentVolumeClaim", "persistentvolumeclaim"),
    ("Deployment", "deployment"),
    ("ReplicaSet", "replicaset"),
    ("StatefulSet", "statefulset"),
    ("DaemonSet", "daemonset"),
    ("ControllerRevision", "controllerrevision"),
    ("Job", "job"),
    ("CronJob", "cronjob"),
    ("EndpointSlice", "endpointslice"),
    ("Lease", "lease"),
    ("NetworkPolicy", "networkpolicy"),
    ("Ingress", "ingress"),
    ("PodDisruptionBudget", "poddisruptionbudget"),
    ("PriorityClass", "priorityclass"),
    ("StorageClass", "storageclass"),
    ("Role", "role"),
    ("ClusterRole", "clusterrole"),
    ("RoleBinding", "rolebinding"),
    ("ClusterRoleBinding", "clusterrolebinding"),
    (
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfiguration",
    ),
    (
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfiguration",
    ),
    ("CertificateSigningRequest", "certificatesigningrequest"),
];

/// Every served resource, in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    resource!(core::Namespace, "", "v1", "Namespace", "namespaces", false,
        short: ["ns"], cat: [], sub: ["status", "finalize"],
        prefix: "/registry/namespaces", def: "io.k8s.api.core.v1.Namespace"),
    resource!(core::Pod, "", "v1", "Pod", "pods", true,
        short: ["po"], cat: ["all"], sub: ["status", "binding", "eviction", "log", "exec", "attach", "portforward"],
        prefix: "/registry/pods", def: "io.k8s.api.core.v1.Pod"),
    resource!(core::Node, "", "v1", "Node", "nodes", false,
        short: ["no"], cat: [], sub: ["status", "proxy"],
        prefix: "/registry/minions", def: "io.k8s.api.core.v1.Node"),
    resource!(core::Service, "", "v1", "Service", "services", true,
        short: ["svc"], cat: ["all"], sub: ["status"],
        prefix: "/registry/services/specs", def: "io.k8s.api.core.v1.Service"),
    resource!(core::Endpoints, "", "v1", "Endpoints", "endpoints", true,
        short: ["ep"], cat: [], sub: [],
        prefix: "/registry/services/endpoints", def: "io.k8s.api.core.v1.Endpoints"),
    resource!(core::ConfigMap, "", "v1", "ConfigMap", "configmaps", true,
        short: ["cm"], cat: [], sub: [],
        prefix: "/registry/configmaps", def: "io.k8s.api.core.v1.ConfigMap"),
    resource!(core::Secret, "", "v1", "Secret", "secrets", true,
        short: [], cat: [], sub: [],
        prefix: "/registry/secrets", def: "io.k8s.api.core.v1.Secret"),
    resource!(core::ServiceAccount, "", "v1", "ServiceAccount", "serviceaccounts", true,
        short: ["sa"], cat: [], sub: [],
        prefix: "/registry/serviceaccounts", def: "io.k8s.api.core.v1.ServiceAccount"),
    resource!(core::ReplicationController, "", "v1", "ReplicationController", "replicationcontrollers", true,
        short: ["rc"], cat: ["all"], sub: ["status", "scale"],
        prefix: "/registry/controllers", def: "io.k8s.api.core.v1.ReplicationController"),
    resource!(core::Event, "", "v1", "Event", "events", true,
        short: ["ev"], cat: [], sub: [],
        prefix: "/registry/events", def: "io.k8s.api.core.v1.Event"),
    resource!(core::LimitRange, "", "v1", "LimitRange", "limitranges", true,
        short: ["limits"], cat: [], sub: [],
        prefix: "/registry/limitranges", def: "io.k8s.api.core.v1.LimitRange"),
    resource!(core::ResourceQuota, "", "v1", "ResourceQuota", "resourcequotas", true,
        short: ["quota"], cat: [], sub: ["status"],
        prefix: "/registry/resourcequotas", def: "io.k8s.api.core.v1.ResourceQuota"),
    resource!(core::PersistentVolume, "", "v1", "PersistentVolume", "persistentvolumes", false,
        short: ["pv"], cat: [], sub: ["status"],
        prefix: "/registry/persistentvolumes", def: "io.k8s.api.core.v1.PersistentVolume"),
    resource!(core::PersistentVolumeClaim, "", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true,
        short: ["pvc"], cat: [], sub: ["status"],
        prefix: "/registry/persistentvolumeclaims", def: "io.k8s.api.core.v1.PersistentVolumeClaim"),
    resource!(apps::Deployment, "apps", "v1", "Deployment", "deployments", true,
        short: ["deploy"], cat: ["all"], sub: ["status", "scale"],
        prefix: "/registry/deployments", def: "io.k8s.api.apps.v1.Deployment"),
    resource!(apps::ReplicaSet, "apps", "v1", "ReplicaSet", "replicasets", true,
        short: ["rs"], cat: ["all"], sub: ["status", "scale"],
        prefix: "/registry/replicasets", def: "io.k8s.api.apps.v1.ReplicaSet"),
    resource!(apps::StatefulSet, "apps", "v1", "StatefulSet", "statefulsets", true,
        short: ["sts"], cat: ["all"], sub: ["status", "scale"],
        prefix: "/registry/statefulsets", def: "io.k8s.api.apps.v1.StatefulSet"),
    resource!(apps::DaemonSet, "apps", "v1", "DaemonSet", "daemonsets", true,
        short: ["ds"], cat: ["all"], sub: ["status"],
        prefix: "/registry/daemonsets", def: "io.k8s.api.apps.v1.DaemonSet"),
    resource!(apps::ControllerRevision, "apps", "v1", "ControllerRevision", "controllerrevisions", true,
        short: [], cat: [], sub: [],
        prefix: "/registry/controllerrevisions", def: "io.k8s.api.apps.v1.ControllerRevision"),
    resource!(batch::Job, "batch", "v1", "Job", "jobs", true,
        short: [], cat: ["all"], sub: ["status"],
        prefix: "/registry/jobs", def: "io.k8s.api.batch.v1.Job"),
    resource!(batch::CronJob, "batch", "v1", "CronJob", "cronjobs", true,
        short: ["cj"], cat: ["all"], sub: ["status"],
        prefix: "/registry/cronjobs", def: "io.k8s.api.batch.v1.CronJob"),
    resource!(discovery::EndpointSlice, "discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true,
        short: [], cat: [], sub: [],
        prefix: "/registry/endpointslices", def: "io.k8s.api.discovery.v1.EndpointSlice"),
    resource!(coordination::Lease, "coordination.k8s.io", "v1", "Lease", "leases", true,
        short: [], cat: [], sub: [],
        prefix: "/registry/leases", def: "io.k8s.api.coordination.v1.Lease"),
    resource!(events::Event, "events.k8s.io", "v1", "Event", "events", true,
        short: ["ev"], cat: [], sub: [],
        prefix: "/registry/events", def: "io.k8s.api.events.v1.Event"),
    resource!(networking::NetworkPolicy, "networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true,
        short: ["netpol"], cat: [], sub: [],
        prefix: "/registry/networkpolicies", def: "io.k8s.api.networking.v1.NetworkPolicy"),
    resource!(networking::Ingress, "networking.k8s.io", "v1", "Ingress", "ingresses", true,
        short: ["ing"], cat: [], sub: ["status"],
        prefix: "/registry/ingress", def: "io.k8s.api.networking.v1.Ingress"),
    resource!(policy::PodDisruptionBudget, "policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true,
        short: ["pdb"], cat: [], sub: ["status"],
        prefix: "/registry/poddisruptionbudgets", def: "io.k8s.api.policy.v1.PodDisruptionBudget"),
    resource!(scheduling::PriorityClass, "scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", false,
        short: ["pc"], cat: [], sub: [],
        prefix: "/registry/priorityclasses", def: "io.k8s.api.scheduling.v1.PriorityClass"),
    resource!(storage::StorageClass, "storage.k8s.io", "v1", "StorageClass", "storageclasses", false,
        short: ["sc"], cat: [], sub: [],
        prefix: "/registry/storageclasses", def: "io.k8s.api.storage.v1.StorageClass"),
    resource!(rbac::Role, "rbac.authorization.k8s.io", "v1", "Role", "roles", true,
        short: [], cat: [], sub: [],
        prefix: "/registry/roles", def: "io.k8s.api.rbac.v1.Role"),
    resource!(rbac::ClusterRole, "rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false,
        short: [], cat: [], sub: [],
        prefix: "/registry/clusterroles", def: "io.k8s.api.rbac.v1.ClusterRole"),
    resource!(rbac::RoleBinding, "rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true,
        short: [], cat: [], sub: [],
        prefix: "/registry/rolebindings", def: "io.k8s.api.rbac.v1.RoleBinding"),
    resource!(rbac::ClusterRoleBinding, "rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false,
        short: [], cat: [], sub: [],
        prefix: "/registry/clusterrolebindings", def: "io.k8s.api.rbac.v1.ClusterRoleBinding"),
    resource!(admissionregistration::MutatingWebhookConfiguration, "admissionregistration.k8s.io", "v1",
        "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", false,
        short: [], cat: ["api-extensions"], sub: [],
        prefix: "/registry/mutatingwebhookconfigurations",
        def: "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration"),
    resource!(admissionregistration::ValidatingWebhookConfiguration, "admissionregistration.k8s.io", "v1",
        "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", false,
        short: [], cat: ["api-extensions"], sub: [],
        prefix: "/registry/validatingwebhookconfigurations",
        def: "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration"),
    resource!(certificates::CertificateSigningRequest, "certificates.k8s.io", "v1",
        "CertificateSigningRequest", "certificatesigningrequests", false,
        short: ["csr"], cat: [], sub: ["status", "approval"],
        prefix: "/registry/certificatesigningrequests",
        def: "io.k8s.api.certificates.v1.CertificateSigningRequest"),
];

/// Looks a resource up by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by group and kind (any served version).
pub fn find_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// The group/versions served, in discovery order: `("", "v1")` first, then each group once.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_roundtrips_an_empty_object() {
        for r in RESOURCES {
            let v = serde_json::json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": {"name": "x"}});
            let out = (r.roundtrip)(&v).unwrap_or_else(|e| panic!("{}: {e}", r.plural));
            assert_eq!(out["metadata"]["name"], "x", "{}", r.plural);
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().kind,
            "Deployment"
        );
        assert_eq!(find_kind("", "Pod").unwrap().plural, "pods");
        assert_eq!(group_versions()[0], ("", "v1"));
        assert_eq!(find("", "v1", "pods").unwrap().singular, "pod");
    }
}
