//! A container's environment, as upstream's `makeEnvironmentVariables` builds it.
//!
//! Order of evaluation (upstream's): `envFrom` sources first (ConfigMaps and Secrets, with the
//! prefix; keys that are not valid variable names are skipped and reported in one warning event
//! per source), then `env` in declaration order — a literal `value` with `$(VAR)` references
//! expanded against the variables defined so far and the service variables (`$$` escapes a `$`,
//! unknown references stay verbatim), or a `valueFrom` source: the downward API (`fieldRef`),
//! container resources (`resourceFieldRef`, limits defaulting to node allocatable), or a key of
//! a ConfigMap / Secret. A missing non-optional object or key is an error whose message upstream
//! puts into the container's `CreateContainerConfigError` waiting state. Last come the
//! docker-link style service variables (`FOO_SERVICE_HOST`, `FOO_PORT_80_TCP_ADDR`, …) for the
//! pod's namespace when `enableServiceLinks` is on, and for the master `kubernetes` service in
//! `default` always, unless a declared variable has the same name.
//!
//! Everything the kubelet would fetch comes in through [`ObjectLookup`], so this is pure.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, PersistentVolume, PersistentVolumeClaim, Pod,
    ResourceFieldSelector, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{nanos_to_milli, nanos_to_value, parse_quantity, quantity_nanos};

/// The master services whose variables every pod gets (upstream `masterServices`).
pub const MASTER_SERVICES: &[&str] = &["kubernetes"];
/// The event reason for skipped `envFrom` keys.
pub const INVALID_ENV_NAMES_REASON: &str = "InvalidEnvironmentVariableNames";
/// The waiting reason an environment error turns into.
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";

/// What the kubelet reads from the API (its ConfigMap/Secret managers and listers). `Ok(None)`
/// is "not found"; `Err` any other failure.
pub trait ObjectLookup {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, String>;
    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String>;
    /// Every Service the kubelet knows (all namespaces).
    fn services(&self) -> Result<Vec<Service>, String> {
        Ok(Vec::new())
    }
    fn persistent_volume_claim(
        &self,
        _namespace: &str,
        _name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, String> {
        Ok(None)
    }
    fn persistent_volume(&self, _name: &str) -> Result<Option<PersistentVolume>, String> {
        Ok(None)
    }
}

/// An in-memory [`ObjectLookup`] (tests, static pods).
#[derive(Debug, Default, Clone)]
pub struct StaticObjects {
    /// Keyed by (namespace, name).
    pub config_maps: HashMap<(String, String), ConfigMap>,
    pub secrets: HashMap<(String, String), Secret>,
    pub services: Vec<Service>,
    pub claims: HashMap<(String, String), PersistentVolumeClaim>,
    pub volumes: HashMap<String, PersistentVolume>,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl StaticObjects {
    pub fn add_config_map(&mut self, cm: ConfigMap) {
        self.config_maps.insert(key_of(&cm.metadata), cm);
    }
    pub fn add_secret(&mut self, s: Secret) {
        self.secrets.insert(key_of(&s.metadata), s);
    }
    pub fn add_claim(&mut self, c: PersistentVolumeClaim) {
        self.claims.insert(key_of(&c.metadata), c);
    }
    pub fn add_volume(&mut self, v: PersistentVolume) {
        self.volumes
            .insert(v.metadata.name.clone().unwrap_or_default(), v);
    }
}

impl ObjectLookup for StaticObjects {
    fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        Ok(self.config_maps.get(&(ns.into(), name.into())).cloned())
    }
    fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String> {
        Ok(self.secrets.get(&(ns.into(), name.into())).cloned())
    }
    fn services(&self) -> Result<Vec<Service>, String> {
        Ok(self.services.clone())
    }
    fn persistent_volume_claim(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, String> {
        Ok(self.claims.get(&(ns.into(), name.into())).cloned())
    }
    fn persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>, String> {
        Ok(self.volumes.get(name).cloned())
    }
}

/// Errors building the environment (upstream's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// An object is missing: `configmap "x" not found` / `secret "x" not found` (the kubelet's
    /// object managers name the resource in the singular, as upstream's `corev1.Resource("configmap")`).
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        resource: &'static str,
        name: String,
    },
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("{0}")]
    Lookup(String),
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    #[error("unsupported pod version: {0}")]
    UnsupportedVersion(String),
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    #[error("invalid divisor {0:?}")]
    InvalidDivisor(String),
    #[error("container {0:?} not found")]
    NoSuchContainer(String),
    #[error("host IPs are not known yet")]
    NoHostIp,
}

