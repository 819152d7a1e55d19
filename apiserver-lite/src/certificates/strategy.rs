//! The CertificateSigningRequest strategies (upstream's pkg/registry/certificates/certificates/
//! strategy.go) and validation (pkg/apis/certificates/validation):
//!
//! - create: status cleared; the request must be a PEM CSR whose signature verifies, the signer
//!   name a `domain/path`, the legacy-unknown signer is refused in v1, usages given, known and
//!   unique, `expirationSeconds` at least 600;
//! - update of the main resource: only metadata changes (spec and status are the stored ones);
//! - `/status`: spec kept; Approved/Denied conditions are the stored ones; a certificate only on
//!   an approved request, PEM CERTIFICATE blocks, never changed once set;
//! - `/approval`: spec and certificate kept, Failed conditions kept; Approved and Denied are
//!   exclusive and, once there, never removed.
//!
//! Condition timestamps (`lastUpdateTime`, `lastTransitionTime`) are filled when missing, as
//! upstream's `populateConditionTimestamps`.

use serde_json::{json, Value};

use super::*;
use crate::status::Cause;

fn conditions(o: &Value) -> Vec<Value> {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn set_conditions(o: &mut Value, cs: Vec<Value>) {
    if !o["status"].is_object() {
        o["status"] = json!({});
    }
    if cs.is_empty() {
        o["status"]
            .as_object_mut()
            .expect("object")
            .remove("conditions");
    } else {
        o["status"]["conditions"] = Value::Array(cs);
    }
}

/// Replaces the conditions of the given types in `new` by those of `old`
/// (upstream's `preserveConditionInstances`).
fn preserve_conditions(new: &mut Value, old: &Value, types: &[&str]) {
    let mut cs: Vec<Value> = conditions(new)
        .into_iter()
        .filter(|c| !types.iter().any(|t| c["type"] == *t))
        .collect();
    cs.extend(
        conditions(old)
            .into_iter()
            .filter(|c| types.iter().any(|t| c["type"] == *t)),
    );
    set_conditions(new, cs);
}

/// Fills missing condition timestamps (`populateConditionTimestamps`).
fn populate_timestamps(o: &mut Value) {
    let now = chrono::Utc::now()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        .to_string();
    let mut cs = conditions(o);
    for c in &mut cs {
        for k in ["lastUpdateTime", "lastTransitionTime"] {
            if c[k].as_str().is_none_or(str::is_empty) {
                c[k] = json!(now);
            }
        }
    }
    if !cs.is_empty() {
        set_conditions(o, cs);
    }
}

/// PrepareForCreate: the status is cleared (spec.username & co. come from admission).
pub fn prepare_create(o: &mut Value) {
    o["status"] = json!({});
}

/// PrepareForUpdate of the main resource, `status` or `approval` (after the generic metadata
/// handling of the strategy).
pub fn prepare_update(subresource: Option<&str>, o: &mut Value, old: &Value) {
    o["spec"] = old["spec"].clone();
    match subresource {
        None => o["status"] = old["status"].clone(),
        Some("status") => {
            preserve_conditions(o, old, &[APPROVED, DENIED]);
            populate_timestamps(o);
        }
        Some("approval") => {
            match old.pointer("/status/certificate") {
                Some(c) => o["status"]["certificate"] = c.clone(),
                None => {
                    if let Some(s) = o["status"].as_object_mut() {
                        s.remove("certificate");
                    }
                }
            }
            preserve_conditions(o, old, &[FAILED]);
            populate_timestamps(o);
        }
        Some(_) => {}
    }
}

fn signer_name(signer: &str) -> Result<(), &'static str> {
    const MSG: &str =
        "must be a fully qualified domain and path of the form 'example.com/signer-name'";
    let Some((domain, path)) = signer.split_once('/') else {
        return Err(MSG);
    };
    if path.is_empty()
        || !crate::strategy::is_dns1123_subdomain(domain).is_empty()
        || !domain.contains('.')
        || path.len() > 253
    {
        return Err(MSG);
    }
    Ok(())
}

