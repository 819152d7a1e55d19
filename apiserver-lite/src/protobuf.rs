//! Decoding of `application/vnd.kubernetes.protobuf` request bodies into the JSON wire form.
//!
//! Typed client-go clients (so kubectl's `create configmap|secret|deployment|…`, `run`, `expose`,
//! `create token`) send bodies as the four magic bytes `k8s\0` followed by a `runtime.Unknown`
//! envelope: `typeMeta {apiVersion, kind}`, `raw` (the object's own protobuf encoding),
//! `contentEncoding` and `contentType`. The server stores objects as JSON, so [`decode`] turns such
//! a body into the JSON the same client would have sent with `Content-Type: application/json`.
//!
//! How it works, in three steps:
//! 1. `raw` is decoded with the prost type of the kind from the `k8s-pb` crate (generated from the
//!    upstream `generated.proto` files), so the wire format, field numbers and wire types are
//!    checked by generated code.
//! 2. prost's derived `Debug` output of that message is parsed into a small value tree. It is the
//!    only reflection prost types offer; it prints every field (declaration order, `None` for unset
//!    optionals) with its Rust name and the message type names, and its grammar is fixed.
//! 3. The tree is converted to JSON guided by the k8s-openapi (v1_33) JSON schema of the kind:
//!    field names are matched to the schema's JSON names ignoring case and underscores (prost's
//!    `pod_ip` is JSON `podIP`); the message fields of the Go structs embedded inline
//!    ([`INLINE_TYPES`]: `Volume.volumeSource`, `Probe.handler`, `….localObjectReference`) have
//!    their fields merged into the parent; fields with no JSON counterpart (protos newer than
//!    k8s-openapi v1_33) are dropped; the apimachinery wrapper messages get their JSON forms
//!    (`Time`/`MicroTime` → RFC 3339, `Quantity` → string, `IntOrString` → int or string,
//!    `Duration` → Go duration string, `RawExtension`/`FieldsV1` → embedded JSON); `bytes` fields
//!    (schema `format: byte`) become base64.
//!
//! Go's protobuf encoding writes every non-pointer field, zero or not, where its JSON encoding
//! omits `omitempty` zeros. To give the JSON a Go client would send, zero values are dropped where
//! Go's JSON would drop them: empty strings, lists and maps in optional fields, empty `Time`s, and
//! zero integers and `false` in the value (non-pointer) fields listed in [`ZERO_IS_UNSET`] (and
//! zero integers in status types). `false` and zero integers elsewhere are kept, since a pointer
//! set to zero (`replicas: 0`, `gracePeriodSeconds: 0`, `automountServiceAccountToken: false`)
//! means something; protobuf cannot tell the two apart, so the list is curated.

use std::fmt::Debug;
use std::sync::LazyLock;

use base64::Engine as _;
use serde_json::{Map, Value};

/// Media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf body could not be decoded. Every variant is the client's fault (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("protobuf body does not start with the Kubernetes magic prefix \"k8s\\x00\"")]
    BadMagic,
    #[error("protobuf body is truncated: {0}")]
    Truncated(String),
    #[error("protobuf envelope (runtime.Unknown) has no apiVersion or kind")]
    MissingTypeMeta,
    #[error("protobuf decoding is not supported for apiVersion {api_version:?}, kind {kind:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("unsupported contentEncoding {0:?} in protobuf envelope")]
    UnsupportedEncoding(String),
    #[error("unsupported contentType {0:?} in protobuf envelope")]
    UnsupportedContentType(String),
    #[error("malformed protobuf {what}: {detail}")]
    Malformed { what: String, detail: String },
}

impl DecodeError {
    /// Classifies a prost error: running out of bytes (a length past the end, or a varint cut
    /// off, which is also what an over-long varint reports) is truncation.
    fn from_prost(what: &str, e: prost::DecodeError) -> Self {
        let detail = e.to_string();
        let detail = detail
            .strip_prefix("failed to decode Protobuf message: ")
            .unwrap_or(&detail)
            .to_string();
        if [
            "buffer underflow",
            "delimited length exceeded",
            "invalid varint",
        ]
        .iter()
        .any(|t| detail.contains(t))
        {
            DecodeError::Truncated(format!("{what}: {detail}"))
        } else {
            DecodeError::Malformed {
                what: what.to_string(),
                detail,
            }
        }
    }

