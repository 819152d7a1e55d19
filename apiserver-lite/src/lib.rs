//! apiserver-lite: a kubectl-compatible Kubernetes API server on an embedded store.
//!
//! Layers, bottom up: `storage` (the `Store` trait and its SQLite backend), `cacher` (the watch
//! cache per resource), `resources` (the served resource table), the request pipeline
//! (decode, admission, validation, storage) and the HTTP front end with discovery and OpenAPI.

pub mod resources;
pub mod status;
pub mod strategy;
