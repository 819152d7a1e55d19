//! The parts of an OCI image configuration that shape a container: what the image store keeps for
//! each image and what the OCI spec builder reads when the CRI ContainerConfig leaves them unset
//! (entrypoint, command, environment, user, working directory, stop signal).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The image's `config` object (OCI image-spec `config.json` → `config`), trimmed to what the
/// runtime uses. Field names follow the OCI JSON so it deserialises straight from the blob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageConfig {
    pub user: Option<String>,
    pub env: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub stop_signal: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
}
