//! The per-pod supervisor (`capstan supervise --dir DIR [--pid-namespace] [--cgroup PATH]`)
//! and the runtime's client for it.
//!
//! The supervisor is a single-threaded process that creates, starts, execs and reaps the pod's
//! containers through libcontainer, writes their CRI logs and records their exits; it outlives
//! the runtime that spawned it (see `server`). The runtime drives it with [`SupervisorClient`]
//! over a unix socket speaking JSON lines (`proto`).
//!
//! - `proto`: the request/reply/event types, also the on-disk state format;
//! - `server`: the poll loop (no tokio, no threads: it forks);
//! - `executor`: libcontainer's last step before `execve` (PATH lookup, signal state);
//! - `pidns`: the pod's PID-namespace init;
//! - `client`: the async client used by the runtime.

pub mod client;
mod executor;
mod pidns;
pub mod proto;
pub mod server;

pub use client::{
    next_event, AttachEvent, AttachSession, EventStream, ExecSession, SupervisorClient,
    SupervisorError,
};
pub use proto::{
    ContainerState, CreateRequest, ErrorKind, Event, EventKind, ExecStreamRequest, ExecSyncRequest,
    ExecSyncResponse, InfoResponse, Status,
};

/// Entry point of `capstan supervise …`; never returns.
pub fn main() -> ! {
    let args = std::env::args().skip(2);
    match server::Options::parse(args) {
        Ok(opts) => std::process::exit(server::run(opts)),
        Err(e) => {
            eprintln!("capstan supervise: {e}");
            eprintln!("usage: capstan supervise --dir DIR [--pid-namespace] [--cgroup PATH]");
            std::process::exit(2)
        }
    }
}
