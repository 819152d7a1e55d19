//! `csrcleaner` (upstream's pkg/controller/certificates/cleaner/cleaner.go): every hour, deletes
//! requests that are done with — issued and approved more than an hour ago, denied or failed
//! more than an hour ago, pending for more than a day, or whose certificate has expired.

use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams};

use super::*;
use crate::ControllerContext;

/// How often every request is looked at.
pub const POLLING_INTERVAL: Duration = Duration::from_secs(3600);
const APPROVED_EXPIRATION: SignedDuration = SignedDuration::from_hours(1);
const DENIED_EXPIRATION: SignedDuration = SignedDuration::from_hours(1);
const FAILED_EXPIRATION: SignedDuration = SignedDuration::from_hours(1);
const PENDING_EXPIRATION: SignedDuration = SignedDuration::from_hours(24);

fn updated(csr: &CertificateSigningRequest, kind: &str) -> Option<Timestamp> {
    condition(csr, kind)?.last_update_time.as_ref().map(|t| t.0)
}

/// Why `csr` should be deleted at `now`, if it should.
pub fn expired_reason(csr: &CertificateSigningRequest, now: Timestamp) -> Option<&'static str> {
    if let Some(cert) = csr.status.as_ref().and_then(|s| s.certificate.as_ref()) {
        if let Ok((_, block)) = x509_parser::pem::parse_x509_pem(&cert.0) {
            if let Ok(x) = block.parse_x509() {
                if x.validity().not_after.timestamp() < now.as_second() {
                    return Some("its certificate has expired");
                }
            }
        }
    }
    let past = |t: Option<Timestamp>, d: SignedDuration| t.is_some_and(|t| t + d < now);
    if is_issued(csr) && past(updated(csr, "Approved"), APPROVED_EXPIRATION) {
        return Some("issued and approved more than 1h ago");
    }
    if is_denied(csr) && past(updated(csr, "Denied"), DENIED_EXPIRATION) {
        return Some("denied more than 1h ago");
    }
    if has_failed(csr) && past(updated(csr, "Failed"), FAILED_EXPIRATION) {
        return Some("failed more than 1h ago");
    }
    let pending = condition(csr, "Approved").is_none() && condition(csr, "Denied").is_none();
    if pending
        && past(
            csr.metadata.creation_timestamp.as_ref().map(|t| t.0),
            PENDING_EXPIRATION,
        )
    {
        return Some("pending for more than 24h");
    }
    None
}

pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let api = Api::<CertificateSigningRequest>::all(ctx.client.clone());
    loop {
        match api.list(&Default::default()).await {
            Ok(list) => {
                let now = Timestamp::now();
                for csr in list.items {
                    let Some(why) = expired_reason(&csr, now) else {
                        continue;
                    };
                    let name = csr.metadata.name.clone().unwrap_or_default();
                    tracing::info!("csrcleaner: deleting {name}: {why}");
                    if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
                        tracing::info!("csrcleaner: deleting {name}: {e}");
                    }
                }
            }
            Err(e) => tracing::info!("csrcleaner: listing requests: {e}"),
        }
        tokio::time::sleep(POLLING_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::csr;
    use super::*;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn with(kind: &str, at: Timestamp, created: Timestamp) -> CertificateSigningRequest {
        let mut c = csr("a", &[], &[], &[], "example.com/x", &["client auth"], "u");
        c.metadata.creation_timestamp = Some(Time(created));
        if !kind.is_empty() {
            c.status = Some(CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: kind.into(),
                    status: "True".into(),
                    last_update_time: Some(Time(at)),
                    ..Default::default()
                }]),
                ..Default::default()
            });
        }
        c
    }

    #[test]
    fn upstream_deadlines() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let ago = |m: i64| now - SignedDuration::from_mins(m);
        assert_eq!(expired_reason(&with("Denied", ago(30), ago(30)), now), None);
        assert!(expired_reason(&with("Denied", ago(61), ago(61)), now).is_some());
        assert!(expired_reason(&with("Failed", ago(61), ago(61)), now).is_some());
        assert_eq!(expired_reason(&with("", now, ago(23 * 60)), now), None);
        assert!(expired_reason(&with("", now, ago(24 * 60 + 1)), now).is_some());
        // Approved but not issued yet: kept.
        assert_eq!(
            expired_reason(&with("Approved", ago(120), ago(120)), now),
            None
        );
    }
}
