//! The certificate controllers (upstream's pkg/controller/certificates): `csrsigning` signs
//! approved requests for the built-in signers with the cluster CA, `csrapproving` approves kubelet
//! client requests after a SubjectAccessReview (and, as Capstan's addition, kubelet serving
//! requests for the node's own addresses), `csrcleaner` deletes old requests.
//!
//! This module holds what the three share: reading a request's PEM CSR, its conditions, and the
//! subject rules of the kubelet signers (upstream's `ValidateKubeletClientCSR` and
//! `ValidateKubeletServingCSR`, pkg/apis/certificates/helpers.go), which both the signer and the
//! approver apply.

pub mod approver;
pub mod cleaner;
pub mod signer;

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use x509_parser::prelude::FromDer;

pub const KUBE_APISERVER_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBE_APISERVER_CLIENT_KUBELET_SIGNER: &str =
    "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
pub const LEGACY_UNKNOWN_SIGNER: &str = "kubernetes.io/legacy-unknown";

pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";

/// A parsed PEM CSR: subject and names (the signature is checked on parse).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedCsr {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
    /// The requester's public key (SubjectPublicKeyInfo DER), for signing.
    pub spki: Vec<u8>,
}

/// Parses `spec.request` (PEM `CERTIFICATE REQUEST`) and checks its signature.
pub fn parse_csr(pem: &[u8]) -> Result<ParsedCsr, String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("{e}"))?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("{e}"))?;
    csr.verify_signature()
        .map_err(|_| "the request's signature does not verify".to_string())?;
    let subject = &csr.certification_request_info.subject;
    let mut out = ParsedCsr {
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or("")
            .into(),
        organizations: subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect(),
        spki: csr.certification_request_info.subject_pki.raw.to_vec(),
        ..Default::default()
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                match n {
                    GeneralName::DNSName(d) => out.dns_names.push(d.to_string()),
                    GeneralName::RFC822Name(e) => out.emails.push(e.to_string()),
                    GeneralName::URI(u) => out.uris.push(u.to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            out.ip_addresses.push(v4.into());
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            out.ip_addresses.push(v6.into());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// The request's `spec.request`, parsed.
pub fn request_of(csr: &CertificateSigningRequest) -> Result<ParsedCsr, String> {
    parse_csr(&csr.spec.request.0)
}

fn usages(csr: &CertificateSigningRequest) -> BTreeSet<&str> {
    csr.spec
        .usages
        .iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

fn set(items: &[&'static str]) -> BTreeSet<&'static str> {
    items.iter().copied().collect()
}

/// `ValidateKubeletClientCSR`: `system:node:<name>` in exactly `system:nodes`, no SANs, usages
/// digital signature + client auth (with or without key encipherment).
pub fn validate_kubelet_client(
    req: &ParsedCsr,
    csr: &CertificateSigningRequest,
) -> Result<(), String> {
    if req.organizations != [NODES_GROUP] {
        return Err("subject organization is not system:nodes".into());
    }
    if !req.common_name.starts_with(NODE_USER_PREFIX) {
        return Err("subject common name does not begin with system:node:".into());
    }
    if !req.dns_names.is_empty() {
        return Err("DNS subjectAltNames are not allowed".into());
    }
    if !req.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !req.ip_addresses.is_empty() {
        return Err("IP subjectAltNames are not allowed".into());
    }
    if !req.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    let u = usages(csr);
    let with_rsa = set(&["client auth", "digital signature", "key encipherment"]);
    let without = set(&["client auth", "digital signature"]);
    if u != with_rsa && u != without {
        return Err(format!("usages did not match {with_rsa:?}"));
    }
    Ok(())
}

/// `ValidateKubeletServingCSR`: `system:node:<name>` in exactly `system:nodes`, at least one
/// DNS or IP SAN, no email or URI SANs, usages digital signature + server auth (with or without
/// key encipherment).
pub fn validate_kubelet_serving(
    req: &ParsedCsr,
    csr: &CertificateSigningRequest,
) -> Result<(), String> {
    if req.organizations != [NODES_GROUP] {
        return Err("subject organization is not system:nodes".into());
    }
    if !req.common_name.starts_with(NODE_USER_PREFIX) {
        return Err("subject common name does not begin with system:node:".into());
    }
    if req.dns_names.is_empty() && req.ip_addresses.is_empty() {
        return Err("DNS or IP subjectAltName is required".into());
    }
    if !req.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !req.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    let u = usages(csr);
    let with_rsa = set(&["digital signature", "key encipherment", "server auth"]);
    let without = set(&["digital signature", "server auth"]);
    if u != with_rsa && u != without {
        return Err(format!("usages did not match {with_rsa:?}"));
    }
    Ok(())
}

/// The condition of `kind`, if any.
pub fn condition<'a>(
    csr: &'a CertificateSigningRequest,
    kind: &str,
) -> Option<&'a CertificateSigningRequestCondition> {
    csr.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

pub fn is_approved(csr: &CertificateSigningRequest) -> bool {
    condition(csr, "Approved").is_some() && condition(csr, "Denied").is_none()
}

pub fn is_denied(csr: &CertificateSigningRequest) -> bool {
    condition(csr, "Denied").is_some()
}

pub fn has_failed(csr: &CertificateSigningRequest) -> bool {
    condition(csr, "Failed").is_some_and(|c| c.status == "True")
}

pub fn is_issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

#[cfg(test)]
pub(crate) mod testutil {
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequest, CertificateSigningRequestSpec,
    };
    use k8s_openapi::ByteString;

    /// A request for `cn` in `orgs` with the SANs, signer, usages and requester.
    pub fn csr(
        cn: &str,
        orgs: &[&str],
        dns: &[&str],
        ips: &[&str],
        signer: &str,
        usages: &[&str],
        username: &str,
    ) -> CertificateSigningRequest {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap();
        for ip in ips {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(ip.parse().unwrap()));
        }
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            dn.push(rcgen::DnType::OrganizationName, *o);
        }
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        CertificateSigningRequest {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("csr-test".into()),
                ..Default::default()
            },
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: signer.into(),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                username: Some(username.into()),
                ..Default::default()
            },
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::csr;
    use super::*;

    #[test]
    fn kubelet_client_subject_rules() {
        let ok = csr(
            "system:node:a",
            &["system:nodes"],
            &[],
            &[],
            KUBE_APISERVER_CLIENT_KUBELET_SIGNER,
            &["digital signature", "client auth"],
            "system:bootstrap:abc",
        );
        assert_eq!(
            validate_kubelet_client(&request_of(&ok).unwrap(), &ok),
            Ok(())
        );
        let cases = [
            (
                csr(
                    "system:node:a",
                    &["devs"],
                    &[],
                    &[],
                    "",
                    &["digital signature", "client auth"],
                    "",
                ),
                "subject organization is not system:nodes",
            ),
            (
                csr(
                    "alice",
                    &["system:nodes"],
                    &[],
                    &[],
                    "",
                    &["digital signature", "client auth"],
                    "",
                ),
                "subject common name does not begin with system:node:",
            ),
            (
                csr(
                    "system:node:a",
                    &["system:nodes"],
                    &["a"],
                    &[],
                    "",
                    &["digital signature", "client auth"],
                    "",
                ),
                "DNS subjectAltNames are not allowed",
            ),
            (
                csr(
                    "system:node:a",
                    &["system:nodes"],
                    &[],
                    &["10.0.0.1"],
                    "",
                    &["digital signature", "client auth"],
                    "",
                ),
                "IP subjectAltNames are not allowed",
            ),
        ];
        for (c, want) in cases {
            assert_eq!(
                validate_kubelet_client(&request_of(&c).unwrap(), &c).unwrap_err(),
                want
            );
        }
        let server = csr(
            "system:node:a",
            &["system:nodes"],
            &[],
            &[],
            "",
            &["digital signature", "server auth"],
            "",
        );
        assert!(
            validate_kubelet_client(&request_of(&server).unwrap(), &server)
                .unwrap_err()
                .starts_with("usages did not match")
        );
    }

    #[test]
    fn kubelet_serving_subject_rules() {
        let ok = csr(
            "system:node:a",
            &["system:nodes"],
            &["a"],
            &["10.0.0.1"],
            KUBELET_SERVING_SIGNER,
            &["digital signature", "key encipherment", "server auth"],
            "system:node:a",
        );
        assert_eq!(
            validate_kubelet_serving(&request_of(&ok).unwrap(), &ok),
            Ok(())
        );
        let no_names = csr(
            "system:node:a",
            &["system:nodes"],
            &[],
            &[],
            "",
            &["digital signature", "server auth"],
            "",
        );
        assert_eq!(
            validate_kubelet_serving(&request_of(&no_names).unwrap(), &no_names).unwrap_err(),
            "DNS or IP subjectAltName is required"
        );
    }
}