    fn malformed(what: impl Into<String>, detail: impl Into<String>) -> Self {
        DecodeError::Malformed {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// Decodes a protobuf request body (the `k8s\0` magic + runtime.Unknown envelope with typeMeta,
/// raw, contentEncoding, contentType) into the JSON form of the object, with apiVersion and kind set
/// from the envelope. Supports every kind in [`crate::resources::RESOURCES`] plus autoscaling/v1
/// Scale, v1 Binding, policy/v1 Eviction, meta/v1 DeleteOptions (under any group version) and
/// authentication.k8s.io/v1 TokenRequest.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    decode_inner(body, &mut Vec::new())
}

/// [`decode`], also reporting the protobuf fields that had a value but no JSON counterpart in the
/// k8s-openapi schema (dropped from the result). Used by tests to prove the mapping complete.
fn decode_inner(body: &[u8], unmapped: &mut Vec<String>) -> Result<Value, DecodeError> {
    let envelope = unwrap_envelope(body)?;
    let type_meta = envelope.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(DecodeError::MissingTypeMeta);
    }
    match envelope.content_encoding.as_deref().unwrap_or("") {
        "" => {}
        other => return Err(DecodeError::UnsupportedEncoding(other.to_string())),
    }
    let raw = envelope.raw.unwrap_or_default();
    let content_type = envelope.content_type.as_deref().unwrap_or("");
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version.clone()));
    out.insert("kind".into(), Value::String(kind.clone()));
    let body = match content_type {
        "" | MEDIA_TYPE => {
            let entry = lookup(&api_version, &kind).ok_or_else(|| DecodeError::UnknownKind {
                api_version: api_version.clone(),
                kind: kind.clone(),
            })?;
            let text = (entry.debug)(&raw).map_err(|e| DecodeError::from_prost(&kind, e))?;
            let tree = Parser::new(&text)
                .parse_document()
                .map_err(|e| DecodeError::malformed(&kind, format!("internal: {e}")))?;
            let mut cx = Cx { unmapped };
            let value = cx.convert(&tree, &Schema::def(&entry.definition), &kind)?;
            match value {
                Some(Value::Object(m)) => m,
                Some(_) => return Err(DecodeError::malformed(&kind, "not an object")),
                None => Map::new(),
            }
        }
        "application/json" => match serde_json::from_slice(&raw) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(DecodeError::malformed(&kind, "raw JSON is not an object")),
            Err(e) => return Err(DecodeError::malformed(&kind, format!("raw JSON: {e}"))),
        },
        other => return Err(DecodeError::UnsupportedContentType(other.to_string())),
    };
    for (k, v) in body {
        if k != "apiVersion" && k != "kind" {
            out.insert(k, v);
        }
    }
    Ok(Value::Object(out))
}

