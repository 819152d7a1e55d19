//! What a CertificateSigningRequest write needs of the requester, checked in the server before
//! the REST handler (like NodeRestriction), against the cached current object:
//!
//! - create: `spec.username`, `uid`, `groups` and `extra` become the requesting user's, whatever
//!   the body said (upstream's strategy `PrepareForCreate`); CertificateSubjectRestriction refuses
//!   a `kubernetes.io/kube-apiserver-client` request for the `system:masters` group;
//! - `/approval` (update or patch): CertificateApproval, the `approve` verb on `signers` named
//!   the request's signer or `<domain>/*`;
//! - `/status` changing `status.certificate`: CertificateSigning, the `sign` verb likewise. A
//!   patch is judged by whether it mentions `certificate` at all (the patched object is only
//!   computed later in the handler), so a patch of other status fields passes without `sign`.
//!
//! Refusals are 403 as upstream's `admission.NewForbidden`.

use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::auth::authz::{Attributes, Authorizer};
use crate::auth::UserInfo;
use crate::registry::Registry;
use crate::request::RequestInfo;
use crate::resources;
use crate::status::ApiError;

/// Whether the request is a CSR write this admission looks at.
pub fn applies(info: &RequestInfo) -> bool {
    info.is_resource_request
        && info.group == GROUP
        && info.resource == RESOURCE
        && matches!(info.verb.as_str(), "create" | "update" | "patch")
}

/// The authorizer's view of "may `user` `verb` requests for `signer`" (upstream's
/// `IsAuthorizedForSignerName`): the exact signer name, then `<domain>/*`.
pub async fn authorized_for_signer(
    authorizer: &Authorizer,
    registry: &Registry,
    user: &UserInfo,
    verb: &str,
    signer: &str,
) -> bool {
    let ask = |name: String| Attributes {
        user: user.clone(),
        verb: verb.into(),
        group: GROUP.into(),
        resource: "signers".into(),
        name,
        resource_request: true,
        ..Default::default()
    };
    if authorizer.authorize(registry, &ask(signer.into())).await {
        return true;
    }
    match signer.split_once('/') {
        Some((domain, _)) => {
            authorizer
                .authorize(registry, &ask(format!("{domain}/*")))
                .await
        }
        None => false,
    }
}

fn decode(body: &[u8]) -> Option<Value> {
    if body.starts_with(crate::protobuf::MAGIC) {
        crate::protobuf::decode(body).ok()
    } else {
        serde_json::from_slice(body)
            .ok()
            .or_else(|| serde_yaml::from_slice(body).ok())
    }
}

fn forbidden(name: &str, why: &str) -> ApiError {
    ApiError::forbidden(GROUP, RESOURCE, name, why)
}

/// Stamps the requester on a new request: `spec.username/uid/groups/extra`.
pub fn set_requester(obj: &mut Value, user: &UserInfo) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = obj["spec"].as_object_mut().expect("object");
    for k in ["username", "uid", "groups", "extra"] {
        spec.remove(k);
    }
    spec.insert("username".into(), json!(user.name));
    if !user.uid.is_empty() {
        spec.insert("uid".into(), json!(user.uid));
    }
    if !user.groups.is_empty() {
        spec.insert("groups".into(), json!(user.groups));
    }
    if !user.extra.is_empty() {
        spec.insert("extra".into(), json!(user.extra));
    }
}

/// CertificateSubjectRestriction: no `system:masters` through kube-apiserver-client.
pub fn subject_restriction(obj: &Value) -> Result<(), ApiError> {
    if obj["spec"]["signerName"] != KUBE_APISERVER_CLIENT_SIGNER {
        return Ok(());
    }
    let Some(pem) = bytes_field(obj.pointer("/spec/request")) else {
        return Ok(());
    };
    // An unparseable request is validation's to report.
    let Ok(info) = parse_csr(&pem) else {
        return Ok(());
    };
    if info
        .organizations
        .iter()
        .any(|o| o == crate::auth::MASTERS_GROUP)
    {
        return Err(forbidden(
            obj["metadata"]["name"].as_str().unwrap_or(""),
            &format!(
                "use of {KUBE_APISERVER_CLIENT_SIGNER} signer with system:masters group is not allowed"
            ),
        ));
    }
    Ok(())
}

