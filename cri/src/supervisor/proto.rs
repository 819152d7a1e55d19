//! The wire protocol between the runtime and a pod's supervisor: one JSON object per line on
//! `DIR/supervisor.sock`. A request is answered by exactly one reply line; after `Subscribe`
//! the connection carries only event lines. The same types describe the per-container state
//! files in `DIR/containers/<id>.json`, so a reconnecting runtime reads what it would be told.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A request from the runtime.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Create(CreateRequest),
    Start {
        id: String,
    },
    Kill {
        id: String,
        signal: i32,
        #[serde(default)]
        all: bool,
    },
    Delete {
        id: String,
        #[serde(default)]
        force: bool,
    },
    State {
        id: String,
    },
    List,
    ExecSync(ExecSyncRequest),
    /// Starts a process in a running container and hands its stdio (pipes, or the pty master
    /// with `tty`) to the caller with `SCM_RIGHTS` on the `ExecStarted` reply; the connection
    /// then carries one `Exited` line when the process has been reaped.
    ExecStream(ExecStreamRequest),
    /// Attaches to a running container's own stdio: the `Attached` reply carries the stdin
    /// write end (or the pty master) when asked for and available, then the connection carries
    /// `Output` lines with what the container writes, and `Exited` when it exits.
    Attach {
        id: String,
        #[serde(default)]
        stdin: bool,
    },
    ReopenLog {
        id: String,
    },
    Subscribe,
    Info,
    Shutdown,
}

/// Create a container from an OCI bundle (`config.json` + rootfs) prepared by the runtime.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    /// The CRI log file; `None` discards the output.
    pub log_path: Option<PathBuf>,
    pub tty: bool,
    /// Keep a pipe open on the container's stdin, for Attach (CRI `ContainerConfig.stdin`).
    pub stdin: bool,
    /// Close the container's stdin once the first attach that took it lets go (CRI
    /// `stdin_once`).
    pub stdin_once: bool,
    /// Rotate the log when it would grow past this many bytes; 0 = never.
    pub max_log_size: u64,
    /// Files kept, the live one included (kubelet's `containerLogMaxFiles`).
    pub max_log_files: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecSyncRequest {
    pub id: String,
    pub args: Vec<String>,
    /// `KEY=VALUE` entries added to (and overriding) the container's environment.
    pub env: Vec<String>,
    /// 0 = no timeout.
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecStreamRequest {
    pub id: String,
    pub args: Vec<String>,
    /// `KEY=VALUE` entries added to (and overriding) the container's environment.
    pub env: Vec<String>,
    /// Run the process on a new pseudo-terminal; its master is the only fd handed back.
    pub tty: bool,
    /// Without `tty`: give the process a stdin pipe (else it reads `/dev/null`).
    pub stdin: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecSyncResponse {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The exit code, or 128+signal; -1 when the timeout struck.
    pub exit_code: i32,
    pub timed_out: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InfoResponse {
    pub pid: i32,
    /// `/proc/<init>/ns/pid` of the pod's shared PID namespace, when the supervisor made one.
    pub pid_namespace: Option<PathBuf>,
    pub init_pid: Option<i32>,
}

/// A reply line: exactly one per request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    Ok,
    State(ContainerState),
    List {
        containers: Vec<ContainerState>,
    },
    Exec(ExecSyncResponse),
    Info(InfoResponse),
    /// The exec'd process runs; the fds ride on this line: the pty master with a TTY, else
    /// `[stdin write end (when asked for)], stdout read end, stderr read end`.
    ExecStarted {
        pid: i32,
    },
    /// The attach is set up; with `fd` one fd rides on this line (stdin's write end, or the
    /// pty master when `tty`).
    Attached {
        tty: bool,
        fd: bool,
    },
    /// Output of an attached container (`stream` is `stdout` or `stderr`), base64.
    Output {
        stream: String,
        data: String,
    },
    /// The exec'd process or the attached container exited (128+signal when killed).
    Exited {
        exit_code: i32,
    },
    Error(WireError),
}

/// What kind of failure, so the runtime can map it to a gRPC code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    InvalidState,
    InvalidArgument,
    /// Creating the container failed (bad spec, missing executable, …).
    Create,
    Exec,
    Internal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub id: Option<String>,
    pub message: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
}

/// Everything the supervisor knows about one container. Timestamps are nanoseconds since the
/// Unix epoch, 0 when not reached yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerState {
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    pub log_path: Option<PathBuf>,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    /// The exit status, or 128+signal when a signal ended the process.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// `Completed`, `Error`, `OOMKilled` (kubelet/containerd reasons) once exited.
    pub reason: String,
    /// Human-readable notes, e.g. a clamped oom_score_adj.
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Started,
    Exited,
    Deleted,
}

/// A lifecycle event streamed to subscribers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub id: String,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// The container's state right after the event (its last state for `Deleted`).
    pub state: ContainerState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let r = Request::Kill {
            id: "c".into(),
            signal: 15,
            all: false,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"kill","id":"c","signal":15,"all":false}"#);
        let back: Request = serde_json::from_str(r#"{"op":"delete","id":"c"}"#).unwrap();
        assert_eq!(
            back,
            Request::Delete {
                id: "c".into(),
                force: false
            }
        );
        let list: Request = serde_json::from_str(r#"{"op":"list"}"#).unwrap();
        assert_eq!(list, Request::List);
        let e = Response::Error(WireError {
            kind: ErrorKind::NotFound,
            id: Some("c".into()),
            message: "no such container".into(),
        });
        let back: Response = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn streaming_wire_shapes() {
        let r: Request =
            serde_json::from_str(r#"{"op":"exec_stream","id":"c","args":["sh"],"tty":true}"#)
                .unwrap();
        assert_eq!(
            r,
            Request::ExecStream(ExecStreamRequest {
                id: "c".into(),
                args: vec!["sh".into()],
                env: vec![],
                tty: true,
                stdin: false,
            })
        );
        let a: Request = serde_json::from_str(r#"{"op":"attach","id":"c"}"#).unwrap();
        assert_eq!(
            a,
            Request::Attach {
                id: "c".into(),
                stdin: false
            }
        );
        let out = Response::Output {
            stream: "stdout".into(),
            data: "aGk=".into(),
        };
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"reply":"output","stream":"stdout","data":"aGk="}"#
        );
        assert_eq!(
            serde_json::to_string(&Response::Exited { exit_code: 3 }).unwrap(),
            r#"{"reply":"exited","exit_code":3}"#
        );
        // A create request from an older runtime has no stdin fields.
        let c: CreateRequest = serde_json::from_str(r#"{"id":"c","tty":false}"#).unwrap();
        assert!(!c.stdin && !c.stdin_once);
    }
}
