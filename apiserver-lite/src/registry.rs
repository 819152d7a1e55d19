//! The generic registry (upstream's `genericregistry.Store` with the per-resource strategies
//! plugged in): object metadata on create and update (uid, creationTimestamp, generateName,
//! generation, resourceVersion with optimistic concurrency), the status/main-resource split,
//! finalizers and deletionTimestamp, DELETE with propagationPolicy and preconditions, pod
//! graceful deletion, NamespaceLifecycle admission, Service IP/port allocation and event TTLs.
//! It reads through the watch cache and writes through the `Store`.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde_json::{json, Value};

use crate::allocator::{IpAllocator, PortAllocator};
use crate::cacher::{CachedObject, Cacher, Filter};
use crate::hooks::{self, AdmissionLookup};
use crate::resources::{self, ResourceInfo, RESOURCES};
use crate::status::{ApiError, ApiResult, Cause};
use crate::storage::{guaranteed_update, KeyValue, Store, StoreError, UpdateDecision};

/// Namespaces that always exist.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { .. } => {
                ApiError::expired(format!("too old resource version: {e}"))
            }
            StoreError::FutureRevision { requested, current } => ApiError::timeout(format!(
                "Too large resource version: {requested}, current: {current}"
            )),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// Options shared by writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
}

/// Admission that validates the object the registry is about to create, after the strategy's
/// defaulting and validation and before ResourceQuota (upstream's validating admission phase,
/// which runs inside the store's Create); the admission webhooks implement it.
#[async_trait::async_trait]
pub trait ValidatingAdmission: Send + Sync {
    async fn validate(&self, obj: &Value) -> ApiResult<()>;
}

/// DELETE options (from the body's DeleteOptions or the query).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
}

