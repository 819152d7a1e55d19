//! Capstan's container runtime (CRI v1). Built so far: the image-side foundations that need no
//! privileges: image reference normalisation (`reference`) and the registry host configuration
//! (`registry_config`, containerd's `hosts.toml` layout). Pulling, the content store, snapshots,
//! sandboxes and containers come next (see the cri issue).

pub mod reference;
pub mod registry_config;
