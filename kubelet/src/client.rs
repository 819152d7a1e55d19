//! The kubelet's API client: [`machinery::client`] with the user agent
//! `capstan-kubelet/<version>` (upstream's kubelet needs a kubeconfig; in-cluster is for running
//! Capstan's kubelet as a pod in tests and labs).

use std::path::Path;

pub use machinery::client::ClientError;

/// The User-Agent header the kubelet sends.
pub const USER_AGENT: &str = concat!("capstan-kubelet/", env!("CARGO_PKG_VERSION"));

/// Builds the kubelet's client from a kubeconfig file, or in-cluster when `None`.
pub async fn build_client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    machinery::client::build_client(kubeconfig, USER_AGENT).await
}
