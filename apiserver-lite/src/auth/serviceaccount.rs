//! Service-account tokens (upstream's `pkg/serviceaccount` and the `serviceaccounts/token`
//! REST): bound JWTs issued by the TokenRequest API with audiences, an expiry and an optional
//! pod binding, and their authentication — signature, issuer, audience, time window, then the
//! live objects: the service account (and the bound pod) must still exist with the uid the
//! token names, so a token dies with its pod or account. Also the issuer discovery documents
//! (`/.well-known/openid-configuration`, `/openid/v1/jwks`).

use serde_json::{json, Value};

use super::jws::{JwtKeys, KeyError};
use super::{UserInfo, SERVICE_ACCOUNTS_GROUP, SERVICE_ACCOUNT_PREFIX};
use crate::registry::Registry;
use crate::resources;
use crate::status::{ApiError, Cause};

/// Upstream's default `--service-account-issuer` for kubeadm clusters.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// TokenRequest's default and minimum expiry.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// Upstream's cap (`--service-account-max-token-expiration` unset: 2^32 seconds).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// The issuer: keys, name and the audiences the API server accepts (`--api-audiences`,
/// defaulting to the issuer).
pub struct ServiceAccountTokens {
    pub keys: JwtKeys,
    pub issuer: String,
    pub api_audiences: Vec<String>,
    /// The externally reachable URL of the API server, for the discovery document.
    pub jwks_uri: String,
}

/// What a token is bound to.
pub struct Binding<'a> {
    pub namespace: &'a str,
    pub service_account: (&'a str, &'a str),
    pub pod: Option<(&'a str, &'a str)>,
    pub node: Option<&'a str>,
}

impl ServiceAccountTokens {
    pub fn new(
        signing_pem: &str,
        public_pems: &[String],
        issuer: &str,
        jwks_uri: String,
    ) -> Result<Self, KeyError> {
        Ok(ServiceAccountTokens {
            keys: JwtKeys::new(signing_pem, public_pems)?,
            issuer: issuer.to_string(),
            api_audiences: vec![issuer.to_string()],
            jwks_uri,
        })
    }

    /// Issues a token; returns it and its expiry (unix seconds).
    pub fn issue(
        &self,
        b: &Binding<'_>,
        audiences: &[String],
        expiration_seconds: i64,
    ) -> Result<(String, i64), KeyError> {
        let now = chrono::Utc::now().timestamp();
        let exp = now + expiration_seconds;
        let mut k8s = json!({"namespace": b.namespace,
            "serviceaccount": {"name": b.service_account.0, "uid": b.service_account.1}});
        if let Some((name, uid)) = b.pod {
            k8s["pod"] = json!({"name": name, "uid": uid});
        }
        if let Some(node) = b.node {
            k8s["node"] = json!({"name": node});
        }
        let claims = json!({
            "aud": audiences, "exp": exp, "iat": now, "nbf": now, "iss": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(), "kubernetes.io": k8s,
            "sub": format!("{SERVICE_ACCOUNT_PREFIX}{}:{}", b.namespace, b.service_account.0),
        });
        Ok((self.keys.sign(&claims)?, exp))
    }

