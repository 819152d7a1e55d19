//! Capstan's container runtime (CRI v1). Built so far, the image-side foundations: image
//! reference normalisation (`reference`), the registry host configuration (`registry_config`,
//! containerd's `hosts.toml` layout), the digest-verified content store (`content`) and layer
//! application into overlayfs snapshot directories (`unpack`). Pulling, the content store, snapshots, sandboxes and containers come next (see the
//! cri issue).

pub mod content;
pub mod reference;
pub mod registry_config;
pub mod unpack;