fn unwrap_envelope(
    body: &[u8],
) -> Result<k8s_pb::apimachinery::pkg::runtime::Unknown, DecodeError> {
    if body.len() < MAGIC.len() {
        return if MAGIC.starts_with(body) {
            Err(DecodeError::Truncated(
                "body ends inside the magic prefix".into(),
            ))
        } else {
            Err(DecodeError::BadMagic)
        };
    }
    if &body[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    <k8s_pb::apimachinery::pkg::runtime::Unknown as prost::Message>::decode(&body[4..])
        .map_err(|e| DecodeError::from_prost("envelope (runtime.Unknown)", e))
}

// ---------------------------------------------------------------------------------------------
// The kind table.

struct Entry {
    /// Decodes `raw` with the k8s-pb type and renders it with prost's `Debug`.
    debug: fn(&[u8]) -> Result<String, prost::DecodeError>,
    /// Name of the k8s-openapi schema definition (`io.k8s.api.core.v1.ConfigMap`).
    definition: String,
    /// Encodes a message of the kind with every field set (found by probing the wire format).
    #[cfg(test)]
    populated: fn() -> Vec<u8>,
}

fn debug_of<T: prost::Message + Default + Debug>(raw: &[u8]) -> Result<String, prost::DecodeError> {
    Ok(format!("{:?}", T::decode(raw)?))
}

macro_rules! kinds {
    ($( $gv:literal, $kind:literal => $pb:ty, $oa:ty; )*) => {
        /// Every (apiVersion, kind) served, besides DeleteOptions which any group version takes.
        pub const KINDS: &[(&str, &str)] = &[$(($gv, $kind)),*];

        fn lookup(api_version: &str, kind: &str) -> Option<Entry> {
            if kind == "DeleteOptions" {
                return Some(Entry {
                    debug: debug_of::<k8s_pb::apimachinery::pkg::apis::meta::v1::DeleteOptions>,
                    definition: "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions".into(),
                    #[cfg(test)]
                    populated: tests::populated::<k8s_pb::apimachinery::pkg::apis::meta::v1::DeleteOptions>,
                });
            }
            match (api_version, kind) {
                $(($gv, $kind) => Some(Entry {
                    debug: debug_of::<$pb>,
                    definition: <$oa as schemars::JsonSchema>::schema_name().into_owned(),
                    #[cfg(test)]
                    populated: tests::populated::<$pb>,
                }),)*
                _ => None,
            }
        }

        /// The k8s-openapi schema definitions of every kind, with all they refer to.
        static DEFINITIONS: LazyLock<Map<String, Value>> = LazyLock::new(|| {
            let mut generator = schemars::SchemaGenerator::default();
            $(let _ = generator.subschema_for::<$oa>();)*
            let _ = generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
            generator.definitions().clone()
        });
    };
}

use k8s_openapi::api as oa;
use k8s_pb::api as pb;

kinds! {
    "v1", "Namespace" => pb::core::v1::Namespace, oa::core::v1::Namespace;
    "v1", "Pod" => pb::core::v1::Pod, oa::core::v1::Pod;
    "v1", "Node" => pb::core::v1::Node, oa::core::v1::Node;
    "v1", "Service" => pb::core::v1::Service, oa::core::v1::Service;
    "v1", "Endpoints" => pb::core::v1::Endpoints, oa::core::v1::Endpoints;
    "v1", "ConfigMap" => pb::core::v1::ConfigMap, oa::core::v1::ConfigMap;
    "v1", "Secret" => pb::core::v1::Secret, oa::core::v1::Secret;
    "v1", "ServiceAccount" => pb::core::v1::ServiceAccount, oa::core::v1::ServiceAccount;
    "v1", "ReplicationController" => pb::core::v1::ReplicationController, oa::core::v1::ReplicationController;
    "v1", "Event" => pb::core::v1::Event, oa::core::v1::Event;
    "v1", "LimitRange" => pb::core::v1::LimitRange, oa::core::v1::LimitRange;
    "v1", "ResourceQuota" => pb::core::v1::ResourceQuota, oa::core::v1::ResourceQuota;
    "v1", "PersistentVolume" => pb::core::v1::PersistentVolume, oa::core::v1::PersistentVolume;
    "v1", "PersistentVolumeClaim" => pb::core::v1::PersistentVolumeClaim, oa::core::v1::PersistentVolumeClaim;
    "v1", "Binding" => pb::core::v1::Binding, oa::core::v1::Binding;
    "apps/v1", "Deployment" => pb::apps::v1::Deployment, oa::apps::v1::Deployment;
    "apps/v1", "ReplicaSet" => pb::apps::v1::ReplicaSet, oa::apps::v1::ReplicaSet;
    "apps/v1", "StatefulSet" => pb::apps::v1::StatefulSet, oa::apps::v1::StatefulSet;
    "apps/v1", "DaemonSet" => pb::apps::v1::DaemonSet, oa::apps::v1::DaemonSet;
    "apps/v1", "ControllerRevision" => pb::apps::v1::ControllerRevision, oa::apps::v1::ControllerRevision;
    "batch/v1", "Job" => pb::batch::v1::Job, oa::batch::v1::Job;
    "batch/v1", "CronJob" => pb::batch::v1::CronJob, oa::batch::v1::CronJob;
    "discovery.k8s.io/v1", "EndpointSlice" => pb::discovery::v1::EndpointSlice, oa::discovery::v1::EndpointSlice;
    "coordination.k8s.io/v1", "Lease" => pb::coordination::v1::Lease, oa::coordination::v1::Lease;
    "events.k8s.io/v1", "Event" => pb::events::v1::Event, oa::events::v1::Event;
    "networking.k8s.io/v1", "NetworkPolicy" => pb::networking::v1::NetworkPolicy, oa::networking::v1::NetworkPolicy;
    "networking.k8s.io/v1", "Ingress" => pb::networking::v1::Ingress, oa::networking::v1::Ingress;
    "policy/v1", "PodDisruptionBudget" => pb::policy::v1::PodDisruptionBudget, oa::policy::v1::PodDisruptionBudget;
    "policy/v1", "Eviction" => pb::policy::v1::Eviction, oa::policy::v1::Eviction;
    "scheduling.k8s.io/v1", "PriorityClass" => pb::scheduling::v1::PriorityClass, oa::scheduling::v1::PriorityClass;
    "storage.k8s.io/v1", "StorageClass" => pb::storage::v1::StorageClass, oa::storage::v1::StorageClass;
    "rbac.authorization.k8s.io/v1", "Role" => pb::rbac::v1::Role, oa::rbac::v1::Role;
    "rbac.authorization.k8s.io/v1", "ClusterRole" => pb::rbac::v1::ClusterRole, oa::rbac::v1::ClusterRole;
    "rbac.authorization.k8s.io/v1", "RoleBinding" => pb::rbac::v1::RoleBinding, oa::rbac::v1::RoleBinding;
    "rbac.authorization.k8s.io/v1", "ClusterRoleBinding" => pb::rbac::v1::ClusterRoleBinding, oa::rbac::v1::ClusterRoleBinding;
    "admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration" => pb::admissionregistration::v1::MutatingWebhookConfiguration, oa::admissionregistration::v1::MutatingWebhookConfiguration;
    "admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration" => pb::admissionregistration::v1::ValidatingWebhookConfiguration, oa::admissionregistration::v1::ValidatingWebhookConfiguration;
    "certificates.k8s.io/v1", "CertificateSigningRequest" => pb::certificates::v1::CertificateSigningRequest, oa::certificates::v1::CertificateSigningRequest;
    "autoscaling/v1", "Scale" => pb::autoscaling::v1::Scale, oa::autoscaling::v1::Scale;
    "authentication.k8s.io/v1", "TokenRequest" => pb::authentication::v1::TokenRequest, oa::authentication::v1::TokenRequest;
    "authentication.k8s.io/v1", "TokenReview" => pb::authentication::v1::TokenReview, oa::authentication::v1::TokenReview;
    "authentication.k8s.io/v1", "SelfSubjectReview" => pb::authentication::v1::SelfSubjectReview, oa::authentication::v1::SelfSubjectReview;
    "authorization.k8s.io/v1", "SubjectAccessReview" => pb::authorization::v1::SubjectAccessReview, oa::authorization::v1::SubjectAccessReview;
    "authorization.k8s.io/v1", "SelfSubjectAccessReview" => pb::authorization::v1::SelfSubjectAccessReview, oa::authorization::v1::SelfSubjectAccessReview;
    "authorization.k8s.io/v1", "LocalSubjectAccessReview" => pb::authorization::v1::LocalSubjectAccessReview, oa::authorization::v1::LocalSubjectAccessReview;
    "authorization.k8s.io/v1", "SelfSubjectRulesReview" => pb::authorization::v1::SelfSubjectRulesReview, oa::authorization::v1::SelfSubjectRulesReview;
}

/// Value (non-pointer) integer and boolean fields, by schema definition, whose zero (`0`,
/// `false`) Go's JSON omits (`omitempty`) and upstream defaulting treats as unset. Go's protobuf
/// encoding always writes them, so their zeros are dropped. Integer fields of `…Status` types are
/// treated the same way. Zeros elsewhere are kept: a pointer set to zero means something.
pub const ZERO_IS_UNSET: &[(&str, &[&str])] = &[
    (
        "io.k8s.api.core.v1.Container",
        &["stdin", "stdinOnce", "tty"],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        &["stdin", "stdinOnce", "tty"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        &["hostNetwork", "hostPID", "hostIPC"],
    ),
    ("io.k8s.api.core.v1.VolumeMount", &["readOnly"]),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimVolumeSource",
        &["readOnly"],
    ),
    ("io.k8s.api.core.v1.NFSVolumeSource", &["readOnly"]),
    ("io.k8s.api.core.v1.NodeSpec", &["unschedulable"]),
    ("io.k8s.api.scheduling.v1.PriorityClass", &["globalDefault"]),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        &["paused", "minReadySeconds"],
    ),
    (
        "io.k8s.api.core.v1.Probe",
        &[
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ],
    ),
    ("io.k8s.api.core.v1.ContainerPort", &["hostPort"]),
    (
        "io.k8s.api.core.v1.ServicePort",
        &["nodePort", "targetPort"],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        &["healthCheckNodePort", "publishNotReadyAddresses"],
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerSpec",
        &["minReadySeconds"],
    ),
    ("io.k8s.api.core.v1.Event", &["count"]),
    ("io.k8s.api.core.v1.EventSeries", &["count"]),
    ("io.k8s.api.events.v1.Event", &["deprecatedCount"]),
    (
        "io.k8s.api.core.v1.AWSElasticBlockStoreVolumeSource",
        &["partition"],
    ),
    (
        "io.k8s.api.core.v1.GCEPersistentDiskVolumeSource",
        &["partition"],
    ),
    ("io.k8s.api.core.v1.ContainerStateTerminated", &["signal"]),
    ("io.k8s.api.apps.v1.ReplicaSetSpec", &["minReadySeconds"]),
    ("io.k8s.api.apps.v1.StatefulSetSpec", &["minReadySeconds"]),
    ("io.k8s.api.apps.v1.DaemonSetSpec", &["minReadySeconds"]),
    ("io.k8s.api.apps.v1.ControllerRevision", &["revision"]),
    ("io.k8s.api.autoscaling.v1.ScaleSpec", &["replicas"]),
    ("io.k8s.api.networking.v1.ServiceBackendPort", &["number"]),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        &["generation"],
    ),
];

