//! A pod's network, IPC and UTS namespaces, created and pinned by bind mounts (no pause process).
