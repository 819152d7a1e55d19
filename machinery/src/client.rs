//! The components' API client: a `kube::Client` built from the kubeconfig `--kubeconfig` names,
//! or from the in-cluster service account when there is none (in-cluster is for running a
//! component as a pod in tests and labs). Requests carry the component's user agent
//! (`capstan-kubelet/<version>`, `capstan-scheduler/<version>`, …) so that API server logs and
//! audit tell the components apart from kubectl and from each other.

use std::path::{Path, PathBuf};

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no --kubeconfig and not in a cluster: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("user agent {0:?} is not a valid header value")]
    UserAgent(String),
    #[error("building the API client: {0}")]
    Build(#[source] kube::Error),
}

/// The user agent of a Capstan component: `capstan-<component>/<version>`.
pub fn user_agent(component: &str) -> String {
    format!("capstan-{component}/{}", env!("CARGO_PKG_VERSION"))
}

/// Makes ring rustls' process-wide crypto provider: the binary links two (ring for kube,
/// aws-lc-rs through the image client), so rustls cannot pick one by itself. Call it before any
/// TLS configuration is built outside [`build_client`] (which calls it); calling it again is a
/// no-op.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a client from a kubeconfig file (its current context), or in-cluster when `None`,
/// sending `user_agent` (see [`user_agent`]).
pub async fn build_client(
    kubeconfig: Option<&Path>,
    user_agent: &str,
) -> Result<kube::Client, ClientError> {
    install_crypto_provider();
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ClientError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => kube::Config::incluster().map_err(ClientError::InCluster)?,
    };
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(user_agent)
            .map_err(|_| ClientError::UserAgent(user_agent.into()))?,
    ));
    kube::Client::try_from(config).map_err(ClientError::Build)
}