/// Pointer string fields where an empty string means something (so it is kept).
const EMPTY_STRING_KEPT: &[(&str, &str)] = &[
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimSpec",
        "storageClassName",
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeSpec",
        "storageClassName",
    ),
];

// ---------------------------------------------------------------------------------------------
// Parsing prost's `Debug` output.

/// A value as prost's derived `Debug` prints it.
#[derive(Debug, Clone, PartialEq)]
enum Dv {
    None,
    Some(Box<Dv>),
    /// A message: type name and fields in declaration order (Rust names, `r#` stripped).
    Msg(String, Vec<(String, Dv)>),
    List(Vec<Dv>),
    Map(Vec<(Dv, Dv)>),
    Str(String),
    /// A number as printed (integers, or floats such as `1.5`, `1e-7`, `inf`, `NaN`).
    Num(String),
    Bool(bool),
}

impl Dv {
    /// Strips `Some(…)`.
    fn unwrap_some(&self) -> &Dv {
        match self {
            Dv::Some(inner) => inner.unwrap_some(),
            other => other,
        }
    }

    /// True for what carries no value: `None`, `[]`, `{}`.
    fn is_absent(&self) -> bool {
        match self {
            Dv::None => true,
            Dv::List(l) => l.is_empty(),
            Dv::Map(m) => m.is_empty(),
            _ => false,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            s: text.as_bytes(),
            text,
            pos: 0,
        }
    }

