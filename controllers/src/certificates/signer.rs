//! `csrsigning` (upstream's pkg/controller/certificates/signer): signs approved requests of the
//! built-in signers `kubernetes.io/kube-apiserver-client`, `kube-apiserver-client-kubelet` and
//! `kubelet-serving` with the cluster CA given by `--cluster-signing-cert-file` /
//! `--cluster-signing-key-file` (`legacy-unknown` is not signed). A request that breaks its
//! signer's rules (a kubelet client certificate not for `system:node:<name>` in `system:nodes`,
//! wrong usages, …) gets a `Failed` condition with reason `SignerValidationFailure` instead.
//!
//! Validity as upstream's `PermissiveSigningPolicy`: the certificate lasts
//! `--cluster-signing-duration` (8760h) or the request's `expirationSeconds` if shorter, never
//! past the CA's own expiry; it is backdated 5 minutes for clock skew, and for short-lived
//! certificates (under 8 hours) the end is not moved back with it. Subject (CN, O) and SANs come
//! from the request, key usages from `spec.usages`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use machinery::informer::{HandlerFns, Informer};
use machinery::workqueue::{run_workers, WorkQueue};
use rand::Rng;

use super::*;
use crate::ControllerContext;

/// Clock-skew allowance (upstream's `backdate`).
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Below this the end of validity is not backdated (upstream's `short`).
const SHORT: Duration = Duration::from_secs(8 * 3600);

/// Failures to load the signing pair or to sign.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("signing: {0}")]
    Sign(#[from] rcgen::Error),
}

/// The cluster CA as a signer.
pub struct CaSigner {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_not_after: SystemTime,
    duration: Duration,
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSigner")
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, SignerError> {
    std::fs::read_to_string(path).map_err(|source| SignerError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl CaSigner {
    /// Loads the CA certificate and key (PEM).
    pub fn load(cert: &Path, key: &Path, duration: Duration) -> Result<CaSigner, SignerError> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let parse = |path: &Path, message: String| SignerError::Parse {
            path: path.display().to_string(),
            message,
        };
        let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| parse(key, e.to_string()))?;
        let (_, block) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| parse(cert, e.to_string()))?;
        let x509 = block.parse_x509().map_err(|e| parse(cert, e.to_string()))?;
        let not_after = x509.validity().not_after.timestamp();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| parse(cert, e.to_string()))?;
        Ok(CaSigner {
            issuer,
            ca_not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64),
            duration,
        })
    }

    /// The validity window for a certificate issued at `now`.
    pub fn validity(
        &self,
        now: SystemTime,
        expiration_seconds: Option<i32>,
    ) -> (SystemTime, SystemTime) {
        let mut ttl = self.duration;
        if let Some(s) = expiration_seconds.filter(|s| *s > 0) {
            ttl = ttl.min(Duration::from_secs(s as u64));
        }
        let not_before = now - BACKDATE;
        let mut not_after = if ttl < SHORT {
            now + ttl
        } else {
            not_before + ttl
        };
        if not_after > self.ca_not_after {
            not_after = self.ca_not_after;
        }
        (not_before, not_after)
    }

    /// Issues a certificate for `req` with `usages`, PEM.
    pub fn sign(
        &self,
        req: &ParsedCsr,
        usages: &[String],
        expiration_seconds: Option<i32>,
        now: SystemTime,
    ) -> Result<String, SignerError> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        if !req.common_name.is_empty() {
            dn.push(rcgen::DnType::CommonName, req.common_name.as_str());
        }
        for o in &req.organizations {
            dn.push(rcgen::DnType::OrganizationName, o.as_str());
        }
        params.distinguished_name = dn;
        for d in &req.dns_names {
            params
                .subject_alt_names
                .push(rcgen::SanType::DnsName(d.as_str().try_into()?));
        }
        for ip in &req.ip_addresses {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(*ip));
        }
        for e in &req.emails {
            params
                .subject_alt_names
                .push(rcgen::SanType::Rfc822Name(e.as_str().try_into()?));
        }
        for u in &req.uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(u.as_str().try_into()?));
        }
        for u in usages {
            use rcgen::{ExtendedKeyUsagePurpose as E, KeyUsagePurpose as K};
            match u.as_str() {
                "signing" | "digital signature" => params.key_usages.push(K::DigitalSignature),
                "content commitment" => params.key_usages.push(K::ContentCommitment),
                "key encipherment" => params.key_usages.push(K::KeyEncipherment),
                "key agreement" => params.key_usages.push(K::KeyAgreement),
                "data encipherment" => params.key_usages.push(K::DataEncipherment),
                "cert sign" => params.key_usages.push(K::KeyCertSign),
                "crl sign" => params.key_usages.push(K::CrlSign),
                "encipher only" => params.key_usages.push(K::EncipherOnly),
                "decipher only" => params.key_usages.push(K::DecipherOnly),
                "any" => params.extended_key_usages.push(E::Any),
                "server auth" => params.extended_key_usages.push(E::ServerAuth),
                "client auth" => params.extended_key_usages.push(E::ClientAuth),
                "code signing" => params.extended_key_usages.push(E::CodeSigning),
                "email protection" | "s/mime" => {
                    params.extended_key_usages.push(E::EmailProtection)
                }
                "timestamping" => params.extended_key_usages.push(E::TimeStamping),
                "ocsp signing" => params.extended_key_usages.push(E::OcspSigning),
                _ => {}
            }
        }
        let (nb, na) = self.validity(now, expiration_seconds);
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let since = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        params.not_before = epoch + since(nb);
        params.not_after = epoch + since(na);
        let mut serial = [0u8; 16];
        rand::rng().fill(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        let key = rcgen::SubjectPublicKeyInfo::from_der(&req.spki)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(cert.pem())
    }
}

