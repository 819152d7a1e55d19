//! Node agent (kubelet): not built yet; see the kubelet issue. This crate holds no code so far.
