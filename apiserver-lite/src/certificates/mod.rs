//! The `certificates.k8s.io/v1` CertificateSigningRequest API (upstream's
//! pkg/registry/certificates and pkg/apis/certificates): a cluster-scoped request holding a PEM
//! CSR and a `signerName`; the requester's identity is stamped on it by the server, approval
//! conditions change only through `/approval` and the issued certificate only through `/status`.
//!
//! - [`strategy`]: PrepareForCreate/Update of the three endpoints and their validation (the
//!   request is a PEM CSR whose signature verifies, signer names, usages, Approved/Denied
//!   exclusive, a certificate only on an approved request).
//! - [`admission`]: what needs the requester's identity and the authorizer: `spec.username/uid/
//!   groups/extra` from the requesting user (the body's values are ignored), upstream's
//!   CertificateApproval (`approve` on `signers`), CertificateSigning (`sign` on `signers`) and
//!   CertificateSubjectRestriction (no `system:masters` through kube-apiserver-client).
//!
//! Which subjects a built-in signer accepts (a kubelet client certificate must be
//! `system:node:<name>` in `system:nodes`, …) is the signer's business, as upstream: see the
//! controller-manager's `csrsigning`.

pub mod admission;
pub mod strategy;

use base64::Engine;
use serde_json::Value;

/// The API group.
pub const GROUP: &str = "certificates.k8s.io";
/// The resource.
pub const RESOURCE: &str = "certificatesigningrequests";

/// Upstream's well-known signers.
pub const KUBE_APISERVER_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBE_APISERVER_CLIENT_KUBELET_SIGNER: &str =
    "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
pub const LEGACY_UNKNOWN_SIGNER: &str = "kubernetes.io/legacy-unknown";

/// The key usages a request may list (upstream's `KeyUsage` constants).
pub const KEY_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// The smallest `spec.expirationSeconds` (10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

/// Condition types.
pub const APPROVED: &str = "Approved";
pub const DENIED: &str = "Denied";
pub const FAILED: &str = "Failed";

/// Decodes a `[]byte` field (base64 in JSON); None when absent, empty or not base64.
pub fn bytes_field(v: Option<&Value>) -> Option<Vec<u8>> {
    let s = v?.as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .filter(|b| !b.is_empty())
}

/// Whether `csr` has a condition of `kind` (status is not checked: Approved and Denied are
/// always True in v1).
pub fn has_condition(csr: &Value, kind: &str) -> bool {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == kind))
}

/// The parsed subject and names of a PEM CSR.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CsrInfo {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
}

/// Parses a PEM `CERTIFICATE REQUEST` and verifies its self-signature (upstream's
/// `ParseCSR` + `CheckSignature`); the error text is what validation reports.
pub fn parse_csr(pem_bytes: &[u8]) -> Result<CsrInfo, String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_bytes)
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| format!("asn1: structure error: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "x509: ECDSA verification failure".to_string())
        .map_err(
            |e| match csr.signature_algorithm.algorithm.to_id_string().as_str() {
                "1.2.840.10045.4.3.2" | "1.2.840.10045.4.3.3" | "1.2.840.10045.4.3.4" => e,
                _ => "crypto/rsa: verification error".to_string(),
            },
        )?;
    let subject = &csr.certification_request_info.subject;
    let mut info = CsrInfo {
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("")
            .to_string(),
        organizations: subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect(),
        ..Default::default()
    };
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => info.dns_names.push(d.to_string()),
                        GeneralName::RFC822Name(e) => info.emails.push(e.to_string()),
                        GeneralName::URI(u) => info.uris.push(u.to_string()),
                        GeneralName::IPAddress(b) => match b.len() {
                            4 => info
                                .ip_addresses
                                .push(<[u8; 4]>::try_from(*b).expect("4 bytes").into()),
                            16 => info
                                .ip_addresses
                                .push(<[u8; 16]>::try_from(*b).expect("16 bytes").into()),
                            _ => {}
                        },
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(info)
}

#[cfg(test)]
pub(crate) mod testutil {
    use base64::Engine;

    /// A PEM CSR for `cn` in `orgs` with DNS and IP SANs, and its base64 (the JSON form).
    pub fn csr(cn: &str, orgs: &[&str], dns: &[&str], ips: &[&str]) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .expect("params");
        for ip in ips {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(ip.parse().expect("ip")));
        }
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            dn.push(rcgen::DnType::OrganizationName, *o);
        }
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().expect("key");
        let pem = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&pem);
        (pem, b64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subject_and_names_and_rejects_garbage() {
        let (pem, _) = testutil::csr(
            "system:node:a",
            &["system:nodes"],
            &["a.example"],
            &["10.0.0.1"],
        );
        let info = parse_csr(pem.as_bytes()).unwrap();
        assert_eq!(info.common_name, "system:node:a");
        assert_eq!(info.organizations, vec!["system:nodes"]);
        assert_eq!(info.dns_names, vec!["a.example"]);
        assert_eq!(
            info.ip_addresses,
            vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(parse_csr(b"hello").is_err());
        let cert = pem.replace("CERTIFICATE REQUEST", "CERTIFICATE");
        assert_eq!(
            parse_csr(cert.as_bytes()).unwrap_err(),
            "PEM block type must be CERTIFICATE REQUEST"
        );
    }

    #[test]
    fn a_tampered_request_fails_its_signature_check() {
        let (pem, _) = testutil::csr("alice", &[], &[], &[]);
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let mut der = block.contents.clone();
        // Flip a byte inside the subject ("alice").
        let at = der.windows(5).position(|w| w == b"alice").unwrap();
        der[at] = b'b';
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let forged = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            lines.join("\n")
        );
        assert!(parse_csr(forged.as_bytes()).is_err());
    }
}