/// The pod's runtime facts and the node's, as `makeEnvironmentVariables` reads them.
pub struct EnvContext<'a> {
    pub lookup: &'a dyn ObjectLookup,
    /// The pod's IPs (primary first).
    pub pod_ips: &'a [String],
    /// The node's IPs (primary first).
    pub host_ips: &'a [String],
    /// Node allocatable, the default for `limits.*` when a container has none.
    pub node_allocatable: &'a BTreeMap<String, Quantity>,
    /// 1.33's RelaxedEnvironmentVariableValidation (on by default): any printable ASCII but `=`
    /// is a valid name; `false` is the C-identifier-like `[-._a-zA-Z][-._a-zA-Z0-9]*`.
    pub relaxed_names: bool,
}

/// The result: variables in a stable order, and warning events (reason, message) to record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContainerEnv {
    pub vars: Vec<(String, String)>,
    pub events: Vec<(String, String)>,
}

impl ContainerEnv {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Insertion-ordered map with overwrite-in-place (declared order, last value wins).
#[derive(Default)]
struct OrderedEnv {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl OrderedEnv {
    fn set(&mut self, k: String, v: String) {
        if self.values.insert(k.clone(), v).is_none() {
            self.order.push(k);
        }
    }
}

/// Whether `name` may be an environment variable name.
pub fn is_env_var_name(name: &str, relaxed: bool) -> bool {
    if name.is_empty() {
        return false;
    }
    if relaxed {
        return name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=');
    }
    let ok = |b: u8| b.is_ascii_alphabetic() || matches!(b, b'-' | b'.' | b'_');
    let b = name.as_bytes();
    ok(b[0]) && b[1..].iter().all(|c| ok(*c) || c.is_ascii_digit())
}

/// Upstream's `$(VAR)` expansion: `$$` → `$`, `$(name)` → `mapping(name)` (which returns the
/// reference verbatim when unknown), an unterminated `$(` and any other `$x` stay as written.
pub fn expand(input: &str, mapping: impl Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            out.push_str(&input[checkpoint..i]);
            let rest = &input[i + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(end) => {
                        let name = &rest[1..end];
                        match mapping(name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        end + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // `$` and the following character (a whole UTF-8 char).
                    let ch = rest.chars().next().unwrap();
                    out.push('$');
                    out.push(ch);
                    ch.len_utf8()
                }
            };
            i += advance;
            checkpoint = i + 1;
        }
        i += 1;
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// Go's `%q` for the strings the downward API formats (labels/annotations).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Upstream `FormatMap`: sorted `key="value"` lines.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Upstream `ExtractFieldPathAsString` (the metadata fields the downward API offers, with
/// `metadata.labels['key']` subscripts).
pub fn extract_field_path(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let m = &pod.metadata;
    if let Some((base, rest)) = path.split_once("['") {
        if let Some(key) = rest.strip_suffix("']") {
            let map = match base {
                "metadata.annotations" => m.annotations.as_ref(),
                "metadata.labels" => m.labels.as_ref(),
                _ => return Err(EnvError::UnsupportedFieldPath(path.into())),
            };
            return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
        }
    }
    Ok(match path {
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        _ => return Err(EnvError::UnsupportedFieldPath(path.into())),
    })
}

/// Upstream `podFieldSelectorRuntimeValue`: the env-only fields, then the metadata ones.
pub fn field_selector_value(
    fs: &ObjectFieldSelector,
    pod: &Pod,
    pod_ips: &[String],
    host_ips: &[String],
) -> Result<String, EnvError> {
    if let Some(v) = fs.api_version.as_deref() {
        if !v.is_empty() && v != "v1" {
            return Err(EnvError::UnsupportedVersion(v.into()));
        }
    }
    let spec = pod.spec.as_ref();
    Ok(match fs.field_path.as_str() {
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => host_ips.first().cloned().ok_or(EnvError::NoHostIp)?,
        "status.hostIPs" => {
            if host_ips.is_empty() {
                return Err(EnvError::NoHostIp);
            }
            host_ips.join(",")
        }
        "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips.join(","),
        other => extract_field_path(pod, other)?,
    })
}

/// Upstream `ExtractContainerResourceValue` on a container whose missing limits were defaulted
/// to node allocatable (`MergeContainerResourceLimits`).
pub fn container_resource_value(
    fs: &ResourceFieldSelector,
    container: &Container,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, EnvError> {
    let divisor = match fs.divisor.as_ref() {
        Some(q) => {
            let n = parse_quantity(&q.0).ok_or_else(|| EnvError::InvalidDivisor(q.0.clone()))?;
            if n == 0 {
                parse_quantity("1").unwrap()
            } else {
                n
            }
        }
        None => parse_quantity("1").unwrap(),
    };
    let (kind, name) = fs
        .resource
        .split_once('.')
        .ok_or_else(|| EnvError::UnsupportedResource(fs.resource.clone()))?;
    let supported = matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || (kind == "requests" && name.starts_with("hugepages-"));
    if !supported || !matches!(kind, "limits" | "requests") {
        return Err(EnvError::UnsupportedResource(fs.resource.clone()));
    }
    let res = container.resources.as_ref();
    let list = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        _ => res.and_then(|r| r.requests.as_ref()),
    };
    let mut value = list
        .and_then(|l| l.get(name))
        .map(quantity_nanos)
        .unwrap_or(0);
    if kind == "limits" && value == 0 {
        value = allocatable.get(name).map(quantity_nanos).unwrap_or(0);
    }
    let out = if name == "cpu" {
        let d = nanos_to_milli(divisor).max(1);
        ceil_div_i64(nanos_to_milli(value), d)
    } else {
        let d = nanos_to_value(divisor).max(1);
        ceil_div_i64(nanos_to_value(value), d)
    };
    Ok(out.to_string())
}

fn ceil_div_i64(a: i64, b: i64) -> i64 {
    // Go: int64(math.Ceil(float64(a) / float64(b)))
    (a as f64 / b as f64).ceil() as i64
}

/// Whether a Service has a cluster IP (upstream `IsServiceIPSet`).
fn service_ip_set(s: &Service) -> bool {
    s.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty() && ip != "None")
}

fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream `envvars.FromServices` for one service.
pub fn service_env_vars(service: &Service) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(spec) = service.spec.as_ref() else {
        return out;
    };
    if !service_ip_set(service) {
        return out;
    }
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    let prefix = env_name(service.metadata.name.as_deref().unwrap_or_default());
    out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
    let ports = spec.ports.as_deref().unwrap_or_default();
    let Some(first) = ports.first() else {
        return out;
    };
    let port_var = format!("{prefix}_SERVICE_PORT");
    out.push((port_var.clone(), first.port.to_string()));
    for p in ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((format!("{port_var}_{}", env_name(n)), p.port.to_string()));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let proto = p
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        let lower = proto.to_lowercase();
        let url = format!("{lower}://{}", join_host_port(&ip, p.port));
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), lower));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.clone()));
    }
    out
}