    fn parse_document(&mut self) -> Result<Dv, String> {
        let v = self.value()?;
        self.ws();
        if self.pos != self.s.len() {
            return Err(self.err("trailing text"));
        }
        Ok(v)
    }

    fn err(&self, what: &str) -> String {
        let end = (self.pos + 40).min(self.s.len());
        let snippet = self.text.get(self.pos..end).unwrap_or("");
        format!("{what} at byte {} ({snippet:?})", self.pos)
    }

    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos] == b' ' {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected {:?}", c as char)))
        }
    }

    /// After an element: `, ` then more, or the closing byte. Returns true at the end.
    fn sep_or_end(&mut self, close: u8) -> Result<bool, String> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                self.ws();
                // Tolerate a trailing comma (pretty printing).
                if self.peek() == Some(close) {
                    self.pos += 1;
                    return Ok(true);
                }
                Ok(false)
            }
            Some(c) if c == close => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(self.err("expected ',' or closing bracket")),
        }
    }

    fn ident(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'#' {
                self.pos += 1;
            } else {
                break;
            }
        }
        &self.text[start..self.pos]
    }

    fn value(&mut self) -> Result<Dv, String> {
        self.ws();
        match self.peek() {
            None => Err(self.err("unexpected end")),
            Some(b'"') => self.string().map(Dv::Str),
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(Dv::List(items));
                }
                loop {
                    items.push(self.value()?);
                    if self.sep_or_end(b']')? {
                        return Ok(Dv::List(items));
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Dv::Map(entries));
                }
                loop {
                    let k = self.value()?;
                    self.expect(b':')?;
                    let v = self.value()?;
                    entries.push((k, v));
                    if self.sep_or_end(b'}')? {
                        return Ok(Dv::Map(entries));
                    }
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.pos;
                self.pos += 1;
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-') {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                Ok(Dv::Num(self.text[start..self.pos].to_string()))
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let name = self.ident();
                match name {
                    "None" => Ok(Dv::None),
                    "true" => Ok(Dv::Bool(true)),
                    "false" => Ok(Dv::Bool(false)),
                    "inf" | "NaN" => Ok(Dv::Num(name.to_string())),
                    "Some" => {
                        self.expect(b'(')?;
                        let inner = self.value()?;
                        self.expect(b')')?;
                        Ok(Dv::Some(Box::new(inner)))
                    }
                    _ => {
                        let name = name.to_string();
                        let save = self.pos;
                        self.ws();
                        if self.peek() != Some(b'{') {
                            self.pos = save;
                            return Ok(Dv::Msg(name, Vec::new()));
                        }
                        self.pos += 1;
                        let mut fields = Vec::new();
                        self.ws();
                        if self.peek() == Some(b'}') {
                            self.pos += 1;
                            return Ok(Dv::Msg(name, fields));
                        }
                        loop {
                            self.ws();
                            let field = self.ident();
                            if field.is_empty() {
                                return Err(self.err("expected a field name"));
                            }
                            let field = field.trim_start_matches("r#").to_string();
                            self.expect(b':')?;
                            let v = self.value()?;
                            fields.push((field, v));
                            if self.sep_or_end(b'}')? {
                                return Ok(Dv::Msg(name, fields));
                            }
                        }
                    }
                }
            }
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    /// A string literal as `str`'s `Debug` escapes it.
    fn string(&mut self) -> Result<String, String> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            let rest = &self.text[self.pos..];
            let Some(i) = rest.find(['"', '\\']) else {
                return Err(self.err("unterminated string"));
            };
            out.push_str(&rest[..i]);
            self.pos += i;
            if self.s[self.pos] == b'"' {
                self.pos += 1;
                return Ok(out);
            }
            // Backslash escape.
            let esc = self.s.get(self.pos + 1).copied();
            self.pos += 2;
            match esc {
                Some(b'n') => out.push('\n'),
                Some(b'r') => out.push('\r'),
                Some(b't') => out.push('\t'),
                Some(b'0') => out.push('\0'),
                Some(b'\\') => out.push('\\'),
                Some(b'"') => out.push('"'),
                Some(b'\'') => out.push('\''),
                Some(b'u') => {
                    if self.peek() != Some(b'{') {
                        return Err(self.err("bad \\u escape"));
                    }
                    let rest = &self.text[self.pos + 1..];
                    let end = rest.find('}').ok_or_else(|| self.err("bad \\u escape"))?;
                    let code = u32::from_str_radix(&rest[..end], 16)
                        .map_err(|_| self.err("bad \\u escape"))?;
                    out.push(char::from_u32(code).ok_or_else(|| self.err("bad \\u escape"))?);
                    self.pos += end + 2;
                }
                _ => return Err(self.err("unknown escape")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Converting the tree to JSON, guided by the k8s-openapi schema.

/// A schema position: the (resolved) JSON schema and, when it came from a definition, its name.
#[derive(Clone, Copy)]
struct Schema<'s> {
    schema: Option<&'s Value>,
    definition: Option<&'s str>,
}

impl<'s> Schema<'s> {
    const NONE: Schema<'static> = Schema {
        schema: None,
        definition: None,
    };

    fn def(name: &str) -> Schema<'static> {
        match DEFINITIONS.get_key_value(name) {
            Some((k, v)) => Schema {
                schema: Some(v),
                definition: Some(k.as_str()),
            },
            None => Schema::NONE,
        }
    }

    /// Follows `$ref`s.
    fn of(schema: &'s Value) -> Self {
        let mut s = Schema {
            schema: Some(schema),
            definition: None,
        };
        for _ in 0..8 {
            let Some(r) = s.schema.and_then(|v| v.get("$ref")).and_then(Value::as_str) else {
                break;
            };
            let name = r.rsplit('/').next().unwrap_or(r);
            match DEFINITIONS.get_key_value(name) {
                Some((k, v)) => {
                    s = Schema {
                        schema: Some(v),
                        definition: Some(k.as_str()),
                    }
                }
                None => return Schema::NONE,
            }
        }
        s
    }

    fn get(&self, key: &str) -> Option<&'s Value> {
        self.schema.and_then(|s| s.get(key))
    }

    fn is_bytes(&self) -> bool {
        self.get("format").and_then(Value::as_str) == Some("byte")
    }

    fn is_number(&self) -> bool {
        self.get("type").and_then(Value::as_str) == Some("number")
    }

    fn items(&self) -> Schema<'s> {
        self.get("items").map(Schema::of).unwrap_or(Schema::NONE)
    }

    fn additional(&self) -> Schema<'s> {
        self.get("additionalProperties")
            .map(Schema::of)
            .unwrap_or(Schema::NONE)
    }

    fn required(&self, prop: &str) -> bool {
        self.get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|p| p.as_str() == Some(prop)))
    }

    /// The JSON property matching a prost field name, ignoring case and underscores.
    fn property(&self, field: &str) -> Option<(&'s str, Schema<'s>)> {
        let props = self.get("properties")?.as_object()?;
        let want = normalize(field);
        props
            .iter()
            .find(|(k, _)| normalize(k) == want)
            .map(|(k, v)| (k.as_str(), Schema::of(v)))
    }
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