/// Admits a CSR write. Returns a replacement body (JSON) for creates, whose spec carries the
/// requester; `None` leaves the body as it is (also when it does not decode: the handler then
/// reports the decoding error).
pub async fn admit(
    authorizer: &Authorizer,
    registry: &Registry,
    user: &UserInfo,
    info: &RequestInfo,
    body: &[u8],
) -> Result<Option<Bytes>, ApiError> {
    if info.verb == "create" && info.subresource.is_empty() {
        let Some(mut obj) = decode(body) else {
            return Ok(None);
        };
        if !obj.is_object() {
            return Ok(None);
        }
        set_requester(&mut obj, user);
        subject_restriction(&obj)?;
        return Ok(Some(Bytes::from(obj.to_string())));
    }
    let verb = match info.subresource.as_str() {
        "approval" => "approve",
        "status" => {
            let changes_certificate = match decode(body) {
                Some(new) if info.verb == "update" => {
                    let cached = current(registry, &info.name);
                    bytes_field(new.pointer("/status/certificate"))
                        != cached.and_then(|c| bytes_field(c.pointer("/status/certificate")))
                }
                Some(patch) => mentions_certificate(&patch),
                None => false,
            };
            if !changes_certificate {
                return Ok(None);
            }
            "sign"
        }
        _ => return Ok(None),
    };
    // The signer is immutable: the stored one is the one the update keeps.
    let Some(cur) = current(registry, &info.name) else {
        return Ok(None);
    };
    let signer = cur["spec"]["signerName"].as_str().unwrap_or("");
    if authorized_for_signer(authorizer, registry, user, verb, signer).await {
        return Ok(None);
    }
    let what = if verb == "approve" { "approve" } else { "sign" };
    Err(forbidden(
        &info.name,
        &format!("user not permitted to {what} requests with signerName {signer:?}"),
    ))
}

fn current(registry: &Registry, name: &str) -> Option<Value> {
    let res = resources::find(GROUP, "v1", RESOURCE)?;
    registry
        .cacher(res)
        .get(&Registry::key(res, "", name))
        .map(|o| o.value.clone())
}

/// Whether a patch document (merge, strategic or JSON patch) touches a `certificate` field.
fn mentions_certificate(patch: &Value) -> bool {
    match patch {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k == "certificate" || mentions_certificate(v)),
        Value::Array(a) => a.iter().any(|op| {
            op["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/status/certificate") || p == "/status")
                || mentions_certificate(&op["value"])
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::csr;
    use super::*;

    #[test]
    fn the_requester_replaces_what_the_body_claims() {
        let mut obj = json!({"spec": {"username": "admin", "groups": ["system:masters"], "uid": "u", "extra": {"a": ["b"]}}});
        let user = UserInfo::new(
            "system:bootstrap:abcdef",
            &["system:bootstrappers", "system:authenticated"],
        );
        set_requester(&mut obj, &user);
        assert_eq!(
            obj["spec"],
            json!({"username": "system:bootstrap:abcdef", "groups": ["system:bootstrappers", "system:authenticated"]})
        );
    }

    #[test]
    fn masters_through_the_client_signer_is_refused() {
        let (_, b64) = csr("root", &["system:masters"], &[], &[]);
        let obj = json!({"metadata": {"name": "x"}, "spec": {"request": b64, "signerName": KUBE_APISERVER_CLIENT_SIGNER}});
        let err = subject_restriction(&obj).unwrap_err();
        assert_eq!(err.code, 403);
        assert!(
            err.message.contains("system:masters group is not allowed"),
            "{}",
            err.message
        );
        let other = json!({"metadata": {"name": "x"}, "spec": {"request": b64, "signerName": "example.com/x"}});
        assert!(subject_restriction(&other).is_ok());
        let (_, b64) = csr("alice", &["devs"], &[], &[]);
        let fine = json!({"metadata": {"name": "x"}, "spec": {"request": b64, "signerName": KUBE_APISERVER_CLIENT_SIGNER}});
        assert!(subject_restriction(&fine).is_ok());
    }

    #[test]
    fn patches_that_touch_the_certificate_are_found() {
        assert!(mentions_certificate(
            &json!({"status": {"certificate": "x"}})
        ));
        assert!(!mentions_certificate(
            &json!({"status": {"conditions": [{"type": "Failed"}]}})
        ));
        assert!(mentions_certificate(
            &json!([{"op": "add", "path": "/status/certificate", "value": "x"}])
        ));
        assert!(!mentions_certificate(
            &json!([{"op": "add", "path": "/status/conditions/-", "value": {}}])
        ));
    }
}