/// Resources whose strategy tracks metadata.generation.
fn tracks_generation(info: &ResourceInfo) -> bool {
    matches!(
        info.plural,
        "pods"
            | "deployments"
            | "replicasets"
            | "statefulsets"
            | "daemonsets"
            | "replicationcontrollers"
            | "jobs"
            | "cronjobs"
            | "networkpolicies"
            | "ingresses"
            | "poddisruptionbudgets"
            | "services"
    )
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The part of an object that counts as its spec for generation purposes.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

/// Server-side state shared by every request.
pub struct Registry {
    pub store: Arc<dyn Store>,
    cachers: HashMap<&'static str, Arc<Cacher>>,
    pub service_ips: IpAllocator,
    pub node_ports: PortAllocator,
    pub event_ttl: i64,
    /// Namespaces deleted lately, with when (upstream's NamespaceLifecycle
    /// `forceLiveLookupCache`): admission reads them fresh, so a create right after the delete
    /// sees the namespace Terminating even before the watch cache has caught up.
    recently_deleted_namespaces: parking_lot::Mutex<HashMap<String, std::time::Instant>>,
    /// How kubelets are called (upstream's pod storage holds its `KubeletClientConfig`); set
    /// once the PKI is loaded, [`KubeletClient::default`] until then.
    kubelet_client: std::sync::OnceLock<crate::kubelet_client::KubeletClient>,
}

/// How long a deleted namespace is looked up fresh (upstream's `forceLiveLookupTTL`).
const FORCE_LIVE_LOOKUP_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl Registry {
    /// The client for calls to kubelets (logs, exec, attach, port-forward, node proxy, metrics).
    pub fn kubelet_client(&self) -> crate::kubelet_client::KubeletClient {
        self.kubelet_client.get_or_init(Default::default).clone()
    }

    /// Sets the kubelet client (once, at start-up; later calls are ignored).
    pub fn set_kubelet_client(&self, client: crate::kubelet_client::KubeletClient) {
        let _ = self.kubelet_client.set(client);
    }

    pub async fn new(
        store: Arc<dyn Store>,
        service_cidr: &str,
        node_port_range: &str,
        event_ttl: i64,
    ) -> Result<Arc<Self>, String> {
        let mut cachers = HashMap::new();
        for r in RESOURCES {
            if cachers.contains_key(r.storage_prefix) {
                continue;
            }
            let c = Cacher::start(store.clone(), r)
                .await
                .map_err(|e| format!("starting the watch cache of {}: {e}", r.plural))?;
            cachers.insert(r.storage_prefix, c);
        }
        let reg = Registry {
            store,
            cachers,
            service_ips: IpAllocator::new(service_cidr).map_err(|e| e.to_string())?,
            node_ports: PortAllocator::new(node_port_range).map_err(|e| e.to_string())?,
            event_ttl,
            recently_deleted_namespaces: parking_lot::Mutex::new(HashMap::new()),
            kubelet_client: std::sync::OnceLock::new(),
        };
        // Rebuild the allocators from what is stored.
        let services = resources::find("", "v1", "services").expect("services are served");
        let all: Filter = Arc::new(|_| true);
        for svc in reg
            .cacher(services)
            .list(&format!("{}/", services.storage_prefix), &all, None, 0)
            .items
        {
            let spec = &svc.value["spec"];
            if let Some(ip) = spec["clusterIP"].as_str() {
                let _ = reg.service_ips.allocate(ip);
            }
            for p in spec["ports"].as_array().into_iter().flatten() {
                if let Some(np) = p["nodePort"].as_u64() {
                    let _ = reg.node_ports.allocate(np as u16);
                }
            }
        }
        Ok(Arc::new(reg))
    }

    /// Every watch cache with its storage prefix.
    pub fn cachers(&self) -> impl Iterator<Item = (&'static str, &Arc<Cacher>)> {
        self.cachers.iter().map(|(k, v)| (*k, v))
    }

    pub fn cacher(&self, info: &ResourceInfo) -> &Arc<Cacher> {
        &self.cachers[info.storage_prefix]
    }

    /// Store key of an object (`/registry/pods/ns/name`) or the prefix of a namespace/all.
    pub fn key(info: &ResourceInfo, namespace: &str, name: &str) -> String {
        match (info.namespaced, namespace.is_empty(), name.is_empty()) {
            (true, false, false) => format!("{}/{namespace}/{name}", info.storage_prefix),
            (true, false, true) => format!("{}/{namespace}/", info.storage_prefix),
            (_, _, false) => format!("{}/{name}", info.storage_prefix),
            _ => format!("{}/", info.storage_prefix),
        }
    }

    /// Reads one object through the cache (after it caught up with every acknowledged write).
    pub async fn get(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
    ) -> ApiResult<Arc<CachedObject>> {
        let cacher = self.cacher(info);
        cacher
            .wait_fresh()
            .await
            .map_err(|e| ApiError::timeout(e.to_string()))?;
        cacher
            .get(&Self::key(info, ns, name))
            .ok_or_else(|| ApiError::not_found(info.group, info.plural, name))
    }

    /// NamespaceLifecycle admission. Reads the namespace from the cache; on a miss it waits for
    /// the cache to catch up with every acknowledged write and looks again (upstream does a live
    /// lookup on a miss), so a namespace created just before is always seen; a namespace deleted
    /// in the last 30 s is read only once the cache has caught up (upstream's forced live
    /// lookup), so it is seen Terminating.
    pub(crate) async fn namespace_lifecycle(&self, info: &ResourceInfo, ns: &str) -> ApiResult<()> {
        if !info.namespaced {
            return Ok(());
        }
        let nsinfo = resources::find("", "v1", "namespaces").expect("namespaces are served");
        let cacher = self.cacher(nsinfo);
        let key = Self::key(nsinfo, "", ns);
        let deleted_lately = {
            let mut recent = self.recently_deleted_namespaces.lock();
            recent.retain(|_, at| at.elapsed() < FORCE_LIVE_LOOKUP_TTL);
            recent.contains_key(ns)
        };
        if deleted_lately {
            cacher
                .wait_fresh()
                .await
                .map_err(|e| ApiError::timeout(e.to_string()))?;
        }
        let mut found = cacher.get(&key);
        if found.is_none() {
            cacher
                .wait_fresh()
                .await
                .map_err(|e| ApiError::timeout(e.to_string()))?;
            found = cacher.get(&key);
        }
        match found {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(o) if o.value["metadata"]["deletionTimestamp"].is_string()
                || o.value["status"]["phase"] == "Terminating" =>
            {
                Err(ApiError::forbidden(
                    info.group,
                    info.plural,
                    o.value["metadata"]["name"].as_str().unwrap_or(ns),
                    &format!("unable to create new content in namespace {ns} because it is being terminated"),
                ))
            }
            Some(_) => Ok(()),
        }
    }

    /// Admission reads PriorityClasses and LimitRanges from the caches. For a pod that names a
    /// priority class the cache does not have yet, wait until it has caught up with every
    /// acknowledged write first, so a class created just before the pod is found.
    async fn admission_caches_fresh(&self, info: &ResourceInfo, obj: &Value) -> ApiResult<()> {
        if info.plural != "pods" || !info.group.is_empty() {
            return Ok(());
        }
        let Some(class) = obj["spec"]["priorityClassName"]
            .as_str()
            .filter(|c| !c.is_empty())
        else {
            return Ok(());
        };
        let pcinfo = resources::find("scheduling.k8s.io", "v1", "priorityclasses")
            .expect("priority classes are served");
        let cacher = self.cacher(pcinfo);
        if cacher.get(&Self::key(pcinfo, "", class)).is_none() {
            cacher
                .wait_fresh()
                .await
                .map_err(|e| ApiError::timeout(e.to_string()))?;
        }
        Ok(())
    }

    fn ttl(&self, info: &ResourceInfo) -> i64 {
        if info.plural == "events" {
            self.event_ttl
        } else {
            0
        }
    }

    /// Creates an object; returns it as stored (with its resourceVersion).
    pub async fn create(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        self.create_admitted(info, ns, obj, opts, None).await
    }

    /// [`Registry::create`] with a validating admission phase on the prepared object.
    pub async fn create_admitted(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        mut obj: Value,
        opts: &WriteOptions,
        validating: Option<&dyn ValidatingAdmission>,
    ) -> ApiResult<Value> {
        let meta = obj
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("the body is not an object"))?
            .entry("metadata")
            .or_insert_with(|| json!({}));
        let meta = meta
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = if name.is_empty() {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => {
                    let n = format!("{}{}", g, random_suffix());
                    meta.insert("name".into(), json!(n));
                    n
                }
                _ => {
                    return Err(ApiError::invalid(
                        info.group,
                        info.kind,
                        "",
                        vec![Cause::required(
                            "metadata.name",
                            "name or generateName is required",
                        )],
                    ))
                }
            }
        } else {
            name
        };
        if info.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(k);
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        if tracks_generation(info) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        self.namespace_lifecycle(info, ns).await?;
        self.admission_caches_fresh(info, &obj).await?;
        hooks::prepare_create(info, &mut obj, &Lookup(self))?;
        if let Some(v) = validating {
            v.validate(&obj).await?;
        }
        crate::quota::admit_create(self, info, ns, &obj, opts.dry_run).await?;
        let allocated = if info.plural == "services" {
            self.allocate_service(&mut obj, None)?
        } else {
            Allocated::default()
        };
        if opts.dry_run {
            self.release(&allocated);
            return Ok(obj);
        }
        let key = Self::key(info, ns, &name);
        let bytes = serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?;
        match self.store.create(&key, bytes, self.ttl(info)).await {
            Ok(kv) => Ok(stamp(obj, &kv)),
            Err(StoreError::AlreadyExists { .. }) => {
                self.release(&allocated);
                Err(ApiError::already_exists(info.group, info.plural, &name))
            }
            Err(e) => {
                self.release(&allocated);
                Err(e.into())
            }
        }
    }

    /// Read-modify-write of one object (update, patch, status, scale, binding): `mutate` gets the
    /// current object and returns the desired one. Conflicts with other writers are retried;
    /// a stale resourceVersion in the desired object is a 409. Returns the stored object.
    pub async fn update<F>(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        subresource: Option<&str>,
        opts: &WriteOptions,
        mut mutate: F,
    ) -> ApiResult<Value>
    where
        F: FnMut(&Value) -> ApiResult<Value>,
    {
        let key = Self::key(info, ns, name);
        let mut result: Option<Value> = None;
        let mut to_release = Allocated::default();
        let ttl = self.ttl(info);
        let out = guaranteed_update::<ApiError, _>(&*self.store, &key, |cur: Option<&KeyValue>| {
            let Some(cur) = cur else {
                return Err(ApiError::not_found(info.group, info.plural, name));
            };
            let mut old: Value = serde_json::from_slice(&cur.value).map_err(|e| ApiError::internal(e.to_string()))?;
            old["metadata"]["resourceVersion"] = json!(cur.mod_revision.to_string());
            let mut new = mutate(&old)?;
            if !new.is_object() {
                return Err(ApiError::bad_request("the body is not an object"));
            }
            let rv = new["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
            if !rv.is_empty() && rv != cur.mod_revision.to_string() {
                return Err(ApiError::conflict(
                    info.group,
                    info.plural,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            self.prepare_update_metadata(info, subresource, &mut new, &old, name)?;
            // A binding only sets spec.nodeName and the PodScheduled condition, as upstream's
            // BindingREST does, bypassing the pod update strategy.
            if subresource != Some("binding") {
                hooks::prepare_update(info, subresource, &mut new, &old)?;
            }
            if info.plural == "services" && subresource.is_none() {
                self.release(&to_release);
                to_release = self.allocate_service(&mut new, Some(&old))?;
            }
            // A no-op update writes nothing, as upstream.
            let mut old_cmp = old.clone();
            old_cmp["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
            if new == old_cmp {
                result = Some(old);
                return Ok(UpdateDecision::Keep);
            }
            // An object being deleted goes once its last finalizer is removed.
            // A namespace also waits for its spec finalizers (removed through namespaces/finalize),
            // so that a status update of a terminating namespace does not remove it.
            let finalizers_empty = new["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty())
                && (info.plural != "namespaces" || new["spec"]["finalizers"].as_array().is_none_or(|f| f.is_empty()));
            if new["metadata"]["deletionTimestamp"].is_string() && finalizers_empty && !opts.dry_run {
                result = Some(new.clone());
                return Ok(UpdateDecision::Delete);
            }
            if opts.dry_run {
                result = Some(new);
                return Ok(UpdateDecision::Keep);
            }
            let bytes = serde_json::to_vec(&new).map_err(|e| ApiError::internal(e.to_string()))?;
            result = Some(new);
            Ok(UpdateDecision::Write(bytes, ttl))
        })
        .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                self.release(&to_release);
                return Err(e);
            }
        };
        let value = result.unwrap_or(Value::Null);
        Ok(match out {
            Some(kv) if !opts.dry_run => stamp(value, &kv),
            _ => value,
        })
    }

    fn prepare_update_metadata(
        &self,
        info: &ResourceInfo,
        subresource: Option<&str>,
        new: &mut Value,
        old: &Value,
        name: &str,
    ) -> ApiResult<()> {
        let new_name = new["metadata"]["name"].as_str().unwrap_or("");
        if !new_name.is_empty() && new_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({new_name}) does not match the name on the URL ({name})"
            )));
        }
        let om = old["metadata"].as_object().cloned().unwrap_or_default();
        let nm = new
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("the body is not an object"))?
            .entry("metadata")
            .or_insert_with(|| json!({}));
        let nm = nm
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match om.get(k) {
                Some(v) => nm.insert(k.to_string(), v.clone()),
                None => nm.remove(k),
            };
        }
        nm.remove("resourceVersion");
        nm.remove("managedFields");
        nm.remove("selfLink");
        if om.contains_key("deletionTimestamp") {
            let old_f: Vec<&Value> = om
                .get("finalizers")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            if let Some(added) = nm
                .get("finalizers")
                .and_then(Value::as_array)
                .and_then(|f| f.iter().find(|x| !old_f.contains(x)))
            {
                return Err(ApiError::invalid(
                    info.group,
                    info.kind,
                    name,
                    vec![Cause::forbidden("metadata.finalizers", &format!("no new finalizers can be added if the object is being deleted, found new finalizers [{}]", added.as_str().unwrap_or("")))],
                ));
            }
        }
        if subresource.is_none() && tracks_generation(info) && spec_part(new) != spec_part(old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        Ok(())
    }

    /// DELETE of one object. Returns the object as it is afterwards (deleted, or only marked
    /// for deletion when finalizers or a grace period keep it).
    pub async fn delete(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        if info.plural == "namespaces" && info.group.is_empty() {
            self.recently_deleted_namespaces
                .lock()
                .insert(name.to_string(), std::time::Instant::now());
        }
        let key = Self::key(info, ns, name);
        let mut outcome: Option<Value> = None;
        let out = guaranteed_update::<ApiError, _>(&*self.store, &key, |cur| {
            let Some(cur) = cur else {
                return Err(ApiError::not_found(info.group, info.plural, name));
            };
            let mut obj: Value = serde_json::from_slice(&cur.value).map_err(|e| ApiError::internal(e.to_string()))?;
            obj["metadata"]["resourceVersion"] = json!(cur.mod_revision.to_string());
            if let Some(uid) = &opts.precondition_uid {
                let have = obj["metadata"]["uid"].as_str().unwrap_or("");
                if have != uid {
                    return Err(ApiError::conflict(info.group, info.plural, name, &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}")));
                }
            }
            if let Some(rv) = &opts.precondition_resource_version {
                if *rv != cur.mod_revision.to_string() {
                    return Err(ApiError::conflict(info.group, info.plural, name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", cur.mod_revision)));
                }
            }
            let mut changed = false;
            let meta = obj["metadata"].as_object_mut().ok_or_else(|| ApiError::internal("stored object without metadata"))?;
            // Propagation policy: the finalizers the garbage collector acts on.
            let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
            let list = finalizers.as_array_mut().ok_or_else(|| ApiError::internal("finalizers is not a list"))?;
            let has = |l: &Vec<Value>, f: &str| l.iter().any(|x| x == f);
            match opts.propagation_policy.as_deref() {
                Some("Foreground") if !has(list, "foregroundDeletion") => {
                    list.retain(|x| x != "orphan");
                    list.push(json!("foregroundDeletion"));
                    changed = true;
                }
                Some("Orphan") if !has(list, "orphan") => {
                    list.retain(|x| x != "foregroundDeletion");
                    list.push(json!("orphan"));
                    changed = true;
                }
                Some("Background") if has(list, "orphan") => {
                    list.retain(|x| x != "orphan");
                    changed = true;
                }
                _ => {}
            }
            let mut has_finalizers = !list.is_empty();
            if !has_finalizers {
                meta.remove("finalizers");
            }
            // A namespace waits for its spec finalizers (the namespace controller empties it).
            if info.plural == "namespaces" {
                has_finalizers |= obj["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
            }
            let grace = if info.plural == "pods" { pod_grace(&obj, opts) } else { 0 };
            let meta = obj["metadata"].as_object_mut().ok_or_else(|| ApiError::internal("stored object without metadata"))?;
            let marked = meta.contains_key("deletionTimestamp");
            if !has_finalizers && grace == 0 {
                outcome = Some(obj.clone());
                if opts.dry_run {
                    return Ok(UpdateDecision::Keep);
                }
                return Ok(UpdateDecision::Delete);
            }
            let old_grace = meta.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
            if !marked || old_grace.is_some_and(|g| grace < g) {
                let at = Utc::now() + chrono::Duration::seconds(grace);
                meta.insert("deletionTimestamp".into(), json!(at.to_rfc3339_opts(SecondsFormat::Secs, true)));
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                changed = true;
            }
            if info.plural == "namespaces" && obj["status"]["phase"] != "Terminating" {
                obj["status"]["phase"] = json!("Terminating");
                changed = true;
            }
            obj["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
            outcome = Some(obj.clone());
            if !changed || opts.dry_run {
                return Ok(UpdateDecision::Keep);
            }
            let bytes = serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(UpdateDecision::Write(bytes, cur.lease_ttl))
        })
        .await?;
        let value = outcome.unwrap_or(Value::Null);
        let stamped = match out {
            Some(kv) => stamp(value, &kv),
            None => {
                if info.plural == "services" {
                    self.release(&service_allocations(&value));
                }
                value
            }
        };
        Ok(stamped)
    }

    fn allocate_service(&self, svc: &mut Value, old: Option<&Value>) -> ApiResult<Allocated> {
        let mut got = Allocated::default();
        let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
        let invalid = |field: &str, value: &Value, why: String| {
            ApiError::invalid(
                "",
                "Service",
                &name,
                vec![Cause::invalid(field, value, &why)],
            )
        };
        let spec = svc["spec"].as_object_mut();
        let Some(spec) = spec else { return Ok(got) };
        let typ = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        let old_ip = old
            .and_then(|o| o["spec"]["clusterIP"].as_str())
            .map(str::to_string);
        if typ != "ExternalName" {
            match spec.get("clusterIP").and_then(Value::as_str) {
                Some("None") => {}
                Some(ip) if !ip.is_empty() => {
                    if old_ip.as_deref() != Some(ip) {
                        self.service_ips.allocate(ip).map_err(|e| {
                            invalid(
                                "spec.clusterIPs",
                                &json!([ip]),
                                format!("failed to allocate IP {ip}: {e}"),
                            )
                        })?;
                        got.ips.push(ip.to_string());
                    }
                }
                _ => match old_ip {
                    Some(ip) => {
                        spec.insert("clusterIP".into(), json!(ip));
                    }
                    None => {
                        let ip = self.service_ips.allocate_next().map_err(|e| {
                            ApiError::internal(format!("failed to allocate a serviceIP: {e}"))
                        })?;
                        got.ips.push(ip.clone());
                        spec.insert("clusterIP".into(), json!(ip));
                    }
                },
            }
            let ip = spec.get("clusterIP").cloned();
            if let Some(ip) = ip {
                spec.insert("clusterIPs".into(), json!([ip]));
                spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
                spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
            }
        }
        if typ == "NodePort" || typ == "LoadBalancer" {
            let old_ports: Vec<u64> = old
                .and_then(|o| o["spec"]["ports"].as_array())
                .map(|a| a.iter().filter_map(|p| p["nodePort"].as_u64()).collect())
                .unwrap_or_default();
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for (i, p) in ports.iter_mut().enumerate() {
                    match p["nodePort"].as_u64() {
                        Some(np) if old_ports.contains(&np) => {}
                        Some(np) => {
                            let np16 = u16::try_from(np).unwrap_or(0);
                            if let Err(e) = self.node_ports.allocate(np16) {
                                self.release(&got);
                                return Err(invalid(
                                    &format!("spec.ports[{i}].nodePort"),
                                    &json!(np),
                                    e.to_string(),
                                ));
                            }
                            got.ports.push(np16);
                        }
                        None => {
                            let np = self.node_ports.allocate_next().map_err(|e| {
                                ApiError::internal(format!("failed to allocate a nodePort: {e}"))
                            })?;
                            got.ports.push(np);
                            p["nodePort"] = json!(np);
                        }
                    }
                }
            }
        }
        Ok(got)
    }

    fn release(&self, a: &Allocated) {
        for ip in &a.ips {
            self.service_ips.release(ip);
        }
        for p in &a.ports {
            self.node_ports.release(*p);
        }
    }
}

/// Addresses and ports reserved by one Service write, released if the write fails.
#[derive(Debug, Default)]
struct Allocated {
    ips: Vec<String>,
    ports: Vec<u16>,
}

fn service_allocations(svc: &Value) -> Allocated {
    Allocated {
        ips: svc["spec"]["clusterIP"]
            .as_str()
            .filter(|ip| *ip != "None")
            .map(|s| vec![s.to_string()])
            .unwrap_or_default(),
        ports: svc["spec"]["ports"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["nodePort"].as_u64())
                    .map(|p| p as u16)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The grace period of a pod delete, as upstream's pod strategy CheckGracefulDelete: the
/// request's, else the pod's; 0 for pods never scheduled or already finished.
fn pod_grace(pod: &Value, opts: &DeleteOptions) -> i64 {
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    let unscheduled = pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty();
    if unscheduled || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    let grace = opts
        .grace_period_seconds
        .or_else(|| pod["metadata"]["deletionGracePeriodSeconds"].as_i64())
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    grace.max(0)
}

/// Sets metadata.resourceVersion from what the store acknowledged.
fn stamp(mut obj: Value, kv: &KeyValue) -> Value {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    }
    obj
}

/// Five characters from upstream's generateName alphabet (no vowels, no confusable digits).
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Admission's view of the cluster, read from the watch caches.
struct Lookup<'a>(&'a Registry);

impl AdmissionLookup for Lookup<'_> {
    fn default_storage_class(&self) -> Option<String> {
        let info = resources::find("storage.k8s.io", "v1", "storageclasses")?;
        let is_default: Filter = Arc::new(|o: &CachedObject| {
            let a = &o.value["metadata"]["annotations"];
            a["storageclass.kubernetes.io/is-default-class"] == "true"
                || a["storageclass.beta.kubernetes.io/is-default-class"] == "true"
        });
        let items = self
            .0
            .cacher(info)
            .list(&Registry::key(info, "", ""), &is_default, None, 0)
            .items;
        // Several defaults: the newest wins, then the first name (upstream since 1.28).
        items
            .iter()
            .map(|o| {
                let m = &o.value["metadata"];
                let created = m["creationTimestamp"].as_str().unwrap_or("").to_string();
                let name = m["name"].as_str().unwrap_or("").to_string();
                (std::cmp::Reverse(created), name)
            })
            .min()
            .map(|(_, name)| name)
    }

    fn priority_class(&self, name: &str) -> Option<Value> {
        let info = resources::find("scheduling.k8s.io", "v1", "priorityclasses")?;
        self.0
            .cacher(info)
            .get(&Registry::key(info, "", name))
            .map(|o| o.value.clone())
    }

    fn global_default_priority_class(&self) -> Option<Value> {
        let info = resources::find("scheduling.k8s.io", "v1", "priorityclasses")?;
        let all: Filter = Arc::new(|o: &CachedObject| o.value["globalDefault"] == true);
        self.0
            .cacher(info)
            .list(&Registry::key(info, "", ""), &all, None, 1)
            .items
            .first()
            .map(|o| o.value.clone())
    }

    fn limit_ranges(&self, namespace: &str) -> Vec<Value> {
        let Some(info) = resources::find("", "v1", "limitranges") else {
            return Vec::new();
        };
        let all: Filter = Arc::new(|_| true);
        self.0
            .cacher(info)
            .list(&Registry::key(info, namespace, ""), &all, None, 0)
            .items
            .iter()
            .map(|o| o.value.clone())
            .collect()
    }
}