struct Cx<'u> {
    unmapped: &'u mut Vec<String>,
}

impl Cx<'_> {
    /// Converts one value; `None` when it carries nothing (unset, or a zero `Time`).
    fn convert(
        &mut self,
        v: &Dv,
        schema: &Schema,
        path: &str,
    ) -> Result<Option<Value>, DecodeError> {
        Ok(match v {
            Dv::None => None,
            Dv::Some(inner) => self.convert(inner, schema, path)?,
            Dv::Bool(b) => Some(Value::Bool(*b)),
            Dv::Str(s) => Some(Value::String(s.clone())),
            Dv::Num(n) => Some(number(n, schema.is_number(), path)?),
            Dv::List(items) if schema.is_bytes() => Some(Value::String(base64_of(items, path)?)),
            Dv::List(items) => {
                let item_schema = schema.items();
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    out.push(self.convert(item, &item_schema, &p)?.unwrap_or(Value::Null));
                }
                Some(Value::Array(out))
            }
            Dv::Map(entries) => {
                let value_schema = schema.additional();
                let mut out = Map::new();
                for (k, val) in entries {
                    let key = match k {
                        Dv::Str(s) => s.clone(),
                        Dv::Num(n) => n.clone(),
                        _ => return Err(DecodeError::malformed(path, "map key is not a string")),
                    };
                    let p = format!("{path}[{key}]");
                    let value = self.convert(val, &value_schema, &p)?.unwrap_or(Value::Null);
                    out.insert(key, value);
                }
                Some(Value::Object(out))
            }
            Dv::Msg(name, fields) => self.message(name, fields, schema, path)?,
        })
    }

    fn message(
        &mut self,
        name: &str,
        fields: &[(String, Dv)],
        schema: &Schema,
        path: &str,
    ) -> Result<Option<Value>, DecodeError> {
        let field = |n: &str| {
            fields
                .iter()
                .find(|(f, _)| f == n)
                .map(|(_, v)| v.unwrap_some())
        };
        let int = |n: &str| -> Result<Option<i64>, DecodeError> {
            match field(n) {
                None | Some(Dv::None) => Ok(None),
                Some(Dv::Num(s)) => s.parse().map(Some).map_err(|_| {
                    DecodeError::malformed(path, format!("{name}.{n} is not an integer"))
                }),
                Some(_) => Err(DecodeError::malformed(
                    path,
                    format!("{name}.{n} is not an integer"),
                )),
            }
        };
        let string = |n: &str| match field(n) {
            Some(Dv::Str(s)) => Some(s.clone()),
            _ => None,
        };
        let bytes = |n: &str| -> Result<Option<Vec<u8>>, DecodeError> {
            match field(n) {
                Some(Dv::List(items)) => items
                    .iter()
                    .map(|b| byte(b, path))
                    .collect::<Result<_, _>>()
                    .map(Some),
                _ => Ok(None),
            }
        };
        let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
        match (name, names.as_slice()) {
            // metav1.Time: empty means the zero time, which Go's JSON writes as null; Go drops nanos.
            ("Time", ["seconds", "nanos"]) => {
                let (secs, nanos) = (int("seconds")?, int("nanos")?);
                if secs.is_none() && nanos.is_none() {
                    return Ok(None);
                }
                return Ok(Some(rfc3339(secs.unwrap_or(0), 0, false, path)?));
            }
            ("MicroTime", ["seconds", "nanos"]) => {
                let (secs, nanos) = (int("seconds")?, int("nanos")?);
                if secs.is_none() && nanos.is_none() {
                    return Ok(None);
                }
                return Ok(Some(rfc3339(
                    secs.unwrap_or(0),
                    nanos.unwrap_or(0),
                    true,
                    path,
                )?));
            }
            ("Quantity", ["string"]) => {
                return Ok(Some(Value::String(
                    string("string").unwrap_or_else(|| "0".into()),
                )));
            }
            ("IntOrString", ["type", "int_val", "str_val"]) => {
                return Ok(Some(match int("type")?.unwrap_or(0) {
                    0 => Value::from(int("int_val")?.unwrap_or(0)),
                    1 => Value::String(string("str_val").unwrap_or_default()),
                    t => {
                        return Err(DecodeError::malformed(
                            path,
                            format!("IntOrString type {t}"),
                        ))
                    }
                }));
            }
            // authentication/authorization ExtraValue: a message around a string list in
            // protobuf, the bare list in JSON.
            ("ExtraValue", ["items"]) => {
                return match field("items") {
                    Some(items) => self.convert(items, schema, path),
                    None => Ok(Some(Value::Array(Vec::new()))),
                };
            }
            ("Duration", ["duration"]) => {
                return Ok(int("duration")?.map(|d| Value::String(go_duration(d))));
            }
            ("RawExtension" | "FieldsV1", ["raw"]) => {
                let Some(raw) = bytes("raw")? else {
                    return Ok(None);
                };
                if raw.is_empty() {
                    return Ok(None);
                }
                if raw.starts_with(MAGIC) {
                    return decode_inner(&raw, self.unmapped).map(Some);
                }
                return serde_json::from_slice(&raw).map(Some).map_err(|e| {
                    DecodeError::malformed(path, format!("embedded {name} is not JSON: {e}"))
                });
            }
            _ => {}
        }
        let mut out = Map::new();
        self.fill(name, fields, schema, path, &mut out)?;
        Ok(Some(Value::Object(out)))
    }

    /// Converts a message's fields into `out` (also used for Go structs embedded inline).
    fn fill(
        &mut self,
        name: &str,
        fields: &[(String, Dv)],
        schema: &Schema,
        path: &str,
        out: &mut Map<String, Value>,
    ) -> Result<(), DecodeError> {
        for (field, v) in fields {
            match schema.property(field) {
                Some((prop, prop_schema)) => {
                    let p = format!("{path}.{prop}");
                    let required = schema.required(prop);
                    // Go cannot tell an empty list, map or bytes from a nil one in protobuf.
                    let value = match v.unwrap_some() {
                        Dv::List(l) if l.is_empty() && required && !prop_schema.is_bytes() => {
                            Value::Array(Vec::new())
                        }
                        Dv::Map(m) if m.is_empty() && required => Value::Object(Map::new()),
                        absent if absent.is_absent() => continue,
                        _ => match self.convert(v, &prop_schema, &p)? {
                            Some(value) if required => value,
                            Some(value) if is_go_omitted(&value, schema.definition, prop) => {
                                continue
                            }
                            Some(value) => value,
                            None => continue,
                        },
                    };
                    out.insert(prop.to_string(), value);
                }
                None => match v.unwrap_some() {
                    Dv::Msg(inner_name, inner_fields)
                        if INLINE_TYPES.contains(&inner_name.as_str()) =>
                    {
                        let p = format!("{path}.{field}");
                        self.fill(inner_name, inner_fields, schema, &p, out)?;
                    }
                    absent if absent.is_absent() => {}
                    _ => self.unmapped.push(format!("{path}: {name}.{field}")),
                },
            }
        }
        Ok(())
    }
}