/// Upstream `getServiceEnvVarMap`: the master services from `default` always, the namespace's
/// services when service links are enabled (a namespace service shadows a master one).
pub fn service_env_map(
    services: &[Service],
    namespace: &str,
    enable_service_links: bool,
) -> BTreeMap<String, String> {
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for s in services.iter().filter(|s| service_ip_set(s)) {
        let name = s.metadata.name.clone().unwrap_or_default();
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        if ns == "default" && MASTER_SERVICES.contains(&name.as_str()) {
            if ns == namespace && enable_service_links {
                chosen.insert(name, s);
            } else {
                chosen.entry(name).or_insert(s);
            }
        } else if ns == namespace && enable_service_links {
            chosen.insert(name, s);
        }
    }
    chosen.values().flat_map(|s| service_env_vars(s)).collect()
}

/// Looks `name` up once per environment: later references to the same ConfigMap or Secret read
/// the first answer (upstream resolves each object once per container).
fn cached<T: Clone>(
    cache: &mut HashMap<String, Option<T>>,
    name: &str,
    fetch: impl FnOnce() -> Result<Option<T>, String>,
) -> Result<Option<T>, EnvError> {
    if let Some(c) = cache.get(name) {
        return Ok(c.clone());
    }
    let c = fetch().map_err(EnvError::Lookup)?;
    cache.insert(name.to_string(), c.clone());
    Ok(c)
}

/// A secret's value as text (the runtime passes bytes; invalid UTF-8 is replaced).
fn secret_value(b: &k8s_openapi::ByteString) -> String {
    String::from_utf8_lossy(&b.0).into_owned()
}

