//! The API client of a kubelet whose client certificate rotates (upstream's
//! `transport.UpdateTransport` with the certificate manager's `GetClientCertificate`): the
//! kubeconfig gives the server and CA; the TLS client certificate is resolved per handshake from
//! the manager's current pair, so every new connection presents the newest certificate without a
//! restart. Connections already open keep the certificate they were made with until they close
//! (upstream closes them on rotation; kube's client offers no hook for that).

use std::path::Path;
use std::sync::Arc;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use rustls::pki_types::CertificateDer;
use tokio::sync::watch;

use super::{CertificateError, KeyedCert};

/// Resolves the client certificate from the manager's current pair.
#[derive(Debug)]
pub struct DynamicClientCert(watch::Receiver<Option<KeyedCert>>);

impl rustls::client::ResolvesClientCert for DynamicClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.borrow().as_ref().map(|c| c.certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Builds the kubelet's client for `kubeconfig`'s server and CA with the rotating certificate.
pub async fn build_client(
    kubeconfig: &Path,
    certs: watch::Receiver<Option<KeyedCert>>,
) -> Result<kube::Client, CertificateError> {
    let what = kubeconfig.display().to_string();
    let kc =
        kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| super::invalid(&what, e))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| super::invalid(&what, e))?;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(crate::client::USER_AGENT),
    ));
    let mut roots = rustls::RootCertStore::empty();
    for der in config.root_cert.iter().flatten() {
        roots.add(CertificateDer::from(der.clone()))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_cert_resolver(Arc::new(DynamicClientCert(certs)));
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, kube::client::Body>(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .layer(
            config
                .extra_headers_layer()
                .map_err(|e| super::invalid(&what, e))?,
        )
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace))
}