/// Go structs embedded inline (`json:",inline"`) in the served types: protobuf has them as a
/// message field (`Volume.volumeSource`, `Probe.handler`), JSON merges their fields into the
/// parent. Other message fields without a JSON name (newer than k8s-openapi v1_33) are dropped.
pub const INLINE_TYPES: &[&str] = &[
    "LocalObjectReference",
    "VolumeSource",
    "PersistentVolumeSource",
    "ProbeHandler",
    "EphemeralContainerCommon",
    "IngressRuleValue",
    "Rule",
];

/// Whether Go's JSON encoding would leave this (non-required) field out.
fn is_go_omitted(value: &Value, definition: Option<&str>, prop: &str) -> bool {
    let def = definition.unwrap_or("");
    match value {
        Value::String(s) if s.is_empty() => !EMPTY_STRING_KEPT.contains(&(def, prop)),
        Value::Array(a) => a.is_empty(),
        Value::Number(n) if n.as_f64() == Some(0.0) => {
            def.ends_with("Status") || zero_is_unset(def, prop)
        }
        Value::Bool(false) => zero_is_unset(def, prop),
        _ => false,
    }
}

fn zero_is_unset(def: &str, prop: &str) -> bool {
    ZERO_IS_UNSET
        .iter()
        .any(|(d, props)| *d == def && props.contains(&prop))
}