/// Upstream `makeEnvironmentVariables` for `container` of `pod`.
pub fn make_environment(
    pod: &Pod,
    container: &Container,
    ctx: &EnvContext<'_>,
) -> Result<ContainerEnv, EnvError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let services = ctx.lookup.services().map_err(EnvError::Lookup)?;
    let service_env = service_env_map(&services, ns, links);
    let mut cms: HashMap<String, Option<ConfigMap>> = HashMap::new();
    let mut secrets: HashMap<String, Option<Secret>> = HashMap::new();
    let mut env = OrderedEnv::default();
    let mut events = Vec::new();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let mut invalid = Vec::new();
        let (kind, name, entries): (&str, String, Vec<(String, String)>) = if let Some(r) =
            &from.config_map_ref
        {
            let optional = r.optional.unwrap_or(false);
            let Some(cm) = cached(&mut cms, &r.name, || ctx.lookup.config_map(ns, &r.name))? else {
                if optional {
                    continue;
                }
                return Err(EnvError::NotFound {
                    resource: "configmap",
                    name: r.name.clone(),
                });
            };
            let data = cm.data.unwrap_or_default().into_iter().collect();
            ("configMap", r.name.clone(), data)
        } else if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            let Some(s) = cached(&mut secrets, &r.name, || ctx.lookup.secret(ns, &r.name))? else {
                if optional {
                    continue;
                }
                return Err(EnvError::NotFound {
                    resource: "secret",
                    name: r.name.clone(),
                });
            };
            let mut data: Vec<(String, String)> = s
                .data
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| (k.clone(), secret_value(v)))
                .collect();
            // stringData is write-only in the API; honour it for unsubmitted objects.
            data.extend(s.string_data.unwrap_or_default());
            ("secret", r.name.clone(), data)
        } else {
            continue;
        };
        for (k, v) in entries {
            let k = format!("{prefix}{k}");
            if !is_env_var_name(&k, ctx.relaxed_names) {
                invalid.push(k);
                continue;
            }
            env.set(k, v);
        }
        if !invalid.is_empty() {
            invalid.sort();
            events.push((
                INVALID_ENV_NAMES_REASON.to_string(),
                format!(
                    "Keys [{}] from the EnvFrom {kind} {ns}/{name} were skipped since they are considered invalid environment variable names.",
                    invalid.join(", ")
                ),
            ));
        }
    }

    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or("");
        let value = if !literal.is_empty() {
            expand(literal, |name| {
                env.values
                    .get(name)
                    .or_else(|| service_env.get(name))
                    .cloned()
            })
        } else if let Some(from) = &var.value_from {
            if let Some(fr) = &from.field_ref {
                field_selector_value(fr, pod, ctx.pod_ips, ctx.host_ips)?
            } else if let Some(rr) = &from.resource_field_ref {
                container_resource_value(rr, container, ctx.node_allocatable)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                let Some(cm) = cached(&mut cms, &r.name, || ctx.lookup.config_map(ns, &r.name))?
                else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::NotFound {
                        resource: "configmap",
                        name: r.name.clone(),
                    });
                };
                match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::MissingKey {
                            kind: "ConfigMap",
                            namespace: ns.into(),
                            name: r.name.clone(),
                            key: r.key.clone(),
                        })
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                let Some(s) = cached(&mut secrets, &r.name, || ctx.lookup.secret(ns, &r.name))?
                else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::NotFound {
                        resource: "secret",
                        name: r.name.clone(),
                    });
                };
                let v = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .map(secret_value)
                    .or_else(|| s.string_data.as_ref().and_then(|d| d.get(&r.key)).cloned());
                match v {
                    Some(v) => v,
                    None if optional => continue,
                    None => {
                        return Err(EnvError::MissingKey {
                            kind: "Secret",
                            namespace: ns.into(),
                            name: r.name.clone(),
                            key: r.key.clone(),
                        })
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(var.name.clone(), value);
    }

    let mut vars: Vec<(String, String)> = env
        .order
        .iter()
        .map(|k| (k.clone(), env.values[k].clone()))
        .collect();
    for (k, v) in service_env {
        if !env.values.contains_key(&k) {
            vars.push((k, v));
        }
    }
    Ok(ContainerEnv { vars, events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource, PodSpec,
        ResourceRequirements, SecretKeySelector, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some("uid-1".into()),
                labels: Some([("app".into(), "web".into()), ("tier".into(), "a\"b".into())].into()),
                annotations: Some([("note".into(), "x\ny".into())].into()),
                ..meta("ns1", "web-0")
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                service_account_name: Some("sa".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn lit(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from(name: &str, src: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(src),
        }
    }

    fn objects() -> StaticObjects {
        let mut o = StaticObjects::default();
        o.add_config_map(ConfigMap {
            metadata: meta("ns1", "cfg"),
            data: Some(
                [
                    ("A".to_string(), "1".to_string()),
                    ("bad=key".to_string(), "x".to_string()),
                    ("1digit".to_string(), "y".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        });
        o.add_secret(Secret {
            metadata: meta("ns1", "sec"),
            data: Some([("pw".to_string(), ByteString(b"hunter2".to_vec()))].into()),
            ..Default::default()
        });
        let svc = |ns: &str, name: &str, ip: &str, ports: Vec<ServicePort>| Service {
            metadata: meta(ns, name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(ports),
                ..Default::default()
            }),
            status: None,
        };
        let port = |name: Option<&str>, port: i32, proto: Option<&str>| ServicePort {
            name: name.map(Into::into),
            port,
            protocol: proto.map(Into::into),
            ..Default::default()
        };
        o.services = vec![
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                vec![port(Some("https"), 443, Some("TCP"))],
            ),
            svc(
                "ns1",
                "my-db",
                "10.96.0.20",
                vec![
                    port(None, 5432, None),
                    port(Some("metrics"), 9187, Some("UDP")),
                ],
            ),
            svc("ns1", "headless", "None", vec![port(None, 80, None)]),
            svc(
                "other",
                "elsewhere",
                "10.96.0.30",
                vec![port(None, 80, None)],
            ),
        ];
        o
    }

    fn run(pod: &Pod, c: &Container, o: &StaticObjects) -> Result<ContainerEnv, EnvError> {
        let alloc: BTreeMap<String, Quantity> = [
            ("cpu".to_string(), Quantity("4".into())),
            ("memory".to_string(), Quantity("8Gi".into())),
            ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
        ]
        .into();
        make_environment(
            pod,
            c,
            &EnvContext {
                lookup: o,
                pod_ips: &["10.0.0.5".into(), "fd00::5".into()],
                host_ips: &["192.168.1.2".into()],
                node_allocatable: &alloc,
                relaxed_names: false,
            },
        )
    }

    #[test]
    fn expansion_rules() {
        let m = |n: &str| match n {
            "A" => Some("x".to_string()),
            "B" => Some("$(A)".to_string()),
            _ => None,
        };
        for (input, want) in [
            ("$(A)", "x"),
            ("pre-$(A)-post", "pre-x-post"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$x"),
            ("$(B)", "$(A)"), // no recursive expansion
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("a$", "a$"),
            ("$", "$"),
            ("$()", "$()"),
            ("é$(A)é", "éxé"),
            ("$é", "$é"),
        ] {
            assert_eq!(expand(input, m), want, "{input}");
        }
    }

    #[test]
    fn values_and_references_in_order() {
        let c = Container {
            name: "app".into(),
            env: Some(vec![
                lit("FIRST", "one"),
                lit("SECOND", "$(FIRST)-two"),
                lit("LATER_REF", "$(THIRD)"),
                lit("THIRD", "three"),
                lit("SVC", "$(MY_DB_SERVICE_HOST)"),
                lit("EMPTY", ""),
            ]),
            ..Default::default()
        };
        let env = run(&pod(), &c, &objects()).unwrap();
        assert_eq!(env.get("SECOND"), Some("one-two"));
        assert_eq!(env.get("LATER_REF"), Some("$(THIRD)"));
        assert_eq!(env.get("SVC"), Some("10.96.0.20"));
        assert_eq!(env.get("EMPTY"), Some(""));
        assert_eq!(env.vars[0].0, "FIRST");
    }

    #[test]
    fn field_refs() {
        let f = |p: &str| {
            from(
                p,
                EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: p.into(),
                    }),
                    ..Default::default()
                },
            )
        };
        let paths = [
            "metadata.name",
            "metadata.namespace",
            "metadata.uid",
            "metadata.labels",
            "metadata.annotations",
            "metadata.labels['app']",
            "metadata.annotations['missing']",
            "spec.nodeName",
            "spec.serviceAccountName",
            "status.hostIP",
            "status.hostIPs",
            "status.podIP",
            "status.podIPs",
        ];
        let c = Container {
            env: Some(paths.iter().map(|p| f(p)).collect()),
            ..Default::default()
        };
        let env = run(&pod(), &c, &objects()).unwrap();
        let want = [
            "web-0",
            "ns1",
            "uid-1",
            "app=\"web\"\ntier=\"a\\\"b\"",
            "note=\"x\\ny\"",
            "web",
            "",
            "node-a",
            "sa",
            "192.168.1.2",
            "192.168.1.2",
            "10.0.0.5",
            "10.0.0.5,fd00::5",
        ];
        for (p, w) in paths.iter().zip(want) {
            assert_eq!(env.get(p), Some(w), "{p}");
        }
        let bad = Container {
            env: Some(vec![f("spec.restartPolicy")]),
            ..Default::default()
        };
        assert_eq!(
            run(&pod(), &bad, &objects()).unwrap_err().to_string(),
            "unsupported fieldPath: spec.restartPolicy"
        );
    }

    #[test]
    fn resource_field_refs_with_divisors_and_allocatable_default() {
        let r = |name: &str, res: &str, div: Option<&str>| {
            from(
                name,
                EnvVarSource {
                    resource_field_ref: Some(ResourceFieldSelector {
                        container_name: None,
                        resource: res.into(),
                        divisor: div.map(|d| Quantity(d.into())),
                    }),
                    ..Default::default()
                },
            )
        };
        let c = Container {
            env: Some(vec![
                r("CPU_LIMIT", "limits.cpu", None),
                r("CPU_LIMIT_M", "limits.cpu", Some("1m")),
                r("CPU_REQ", "requests.cpu", Some("1m")),
                r("CPU_REQ_CORES", "requests.cpu", None),
                r("MEM_LIMIT_MI", "limits.memory", Some("1Mi")),
                r("MEM_REQ", "requests.memory", None),
                r("EPH_LIMIT_GI", "limits.ephemeral-storage", Some("1Gi")),
            ]),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [
                        ("cpu".to_string(), Quantity("250m".into())),
                        ("memory".to_string(), Quantity("64Mi".into())),
                    ]
                    .into(),
                ),
                limits: Some([("cpu".to_string(), Quantity("1500m".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let env = run(&pod(), &c, &objects()).unwrap();
        assert_eq!(env.get("CPU_LIMIT"), Some("2")); // ceil(1.5)
        assert_eq!(env.get("CPU_LIMIT_M"), Some("1500"));
        assert_eq!(env.get("CPU_REQ"), Some("250"));
        assert_eq!(env.get("CPU_REQ_CORES"), Some("1"));
        assert_eq!(env.get("MEM_LIMIT_MI"), Some("8192")); // node allocatable 8Gi
        assert_eq!(env.get("MEM_REQ"), Some(&*(64u64 << 20).to_string()));
        assert_eq!(env.get("EPH_LIMIT_GI"), Some("100"));
        let bad = Container {
            env: Some(vec![r("X", "limits.gpu", None)]),
            ..Default::default()
        };
        assert_eq!(
            run(&pod(), &bad, &objects()).unwrap_err().to_string(),
            "unsupported container resource : limits.gpu"
        );
    }

    fn cm_key(name: &str, cm: &str, key: &str, optional: Option<bool>) -> EnvVar {
        from(
            name,
            EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: cm.into(),
                    key: key.into(),
                    optional,
                }),
                ..Default::default()
            },
        )
    }

    fn secret_key(name: &str, s: &str, key: &str, optional: Option<bool>) -> EnvVar {
        from(
            name,
            EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: s.into(),
                    key: key.into(),
                    optional,
                }),
                ..Default::default()
            },
        )
    }

    #[test]
    fn config_map_and_secret_keys() {
        let c = Container {
            env: Some(vec![
                cm_key("A", "cfg", "A", None),
                secret_key("PW", "sec", "pw", None),
                cm_key("OPT_MISSING_KEY", "cfg", "nope", Some(true)),
                cm_key("OPT_MISSING_CM", "nope", "A", Some(true)),
                secret_key("OPT_MISSING_SECRET", "nope", "pw", Some(true)),
            ]),
            ..Default::default()
        };
        let env = run(&pod(), &c, &objects()).unwrap();
        assert_eq!(env.get("A"), Some("1"));
        assert_eq!(env.get("PW"), Some("hunter2"));
        for k in ["OPT_MISSING_KEY", "OPT_MISSING_CM", "OPT_MISSING_SECRET"] {
            assert_eq!(env.get(k), None, "{k}");
        }
        let cases = [
            (
                cm_key("X", "nope", "A", None),
                "configmap \"nope\" not found",
            ),
            (
                cm_key("X", "cfg", "nope", Some(false)),
                "couldn't find key nope in ConfigMap ns1/cfg",
            ),
            (
                secret_key("X", "nope", "pw", None),
                "secret \"nope\" not found",
            ),
            (
                secret_key("X", "sec", "nope", None),
                "couldn't find key nope in Secret ns1/sec",
            ),
        ];
        for (var, msg) in cases {
            let c = Container {
                env: Some(vec![var]),
                ..Default::default()
            };
            assert_eq!(run(&pod(), &c, &objects()).unwrap_err().to_string(), msg);
        }
    }

    #[test]
    fn env_from_with_prefix_invalid_keys_and_override() {
        let c = Container {
            env_from: Some(vec![
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "cfg".into(),
                        optional: None,
                    }),
                    prefix: Some("P_".into()),
                    secret_ref: None,
                },
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "missing".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                },
            ]),
            env: Some(vec![lit("P_A", "override"), lit("REF", "$(P_A)")]),
            ..Default::default()
        };
        let env = run(&pod(), &c, &objects()).unwrap();
        assert_eq!(env.get("P_A"), Some("override"));
        assert_eq!(env.get("REF"), Some("override"));
        // P_1digit is valid (the prefix makes it so); P_bad=key is not.
        assert_eq!(env.get("P_1digit"), Some("y"));
        assert_eq!(
            env.events,
            vec![(
                INVALID_ENV_NAMES_REASON.to_string(),
                "Keys [P_bad=key] from the EnvFrom configMap ns1/cfg were skipped since they are considered invalid environment variable names.".to_string()
            )]
        );
        // Without a prefix, a leading digit is invalid in the strict rule.
        let c2 = Container {
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let env = run(&pod(), &c2, &objects()).unwrap();
        assert!(
            env.events[0].1.contains("Keys [1digit, bad=key]"),
            "{:?}",
            env.events
        );
        assert!(is_env_var_name("1digit", true) && !is_env_var_name("a=b", true));
    }

    #[test]
    fn service_links() {
        let c = Container::default();
        let env = run(&pod(), &c, &objects()).unwrap();
        let want = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
            ("MY_DB_SERVICE_HOST", "10.96.0.20"),
            ("MY_DB_SERVICE_PORT", "5432"),
            ("MY_DB_SERVICE_PORT_METRICS", "9187"),
            ("MY_DB_PORT", "tcp://10.96.0.20:5432"),
            ("MY_DB_PORT_5432_TCP_ADDR", "10.96.0.20"),
            ("MY_DB_PORT_9187_UDP", "udp://10.96.0.20:9187"),
            ("MY_DB_PORT_9187_UDP_PROTO", "udp"),
        ];
        for (k, v) in want {
            assert_eq!(env.get(k), Some(v), "{k}");
        }
        assert!(env.get("HEADLESS_SERVICE_HOST").is_none());
        assert!(env.get("ELSEWHERE_SERVICE_HOST").is_none());
        // enableServiceLinks: false keeps only the master service.
        let mut p = pod();
        p.spec.as_mut().unwrap().enable_service_links = Some(false);
        let env = run(&p, &c, &objects()).unwrap();
        assert!(env.get("MY_DB_SERVICE_HOST").is_none());
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        // A declared variable wins over a service one.
        let c = Container {
            env: Some(vec![lit("MY_DB_SERVICE_HOST", "mine")]),
            ..Default::default()
        };
        let env = run(&pod(), &c, &objects()).unwrap();
        assert_eq!(
            env.vars
                .iter()
                .filter(|(k, _)| k == "MY_DB_SERVICE_HOST")
                .count(),
            1
        );
        assert_eq!(env.get("MY_DB_SERVICE_HOST"), Some("mine"));
        // IPv6 cluster IPs are bracketed in URLs.
        let mut s = objects().services[1].clone();
        s.spec.as_mut().unwrap().cluster_ip = Some("fd00::20".into());
        let vars = service_env_vars(&s);
        assert!(vars.contains(&("MY_DB_PORT".into(), "tcp://[fd00::20]:5432".into())));
    }
}
