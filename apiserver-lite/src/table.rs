//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`. Mirrors kubernetes
//! `pkg/printers/internalversion/printers.go` (column definitions and the per-kind row
//! functions, always generated "wide" as the server's `TableConvertor` does, leaving kubectl to
//! hide priority-1 columns), `k8s.io/apimachinery/pkg/util/duration.HumanDuration` for ages, the
//! apiserver's `rest.NewDefaultTableConvertor` (Name, Created At) for kinds without a printer,
//! and the `includeObject` handling of the endpoint handlers (`None`, `Metadata`, `Object`).
//!
//! Column descriptions that upstream takes from `SwaggerDoc()` are read from the k8s-openapi
//! schemas of the same fields, so they carry the same API documentation text.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use k8s_openapi::api::{
    apps::v1 as apps, batch::v1 as batch, certificates::v1 as certificates,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    networking::v1 as networking, rbac::v1 as rbac, scheduling::v1 as scheduling,
    storage::v1 as storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::resources::ResourceInfo;
use crate::selectors::{format_label_selector, format_labels, label_selector_from_api};

/// The `includeObject` query parameter of a Table request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// Rows carry `"object": null`.
    None,
    /// Rows carry a `PartialObjectMetadata` (the default when the parameter is absent).
    #[default]
    Metadata,
    /// Rows carry the full object.
    Object,
}

impl IncludeObject {
    /// Parses the query value; absent or empty means `Metadata`, as upstream.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v.unwrap_or("") {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(format!("unrecognized includeObject value: {other:?}")),
        }
    }
}

/// Builds the Table for a list (or a single object: pass one item) of `info`'s resource.
/// `list_meta` is `{resourceVersion, continue, remainingItemCount}`; null fields are dropped.
pub fn to_table(
    info: &ResourceInfo,
    items: &[&Value],
    list_meta: Value,
    include: IncludeObject,
) -> Value {
    to_table_at(info, items, list_meta, include, Utc::now())
}

/// [`to_table`] with the clock as a parameter (ages are computed against `now`).
pub fn to_table_at(
    info: &ResourceInfo,
    items: &[&Value],
    list_meta: Value,
    include: IncludeObject,
    now: DateTime<Utc>,
) -> Value {
    let printer = printer_for(info);
    let columns = columns_for(printer);
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let (cells, conditions) = print_row(printer, info, obj, now);
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells));
            if let Some(c) = conditions {
                row.insert("conditions".into(), c);
            }
            row.insert("object".into(), row_object(obj, include));
            Value::Object(row)
        })
        .collect();
    let mut metadata = Map::new();
    if let Value::Object(m) = list_meta {
        for (k, v) in m {
            if !v.is_null() {
                metadata.insert(k, v);
            }
        }
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns.as_ref(),
        "rows": rows,
    })
}

fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Columns
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Printer {
    Pod,
    Pdb,
    ReplicationController,
    ReplicaSet,
    DaemonSet,
    Job,
    CronJob,
    Service,
    Ingress,
    StatefulSet,
    Endpoints,
    Node,
    Event,
    Namespace,
    Secret,
    ServiceAccount,
    PersistentVolume,
    PersistentVolumeClaim,
    Deployment,
    ConfigMap,
    NetworkPolicy,
    RoleBinding,
    ClusterRoleBinding,
    Lease,
    /// Mutating and validating webhook configurations: Name, Webhooks, Age.
    WebhookConfiguration,
    StorageClass,
    ControllerRevision,
    ResourceQuota,
    PriorityClass,
    EndpointSlice,
    CertificateSigningRequest,
    /// `rest.NewDefaultTableConvertor`: Name, Created At.
    Default,
}

fn printer_for(info: &ResourceInfo) -> Printer {
    use Printer::*;
    match (info.group, info.plural) {
        ("", "pods") => Pod,
        ("policy", "poddisruptionbudgets") => Pdb,
        ("", "replicationcontrollers") => ReplicationController,
        ("apps", "replicasets") => ReplicaSet,
        ("apps", "daemonsets") => DaemonSet,
        ("batch", "jobs") => Job,
        ("batch", "cronjobs") => CronJob,
        ("", "services") => Service,
        ("networking.k8s.io", "ingresses") => Ingress,
        ("apps", "statefulsets") => StatefulSet,
        ("", "endpoints") => Endpoints,
        ("", "nodes") => Node,
        ("", "events") | ("events.k8s.io", "events") => Event,
        ("", "namespaces") => Namespace,
        ("", "secrets") => Secret,
        ("", "serviceaccounts") => ServiceAccount,
        ("", "persistentvolumes") => PersistentVolume,
        ("", "persistentvolumeclaims") => PersistentVolumeClaim,
        ("apps", "deployments") => Deployment,
        ("", "configmaps") => ConfigMap,
        ("networking.k8s.io", "networkpolicies") => NetworkPolicy,
        ("rbac.authorization.k8s.io", "rolebindings") => RoleBinding,
        ("rbac.authorization.k8s.io", "clusterrolebindings") => ClusterRoleBinding,
        ("coordination.k8s.io", "leases") => Lease,
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
        | ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => {
            WebhookConfiguration
        }
        ("storage.k8s.io", "storageclasses") => StorageClass,
        ("apps", "controllerrevisions") => ControllerRevision,
        ("", "resourcequotas") => ResourceQuota,
        ("scheduling.k8s.io", "priorityclasses") => PriorityClass,
        ("discovery.k8s.io", "endpointslices") => EndpointSlice,
        ("certificates.k8s.io", "certificatesigningrequests") => CertificateSigningRequest,
        _ => Default,
    }
}