fn number(n: &str, float: bool, path: &str) -> Result<Value, DecodeError> {
    if !float {
        if let Ok(i) = n.parse::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = n.parse::<u64>() {
            return Ok(Value::from(u));
        }
    }
    let f: f64 = n
        .parse()
        .map_err(|_| DecodeError::malformed(path, format!("bad number {n}")))?;
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| DecodeError::malformed(path, format!("{n} is not a finite number")))
}

fn byte(v: &Dv, path: &str) -> Result<u8, DecodeError> {
    match v {
        Dv::Num(n) => n
            .parse()
            .map_err(|_| DecodeError::malformed(path, "bad byte")),
        _ => Err(DecodeError::malformed(path, "bad byte")),
    }
}

fn base64_of(items: &[Dv], path: &str) -> Result<String, DecodeError> {
    let raw: Vec<u8> = items
        .iter()
        .map(|b| byte(b, path))
        .collect::<Result<_, _>>()?;
    Ok(base64::engine::general_purpose::STANDARD.encode(raw))
}

fn rfc3339(secs: i64, nanos: i64, micro: bool, path: &str) -> Result<Value, DecodeError> {
    let nanos = u32::try_from(nanos).ok().filter(|n| *n < 1_000_000_000);
    let t = nanos
        .and_then(|n| chrono::DateTime::from_timestamp(secs, n))
        .ok_or_else(|| DecodeError::malformed(path, format!("timestamp {secs}s out of range")))?;
    let format = if micro {
        chrono::SecondsFormat::Micros
    } else {
        chrono::SecondsFormat::Secs
    };
    Ok(Value::String(t.to_rfc3339_opts(format, true)))
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
fn go_duration(d: i64) -> String {
    fn frac(v: u64, digits: u32) -> String {
        let unit = 10u64.pow(digits);
        let (whole, rem) = (v / unit, v % unit);
        if rem == 0 {
            return whole.to_string();
        }
        let frac = format!("{rem:0width$}", width = digits as usize);
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
    if d == 0 {
        return "0s".into();
    }
    let sign = if d < 0 { "-" } else { "" };
    let u = d.unsigned_abs();
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 6))
    } else {
        let secs = u / 1_000_000_000;
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        let s = frac(s * 1_000_000_000 + u % 1_000_000_000, 9);
        match (h, m) {
            (0, 0) => format!("{s}s"),
            (0, m) => format!("{m}m{s}s"),
            (h, m) => format!("{h}h{m}m{s}s"),
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests;