/// Validation of a new request (`ValidateCertificateSigningRequestCreate`).
pub fn validate_create(o: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let spec = &o["spec"];
    match bytes_field(spec.get("request")) {
        None => errs.push(Cause::required("spec.request", "")),
        Some(pem) => {
            if let Err(e) = parse_csr(&pem) {
                errs.push(Cause::invalid("spec.request", &spec["request"], &e));
            }
        }
    }
    let signer = spec["signerName"].as_str().unwrap_or("");
    if signer.is_empty() {
        errs.push(Cause::required("spec.signerName", ""));
    } else if let Err(m) = signer_name(signer) {
        errs.push(Cause::invalid("spec.signerName", &json!(signer), m));
    } else if signer == LEGACY_UNKNOWN_SIGNER {
        errs.push(Cause::invalid(
            "spec.signerName",
            &json!(signer),
            "the legacy signerName is not allowed via this API version",
        ));
    }
    if let Some(e) = spec["expirationSeconds"].as_i64() {
        if e < MIN_EXPIRATION_SECONDS {
            errs.push(Cause::invalid(
                "spec.expirationSeconds",
                &json!(e),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    let usages = spec["usages"].as_array().cloned().unwrap_or_default();
    if usages.is_empty() {
        errs.push(Cause::required("spec.usages", ""));
    }
    let mut seen = Vec::new();
    for (i, u) in usages.iter().enumerate() {
        let s = u.as_str().unwrap_or("");
        if !KEY_USAGES.contains(&s) {
            errs.push(Cause::not_supported(
                format!("spec.usages[{i}]"),
                u,
                KEY_USAGES,
            ));
        } else if seen.contains(&s) {
            errs.push(Cause::duplicate(format!("spec.usages[{i}]"), u));
        }
        seen.push(s);
    }
    errs.extend(validate_status(o));
    errs
}

/// The conditions and certificate rules shared by every write.
fn validate_status(o: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let cs = conditions(o);
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in cs.iter().enumerate() {
        let path = format!("status.conditions[{i}]");
        let t = c["type"].as_str().unwrap_or("");
        let st = c["status"].as_str().unwrap_or("");
        if t.is_empty() {
            errs.push(Cause::required(format!("{path}.type"), ""));
            continue;
        }
        if [APPROVED, DENIED, FAILED].contains(&t) {
            if seen.contains(&t) {
                errs.push(Cause::duplicate(format!("{path}.type"), &json!(t)));
            }
            seen.push(t);
        }
        if t == APPROVED || t == DENIED {
            if st != "True" {
                errs.push(Cause::not_supported(
                    format!("{path}.status"),
                    &json!(st),
                    &["True"],
                ));
            }
        } else if !["True", "False", "Unknown"].contains(&st) {
            errs.push(Cause::not_supported(
                format!("{path}.status"),
                &json!(st),
                &["False", "True", "Unknown"],
            ));
        }
    }
    if seen.contains(&APPROVED) && seen.contains(&DENIED) {
        errs.push(Cause::invalid(
            "status.conditions",
            &json!(cs),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    if let Some(cert) = bytes_field(o.pointer("/status/certificate")) {
        if let Err(m) = certificate_pem(&cert) {
            errs.push(Cause::invalid(
                "status.certificate",
                &json!("<certificate data>"),
                &m,
            ));
        }
    }
    errs
}

/// `validateCertificate`: one or more PEM blocks, all CERTIFICATE, each a parseable certificate.
fn certificate_pem(data: &[u8]) -> Result<(), String> {
    let mut count = 0;
    for pem in x509_parser::pem::Pem::iter_from_buffer(data) {
        let pem = pem.map_err(|e| format!("error decoding PEM block: {e}"))?;
        if pem.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {:?}",
                pem.label
            ));
        }
        pem.parse_x509()
            .map_err(|e| format!("error parsing certificate: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

/// Validation of an update of the main resource or a subresource.
pub fn validate_update(subresource: Option<&str>, o: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = validate_status(o);
    let cert = bytes_field(o.pointer("/status/certificate"));
    let old_cert = bytes_field(old.pointer("/status/certificate"));
    if subresource == Some("status") && cert != old_cert {
        if old_cert.is_some() {
            errs.push(Cause::invalid(
                "status.certificate",
                &json!("<certificate data>"),
                "updates may not modify existing certificate content",
            ));
        } else if !has_condition(o, APPROVED) {
            errs.push(Cause::invalid(
                "status.certificate",
                &json!("<certificate data>"),
                "certificate can only be set on an approved certificate signing request",
            ));
        } else if has_condition(o, FAILED) {
            errs.push(Cause::invalid(
                "status.certificate",
                &json!("<certificate data>"),
                "certificate cannot be set on a failed certificate signing request",
            ));
        }
    }
    if subresource == Some("approval") {
        for t in [APPROVED, DENIED] {
            if has_condition(old, t) && !has_condition(o, t) {
                errs.push(Cause::forbidden(
                    "status.conditions",
                    &format!("updates may not remove a condition of type {t:?}"),
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::super::testutil::csr;
    use super::*;

    fn request(b64: &str, signer: &str, usages: &[&str]) -> Value {
        json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": "x"},
            "spec": {"request": b64, "signerName": signer, "usages": usages},
        })
    }

    fn fields(errs: &[Cause]) -> Vec<String> {
        errs.iter().map(|c| c.field.clone()).collect()
    }

    #[test]
    fn create_validation() {
        let (_, b64) = csr("alice", &[], &[], &[]);
        let ok = request(&b64, KUBE_APISERVER_CLIENT_SIGNER, &["client auth"]);
        assert!(
            validate_create(&ok).is_empty(),
            "{:?}",
            validate_create(&ok)
        );

        let garbage = request("aGVsbG8=", KUBE_APISERVER_CLIENT_SIGNER, &["client auth"]);
        assert_eq!(fields(&validate_create(&garbage)), ["spec.request"]);

        let mut no_signer = ok.clone();
        no_signer["spec"]["signerName"] = json!("");
        assert_eq!(fields(&validate_create(&no_signer)), ["spec.signerName"]);
        no_signer["spec"]["signerName"] = json!("nodomain");
        assert_eq!(fields(&validate_create(&no_signer)), ["spec.signerName"]);
        no_signer["spec"]["signerName"] = json!(LEGACY_UNKNOWN_SIGNER);
        assert_eq!(fields(&validate_create(&no_signer)), ["spec.signerName"]);

        let bad_usages = request(
            &b64,
            KUBELET_SERVING_SIGNER,
            &["server auth", "flying", "server auth"],
        );
        assert_eq!(
            fields(&validate_create(&bad_usages)),
            ["spec.usages[1]", "spec.usages[2]"]
        );
        let none = request(&b64, KUBELET_SERVING_SIGNER, &[]);
        assert_eq!(fields(&validate_create(&none)), ["spec.usages"]);

        let mut short = ok.clone();
        short["spec"]["expirationSeconds"] = json!(599);
        assert_eq!(fields(&validate_create(&short)), ["spec.expirationSeconds"]);
    }

    #[test]
    fn approval_conditions_are_exclusive_and_sticky() {
        let (_, b64) = csr("alice", &[], &[], &[]);
        let old = request(&b64, KUBE_APISERVER_CLIENT_SIGNER, &["client auth"]);
        let mut both = old.clone();
        both["status"] = json!({"conditions": [
            {"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]});
        let errs = validate_update(Some("approval"), &both, &old);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("mutually exclusive"), "{errs:?}");

        let mut approved = old.clone();
        approved["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        assert!(validate_update(Some("approval"), &approved, &old).is_empty());
        let removed = validate_update(Some("approval"), &old, &approved);
        assert_eq!(fields(&removed), ["status.conditions"]);

        let mut false_approval = old.clone();
        false_approval["status"] = json!({"conditions": [{"type": "Approved", "status": "False"}]});
        assert_eq!(
            fields(&validate_update(Some("approval"), &false_approval, &old)),
            ["status.conditions[0].status"]
        );
    }

    #[test]
    fn certificate_only_on_approved_requests_and_only_once() {
        use base64::Engine;
        let (_, b64) = csr("alice", &[], &[], &[]);
        let old = request(&b64, KUBE_APISERVER_CLIENT_SIGNER, &["client auth"]);
        let cert = rcgen::generate_simple_self_signed(vec!["a".to_string()])
            .unwrap()
            .cert
            .pem();
        let cert_b64 = base64::engine::general_purpose::STANDARD.encode(&cert);
        let mut issued = old.clone();
        issued["status"] = json!({"certificate": cert_b64});
        assert_eq!(
            fields(&validate_update(Some("status"), &issued, &old)),
            ["status.certificate"]
        );
        let mut approved = old.clone();
        approved["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        let mut issued = approved.clone();
        issued["status"]["certificate"] = json!(cert_b64);
        assert!(validate_update(Some("status"), &issued, &approved).is_empty());
        // Changing it afterwards is refused.
        let other = rcgen::generate_simple_self_signed(vec!["b".to_string()])
            .unwrap()
            .cert
            .pem();
        let mut changed = issued.clone();
        changed["status"]["certificate"] =
            json!(base64::engine::general_purpose::STANDARD.encode(&other));
        assert_eq!(
            fields(&validate_update(Some("status"), &changed, &issued)),
            ["status.certificate"]
        );
        // Not PEM.
        let mut garbage = approved.clone();
        garbage["status"]["certificate"] = json!("aGVsbG8=");
        assert_eq!(
            fields(&validate_update(Some("status"), &garbage, &approved)),
            ["status.certificate"]
        );
    }

    #[test]
    fn status_updates_keep_approval_and_approval_keeps_the_certificate() {
        let (_, b64) = csr("alice", &[], &[], &[]);
        let mut old = request(&b64, KUBE_APISERVER_CLIENT_SIGNER, &["client auth"]);
        old["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        let mut new = old.clone();
        new["spec"]["signerName"] = json!("example.com/other");
        new["status"] = json!({"conditions": [{"type": "Failed", "status": "True"}]});
        prepare_update(Some("status"), &mut new, &old);
        assert_eq!(new["spec"], old["spec"]);
        let types: Vec<String> = conditions(&new)
            .iter()
            .map(|c| c["type"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(types, ["Failed", "Approved"]);
        assert!(conditions(&new)[0]["lastUpdateTime"].is_string());

        let mut with_cert = old.clone();
        with_cert["status"]["certificate"] = json!("Y2VydA==");
        let mut approval = old.clone();
        approval["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}], "certificate": "b3RoZXI="});
        prepare_update(Some("approval"), &mut approval, &with_cert);
        assert_eq!(approval["status"]["certificate"], "Y2VydA==");
    }
}