/// Whether this signer handles `csr`'s signer, and if its subject passes the signer's rules
/// (upstream's `isRequestForSignerFn`s): `Ok(false)` = not ours, `Err` = ours but refused.
pub fn recognize(csr: &CertificateSigningRequest, req: &ParsedCsr) -> Result<bool, String> {
    match csr.spec.signer_name.as_str() {
        KUBE_APISERVER_CLIENT_KUBELET_SIGNER => validate_kubelet_client(req, csr).map(|()| true),
        KUBELET_SERVING_SIGNER => validate_kubelet_serving(req, csr).map(|()| true),
        KUBE_APISERVER_CLIENT_SIGNER => {
            let allowed = ["digital signature", "key encipherment", "client auth"];
            for u in csr.spec.usages.iter().flatten() {
                if !allowed.contains(&u.as_str()) {
                    return Err(format!("invalid usage for client certificate: {u}"));
                }
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let o = &ctx.options;
    let (Some(cert), Some(key)) = (&o.cluster_signing_cert_file, &o.cluster_signing_key_file)
    else {
        tracing::info!(
            "csrsigning: no --cluster-signing-cert-file/--cluster-signing-key-file, not signing certificates"
        );
        return Ok(());
    };
    let signer = CaSigner::load(cert, key, o.cluster_signing_duration)?;
    SigningController::new(&ctx, signer).run().await
}

#[derive(Clone)]
pub struct SigningController {
    client: kube::Client,
    csrs: Informer<CertificateSigningRequest>,
    queue: WorkQueue<String>,
    signer: Arc<CaSigner>,
}

impl SigningController {
    pub fn new(ctx: &ControllerContext, signer: CaSigner) -> Self {
        let c = SigningController {
            client: ctx.client.clone(),
            csrs: ctx.informers.informer::<CertificateSigningRequest>(),
            queue: WorkQueue::new("certificate"),
            signer: Arc::new(signer),
        };
        let (q1, q2) = (c.queue.clone(), c.queue.clone());
        let key = |c: &CertificateSigningRequest| c.metadata.name.clone().unwrap_or_default();
        c.csrs.add_handler(HandlerFns::<CertificateSigningRequest> {
            add: Some(Box::new(move |c| q1.add(key(c)))),
            update: Some(Box::new(move |_, c| q2.add(key(c)))),
            delete: None,
        });
        c
    }

    pub async fn run(self) -> anyhow::Result<()> {
        self.csrs.wait_synced().await;
        tracing::info!("csrsigning: caches synced");
        let this = self.clone();
        run_workers(self.queue.clone(), 5, move |key: String| {
            let this = this.clone();
            async move { this.sync(&key).await }
        })
        .await;
        Ok(())
    }

    /// Signs one request if it is approved, not failed, not issued and for a built-in signer.
    pub async fn sync(&self, name: &str) -> Result<(), kube::Error> {
        let Some(csr) = self.csrs.get("", name) else {
            return Ok(());
        };
        if !is_approved(&csr) || has_failed(&csr) || is_issued(&csr) {
            return Ok(());
        }
        let mut csr = (*csr).clone();
        let req = match request_of(&csr) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!("csrsigning: unable to parse csr {name:?}: {e}");
                return Ok(());
            }
        };
        let verdict = recognize(&csr, &req);
        match verdict {
            Ok(false) => return Ok(()),
            Err(message) => {
                tracing::info!("csrsigning: {name}: refused by its signer: {message}");
                csr.status
                    .get_or_insert_with(CertificateSigningRequestStatus::default)
                    .conditions
                    .get_or_insert_with(Vec::new)
                    .push(CertificateSigningRequestCondition {
                        type_: "Failed".into(),
                        status: "True".into(),
                        reason: Some("SignerValidationFailure".into()),
                        message: Some(message),
                        last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                        ..Default::default()
                    });
            }
            Ok(true) => {
                let usages = csr.spec.usages.clone().unwrap_or_default();
                let pem = match self.signer.sign(
                    &req,
                    &usages,
                    csr.spec.expiration_seconds,
                    SystemTime::now(),
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!("csrsigning: {name}: {e}");
                        return Ok(());
                    }
                };
                let status = csr.status.get_or_insert_with(Default::default);
                status.certificate = Some(ByteString(pem.into_bytes()));
                tracing::info!("csrsigning: signed {name} ({})", csr.spec.signer_name);
            }
        }
        let api = Api::<CertificateSigningRequest>::all(self.client.clone());
        match api.replace_status(name, &PostParams::default(), &csr).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::csr;
    use super::*;

    fn ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubernetes");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2090, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("ca.crt"), dir.join("ca.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn signs_a_kubelet_client_request_with_the_requested_subject_and_usages() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = ca(dir.path());
        let signer = CaSigner::load(&c, &k, Duration::from_secs(8760 * 3600)).unwrap();
        let r = csr(
            "system:node:a",
            &["system:nodes"],
            &[],
            &[],
            KUBE_APISERVER_CLIENT_KUBELET_SIGNER,
            &["digital signature", "client auth"],
            "system:bootstrap:abc",
        );
        let req = request_of(&r).unwrap();
        assert_eq!(recognize(&r, &req), Ok(true));
        let now = SystemTime::now();
        let pem = signer
            .sign(&req, r.spec.usages.as_ref().unwrap(), Some(3600), now)
            .unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "system:node:a"
        );
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        // One hour asked (short-lived: the end is not backdated) + the 5-minute backdate.
        assert_eq!(life, 3600 + 300);
        assert_eq!(
            cert.issuer()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "kubernetes"
        );
    }

    #[test]
    fn validity_follows_the_permissive_policy() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = ca(dir.path());
        let year = Duration::from_secs(8760 * 3600);
        let signer = CaSigner::load(&c, &k, year).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (nb, na) = signer.validity(now, None);
        assert_eq!(now.duration_since(nb).unwrap(), BACKDATE);
        assert_eq!(na, nb + year);
        let (_, na) = signer.validity(now, Some(600));
        assert_eq!(na, now + Duration::from_secs(600));
        // Never past the CA.
        let late = SystemTime::UNIX_EPOCH + Duration::from_secs(3_780_000_000);
        assert_eq!(signer.validity(late, None).1, signer.ca_not_after);
    }

    #[test]
    fn a_kubelet_request_for_the_wrong_subject_is_refused_by_its_signer() {
        let r = csr(
            "alice",
            &["system:masters"],
            &[],
            &[],
            KUBE_APISERVER_CLIENT_KUBELET_SIGNER,
            &["digital signature", "client auth"],
            "system:bootstrap:abc",
        );
        assert!(recognize(&r, &request_of(&r).unwrap()).is_err());
        let other = csr(
            "x",
            &[],
            &[],
            &[],
            "example.com/mine",
            &["client auth"],
            "u",
        );
        assert_eq!(recognize(&other, &request_of(&other).unwrap()), Ok(false));
        let legacy = csr(
            "x",
            &[],
            &[],
            &[],
            LEGACY_UNKNOWN_SIGNER,
            &["client auth"],
            "u",
        );
        assert_eq!(recognize(&legacy, &request_of(&legacy).unwrap()), Ok(false));
    }
}
