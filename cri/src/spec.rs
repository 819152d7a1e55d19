//! The OCI runtime spec built from a CRI ContainerConfig, its sandbox and its image.
