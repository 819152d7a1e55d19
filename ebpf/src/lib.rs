//! eBPF programs (C, built with clang) and their aya loaders: not built yet; see the proxy issue.