/// The `description` k8s-openapi's schema gives `field` of `T` (upstream's `SwaggerDoc()[field]`).
fn doc<T: schemars::JsonSchema>(field: &str) -> String {
    let mut generator = schemars::SchemaGenerator::default();
    let schema = T::json_schema(&mut generator);
    schema
        .as_value()
        .get("properties")
        .and_then(|p| p.get(field))
        .and_then(|f| f.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn col(name: &str, ty: &str, format: &str, priority: i32, description: String) -> Value {
    json!({
        "name": name,
        "type": ty,
        "format": format,
        "description": description,
        "priority": priority,
    })
}

fn name_col() -> Value {
    col("Name", "string", "name", 0, doc::<ObjectMeta>("name"))
}

fn age_col() -> Value {
    col(
        "Age",
        "string",
        "",
        0,
        doc::<ObjectMeta>("creationTimestamp"),
    )
}

fn s_col(name: &str, description: String) -> Value {
    col(name, "string", "", 0, description)
}

fn i_col(name: &str, description: String) -> Value {
    col(name, "integer", "", 0, description)
}

fn wide(name: &str, description: String) -> Value {
    col(name, "string", "", 1, description)
}

fn containers_cols(selector: Option<String>) -> Vec<Value> {
    let mut v = vec![
        wide(
            "Containers",
            "Names of each container in the template.".into(),
        ),
        wide(
            "Images",
            "Images referenced by each container in the template.".into(),
        ),
    ];
    if let Some(d) = selector {
        v.push(wide("Selector", d));
    }
    v
}

type Columns = Arc<Vec<Value>>;

fn columns_for(printer: Printer) -> Columns {
    static CACHE: OnceLock<Mutex<HashMap<Printer, Columns>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(c) = cache.lock().get(&printer) {
        return c.clone();
    }
    let built = Arc::new(build_columns(printer));
    cache.lock().insert(printer, built.clone());
    built
}

fn build_columns(printer: Printer) -> Vec<Value> {
    use Printer as P;
    let mut c = vec![name_col()];
    match printer {
        P::Pod => {
            c.extend([
                s_col(
                    "Ready",
                    "The aggregate readiness state of this pod for accepting traffic.".into(),
                ),
                s_col(
                    "Status",
                    "The aggregate status of the containers in this pod.".into(),
                ),
                s_col("Restarts", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.".into()),
                age_col(),
                wide("IP", doc::<core::PodStatus>("podIP")),
                wide("Node", doc::<core::PodSpec>("nodeName")),
                wide("Nominated Node", doc::<core::PodStatus>("nominatedNodeName")),
                wide("Readiness Gates", doc::<core::PodSpec>("readinessGates")),
            ]);
        }
        P::Pdb => c.extend([
            s_col(
                "Min Available",
                "The minimum number of pods that must be available.".into(),
            ),
            s_col(
                "Max Unavailable",
                "The maximum number of pods that may be unavailable.".into(),
            ),
            i_col(
                "Allowed Disruptions",
                "Calculated number of pods that may be disrupted at this time.".into(),
            ),
            age_col(),
        ]),
        P::ReplicationController => {
            c.extend([
                i_col("Desired", doc::<core::ReplicationControllerSpec>("replicas")),
                i_col(
                    "Current",
                    doc::<core::ReplicationControllerStatus>("replicas"),
                ),
                i_col(
                    "Ready",
                    doc::<core::ReplicationControllerStatus>("readyReplicas"),
                ),
                age_col(),
            ]);
            c.extend(containers_cols(Some(doc::<core::ReplicationControllerSpec>(
                "selector",
            ))));
        }
        P::ReplicaSet => {
            c.extend([
                i_col("Desired", doc::<apps::ReplicaSetSpec>("replicas")),
                i_col("Current", doc::<apps::ReplicaSetStatus>("replicas")),
                i_col("Ready", doc::<apps::ReplicaSetStatus>("readyReplicas")),
                age_col(),
            ]);
            c.extend(containers_cols(Some(doc::<apps::ReplicaSetSpec>("selector"))));
        }
        P::DaemonSet => {
            c.extend([
                i_col(
                    "Desired",
                    doc::<apps::DaemonSetStatus>("desiredNumberScheduled"),
                ),
                i_col(
                    "Current",
                    doc::<apps::DaemonSetStatus>("currentNumberScheduled"),
                ),
                i_col("Ready", doc::<apps::DaemonSetStatus>("numberReady")),
                i_col(
                    "Up-to-date",
                    doc::<apps::DaemonSetStatus>("updatedNumberScheduled"),
                ),
                i_col("Available", doc::<apps::DaemonSetStatus>("numberAvailable")),
                s_col("Node Selector", doc::<core::PodSpec>("nodeSelector")),
                age_col(),
            ]);
            c.extend(containers_cols(Some(doc::<apps::DaemonSetSpec>("selector"))));
        }
        P::Job => {
            c.extend([
                s_col("Status", "Status of the job.".into()),
                s_col("Completions", doc::<batch::JobStatus>("succeeded")),
                s_col("Duration", "Time required to complete the job.".into()),
                age_col(),
            ]);
            c.extend(containers_cols(Some(doc::<batch::JobSpec>("selector"))));
        }
        P::CronJob => {
            c.extend([
                s_col("Schedule", doc::<batch::CronJobSpec>("schedule")),
                s_col("Timezone", doc::<batch::CronJobSpec>("timeZone")),
                col(
                    "Suspend",
                    "boolean",
                    "",
                    0,
                    doc::<batch::CronJobSpec>("suspend"),
                ),
                i_col("Active", doc::<batch::CronJobStatus>("active")),
                s_col(
                    "Last Schedule",
                    doc::<batch::CronJobStatus>("lastScheduleTime"),
                ),
                age_col(),
            ]);
            c.extend(containers_cols(Some(doc::<batch::JobSpec>("selector"))));
        }
        P::Service => c.extend([
            s_col("Type", doc::<core::ServiceSpec>("type")),
            s_col("Cluster-IP", doc::<core::ServiceSpec>("clusterIP")),
            s_col("External-IP", doc::<core::ServiceSpec>("externalIPs")),
            s_col("Port(s)", doc::<core::ServiceSpec>("ports")),
            age_col(),
            wide("Selector", doc::<core::ServiceSpec>("selector")),
        ]),
        P::Ingress => c.extend([
            s_col("Class", "The name of the IngressClass resource that should be used for additional configuration".into()),
            s_col(
                "Hosts",
                "Hosts that incoming requests are matched against before the ingress rule".into(),
            ),
            s_col(
                "Address",
                "Address is a list containing ingress points for the load-balancer".into(),
            ),
            s_col("Ports", "Ports of TLS configurations that open".into()),
            age_col(),
        ]),
        P::StatefulSet => {
            c.extend([
                s_col("Ready", "Number of the pod with ready state".into()),
                age_col(),
            ]);
            c.extend(containers_cols(None));
        }
        P::Endpoints => c.extend([
            s_col("Endpoints", doc::<core::Endpoints>("subsets")),
            age_col(),
        ]),
        P::Node => c.extend([
            s_col("Status", "The status of the node".into()),
            s_col("Roles", "The roles of the node".into()),
            age_col(),
            s_col("Version", doc::<core::NodeSystemInfo>("kubeletVersion")),
            wide("Internal-IP", doc::<core::NodeStatus>("addresses")),
            wide("External-IP", doc::<core::NodeStatus>("addresses")),
            wide("OS-Image", doc::<core::NodeSystemInfo>("osImage")),
            wide("Kernel-Version", doc::<core::NodeSystemInfo>("kernelVersion")),
            wide(
                "Container-Runtime",
                doc::<core::NodeSystemInfo>("containerRuntimeVersion"),
            ),
        ]),
        P::Event => {
            c = vec![
                s_col("Last Seen", doc::<core::Event>("lastTimestamp")),
                s_col("Type", doc::<core::Event>("type")),
                s_col("Reason", doc::<core::Event>("reason")),
                s_col("Object", doc::<core::Event>("involvedObject")),
                wide("Subobject", doc::<core::ObjectReference>("fieldPath")),
                wide("Source", doc::<core::Event>("source")),
                s_col("Message", doc::<core::Event>("message")),
                wide("First Seen", doc::<core::Event>("firstTimestamp")),
                wide("Count", doc::<core::Event>("count")),
                col("Name", "string", "name", 1, doc::<ObjectMeta>("name")),
            ];
        }
        P::Namespace => c.extend([
            s_col("Status", "The status of the namespace".into()),
            age_col(),
        ]),
        P::Secret => c.extend([
            s_col("Type", doc::<core::Secret>("type")),
            s_col("Data", doc::<core::Secret>("data")),
            age_col(),
        ]),
        P::ServiceAccount => c.extend([
            s_col("Secrets", doc::<core::ServiceAccount>("secrets")),
            age_col(),
        ]),
        P::PersistentVolume => c.extend([
            s_col("Capacity", doc::<core::PersistentVolumeSpec>("capacity")),
            s_col(
                "Access Modes",
                doc::<core::PersistentVolumeSpec>("accessModes"),
            ),
            s_col(
                "Reclaim Policy",
                doc::<core::PersistentVolumeSpec>("persistentVolumeReclaimPolicy"),
            ),
            s_col("Status", doc::<core::PersistentVolumeStatus>("phase")),
            s_col("Claim", doc::<core::PersistentVolumeSpec>("claimRef")),
            s_col("StorageClass", "StorageClass of the pv".into()),
            s_col(
                "VolumeAttributesClass",
                "VolumeAttributesClass of the pv".into(),
            ),
            s_col("Reason", doc::<core::PersistentVolumeStatus>("reason")),
            age_col(),
            wide("VolumeMode", doc::<core::PersistentVolumeSpec>("volumeMode")),
        ]),
        P::PersistentVolumeClaim => c.extend([
            s_col("Status", doc::<core::PersistentVolumeClaimStatus>("phase")),
            s_col(
                "Volume",
                doc::<core::PersistentVolumeClaimSpec>("volumeName"),
            ),
            s_col(
                "Capacity",
                doc::<core::PersistentVolumeClaimStatus>("capacity"),
            ),
            s_col(
                "Access Modes",
                doc::<core::PersistentVolumeClaimStatus>("accessModes"),
            ),
            s_col("StorageClass", "StorageClass of the pvc".into()),
            s_col(
                "VolumeAttributesClass",
                "VolumeAttributesClass of the pvc".into(),
            ),
            age_col(),
            wide(
                "VolumeMode",
                doc::<core::PersistentVolumeClaimSpec>("volumeMode"),
            ),
        ]),
        P::Deployment => {
            c.extend([
                s_col("Ready", "Number of the pod with ready state".into()),
                s_col(
                    "Up-to-date",
                    doc::<apps::DeploymentStatus>("updatedReplicas"),
                ),
                s_col(
                    "Available",
                    doc::<apps::DeploymentStatus>("availableReplicas"),
                ),
                age_col(),
            ]);
            c.extend(containers_cols(Some(doc::<apps::DeploymentSpec>("selector"))));
        }
        P::ConfigMap => c.extend([s_col("Data", doc::<core::ConfigMap>("data")), age_col()]),
        P::NetworkPolicy => c.extend([
            s_col(
                "Pod-Selector",
                doc::<networking::NetworkPolicySpec>("podSelector"),
            ),
            age_col(),
        ]),
        P::RoleBinding | P::ClusterRoleBinding => {
            let what = if printer == P::RoleBinding {
                "roleBinding"
            } else {
                "clusterRoleBinding"
            };
            let role = if printer == P::RoleBinding {
                doc::<rbac::RoleBinding>("roleRef")
            } else {
                doc::<rbac::ClusterRoleBinding>("roleRef")
            };
            c.extend([
                s_col("Role", role),
                age_col(),
                wide("Users", format!("Users in the {what}")),
                wide("Groups", format!("Groups in the {what}")),
                wide("ServiceAccounts", format!("ServiceAccounts in the {what}")),
            ]);
        }
        P::WebhookConfiguration => c.extend([
            i_col(
                "Webhooks",
                "Webhooks indicates the number of webhooks in the configuration".into(),
            ),
            age_col(),
        ]),
        P::Lease => c.extend([
            s_col("Holder", doc::<coordination::LeaseSpec>("holderIdentity")),
            age_col(),
        ]),
        P::StorageClass => c.extend([
            s_col("Provisioner", doc::<storage::StorageClass>("provisioner")),
            s_col("ReclaimPolicy", doc::<storage::StorageClass>("reclaimPolicy")),
            s_col(
                "VolumeBindingMode",
                doc::<storage::StorageClass>("volumeBindingMode"),
            ),
            s_col(
                "AllowVolumeExpansion",
                doc::<storage::StorageClass>("allowVolumeExpansion"),
            ),
            age_col(),
        ]),
        P::ControllerRevision => c.extend([
            s_col("Controller", "Controller of the object".into()),
            s_col("Revision", doc::<apps::ControllerRevision>("revision")),
            age_col(),
        ]),
        P::ResourceQuota => c.extend([
            s_col("Request", "Request represents a minimum amount of cpu/memory that a container may consume.".into()),
            s_col("Limit", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.".into()),
            age_col(),
        ]),
        P::PriorityClass => c.extend([
            i_col("Value", doc::<scheduling::PriorityClass>("value")),
            col(
                "Global-Default",
                "boolean",
                "",
                0,
                doc::<scheduling::PriorityClass>("globalDefault"),
            ),
            age_col(),
            s_col(
                "PreemptionPolicy",
                doc::<scheduling::PriorityClass>("preemptionPolicy"),
            ),
        ]),
        P::EndpointSlice => c.extend([
            s_col(
                "AddressType",
                doc::<discovery::EndpointSlice>("addressType"),
            ),
            s_col("Ports", doc::<discovery::EndpointSlice>("ports")),
            s_col("Endpoints", doc::<discovery::EndpointSlice>("endpoints")),
            age_col(),
        ]),
        P::CertificateSigningRequest => c.extend([
            age_col(),
            s_col(
                "SignerName",
                doc::<certificates::CertificateSigningRequestSpec>("signerName"),
            ),
            s_col(
                "Requestor",
                "Name of the user requesting the certificate".into(),
            ),
            s_col(
                "RequestedDuration",
                doc::<certificates::CertificateSigningRequestSpec>("expirationSeconds"),
            ),
            s_col("Condition", "Condition of the request".into()),
        ]),
        P::Default => c.push(col(
            "Created At",
            "date",
            "",
            0,
            doc::<ObjectMeta>("creationTimestamp"),
        )),
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Value access helpers
// ---------------------------------------------------------------------------------------------

fn at<'a>(v: &'a Value, ptr: &str) -> Option<&'a Value> {
    v.pointer(ptr).filter(|x| !x.is_null())
}

fn st<'a>(v: &'a Value, ptr: &str) -> &'a str {
    at(v, ptr).and_then(Value::as_str).unwrap_or("")
}

fn int(v: &Value, ptr: &str) -> i64 {
    at(v, ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    at(v, ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn obj_len(v: &Value, ptr: &str) -> usize {
    at(v, ptr).and_then(Value::as_object).map_or(0, Map::len)
}

fn time_at(v: &Value, ptr: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(st(v, ptr))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn name(v: &Value) -> String {
    st(v, "/metadata/name").to_string()
}

/// `translateTimestampSince`: `<unknown>` for a zero time, else the human duration since it.
fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

fn age(v: &Value, now: DateTime<Utc>) -> String {
    since(time_at(v, "/metadata/creationTimestamp"), now)
}

/// The printers' `extractCSRStatus`: Denied, Approved or Pending, then `,Failed` and `,Issued`.
fn csr_condition(o: &Value) -> String {
    let has = |t: &str| {
        arr(o, "/status/conditions")
            .iter()
            .any(|c| st(c, "/type") == t)
    };
    let mut out = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        out.push_str(",Failed");
    }
    if !st(o, "/status/certificate").is_empty() {
        out.push_str(",Issued");
    }
    out
}

/// `duration.HumanDuration` from k8s.io/apimachinery.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{h}h", hours / 24)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{dy}d", hours / 24 / 365)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// `layoutContainerCells`: comma-joined container names and images.
fn containers(v: &Value, spec_ptr: &str) -> (String, String) {
    let cs = arr(v, &format!("{spec_ptr}/containers"));
    let names: Vec<&str> = cs.iter().map(|c| st(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| st(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn map_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a Map<String, Value>> {
    at(v, ptr).and_then(Value::as_object)
}

/// `IntOrString.String()`.
fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn has_condition(v: &Value, ptr: &str, ty: &str) -> bool {
    arr(v, ptr)
        .iter()
        .find(|c| st(c, "/type") == ty)
        .is_some_and(|c| st(c, "/status") == "True")
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

fn print_row(
    printer: Printer,
    info: &ResourceInfo,
    o: &Value,
    now: DateTime<Utc>,
) -> (Vec<Value>, Option<Value>) {
    use Printer as P;
    let cells = match printer {
        P::Pod => return print_pod(o, now),
        P::Pdb => {
            let min = at(o, "/spec/minAvailable").map_or("N/A".into(), int_or_string);
            let max = at(o, "/spec/maxUnavailable").map_or("N/A".into(), int_or_string);
            vec![
                json!(name(o)),
                json!(min),
                json!(max),
                json!(int(o, "/status/disruptionsAllowed")),
                json!(age(o, now)),
            ]
        }
        P::ReplicationController => {
            let (n, i) = containers(o, "/spec/template/spec");
            vec![
                json!(name(o)),
                json!(at(o, "/spec/replicas").and_then(Value::as_i64).unwrap_or(1)),
                json!(int(o, "/status/replicas")),
                json!(int(o, "/status/readyReplicas")),
                json!(age(o, now)),
                json!(n),
                json!(i),
                json!(format_labels(map_at(o, "/spec/selector"))),
            ]
        }
        P::ReplicaSet => {
            let (n, i) = containers(o, "/spec/template/spec");
            vec![
                json!(name(o)),
                json!(at(o, "/spec/replicas").and_then(Value::as_i64).unwrap_or(1)),
                json!(int(o, "/status/replicas")),
                json!(int(o, "/status/readyReplicas")),
                json!(age(o, now)),
                json!(n),
                json!(i),
                json!(format_label_selector(at(o, "/spec/selector"))),
            ]
        }
        P::DaemonSet => {
            let (n, i) = containers(o, "/spec/template/spec");
            vec![
                json!(name(o)),
                json!(int(o, "/status/desiredNumberScheduled")),
                json!(int(o, "/status/currentNumberScheduled")),
                json!(int(o, "/status/numberReady")),
                json!(int(o, "/status/updatedNumberScheduled")),
                json!(int(o, "/status/numberAvailable")),
                json!(format_labels(map_at(o, "/spec/template/spec/nodeSelector"))),
                json!(age(o, now)),
                json!(n),
                json!(i),
                json!(format_label_selector(at(o, "/spec/selector"))),
            ]
        }
        P::Job => print_job(o, now),
        P::CronJob => {
            let last = at(o, "/status/lastScheduleTime").map_or("<none>".to_string(), |_| {
                since(time_at(o, "/status/lastScheduleTime"), now)
            });
            let suspend = match at(o, "/spec/suspend").and_then(Value::as_bool) {
                Some(true) => "True",
                Some(false) => "False",
                None => "<unset>",
            };
            let tz = at(o, "/spec/timeZone")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            let (n, i) = containers(o, "/spec/jobTemplate/spec/template/spec");
            vec![
                json!(name(o)),
                json!(st(o, "/spec/schedule")),
                json!(tz),
                json!(suspend),
                json!(arr(o, "/status/active").len()),
                json!(last),
                json!(age(o, now)),
                json!(n),
                json!(i),
                json!(format_label_selector(at(
                    o,
                    "/spec/jobTemplate/spec/selector"
                ))),
            ]
        }
        P::Service => print_service(o, now),
        P::Ingress => {
            let class = at(o, "/spec/ingressClassName")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            let rules = arr(o, "/spec/rules");
            let mut hosts: Vec<&str> = Vec::new();
            let mut more = false;
            for r in rules {
                if hosts.len() == 3 {
                    more = true;
                }
                let h = st(r, "/host");
                if !more && !h.is_empty() {
                    hosts.push(h);
                }
            }
            let hosts = if hosts.is_empty() {
                "*".to_string()
            } else if more {
                format!("{} + {} more...", hosts.join(","), rules.len() - 3)
            } else {
                hosts.join(",")
            };
            let ports = if arr(o, "/spec/tls").is_empty() {
                "80"
            } else {
                "80, 443"
            };
            vec![
                json!(name(o)),
                json!(class),
                json!(hosts),
                json!(load_balancer_status(o)),
                json!(ports),
                json!(age(o, now)),
            ]
        }
        P::StatefulSet => {
            let (n, i) = containers(o, "/spec/template/spec");
            let desired = at(o, "/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            vec![
                json!(name(o)),
                json!(format!("{}/{desired}", int(o, "/status/readyReplicas"))),
                json!(age(o, now)),
                json!(n),
                json!(i),
            ]
        }
        P::Endpoints => vec![
            json!(name(o)),
            json!(format_endpoints(o)),
            json!(age(o, now)),
        ],
        P::Node => print_node(o, now),
        P::Event => print_event(info, o, now),
        P::Namespace => vec![
            json!(name(o)),
            json!(st(o, "/status/phase")),
            json!(age(o, now)),
        ],
        P::Secret => vec![
            json!(name(o)),
            json!(st(o, "/type")),
            json!(obj_len(o, "/data")),
            json!(age(o, now)),
        ],
        P::ServiceAccount => vec![
            json!(name(o)),
            json!(arr(o, "/secrets").len()),
            json!(age(o, now)),
        ],
        P::PersistentVolume => {
            let claim = match at(o, "/spec/claimRef") {
                Some(c) => format!("{}/{}", st(c, "/namespace"), st(c, "/name")),
                None => String::new(),
            };
            let phase = if at(o, "/metadata/deletionTimestamp").is_some() {
                "Terminating"
            } else {
                st(o, "/status/phase")
            };
            let class = match at(
                o,
                "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
            ) {
                Some(Value::String(s)) => s.as_str(),
                _ => st(o, "/spec/storageClassName"),
            };
            vec![
                json!(name(o)),
                json!(quantity(at(o, "/spec/capacity/storage"))),
                json!(access_modes(arr(o, "/spec/accessModes"))),
                json!(st(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(phase),
                json!(claim),
                json!(class),
                json!(at(o, "/spec/volumeAttributesClassName")
                    .and_then(Value::as_str)
                    .unwrap_or("<unset>")),
                json!(st(o, "/status/reason")),
                json!(age(o, now)),
                json!(at(o, "/spec/volumeMode")
                    .and_then(Value::as_str)
                    .unwrap_or("<unset>")),
            ]
        }
        P::PersistentVolumeClaim => {
            let phase = if at(o, "/metadata/deletionTimestamp").is_some() {
                "Terminating"
            } else {
                st(o, "/status/phase")
            };
            let volume = st(o, "/spec/volumeName");
            let (capacity, modes) = if volume.is_empty() {
                (String::new(), String::new())
            } else {
                (
                    quantity(at(o, "/status/capacity/storage")),
                    access_modes(arr(o, "/status/accessModes")),
                )
            };
            let class = match at(
                o,
                "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
            ) {
                Some(Value::String(s)) => s.as_str(),
                _ => st(o, "/spec/storageClassName"),
            };
            vec![
                json!(name(o)),
                json!(phase),
                json!(volume),
                json!(capacity),
                json!(modes),
                json!(class),
                json!(at(o, "/spec/volumeAttributesClassName")
                    .and_then(Value::as_str)
                    .unwrap_or("<unset>")),
                json!(age(o, now)),
                json!(at(o, "/spec/volumeMode")
                    .and_then(Value::as_str)
                    .unwrap_or("<unset>")),
            ]
        }
        P::Deployment => {
            let (n, i) = containers(o, "/spec/template/spec");
            let desired = at(o, "/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let selector =
                match label_selector_from_api(at(o, "/spec/selector").unwrap_or(&Value::Null)) {
                    Ok(s) => s.to_string(),
                    Err(_) => "<invalid>".to_string(),
                };
            vec![
                json!(name(o)),
                json!(format!("{}/{desired}", int(o, "/status/readyReplicas"))),
                json!(int(o, "/status/updatedReplicas")),
                json!(int(o, "/status/availableReplicas")),
                json!(age(o, now)),
                json!(n),
                json!(i),
                json!(selector),
            ]
        }
        P::ConfigMap => vec![
            json!(name(o)),
            json!(obj_len(o, "/data") + obj_len(o, "/binaryData")),
            json!(age(o, now)),
        ],
        P::NetworkPolicy => {
            let empty = json!({});
            vec![
                json!(name(o)),
                json!(format_label_selector(Some(
                    at(o, "/spec/podSelector").unwrap_or(&empty)
                ))),
                json!(age(o, now)),
            ]
        }
        P::RoleBinding | P::ClusterRoleBinding => {
            let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
            for s in arr(o, "/subjects") {
                match st(s, "/kind") {
                    "ServiceAccount" => {
                        sas.push(format!("{}/{}", st(s, "/namespace"), st(s, "/name")))
                    }
                    "User" => users.push(st(s, "/name").to_string()),
                    "Group" => groups.push(st(s, "/name").to_string()),
                    _ => {}
                }
            }
            vec![
                json!(name(o)),
                json!(format!(
                    "{}/{}",
                    st(o, "/roleRef/kind"),
                    st(o, "/roleRef/name")
                )),
                json!(age(o, now)),
                json!(users.join(", ")),
                json!(groups.join(", ")),
                json!(sas.join(", ")),
            ]
        }
        P::WebhookConfiguration => vec![
            json!(name(o)),
            json!(at(o, "/webhooks")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)),
            json!(age(o, now)),
        ],
        P::Lease => vec![
            json!(name(o)),
            json!(st(o, "/spec/holderIdentity")),
            json!(age(o, now)),
        ],
        P::StorageClass => {
            let is_default = |k: &str| {
                at(o, &format!("/metadata/annotations/{k}")).and_then(Value::as_str) == Some("true")
            };
            let mut n = name(o);
            if is_default("storageclass.kubernetes.io~1is-default-class")
                || is_default("storageclass.beta.kubernetes.io~1is-default-class")
            {
                n.push_str(" (default)");
            }
            vec![
                json!(n),
                json!(st(o, "/provisioner")),
                json!(at(o, "/reclaimPolicy")
                    .and_then(Value::as_str)
                    .unwrap_or("Delete")),
                json!(at(o, "/volumeBindingMode")
                    .and_then(Value::as_str)
                    .unwrap_or("Immediate")),
                json!(at(o, "/allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)),
                json!(age(o, now)),
            ]
        }
        P::ControllerRevision => {
            let controller = arr(o, "/metadata/ownerReferences")
                .iter()
                .find(|r| at(r, "/controller").and_then(Value::as_bool) == Some(true))
                .map_or("<none>".to_string(), |r| {
                    let group = st(r, "/apiVersion").rsplit_once('/').map_or("", |(g, _)| g);
                    let kind = st(r, "/kind");
                    let gk = if group.is_empty() {
                        kind.to_string()
                    } else {
                        format!("{kind}.{group}")
                    };
                    let n = st(r, "/name");
                    if gk.is_empty() {
                        n.to_string()
                    } else {
                        format!("{}/{n}", gk.to_lowercase())
                    }
                });
            vec![
                json!(name(o)),
                json!(controller),
                json!(int(o, "/revision")),
                json!(age(o, now)),
            ]
        }
        P::ResourceQuota => {
            let hard = map_at(o, "/status/hard");
            let mut names: Vec<&String> = hard.into_iter().flat_map(|m| m.keys()).collect();
            names.sort();
            let (mut req, mut lim) = (String::new(), String::new());
            for r in names {
                let used = at(
                    o,
                    &format!("/status/used/{}", r.replace('~', "~0").replace('/', "~1")),
                );
                let used = used.map_or("0".to_string(), |u| quantity(Some(u)));
                let h = quantity(hard.and_then(|m| m.get(r)));
                let w = if r.split('.').count() > 1 && r.split('.').next() == Some("limits") {
                    &mut lim
                } else {
                    &mut req
                };
                w.push_str(&format!("{r}: {used}/{h}, "));
            }
            vec![
                json!(name(o)),
                json!(req.trim_end_matches(", ")),
                json!(lim.trim_end_matches(", ")),
                json!(age(o, now)),
            ]
        }
        P::CertificateSigningRequest => {
            let signer = match st(o, "/spec/signerName") {
                "" => "<none>".to_string(),
                s => s.to_string(),
            };
            let duration = match at(o, "/spec/expirationSeconds").and_then(Value::as_i64) {
                Some(s) => human_duration(chrono::Duration::seconds(s)),
                None => "<none>".to_string(),
            };
            vec![
                json!(name(o)),
                json!(age(o, now)),
                json!(signer),
                json!(st(o, "/spec/username")),
                json!(duration),
                json!(csr_condition(o)),
            ]
        }
        P::PriorityClass => vec![
            json!(name(o)),
            json!(int(o, "/value")),
            json!(at(o, "/globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            json!(age(o, now)),
            json!(st(o, "/preemptionPolicy")),
        ],
        P::EndpointSlice => {
            let ports: Vec<String> = arr(o, "/ports")
                .iter()
                .map(
                    |p| match (at(p, "/port").and_then(Value::as_i64), at(p, "/name")) {
                        (Some(n), _) => n.to_string(),
                        (None, Some(Value::String(n))) => n.clone(),
                        _ => "*".to_string(),
                    },
                )
                .collect();
            let addrs: Vec<String> = arr(o, "/endpoints")
                .iter()
                .flat_map(|e| arr(e, "/addresses").iter())
                .map(|a| a.as_str().unwrap_or("").to_string())
                .collect();
            vec![
                json!(name(o)),
                json!(st(o, "/addressType")),
                json!(list_with_more(&ports, 3)),
                json!(list_with_more(&addrs, 3)),
                json!(age(o, now)),
            ]
        }
        P::Default => {
            let created = time_at(o, "/metadata/creationTimestamp")
                .map_or("0001-01-01T00:00:00Z".to_string(), |t| {
                    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
                });
            vec![json!(name(o)), json!(created)]
        }
    };
    (cells, None)
}

/// `listWithMoreString`: the first `max` items, `+ N more...`, or `<unset>` when empty.
fn list_with_more(items: &[String], max: usize) -> String {
    if items.len() > max {
        return format!("{} + {} more...", items[..max].join(","), items.len() - max);
    }
    if items.is_empty() {
        return "<unset>".to_string();
    }
    items.join(",")
}

/// A quantity as stored (upstream prints the canonical `Quantity.String()`; stored quantities
/// are already canonical after the round-trip through the typed object).
fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// `helper.GetAccessModesAsString`.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|x| x.as_str() == Some(m));
    let mut out = Vec::new();
    for (mode, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if has(mode) {
            out.push(short);
        }
    }
    out.join(",")
}

/// `loadBalancerStatusStringer` (server tables are wide: never clipped).
fn load_balancer_status(o: &Value) -> String {
    let mut set: Vec<&str> = Vec::new();
    for i in arr(o, "/status/loadBalancer/ingress") {
        let v = if !st(i, "/ip").is_empty() {
            st(i, "/ip")
        } else {
            st(i, "/hostname")
        };
        if !v.is_empty() && !set.contains(&v) {
            set.push(v);
        }
    }
    set.sort();
    set.join(",")
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `formatEndpoints` with all ports.
fn format_endpoints(o: &Value) -> String {
    let subsets = arr(o, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let max = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ss in subsets {
        let addrs = arr(ss, "/addresses");
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(st(a, "/ip").to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(join_host_port(st(a, "/ip"), int(p, "/port")));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - max)
    } else {
        ret
    }
}

fn print_service(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ty = at(o, "/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let cluster_ip = arr(o, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .or_else(|| at(o, "/spec/clusterIP").and_then(Value::as_str))
        .unwrap_or("<none>");
    let external: Vec<&str> = arr(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external_ip = match ty {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_status(o);
            if !external.is_empty() {
                let mut all: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    all.extend(lb.split(','));
                }
                all.extend(external.iter());
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => st(o, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = at(p, "/protocol").and_then(Value::as_str).unwrap_or("TCP");
            let node_port = int(p, "/nodePort");
            if node_port > 0 {
                format!("{}:{node_port}/{proto}", int(p, "/port"))
            } else {
                format!("{}/{proto}", int(p, "/port"))
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        json!(name(o)),
        json!(ty),
        json!(cluster_ip),
        json!(external_ip),
        json!(ports),
        json!(age(o, now)),
        json!(format_labels(map_at(o, "/spec/selector"))),
    ]
}

fn print_node(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut status: Vec<&str> = Vec::new();
    // The last condition of a type wins, as upstream's condition map.
    if let Some(c) = arr(o, "/status/conditions")
        .iter()
        .rev()
        .find(|c| st(c, "/type") == "Ready")
    {
        status.push(if st(c, "/status") == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if at(o, "/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    let mut roles: Vec<&str> = Vec::new();
    for (k, v) in map_at(o, "/metadata/labels").into_iter().flatten() {
        let role = if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
            r
        } else if k == "kubernetes.io/role" {
            v.as_str().unwrap_or("")
        } else {
            ""
        };
        if !role.is_empty() && !roles.contains(&role) {
            roles.push(role);
        }
    }
    roles.sort();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let address = |ty: &str| {
        arr(o, "/status/addresses")
            .iter()
            .find(|a| st(a, "/type") == ty)
            .map_or("<none>", |a| st(a, "/address"))
    };
    let unknown = |s: &str| {
        if s.is_empty() {
            "<unknown>".to_string()
        } else {
            s.to_string()
        }
    };
    vec![
        json!(name(o)),
        json!(status.join(",")),
        json!(roles),
        json!(age(o, now)),
        json!(st(o, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(unknown(st(o, "/status/nodeInfo/osImage"))),
        json!(unknown(st(o, "/status/nodeInfo/kernelVersion"))),
        json!(unknown(st(o, "/status/nodeInfo/containerRuntimeVersion"))),
    ]
}

fn print_job(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let succeeded = int(o, "/status/succeeded");
    let completions = match at(o, "/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = int(o, "/spec/parallelism");
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let start = time_at(o, "/status/startTime");
    let done = time_at(o, "/status/completionTime");
    let duration = match (start, done) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(now - s),
        (Some(s), Some(d)) => human_duration(d - s),
    };
    let conds = "/status/conditions";
    let status = if has_condition(o, conds, "Complete") {
        "Complete"
    } else if has_condition(o, conds, "Failed") {
        "Failed"
    } else if at(o, "/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has_condition(o, conds, "Suspended") {
        "Suspended"
    } else if has_condition(o, conds, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (n, i) = containers(o, "/spec/template/spec");
    vec![
        json!(name(o)),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(o, now)),
        json!(n),
        json!(i),
        json!(format_label_selector(at(o, "/spec/selector"))),
    ]
}

fn print_event(info: &ResourceInfo, o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // events.k8s.io/v1 is a second view of the same objects under other field names.
    let new_api = info.group == "events.k8s.io";
    let f = |core: &'static str, ev: &'static str| if new_api { ev } else { core };
    let first = match time_at(o, f("/firstTimestamp", "/deprecatedFirstTimestamp")) {
        Some(t) => since(Some(t), now),
        None => since(time_at(o, "/eventTime"), now),
    };
    let mut last = match time_at(o, f("/lastTimestamp", "/deprecatedLastTimestamp")) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(o, f("/count", "/deprecatedCount"));
    if at(o, "/series").is_some() {
        last = since(time_at(o, "/series/lastObservedTime"), now);
        count = int(o, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let involved = at(o, f("/involvedObject", "/regarding")).unwrap_or(&Value::Null);
    let kind = st(involved, "/kind").to_lowercase();
    let target = if st(involved, "/name").is_empty() {
        kind
    } else {
        format!("{kind}/{}", st(involved, "/name"))
    };
    let src = f("/source", "/deprecatedSource");
    let mut component = st(o, &format!("{src}/component"));
    if component.is_empty() {
        component = st(o, f("/reportingComponent", "/reportingController"));
    }
    let mut host = st(o, &format!("{src}/host"));
    if host.is_empty() {
        host = st(o, "/reportingInstance");
    }
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(last),
        json!(st(o, "/type")),
        json!(st(o, "/reason")),
        json!(target),
        json!(st(involved, "/fieldPath")),
        json!(source),
        json!(st(o, f("/message", "/note")).trim()),
        json!(first),
        json!(count),
        json!(name(o)),
    ]
}

/// `printPod`: READY, STATUS (the reason logic), RESTARTS with the age of the last restart,
/// then the wide columns; Succeeded/Failed pods carry a `Completed` row condition.
fn print_pod(o: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let phase = st(o, "/status/phase");
    let mut reason = phase.to_string();
    if !st(o, "/status/reason").is_empty() {
        reason = st(o, "/status/reason").to_string();
    }
    for c in arr(o, "/status/conditions") {
        if st(c, "/type") == "PodScheduled" && st(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }
    let conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
            "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed",
            "message": "The pod failed."}]),
        ),
        _ => None,
    };

    let init_specs = arr(o, "/spec/initContainers");
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| st(c, "/name") == name && st(c, "/restartPolicy") == "Always")
    };
    let total = arr(o, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| st(c, "/restartPolicy") == "Always")
            .count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_sidecar_restart: Option<DateTime<Utc>> = None;
    let later = |cur: Option<DateTime<Utc>>, t: Option<DateTime<Utc>>| match (cur, t) {
        (Some(c), Some(t)) if t > c => Some(t),
        (None, t) => t,
        (c, _) => c,
    };

    let mut initializing = false;
    for (i, c) in arr(o, "/status/initContainerStatuses").iter().enumerate() {
        restarts += int(c, "/restartCount");
        let finished = time_at(c, "/lastState/terminated/finishedAt");
        if at(c, "/lastState/terminated").is_some() {
            last_restart = later(last_restart, finished);
        }
        let cname = st(c, "/name");
        if restartable(cname) {
            sidecar_restarts += int(c, "/restartCount");
            if at(c, "/lastState/terminated").is_some() {
                last_sidecar_restart = later(last_sidecar_restart, finished);
            }
        }
        let terminated = at(c, "/state/terminated");
        let waiting_reason = st(c, "/state/waiting/reason");
        if terminated.is_some() && int(c, "/state/terminated/exitCode") == 0 {
            continue;
        }
        if restartable(cname) && at(c, "/started").and_then(Value::as_bool) == Some(true) {
            if at(c, "/ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            let r = st(t, "/reason");
            reason = if r.is_empty() {
                if int(t, "/signal") != 0 {
                    format!("Init:Signal:{}", int(t, "/signal"))
                } else {
                    format!("Init:ExitCode:{}", int(t, "/exitCode"))
                }
            } else {
                format!("Init:{r}")
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || has_condition(o, "/status/conditions", "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in arr(o, "/status/containerStatuses").iter().rev() {
            restarts += int(c, "/restartCount");
            if at(c, "/lastState/terminated").is_some() {
                last_restart = later(last_restart, time_at(c, "/lastState/terminated/finishedAt"));
            }
            let waiting = st(c, "/state/waiting/reason");
            let terminated = at(c, "/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                let r = st(t, "/reason");
                reason = if !r.is_empty() {
                    r.to_string()
                } else if int(t, "/signal") != 0 {
                    format!("Signal:{}", int(t, "/signal"))
                } else {
                    format!("ExitCode:{}", int(t, "/exitCode"))
                };
            } else if at(c, "/ready").and_then(Value::as_bool) == Some(true)
                && at(c, "/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if has_condition(o, "/status/conditions", "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = at(o, "/metadata/deletionTimestamp").is_some();
    if deleting && st(o, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Failed" && phase != "Succeeded" {
        reason = "Terminating".to_string();
    }

    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };

    let none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    let pod_ip = arr(o, "/status/podIPs")
        .first()
        .map_or("", |p| st(p, "/ip"));
    let gates = arr(o, "/spec/readinessGates");
    let readiness = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let trues = gates
            .iter()
            .filter(|g| {
                arr(o, "/status/conditions")
                    .iter()
                    .find(|c| st(c, "/type") == st(g, "/conditionType"))
                    .is_some_and(|c| st(c, "/status") == "True")
            })
            .count();
        format!("{trues}/{}", gates.len())
    };
    let cells = vec![
        json!(name(o)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_str),
        json!(age(o, now)),
        json!(none(pod_ip)),
        json!(none(st(o, "/spec/nodeName"))),
        json!(none(st(o, "/status/nominatedNodeName"))),
        json!(readiness),
    ];
    (cells, conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// `now` minus `secs`, as an RFC 3339 timestamp.
    fn ago(secs: i64) -> String {
        (now() - chrono::Duration::seconds(secs))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn table(group: &str, plural: &str, obj: Value) -> Value {
        let info = find(group, "v1", plural).unwrap();
        to_table_at(info, &[&obj], json!({}), IncludeObject::None, now())
    }

    fn cells(group: &str, plural: &str, obj: Value) -> Vec<Value> {
        table(group, plural, obj)["rows"][0]["cells"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn column_names(group: &str, plural: &str) -> Vec<(String, i64)> {
        table(group, plural, json!({"metadata": {"name": "x"}}))["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["priority"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn human_durations() {
        let cases: &[(i64, &str)] = &[
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (190, "3m10s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60 * 25, "3h25m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400 + 3 * 3600, "2d3h"),
            (3 * 86400, "3d"),
            (30 * 86400, "30d"),
            (2 * 365 * 86400 + 10 * 86400, "2y10d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(
                human_duration(chrono::Duration::seconds(*secs)),
                *want,
                "{secs}s"
            );
        }
    }

    fn running(name: &str, ready: bool, restarts: i64) -> Value {
        json!({"name": name, "ready": ready, "restartCount": restarts,
               "state": {"running": {"startedAt": ago(100)}}})
    }

    #[test]
    fn pod_status_logic() {
        let two = json!([{"name": "a"}, {"name": "b"}]);
        let cases: Vec<(&str, Value, (&str, &str, &str))> = vec![
            (
                "pending, nothing yet",
                json!({"spec": {"containers": two}, "status": {"phase": "Pending"}}),
                ("0/2", "Pending", "0"),
            ),
            (
                "container creating",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending",
                    "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "ContainerCreating"}}}]}}),
                ("0/1", "ContainerCreating", "0"),
            ),
            (
                "running and ready",
                json!({"spec": {"containers": two}, "status": {"phase": "Running",
                    "containerStatuses": [running("a", true, 0), running("b", true, 0)]}}),
                ("2/2", "Running", "0"),
            ),
            (
                "crash loop with last restart age",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running",
                    "containerStatuses": [{"name": "a", "ready": false, "restartCount": 5,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(300)}}}]}}),
                ("0/1", "CrashLoopBackOff", "5 (5m ago)"),
            ),
            (
                "completed",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Succeeded",
                    "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}),
                ("0/1", "Completed", "0"),
            ),
            (
                "terminated without reason, by signal",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Failed",
                    "containerStatuses": [{"name": "a", "restartCount": 0,
                        "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}}),
                ("0/1", "Signal:9", "0"),
            ),
            (
                "terminated without reason, exit code",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Failed",
                    "containerStatuses": [{"name": "a", "restartCount": 0,
                        "state": {"terminated": {"exitCode": 2}}}]}}),
                ("0/1", "ExitCode:2", "0"),
            ),
            (
                "one completed, one still running and ready",
                json!({"spec": {"containers": two}, "status": {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [
                        {"name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        running("b", true, 0)]}}),
                ("1/2", "Running", "0"),
            ),
            (
                "one completed, one running, pod not ready",
                json!({"spec": {"containers": two}, "status": {"phase": "Running",
                    "containerStatuses": [
                        {"name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        running("b", true, 0)]}}),
                ("1/2", "NotReady", "0"),
            ),
            (
                "init container running",
                json!({"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
                    "status": {"phase": "Pending",
                    "initContainerStatuses": [{"name": "i", "restartCount": 0, "state": {"running": {}}}],
                    "containerStatuses": [{"name": "a", "restartCount": 0,
                        "state": {"waiting": {"reason": "PodInitializing"}}}]}}),
                ("0/1", "Init:0/1", "0"),
            ),
            (
                "second of two init containers",
                json!({"spec": {"initContainers": [{"name": "i"}, {"name": "j"}], "containers": [{"name": "a"}]},
                    "status": {"phase": "Pending",
                    "initContainerStatuses": [
                        {"name": "i", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}},
                        {"name": "j", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}}),
                ("0/1", "Init:1/2", "0"),
            ),
            (
                "init container crash loop",
                json!({"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
                    "status": {"phase": "Pending",
                    "initContainerStatuses": [{"name": "i", "restartCount": 3,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
                ("0/1", "Init:CrashLoopBackOff", "3"),
            ),
            (
                "init container failed",
                json!({"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
                    "status": {"phase": "Pending",
                    "initContainerStatuses": [{"name": "i", "restartCount": 0,
                        "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}}),
                ("0/1", "Init:Error", "0"),
            ),
            (
                "init container exit code",
                json!({"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
                    "status": {"phase": "Pending",
                    "initContainerStatuses": [{"name": "i", "restartCount": 0,
                        "state": {"terminated": {"exitCode": 3}}}]}}),
                ("0/1", "Init:ExitCode:3", "0"),
            ),
            (
                "sidecar counted and ready",
                json!({"spec": {"initContainers": [{"name": "s", "restartPolicy": "Always"}], "containers": [{"name": "a"}]},
                    "status": {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                    "initContainerStatuses": [{"name": "s", "restartCount": 1, "started": true, "ready": true,
                        "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(7200)}}}],
                    "containerStatuses": [running("a", true, 0)]}}),
                ("2/2", "Running", "1 (120m ago)"),
            ),
            (
                "terminating",
                json!({"metadata": {"deletionTimestamp": ago(1)}, "spec": {"containers": [{"name": "a"}]},
                    "status": {"phase": "Running", "containerStatuses": [running("a", true, 0)]}}),
                ("1/1", "Terminating", "0"),
            ),
            (
                "terminal pods being deleted keep their status",
                json!({"metadata": {"deletionTimestamp": ago(1)}, "spec": {"containers": [{"name": "a"}]},
                    "status": {"phase": "Succeeded", "containerStatuses": [{"name": "a", "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}),
                ("0/1", "Completed", "0"),
            ),
            (
                "node lost",
                json!({"metadata": {"deletionTimestamp": ago(1)}, "spec": {"containers": [{"name": "a"}]},
                    "status": {"phase": "Running", "reason": "NodeLost"}}),
                ("0/1", "Unknown", "0"),
            ),
            (
                "status reason wins over phase",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Failed", "reason": "Evicted"}}),
                ("0/1", "Evicted", "0"),
            ),
            (
                "scheduling gated",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending",
                    "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}}),
                ("0/1", "SchedulingGated", "0"),
            ),
        ];
        for (what, mut pod, (ready, status, restarts)) in cases {
            pod["metadata"]["name"] = json!("p");
            pod["metadata"]["creationTimestamp"] = json!(ago(65));
            let c = cells("", "pods", pod);
            assert_eq!(c[1], json!(ready), "{what}: ready");
            assert_eq!(c[2], json!(status), "{what}: status");
            assert_eq!(c[3], json!(restarts), "{what}: restarts");
            assert_eq!(c[4], json!("65s"), "{what}: age");
        }
    }

    #[test]
    fn pod_row_wide_cells_conditions_and_columns() {
        let pod = json!({
            "metadata": {"name": "web-0", "namespace": "default", "creationTimestamp": ago(190)},
            "spec": {"nodeName": "node-1", "containers": [{"name": "a"}],
                     "readinessGates": [{"conditionType": "example.com/gate"}]},
            "status": {"phase": "Succeeded", "podIPs": [{"ip": "10.244.0.5"}],
                       "conditions": [{"type": "example.com/gate", "status": "True"}]}
        });
        let t = table("", "pods", pod);
        let row = &t["rows"][0];
        assert_eq!(
            row["cells"],
            json!([
                "web-0",
                "0/1",
                "Succeeded",
                "0",
                "3m10s",
                "10.244.0.5",
                "node-1",
                "<none>",
                "1/1"
            ])
        );
        assert_eq!(row["conditions"][0]["type"], "Completed");
        assert_eq!(row["conditions"][0]["reason"], "Succeeded");
        let want = [
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1),
        ];
        let got = column_names("", "pods");
        assert_eq!(got, want.map(|(n, p)| (n.to_string(), p)).to_vec());
        let cols = t["columnDefinitions"].as_array().unwrap();
        assert_eq!(cols[0]["format"], "name");
        assert_eq!(cols[0]["type"], "string");
        assert!(cols[0]["description"]
            .as_str()
            .unwrap()
            .starts_with("Name must be unique within a namespace."));
        assert!(cols[4]["description"]
            .as_str()
            .unwrap()
            .starts_with("CreationTimestamp is a timestamp"));
        assert!(cols[5]["description"]
            .as_str()
            .unwrap()
            .starts_with("podIP address allocated to the pod."));
    }

    #[test]
    fn include_object_and_list_meta() {
        let info = find("", "v1", "configmaps").unwrap();
        let cm = json!({"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "c", "namespace": "ns", "labels": {"a": "b"}}, "data": {"k": "v"}});
        let meta = json!({"resourceVersion": "42", "continue": "tok", "remainingItemCount": null});
        let t = to_table_at(info, &[&cm], meta.clone(), IncludeObject::Metadata, now());
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "42", "continue": "tok"})
        );
        assert_eq!(
            t["rows"][0]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "c", "namespace": "ns", "labels": {"a": "b"}}})
        );
        let t = to_table_at(info, &[&cm], meta.clone(), IncludeObject::Object, now());
        assert_eq!(t["rows"][0]["object"], cm);
        let t = to_table_at(info, &[&cm], meta, IncludeObject::None, now());
        assert_eq!(t["rows"][0]["object"], Value::Null);
        assert!(t["rows"][0].get("conditions").is_none());
        let t = to_table_at(info, &[], json!({}), IncludeObject::None, now());
        assert_eq!(t["rows"], json!([]));
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 3);

        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("")), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("None")), Ok(IncludeObject::None));
        assert_eq!(
            IncludeObject::parse(Some("Object")),
            Ok(IncludeObject::Object)
        );
        assert_eq!(
            IncludeObject::parse(Some("all")),
            Err("unrecognized includeObject value: \"all\"".to_string())
        );
    }

    #[test]
    fn column_sets() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "",
                "nodes",
                &[
                    "Name",
                    "Status",
                    "Roles",
                    "Age",
                    "Version",
                    "Internal-IP",
                    "External-IP",
                    "OS-Image",
                    "Kernel-Version",
                    "Container-Runtime",
                ],
            ),
            ("", "namespaces", &["Name", "Status", "Age"]),
            (
                "",
                "services",
                &[
                    "Name",
                    "Type",
                    "Cluster-IP",
                    "External-IP",
                    "Port(s)",
                    "Age",
                    "Selector",
                ],
            ),
            ("", "endpoints", &["Name", "Endpoints", "Age"]),
            ("", "configmaps", &["Name", "Data", "Age"]),
            ("", "secrets", &["Name", "Type", "Data", "Age"]),
            ("", "serviceaccounts", &["Name", "Secrets", "Age"]),
            (
                "apps",
                "deployments",
                &[
                    "Name",
                    "Ready",
                    "Up-to-date",
                    "Available",
                    "Age",
                    "Containers",
                    "Images",
                    "Selector",
                ],
            ),
            (
                "apps",
                "replicasets",
                &[
                    "Name",
                    "Desired",
                    "Current",
                    "Ready",
                    "Age",
                    "Containers",
                    "Images",
                    "Selector",
                ],
            ),
            (
                "",
                "replicationcontrollers",
                &[
                    "Name",
                    "Desired",
                    "Current",
                    "Ready",
                    "Age",
                    "Containers",
                    "Images",
                    "Selector",
                ],
            ),
            (
                "apps",
                "statefulsets",
                &["Name", "Ready", "Age", "Containers", "Images"],
            ),
            (
                "apps",
                "daemonsets",
                &[
                    "Name",
                    "Desired",
                    "Current",
                    "Ready",
                    "Up-to-date",
                    "Available",
                    "Node Selector",
                    "Age",
                    "Containers",
                    "Images",
                    "Selector",
                ],
            ),
            (
                "batch",
                "jobs",
                &[
                    "Name",
                    "Status",
                    "Completions",
                    "Duration",
                    "Age",
                    "Containers",
                    "Images",
                    "Selector",
                ],
            ),
            (
                "batch",
                "cronjobs",
                &[
                    "Name",
                    "Schedule",
                    "Timezone",
                    "Suspend",
                    "Active",
                    "Last Schedule",
                    "Age",
                    "Containers",
                    "Images",
                    "Selector",
                ],
            ),
            (
                "",
                "events",
                &[
                    "Last Seen",
                    "Type",
                    "Reason",
                    "Object",
                    "Subobject",
                    "Source",
                    "Message",
                    "First Seen",
                    "Count",
                    "Name",
                ],
            ),
            (
                "events.k8s.io",
                "events",
                &[
                    "Last Seen",
                    "Type",
                    "Reason",
                    "Object",
                    "Subobject",
                    "Source",
                    "Message",
                    "First Seen",
                    "Count",
                    "Name",
                ],
            ),
            ("coordination.k8s.io", "leases", &["Name", "Holder", "Age"]),
            (
                "discovery.k8s.io",
                "endpointslices",
                &["Name", "AddressType", "Ports", "Endpoints", "Age"],
            ),
            (
                "networking.k8s.io",
                "ingresses",
                &["Name", "Class", "Hosts", "Address", "Ports", "Age"],
            ),
            (
                "networking.k8s.io",
                "networkpolicies",
                &["Name", "Pod-Selector", "Age"],
            ),
            (
                "policy",
                "poddisruptionbudgets",
                &[
                    "Name",
                    "Min Available",
                    "Max Unavailable",
                    "Allowed Disruptions",
                    "Age",
                ],
            ),
            (
                "scheduling.k8s.io",
                "priorityclasses",
                &["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"],
            ),
            (
                "storage.k8s.io",
                "storageclasses",
                &[
                    "Name",
                    "Provisioner",
                    "ReclaimPolicy",
                    "VolumeBindingMode",
                    "AllowVolumeExpansion",
                    "Age",
                ],
            ),
            (
                "",
                "persistentvolumes",
                &[
                    "Name",
                    "Capacity",
                    "Access Modes",
                    "Reclaim Policy",
                    "Status",
                    "Claim",
                    "StorageClass",
                    "VolumeAttributesClass",
                    "Reason",
                    "Age",
                    "VolumeMode",
                ],
            ),
            (
                "",
                "persistentvolumeclaims",
                &[
                    "Name",
                    "Status",
                    "Volume",
                    "Capacity",
                    "Access Modes",
                    "StorageClass",
                    "VolumeAttributesClass",
                    "Age",
                    "VolumeMode",
                ],
            ),
            ("", "limitranges", &["Name", "Created At"]),
            ("", "resourcequotas", &["Name", "Request", "Limit", "Age"]),
            (
                "apps",
                "controllerrevisions",
                &["Name", "Controller", "Revision", "Age"],
            ),
            (
                "rbac.authorization.k8s.io",
                "roles",
                &["Name", "Created At"],
            ),
            (
                "rbac.authorization.k8s.io",
                "clusterroles",
                &["Name", "Created At"],
            ),
            (
                "rbac.authorization.k8s.io",
                "rolebindings",
                &["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"],
            ),
            (
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                &["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"],
            ),
            (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                &["Name", "Webhooks", "Age"],
            ),
            (
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                &["Name", "Webhooks", "Age"],
            ),
        ];
        for (group, plural, want) in cases {
            let got: Vec<String> = column_names(group, plural)
                .into_iter()
                .map(|c| c.0)
                .collect();
            assert_eq!(got, *want, "{group}/{plural}");
            // Every row has one cell per column.
            let t = table(
                group,
                plural,
                json!({"metadata": {"name": "x", "creationTimestamp": ago(5)}}),
            );
            assert_eq!(
                t["rows"][0]["cells"].as_array().unwrap().len(),
                want.len(),
                "{group}/{plural} cells"
            );
            for c in t["columnDefinitions"].as_array().unwrap() {
                assert!(
                    !c["description"].as_str().unwrap().is_empty(),
                    "{group}/{plural} {}",
                    c["name"]
                );
            }
        }
    }

    #[test]
    fn printer_cells() {
        let t = ago(3 * 86400 + 2 * 3600);
        let template = json!({"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"},
            {"name": "side", "image": "busybox"}]}});
        let cases: Vec<(&str, &str, Value, Value)> = vec![
            (
                "",
                "nodes",
                json!({
                "metadata": {"name": "n1", "creationTimestamp": t, "labels": {
                    "node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "edge", "x": "y"}},
                "spec": {"unschedulable": true},
                "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "n1"}],
                    "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1.0",
                        "containerRuntimeVersion": "capstan://0.1.0"}}}),
                json!([
                    "n1",
                    "Ready,SchedulingDisabled",
                    "control-plane,edge",
                    "3d2h",
                    "v1.33.0",
                    "192.168.1.10",
                    "<none>",
                    "Debian GNU/Linux 12",
                    "6.1.0",
                    "capstan://0.1.0"
                ]),
            ),
            (
                "",
                "nodes",
                json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
                json!([
                    "n2",
                    "NotReady",
                    "<none>",
                    "<unknown>",
                    "",
                    "<none>",
                    "<none>",
                    "<unknown>",
                    "<unknown>",
                    "<unknown>"
                ]),
            ),
            (
                "",
                "namespaces",
                json!({"metadata": {"name": "kube-system", "creationTimestamp": t}, "status": {"phase": "Active"}}),
                json!(["kube-system", "Active", "3d2h"]),
            ),
            (
                "",
                "services",
                json!({"metadata": {"name": "web", "creationTimestamp": t},
                "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                    "selector": {"app": "web", "tier": "a"}}}),
                json!([
                    "web",
                    "NodePort",
                    "10.96.0.10",
                    "<none>",
                    "80:30080/TCP,53/UDP",
                    "3d2h",
                    "app=web,tier=a"
                ]),
            ),
            (
                "",
                "services",
                json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.11"],
                    "ports": [{"port": 443}]}, "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}}),
                json!([
                    "lb",
                    "LoadBalancer",
                    "10.96.0.11",
                    "203.0.113.9",
                    "443/TCP",
                    "<unknown>",
                    "<none>"
                ]),
            ),
            (
                "",
                "services",
                json!({"metadata": {"name": "lb2"}, "spec": {"type": "LoadBalancer", "clusterIP": "None"}}),
                json!([
                    "lb2",
                    "LoadBalancer",
                    "None",
                    "<pending>",
                    "<none>",
                    "<unknown>",
                    "<none>"
                ]),
            ),
            (
                "",
                "services",
                json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}),
                json!([
                    "ext",
                    "ExternalName",
                    "<none>",
                    "example.com",
                    "<none>",
                    "<unknown>",
                    "<none>"
                ]),
            ),
            (
                "",
                "endpoints",
                json!({"metadata": {"name": "web", "creationTimestamp": t}, "subsets": [
                {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}, {"ip": "10.0.0.4"}], "ports": [{"port": 8080}]}]}),
                json!([
                    "web",
                    "10.0.0.1:8080,10.0.0.2:8080,[fd00::3]:8080 + 1 more...",
                    "3d2h"
                ]),
            ),
            (
                "",
                "endpoints",
                json!({"metadata": {"name": "none"}}),
                json!(["none", "<none>", "<unknown>"]),
            ),
            (
                "",
                "configmaps",
                json!({"metadata": {"name": "cfg", "creationTimestamp": t}, "data": {"a": "1", "b": "2"},
                "binaryData": {"c": "AA=="}}),
                json!(["cfg", 3, "3d2h"]),
            ),
            (
                "",
                "secrets",
                json!({"metadata": {"name": "s", "creationTimestamp": t}, "type": "kubernetes.io/tls",
                "data": {"tls.crt": "", "tls.key": ""}}),
                json!(["s", "kubernetes.io/tls", 2, "3d2h"]),
            ),
            (
                "",
                "serviceaccounts",
                json!({"metadata": {"name": "default", "creationTimestamp": t}}),
                json!(["default", 0, "3d2h"]),
            ),
            (
                "apps",
                "deployments",
                json!({"metadata": {"name": "web", "creationTimestamp": t},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template},
                "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
                json!([
                    "web",
                    "2/3",
                    3,
                    2,
                    "3d2h",
                    "nginx,side",
                    "nginx:1.27,busybox",
                    "app=web"
                ]),
            ),
            (
                "apps",
                "replicasets",
                json!({"metadata": {"name": "web-5d", "creationTimestamp": t},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "pod-template-hash", "operator": "In", "values": ["5d"]}]}, "template": template},
                "status": {"replicas": 3, "readyReplicas": 1}}),
                json!([
                    "web-5d",
                    3,
                    3,
                    1,
                    "3d2h",
                    "nginx,side",
                    "nginx:1.27,busybox",
                    "app=web,pod-template-hash in (5d)"
                ]),
            ),
            (
                "",
                "replicationcontrollers",
                json!({"metadata": {"name": "rc", "creationTimestamp": t},
                "spec": {"replicas": 2, "selector": {"app": "rc"}, "template": template}, "status": {"replicas": 2, "readyReplicas": 2}}),
                json!([
                    "rc",
                    2,
                    2,
                    2,
                    "3d2h",
                    "nginx,side",
                    "nginx:1.27,busybox",
                    "app=rc"
                ]),
            ),
            (
                "apps",
                "statefulsets",
                json!({"metadata": {"name": "db", "creationTimestamp": t},
                "spec": {"replicas": 3, "template": template}, "status": {"readyReplicas": 1}}),
                json!(["db", "1/3", "3d2h", "nginx,side", "nginx:1.27,busybox"]),
            ),
            (
                "apps",
                "daemonsets",
                json!({"metadata": {"name": "proxy", "creationTimestamp": t},
                "spec": {"selector": {"matchLabels": {"k8s-app": "proxy"}},
                    "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "p", "image": "proxy:1"}]}}},
                "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                    "updatedNumberScheduled": 3, "numberAvailable": 2}}),
                json!([
                    "proxy",
                    3,
                    3,
                    2,
                    3,
                    2,
                    "kubernetes.io/os=linux",
                    "3d2h",
                    "p",
                    "proxy:1",
                    "k8s-app=proxy"
                ]),
            ),
            (
                "batch",
                "jobs",
                json!({"metadata": {"name": "pi", "creationTimestamp": t},
                "spec": {"completions": 1, "selector": {"matchLabels": {"job-name": "pi"}}, "template": template},
                "status": {"succeeded": 1, "startTime": ago(600), "completionTime": ago(570),
                    "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}}),
                json!([
                    "pi",
                    "Complete",
                    "1/1",
                    "30s",
                    "3d2h",
                    "nginx,side",
                    "nginx:1.27,busybox",
                    "job-name=pi"
                ]),
            ),
            (
                "batch",
                "jobs",
                json!({"metadata": {"name": "par", "creationTimestamp": t},
                "spec": {"parallelism": 3, "template": template}, "status": {"succeeded": 0, "startTime": ago(200)}}),
                json!([
                    "par",
                    "Running",
                    "0/1 of 3",
                    "3m20s",
                    "3d2h",
                    "nginx,side",
                    "nginx:1.27,busybox",
                    "<none>"
                ]),
            ),
            (
                "batch",
                "jobs",
                json!({"metadata": {"name": "bad"}, "spec": {"completions": 2, "template": template},
                "status": {"conditions": [{"type": "Failed", "status": "True"}]}}),
                json!([
                    "bad",
                    "Failed",
                    "0/2",
                    "",
                    "<unknown>",
                    "nginx,side",
                    "nginx:1.27,busybox",
                    "<none>"
                ]),
            ),
            (
                "batch",
                "cronjobs",
                json!({"metadata": {"name": "nightly", "creationTimestamp": t},
                "spec": {"schedule": "0 3 * * *", "suspend": false, "jobTemplate": {"spec": {"template": template}}},
                "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": ago(3600)}}),
                json!([
                    "nightly",
                    "0 3 * * *",
                    "<none>",
                    "False",
                    1,
                    "60m",
                    "3d2h",
                    "nginx,side",
                    "nginx:1.27,busybox",
                    "<none>"
                ]),
            ),
            (
                "",
                "events",
                json!({"metadata": {"name": "web-0.17a", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{nginx}"},
                "reason": "Pulled", "type": "Normal", "message": "Container image pulled\n",
                "source": {"component": "kubelet", "host": "n1"},
                "firstTimestamp": ago(600), "lastTimestamp": ago(30), "count": 4}),
                json!([
                    "30s",
                    "Normal",
                    "Pulled",
                    "pod/web-0",
                    "spec.containers{nginx}",
                    "kubelet, n1",
                    "Container image pulled",
                    "10m",
                    4,
                    "web-0.17a"
                ]),
            ),
            (
                "",
                "events",
                json!({"metadata": {"name": "e2"}, "involvedObject": {"kind": "Node"},
                "reason": "Starting", "type": "Normal", "eventTime": "2024-06-01T11:59:00.000000Z",
                "reportingComponent": "kube-proxy", "reportingInstance": "n1", "series": {"count": 7, "lastObservedTime": ago(5)}}),
                json!([
                    "5s",
                    "Normal",
                    "Starting",
                    "node",
                    "",
                    "kube-proxy, n1",
                    "",
                    "60s",
                    7,
                    "e2"
                ]),
            ),
            (
                "events.k8s.io",
                "events",
                json!({"metadata": {"name": "e3"}, "regarding": {"kind": "Pod", "name": "p"},
                "reason": "Scheduled", "type": "Normal", "note": "assigned", "eventTime": ago(90),
                "reportingController": "default-scheduler"}),
                json!([
                    "90s",
                    "Normal",
                    "Scheduled",
                    "pod/p",
                    "",
                    "default-scheduler",
                    "assigned",
                    "90s",
                    1,
                    "e3"
                ]),
            ),
            (
                "coordination.k8s.io",
                "leases",
                json!({"metadata": {"name": "n1", "creationTimestamp": t},
                "spec": {"holderIdentity": "n1"}}),
                json!(["n1", "n1", "3d2h"]),
            ),
            (
                "discovery.k8s.io",
                "endpointslices",
                json!({"metadata": {"name": "web-abc", "creationTimestamp": t},
                "addressType": "IPv4", "ports": [{"port": 80}, {"name": "metrics"}, {}, {"port": 9}],
                "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]}),
                json!([
                    "web-abc",
                    "IPv4",
                    "80,metrics,* + 1 more...",
                    "10.0.0.1,10.0.0.2",
                    "3d2h"
                ]),
            ),
            (
                "discovery.k8s.io",
                "endpointslices",
                json!({"metadata": {"name": "empty"}, "addressType": "IPv6"}),
                json!(["empty", "IPv6", "<unset>", "<unset>", "<unknown>"]),
            ),
            (
                "networking.k8s.io",
                "ingresses",
                json!({"metadata": {"name": "ing", "creationTimestamp": t},
                "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}],
                    "tls": [{"hosts": ["a.example.com"]}]},
                "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}, {"ip": "203.0.113.1"}]}}}),
                json!([
                    "ing",
                    "nginx",
                    "a.example.com,b.example.com",
                    "203.0.113.1,lb.example.com",
                    "80, 443",
                    "3d2h"
                ]),
            ),
            (
                "networking.k8s.io",
                "ingresses",
                json!({"metadata": {"name": "any"}, "spec": {"rules": [{}]}}),
                json!(["any", "<none>", "*", "", "80", "<unknown>"]),
            ),
            (
                "networking.k8s.io",
                "networkpolicies",
                json!({"metadata": {"name": "deny", "creationTimestamp": t},
                "spec": {"podSelector": {}}}),
                json!(["deny", "<none>", "3d2h"]),
            ),
            (
                "networking.k8s.io",
                "networkpolicies",
                json!({"metadata": {"name": "db"},
                "spec": {"podSelector": {"matchLabels": {"role": "db"}}}}),
                json!(["db", "role=db", "<unknown>"]),
            ),
            (
                "policy",
                "poddisruptionbudgets",
                json!({"metadata": {"name": "pdb", "creationTimestamp": t},
                "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}}),
                json!(["pdb", "50%", "N/A", 1, "3d2h"]),
            ),
            (
                "scheduling.k8s.io",
                "priorityclasses",
                json!({"metadata": {"name": "system-node-critical", "creationTimestamp": t},
                "value": 2000001000, "preemptionPolicy": "PreemptLowerPriority"}),
                json!([
                    "system-node-critical",
                    2000001000,
                    false,
                    "3d2h",
                    "PreemptLowerPriority"
                ]),
            ),
            (
                "storage.k8s.io",
                "storageclasses",
                json!({"metadata": {"name": "local", "creationTimestamp": t,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"}),
                json!([
                    "local (default)",
                    "rancher.io/local-path",
                    "Delete",
                    "WaitForFirstConsumer",
                    false,
                    "3d2h"
                ]),
            ),
            (
                "",
                "persistentvolumes",
                json!({"metadata": {"name": "pv1", "creationTimestamp": t},
                "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "local",
                    "claimRef": {"namespace": "default", "name": "data"}, "volumeMode": "Filesystem"},
                "status": {"phase": "Bound"}}),
                json!([
                    "pv1",
                    "10Gi",
                    "RWO,RWX",
                    "Retain",
                    "Bound",
                    "default/data",
                    "local",
                    "<unset>",
                    "",
                    "3d2h",
                    "Filesystem"
                ]),
            ),
            (
                "",
                "persistentvolumeclaims",
                json!({"metadata": {"name": "data", "creationTimestamp": t},
                "spec": {"volumeName": "pv1", "storageClassName": "local", "resources": {"requests": {"storage": "5Gi"}}},
                "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}}),
                json!([
                    "data", "Bound", "pv1", "10Gi", "RWO", "local", "<unset>", "3d2h", "<unset>"
                ]),
            ),
            (
                "",
                "persistentvolumeclaims",
                json!({"metadata": {"name": "pending", "deletionTimestamp": ago(1)},
                "spec": {"resources": {"requests": {"storage": "5Gi"}}}, "status": {"phase": "Pending"}}),
                json!([
                    "pending",
                    "Terminating",
                    "",
                    "",
                    "",
                    "",
                    "<unset>",
                    "<unknown>",
                    "<unset>"
                ]),
            ),
            (
                "",
                "resourcequotas",
                json!({"metadata": {"name": "q", "creationTimestamp": t},
                "status": {"hard": {"pods": "10", "limits.cpu": "4", "requests.cpu": "2"},
                    "used": {"pods": "3", "requests.cpu": "500m"}}}),
                json!([
                    "q",
                    "pods: 3/10, requests.cpu: 500m/2",
                    "limits.cpu: 0/4",
                    "3d2h"
                ]),
            ),
            (
                "apps",
                "controllerrevisions",
                json!({"metadata": {"name": "web-7c", "creationTimestamp": t,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]},
                "revision": 2}),
                json!(["web-7c", "statefulset.apps/web", 2, "3d2h"]),
            ),
            (
                "rbac.authorization.k8s.io",
                "rolebindings",
                json!({"metadata": {"name": "rb", "creationTimestamp": t},
                "roleRef": {"kind": "Role", "name": "reader"},
                "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                    {"kind": "ServiceAccount", "namespace": "ci", "name": "bot"}, {"kind": "User", "name": "bob"}]}),
                json!(["rb", "Role/reader", "3d2h", "alice, bob", "devs", "ci/bot"]),
            ),
            (
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                json!({"metadata": {"name": "crb", "creationTimestamp": t},
                "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [{"kind": "Group", "name": "system:masters"}]}),
                json!([
                    "crb",
                    "ClusterRole/cluster-admin",
                    "3d2h",
                    "",
                    "system:masters",
                    ""
                ]),
            ),
            (
                "rbac.authorization.k8s.io",
                "clusterroles",
                json!({"metadata": {"name": "view",
                "creationTimestamp": "2024-05-01T08:09:10Z"}}),
                json!(["view", "2024-05-01T08:09:10Z"]),
            ),
            (
                "",
                "limitranges",
                json!({"metadata": {"name": "limits"}}),
                json!(["limits", "0001-01-01T00:00:00Z"]),
            ),
        ];
        for (group, plural, obj, want) in cases {
            assert_eq!(
                Value::Array(cells(group, plural, obj)),
                want,
                "{group}/{plural}"
            );
        }
    }
}