    /// Authenticates a token for `audiences` (empty: the API audiences). `Ok(None)`: not a token
    /// of this issuer (another authenticator may know it); `Err`: ours but invalid.
    pub async fn authenticate(
        &self,
        registry: &Registry,
        token: &str,
        audiences: &[String],
    ) -> Result<Option<UserInfo>, String> {
        let Some(res) = self.keys.verify(token) else {
            return Ok(None);
        };
        // Not our issuer: not ours to judge (upstream checks the issuer before the signature).
        let claims = match res {
            Ok(c) => c,
            Err(e) => return Err(e.to_string()),
        };
        if claims["iss"] != self.issuer.as_str() {
            return Ok(None);
        }
        let wanted = if audiences.is_empty() {
            &self.api_audiences
        } else {
            audiences
        };
        let aud: Vec<&str> = match &claims["aud"] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !aud.iter().any(|a| wanted.iter().any(|w| w == a)) {
            return Err("token audiences do not match".into());
        }
        let now = chrono::Utc::now().timestamp();
        // Upstream allows 60 s of clock skew.
        if claims["exp"].as_i64().is_none_or(|e| now > e + 60) {
            return Err("service account token has expired".into());
        }
        if claims["nbf"].as_i64().is_some_and(|n| now + 60 < n) {
            return Err("service account token is not valid yet".into());
        }
        let k8s = &claims["kubernetes.io"];
        let ns = k8s["namespace"].as_str().unwrap_or("");
        let sa_name = k8s["serviceaccount"]["name"].as_str().unwrap_or("");
        let sa_uid = k8s["serviceaccount"]["uid"].as_str().unwrap_or("");
        let live_uid = |plural: &'static str, name: &str| {
            let info = resources::find("", "v1", plural).expect("core resources are served");
            let name = name.to_string();
            async move {
                registry
                    .get(info, ns, &name)
                    .await
                    .ok()
                    .filter(|o| o.value["metadata"]["deletionTimestamp"].is_null())
                    .and_then(|o| o.value["metadata"]["uid"].as_str().map(str::to_string))
            }
        };
        if live_uid("serviceaccounts", sa_name).await.as_deref() != Some(sa_uid) {
            return Err(format!(
                "service account {ns}/{sa_name} has been deleted or recreated"
            ));
        }
        let mut user = UserInfo {
            name: format!("{SERVICE_ACCOUNT_PREFIX}{ns}:{sa_name}"),
            uid: sa_uid.into(),
            groups: vec![
                SERVICE_ACCOUNTS_GROUP.into(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{ns}"),
            ],
            ..Default::default()
        };
        if let Some(pod) = k8s["pod"].as_object() {
            let name = pod["name"].as_str().unwrap_or("");
            let uid = pod["uid"].as_str().unwrap_or("");
            if live_uid("pods", name).await.as_deref() != Some(uid) {
                return Err(format!("pod {ns}/{name} has been deleted or recreated"));
            }
            user.extra.insert(
                "authentication.kubernetes.io/pod-name".into(),
                vec![name.into()],
            );
            user.extra.insert(
                "authentication.kubernetes.io/pod-uid".into(),
                vec![uid.into()],
            );
        }
        if let Some(node) = k8s["node"]["name"].as_str() {
            user.extra.insert(
                "authentication.kubernetes.io/node-name".into(),
                vec![node.into()],
            );
        }
        if let Some(jti) = claims["jti"].as_str() {
            user.extra.insert(
                "authentication.kubernetes.io/credential-id".into(),
                vec![format!("JTI={jti}")],
            );
        }
        Ok(Some(user))
    }

    /// `/.well-known/openid-configuration`.
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.jwks_uri.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        })
    }

    /// `POST .../serviceaccounts/{name}/token`: a TokenRequest in, the same with `status` out.
    pub async fn token_request(
        &self,
        registry: &Registry,
        namespace: &str,
        name: &str,
        mut req: Value,
    ) -> Result<Value, ApiError> {
        let sa_info = resources::find("", "v1", "serviceaccounts").expect("served");
        let sa = registry.get(sa_info, namespace, name).await?;
        let sa_uid = sa.value["metadata"]["uid"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let spec = &req["spec"];
        let exp = spec["expirationSeconds"]
            .as_i64()
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        let invalid = |field: &str, value: Value, detail: &str| {
            ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                name,
                vec![Cause::invalid(field, &value, detail)],
            )
        };
        if exp < MIN_EXPIRATION_SECONDS {
            return Err(invalid(
                "spec.expirationSeconds",
                json!(exp),
                "may not specify a duration less than 10 minutes",
            ));
        }
        if exp > MAX_EXPIRATION_SECONDS {
            return Err(invalid(
                "spec.expirationSeconds",
                json!(exp),
                "may not specify a duration larger than 2^32 seconds",
            ));
        }
        let mut audiences: Vec<String> = spec["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if audiences.is_empty() {
            audiences = self.api_audiences.clone();
        }
        let mut pod = None;
        let mut node = None;
        let bound = &spec["boundObjectRef"];
        if bound.is_object() {
            let kind = bound["kind"].as_str().unwrap_or("");
            let bname = bound["name"].as_str().unwrap_or("").to_string();
            match kind {
                "Pod" => {
                    let pods = resources::find("", "v1", "pods").expect("served");
                    let p = registry.get(pods, namespace, &bname).await?;
                    let uid = p.value["metadata"]["uid"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty()) {
                        if want != uid {
                            return Err(ApiError::conflict(
                                "",
                                "pods",
                                &bname,
                                &format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"),
                            ));
                        }
                    }
                    node = p.value["spec"]["nodeName"].as_str().map(str::to_string);
                    pod = Some((bname, uid));
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for object of kind {kind:?}: only Pod is supported"
                    )))
                }
            }
        }
        let binding = Binding {
            namespace,
            service_account: (name, &sa_uid),
            pod: pod.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
            node: node.as_deref(),
        };
        let (token, exp_at) = self
            .issue(&binding, &audiences, exp)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        req["apiVersion"] = json!("authentication.k8s.io/v1");
        req["kind"] = json!("TokenRequest");
        req["spec"]["audiences"] = json!(audiences);
        req["spec"]["expirationSeconds"] = json!(exp);
        if req["metadata"].is_null() {
            req["metadata"] = json!({});
        }
        req["metadata"]["name"] = json!(name);
        req["metadata"]["namespace"] = json!(namespace);
        let ts = chrono::DateTime::from_timestamp(exp_at, 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        req["status"] = json!({"token": token, "expirationTimestamp": ts});
        Ok(req)
    }
}
