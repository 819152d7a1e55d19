//! apiserver-lite: a kubectl-compatible Kubernetes API server on an embedded store.
//!
//! Layers, bottom up: `storage` (the `Store` trait and its SQLite backend), `cacher` (the watch
//! cache per resource), `resources` (the served resource table), the request pipeline
//! (`rest` → `registry` → `strategy`), and the HTTP front end (`server`) with discovery and
//! OpenAPI. `docs/architecture.md` draws the request path.

pub mod admission;
pub mod allocator;
pub mod auth;
pub mod cacher;
pub mod certificates;
pub mod connect;
pub mod discovery;
pub mod events_view;
pub mod hooks;
pub mod kubelet_client;
pub mod metrics_api;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod pod_log;
pub mod pod_security;
pub mod protobuf;
pub mod quota;
pub mod registry;
pub mod request;
pub mod resources;
pub mod rest;
pub mod selectors;
pub mod server;
pub mod service_account_admission;
pub mod status;
pub mod storage;
pub mod strategy;
pub mod stream_translator;
pub mod table;
