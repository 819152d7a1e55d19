//! Asking the Certificates API for a certificate (upstream's client-go `util/certificate/csr`):
//! a fresh ECDSA P-256 key, a PEM CSR for the subject and names, a CertificateSigningRequest
//! (`generateName: csr-`) with the signer and usages, then polling until the certificate is
//! there, or the request is Denied or Failed, or the time is up.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};

use super::CertificateError;

/// What to ask for.
#[derive(Debug, Clone, Default)]
pub struct CertRequest {
    pub signer: String,
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub usages: Vec<String>,
}

/// How often the request is looked at while waiting.
const POLL: Duration = Duration::from_millis(500);

/// Makes a key and a PEM CSR for `req`: (csr PEM, key PEM).
pub fn make_csr(req: &CertRequest) -> Result<(String, String), CertificateError> {
    let mut params = rcgen::CertificateParams::new(req.dns_names.clone())?;
    for ip in &req.ip_addresses {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(*ip));
    }
    let mut dn = rcgen::DistinguishedName::new();
    for o in &req.organizations {
        dn.push(rcgen::DnType::OrganizationName, o.as_str());
    }
    dn.push(rcgen::DnType::CommonName, req.common_name.as_str());
    params.distinguished_name = dn;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((csr, key.serialize_pem()))
}

/// Creates the request and waits up to `timeout` for its certificate: (certificate PEM, key
/// PEM).
pub async fn request_certificate(
    client: &kube::Client,
    req: &CertRequest,
    timeout: Duration,
) -> Result<(String, String), CertificateError> {
    let (csr_pem, key_pem) = make_csr(req)?;
    let api = Api::<CertificateSigningRequest>::all(client.clone());
    let object = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.into_bytes()),
            signer_name: req.signer.clone(),
            usages: Some(req.usages.clone()),
            ..Default::default()
        },
        status: None,
    };
    let created = api.create(&PostParams::default(), &object).await?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(
        "certificate signing request {name} created for {} ({})",
        req.common_name,
        req.signer
    );
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match api.get_opt(&name).await {
            Ok(Some(csr)) => {
                if let Some(status) = &csr.status {
                    for c in status.conditions.iter().flatten() {
                        let how = match c.type_.as_str() {
                            "Denied" => "denied",
                            "Failed" => "failed",
                            _ => continue,
                        };
                        return Err(CertificateError::Refused {
                            name,
                            how,
                            message: format!(
                                "{}: {}",
                                c.reason.clone().unwrap_or_default(),
                                c.message.clone().unwrap_or_default()
                            ),
                        });
                    }
                    if let Some(cert) = status.certificate.as_ref().filter(|c| !c.0.is_empty()) {
                        let pem = String::from_utf8_lossy(&cert.0).into_owned();
                        tracing::info!("certificate signing request {name} is issued");
                        return Ok((pem, key_pem));
                    }
                }
            }
            Ok(None) => {
                return Err(CertificateError::Refused {
                    name,
                    how: "deleted",
                    message: "the request no longer exists".into(),
                })
            }
            Err(e) => tracing::debug!("reading certificate signing request {name}: {e}"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CertificateError::Timeout(name));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    #[test]
    fn the_csr_carries_the_subject_and_names() {
        let (csr, key) = make_csr(&CertRequest {
            signer: super::super::KUBELET_SERVING_SIGNER.into(),
            common_name: "system:node:a".into(),
            organizations: vec!["system:nodes".into()],
            dns_names: vec!["a".into()],
            ip_addresses: vec!["10.0.0.1".parse().unwrap()],
            usages: vec![],
        })
        .unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let (_, pem) = x509_parser::pem::parse_x509_pem(csr.as_bytes()).unwrap();
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
                .unwrap();
        req.verify_signature().unwrap();
        let subject = &req.certification_request_info.subject;
        assert_eq!(
            subject.iter_common_name().next().unwrap().as_str().unwrap(),
            "system:node:a"
        );
        assert_eq!(
            subject
                .iter_organization()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "system:nodes"
        );
    }
}
