//! apiserver-lite: a kubectl-compatible Kubernetes API server on an embedded store.
//!
//! Layers, bottom up: `storage` (the `Store` trait and its SQLite backend), `cacher` (the watch
//! cache per resource), `resources` (the served resource table), the request pipeline
//! (decode, admission, validation, storage) and the HTTP front end with discovery and OpenAPI.

pub mod resources;
pub mod selectors;
pub mod status;
pub mod storage;
pub mod cacher;
pub mod request;
pub mod allocator;
pub mod hooks;
pub mod registry;
pub mod events_view;
pub mod discovery;
pub mod rest;
pub mod table;
pub mod protobuf;
pub mod server;
