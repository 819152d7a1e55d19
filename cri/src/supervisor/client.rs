//! The runtime's async (tokio) client for a pod supervisor.
//!
//! Each call opens its own connection to `DIR/supervisor.sock`, sends one JSON line and reads
//! one reply line, so a long ExecSync never holds up a Kill; `subscribe` keeps its connection
//! and turns it into a stream of events. The supervisor outlives the runtime: after a restart
//! `connect` finds it again and `list`/`state` report exits that happened meanwhile (they are
//! also in `DIR/containers/<id>.json`).
//!
//! `exec_stream` and `attach` keep their connection too: its first reply line carries file
//! descriptors (`SCM_RIGHTS`), so it is read with `recvmsg` rather than through a buffered reader.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::UnixStream;

use super::proto::{
    ContainerState, CreateRequest, ErrorKind, Event, ExecStreamRequest, ExecSyncRequest,
    ExecSyncResponse, InfoResponse, Request, Response, WireError,
};
use super::server::{socket_address, SOCKET_NAME};

/// How long `spawn` waits for a new supervisor to answer.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed supervisor call. `Remote` carries the supervisor's own classification, so the
/// runtime can map it to a gRPC status (`NotFound`, `AlreadyExists`, `FailedPrecondition`…).
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("supervisor {socket:?}: {context}: {source}")]
    Io {
        socket: PathBuf,
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}", remote_message(*.kind, .id.as_deref(), .message))]
    Remote {
        kind: ErrorKind,
        id: Option<String>,
        message: String,
    },
    #[error("supervisor {socket:?}: unexpected reply: {reply}")]
    Protocol { socket: PathBuf, reply: String },
}

impl SupervisorError {
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            SupervisorError::Remote { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

fn remote_message(kind: ErrorKind, id: Option<&str>, message: &str) -> String {
    let id = id.unwrap_or("");
    match kind {
        ErrorKind::NotFound => format!("container {id:?}: not found"),
        ErrorKind::AlreadyExists => format!("container {id:?}: already exists"),
        ErrorKind::Create => format!("failed to create container {id:?}: {message}"),
        ErrorKind::Exec => format!("failed to exec in container {id:?}: {message}"),
        _ => format!("container {id:?}: {message}"),
    }
}

impl From<WireError> for SupervisorError {
    fn from(e: WireError) -> Self {
        SupervisorError::Remote {
            kind: e.kind,
            id: e.id,
            message: e.message,
        }
    }
}

/// Events from `subscribe`, until the supervisor goes away.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, SupervisorError>> + Send>>;

/// The next event of a subscription (`None` once the supervisor is gone).
pub async fn next_event(events: &mut EventStream) -> Option<Result<Event, SupervisorError>> {
    futures::StreamExt::next(events).await
}

/// A handle on one pod's supervisor. Cheap to clone; holds no connection.
#[derive(Clone, Debug)]
pub struct SupervisorClient {
    dir: PathBuf,
    socket: PathBuf,
}

impl SupervisorClient {
    /// Starts `<exe> supervise --dir DIR` (detached: it survives this process) and waits until
    /// it answers. `cgroup` is a cgroup the supervisor moves itself into (a cgroupfs directory,
    /// or a cgroup path joined in every v1 hierarchy / the v2 root), outside the pod's limits.
    pub async fn spawn(
        exe: &Path,
        dir: &Path,
        cgroup: Option<&Path>,
        pid_namespace: bool,
    ) -> io::Result<Self> {
        tokio::fs::create_dir_all(dir).await?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("supervise").arg("--dir").arg(dir);
        if pid_namespace {
            cmd.arg("--pid-namespace");
        }
        if let Some(cg) = cgroup {
            cmd.arg("--cgroup").arg(cg);
        }
        // The binary's allocator (mimalloc, chosen for the API server) commits its first arena
        // eagerly: ~4 MiB per supervisor for nothing. A pod's supervisor allocates little, so it
        // commits on demand (measured: 5.5 → 1.7 MiB USS per pod, see BENCHMARKS.md).
        cmd.env("MIMALLOC_ARENA_EAGER_COMMIT", "0");
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn()?;
        let client = Self::new(dir);
        let deadline = tokio::time::Instant::now() + SPAWN_TIMEOUT;
        loop {
            if client.info().await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let log =
                    std::fs::read_to_string(dir.join(super::server::LOG_NAME)).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "supervisor in {dir:?} exited at start ({status}): {}",
                    log.trim()
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.start_kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("supervisor in {dir:?} did not answer within {SPAWN_TIMEOUT:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Reap it whenever it exits, as long as this process lives.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(client)
    }

    /// Finds the running supervisor of `dir` (after a runtime restart).
    pub async fn connect(dir: &Path) -> io::Result<Self> {
        let client = Self::new(dir);
        client
            .info()
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e.to_string()))?;
        Ok(client)
    }

    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            socket: dir.join(SOCKET_NAME),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn open(&self, req: &Request) -> Result<BufReader<UnixStream>, SupervisorError> {
        let io_err = |context, source| SupervisorError::Io {
            socket: self.socket.clone(),
            context,
            source,
        };
        let (_dir_handle, addr) =
            socket_address(&self.dir).map_err(|e| io_err("opening the socket's directory", e))?;
        let mut stream = UnixStream::connect(&addr)
            .await
            .map_err(|e| io_err("connecting", e))?;
        let mut line = serde_json::to_vec(req).map_err(|e| io_err("encoding", e.into()))?;
        line.push(b'\n');
        stream
            .write_all(&line)
            .await
            .map_err(|e| io_err("sending", e))?;
        Ok(BufReader::new(stream))
    }

    async fn read_reply(
        &self,
        reader: &mut BufReader<UnixStream>,
    ) -> Result<Response, SupervisorError> {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .await
            .map_err(|e| SupervisorError::Io {
                socket: self.socket.clone(),
                context: "reading the reply",
                source: e,
            })?;
        if n == 0 {
            return Err(SupervisorError::Io {
                socket: self.socket.clone(),
                context: "reading the reply",
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"),
            });
        }
        match serde_json::from_str::<Response>(&line).map_err(|_| self.protocol(line.trim()))? {
            Response::Error(e) => Err(e.into()),
            r => Ok(r),
        }
    }

    async fn call(&self, req: Request) -> Result<Response, SupervisorError> {
        let mut reader = self.open(&req).await?;
        self.read_reply(&mut reader).await
    }

    fn protocol(&self, reply: impl std::fmt::Debug) -> SupervisorError {
        SupervisorError::Protocol {
            socket: self.socket.clone(),
            reply: format!("{reply:?}"),
        }
    }

    async fn call_state(&self, req: Request) -> Result<ContainerState, SupervisorError> {
        match self.call(req).await? {
            Response::State(s) => Ok(s),
            r => Err(self.protocol(r)),
        }
    }

    async fn call_ok(&self, req: Request) -> Result<(), SupervisorError> {
        match self.call(req).await? {
            Response::Ok => Ok(()),
            r => Err(self.protocol(r)),
        }
    }

    /// Creates a container from a bundle; it is `created`, waiting for `start`.
    pub async fn create(&self, req: CreateRequest) -> Result<ContainerState, SupervisorError> {
        self.call_state(Request::Create(req)).await
    }

    pub async fn start(&self, id: &str) -> Result<ContainerState, SupervisorError> {
        self.call_state(Request::Start { id: id.into() }).await
    }

    /// Sends `signal` to the container's init, or with `all` to every process in its cgroup.
    /// Killing an exited container is not an error.
    pub async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), SupervisorError> {
        self.call_ok(Request::Kill {
            id: id.into(),
            signal,
            all,
        })
        .await
    }

    /// Removes an exited or created container (a running one only with `force`, which kills
    /// it first): its cgroup, libcontainer state and state file.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), SupervisorError> {
        self.call_ok(Request::Delete {
            id: id.into(),
            force,
        })
        .await
    }

    pub async fn state(&self, id: &str) -> Result<ContainerState, SupervisorError> {
        self.call_state(Request::State { id: id.into() }).await
    }

    pub async fn list(&self) -> Result<Vec<ContainerState>, SupervisorError> {
        match self.call(Request::List).await? {
            Response::List { containers } => Ok(containers),
            r => Err(self.protocol(r)),
        }
    }

    /// Runs a command in a running container and collects its output. On timeout the process
    /// is killed and the reply has `timed_out` set.
    pub async fn exec_sync(
        &self,
        req: ExecSyncRequest,
    ) -> Result<ExecSyncResponse, SupervisorError> {
        match self.call(Request::ExecSync(req)).await? {
            Response::Exec(r) => Ok(r),
            r => Err(self.protocol(r)),
        }
    }

    /// Starts a process in a running container with its stdio handed to us (see
    /// [`ExecSession`]).
    pub async fn exec_stream(
        &self,
        req: ExecStreamRequest,
    ) -> Result<ExecSession, SupervisorError> {
        let tty = req.tty;
        let stdin = req.stdin;
        let mut conn = self.open_stream(&Request::ExecStream(req)).await?;
        match conn.next().await? {
            Some((Response::ExecStarted { pid }, fds)) => {
                let want = if tty { 1 } else { 2 + usize::from(stdin) };
                if fds.len() != want {
                    return Err(
                        self.protocol(format!("{} fds for the exec, not {want}", fds.len()))
                    );
                }
                Ok(ExecSession { pid, fds, conn })
            }
            Some((Response::Error(e), _)) => Err(e.into()),
            other => Err(self.protocol(other.map(|(r, _)| r))),
        }
    }

    /// Attaches to a running container's stdio (see [`AttachSession`]); `stdin` asks for its
    /// stdin (a container without one gives none).
    pub async fn attach(&self, id: &str, stdin: bool) -> Result<AttachSession, SupervisorError> {
        let mut conn = self
            .open_stream(&Request::Attach {
                id: id.into(),
                stdin,
            })
            .await?;
        match conn.next().await? {
            Some((Response::Attached { tty, fd }, mut fds)) => {
                if fds.len() != usize::from(fd) {
                    return Err(self.protocol(format!("{} fds for the attach", fds.len())));
                }
                Ok(AttachSession {
                    tty,
                    fd: fds.pop(),
                    conn,
                })
            }
            Some((Response::Error(e), _)) => Err(e.into()),
            other => Err(self.protocol(other.map(|(r, _)| r))),
        }
    }

    async fn open_stream(&self, req: &Request) -> Result<StreamConn, SupervisorError> {
        let reader = self.open(req).await?;
        Ok(StreamConn {
            stream: reader.into_inner(),
            buf: Vec::new(),
            fds: Vec::new(),
            socket: self.socket.clone(),
        })
    }

    /// ReopenContainerLog: the log file path is opened afresh.
    pub async fn reopen_log(&self, id: &str) -> Result<(), SupervisorError> {
        self.call_ok(Request::ReopenLog { id: id.into() }).await
    }

    pub async fn info(&self) -> Result<InfoResponse, SupervisorError> {
        match self.call(Request::Info).await? {
            Response::Info(i) => Ok(i),
            r => Err(self.protocol(r)),
        }
    }

    /// Streams created/started/exited/deleted events from now on.
    pub async fn subscribe(&self) -> Result<EventStream, SupervisorError> {
        let mut reader = self.open(&Request::Subscribe).await?;
        match self.read_reply(&mut reader).await? {
            Response::Ok => {}
            r => return Err(self.protocol(r)),
        }
        let socket = self.socket.clone();
        Ok(Box::pin(futures::stream::unfold(
            Some(reader),
            move |reader| {
                let socket = socket.clone();
                async move {
                    let mut reader = reader?;
                    let mut line = String::new();
                    match reader.read_line(&mut line).await {
                        Ok(0) => None,
                        Ok(_) => {
                            let ev = serde_json::from_str::<Event>(&line).map_err(|_| {
                                SupervisorError::Protocol {
                                    socket,
                                    reply: line.trim().to_owned(),
                                }
                            });
                            Some((ev, Some(reader)))
                        }
                        Err(e) => Some((
                            Err(SupervisorError::Io {
                                socket,
                                context: "reading events",
                                source: e,
                            }),
                            None,
                        )),
                    }
                }
            },
        )))
    }

    /// Kills every container, reaps them, removes their state and cgroups, and ends the
    /// supervisor; returns once its process is gone.
    pub async fn shutdown(&self) -> Result<(), SupervisorError> {
        let pid = self.info().await?.pid;
        self.call_ok(Request::Shutdown).await?;
        for _ in 0..500 {
            if !process_running(pid) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(SupervisorError::Io {
            socket: self.socket.clone(),
            context: "waiting for the supervisor to exit",
            source: io::Error::new(io::ErrorKind::TimedOut, format!("pid {pid} still running")),
        })
    }
}

/// The dedicated connection of a streaming exec or attach: reply lines, the first with fds.
#[derive(Debug)]
pub struct StreamConn {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
    socket: PathBuf,
}

impl StreamConn {
    /// The next line and the fds that came with it; `None` once the supervisor closed it.
    pub async fn next(&mut self) -> Result<Option<(Response, Vec<OwnedFd>)>, SupervisorError> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let reply = serde_json::from_slice::<Response>(&line).map_err(|_| {
                    SupervisorError::Protocol {
                        socket: self.socket.clone(),
                        reply: String::from_utf8_lossy(&line).trim().to_owned(),
                    }
                })?;
                return Ok(Some((reply, std::mem::take(&mut self.fds))));
            }
            let io_err = |source| SupervisorError::Io {
                socket: self.socket.clone(),
                context: "reading the stream",
                source,
            };
            self.stream.readable().await.map_err(io_err)?;
            let fd = self.stream.as_raw_fd();
            let got = self
                .stream
                .try_io(Interest::READABLE, || recv_with_fds(fd))
                .map(Some)
                .or_else(|e| {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        Ok(None)
                    } else {
                        Err(e)
                    }
                })
                .map_err(io_err)?;
            let Some((data, fds)) = got else { continue };
            self.fds.extend(fds);
            if data.is_empty() {
                return Ok(None);
            }
            self.buf.extend_from_slice(&data);
        }
    }
}

/// One `recvmsg`: the bytes and any fds that came with them.
fn recv_with_fds(fd: RawFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (n, raw) = {
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<UnixAddr>(
            fd,
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        )?;
        let mut raw = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                raw.extend(fds);
            }
        }
        (msg.bytes, raw)
    };
    buf.truncate(n);
    let fds = raw
        .into_iter()
        .map(|fd| {
            // SAFETY: the kernel just installed these fds in this process for this message;
            // nothing else owns them.
            #[allow(unsafe_code)]
            unsafe {
                OwnedFd::from_raw_fd(fd)
            }
        })
        .collect();
    Ok((buf, fds))
}

/// A running streaming exec. `fds` are our ends of its stdio: with a TTY the pty master alone,
/// else `[stdin write end (when asked for)], stdout read end, stderr read end`. Dropping the
/// session closes the connection; the process keeps running (upstream does not kill it either)
/// and the supervisor still reaps it.
#[derive(Debug)]
pub struct ExecSession {
    pub pid: i32,
    pub fds: Vec<OwnedFd>,
    conn: StreamConn,
}

impl ExecSession {
    /// Waits for the process's exit code (128+signal when killed).
    pub async fn wait(&mut self) -> Result<i32, SupervisorError> {
        match self.conn.next().await? {
            Some((Response::Exited { exit_code }, _)) => Ok(exit_code),
            Some((Response::Error(e), _)) => Err(e.into()),
            other => Err(SupervisorError::Protocol {
                socket: self.conn.socket.clone(),
                reply: format!("{:?}", other.map(|(r, _)| r)),
            }),
        }
    }
}

/// What an attached connection reports.
#[derive(Debug, PartialEq)]
pub enum AttachEvent {
    Output {
        stderr: bool,
        data: Vec<u8>,
    },
    /// The container exited; nothing follows.
    Exited(i32),
}

/// An attach to a container's stdio. `fd` is the write end of its stdin (or, with `tty`, its
/// pty master), when one was asked for and the container has one.
#[derive(Debug)]
pub struct AttachSession {
    pub tty: bool,
    pub fd: Option<OwnedFd>,
    conn: StreamConn,
}

impl AttachSession {
    /// The next output chunk or the exit; `None` when the supervisor closed the connection.
    pub async fn next(&mut self) -> Result<Option<AttachEvent>, SupervisorError> {
        use base64::Engine;
        match self.conn.next().await? {
            None => Ok(None),
            Some((Response::Output { stream, data }, _)) => {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(data.as_bytes())
                    .map_err(|_| SupervisorError::Protocol {
                        socket: self.conn.socket.clone(),
                        reply: "output that is not base64".into(),
                    })?;
                Ok(Some(AttachEvent::Output {
                    stderr: stream == "stderr",
                    data,
                }))
            }
            Some((Response::Exited { exit_code }, _)) => Ok(Some(AttachEvent::Exited(exit_code))),
            Some((r, _)) => Err(SupervisorError::Protocol {
                socket: self.conn.socket.clone(),
                reply: format!("{r:?}"),
            }),
        }
    }
}

/// Whether `pid` exists and is not a zombie.
fn process_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_name_the_container() {
        let e = SupervisorError::from(WireError {
            kind: ErrorKind::Create,
            id: Some("c1".into()),
            message: r#"unable to start container process: exec: "nosuchcmd": executable file not found in $PATH"#.into(),
        });
        assert_eq!(
            e.to_string(),
            r#"failed to create container "c1": unable to start container process: exec: "nosuchcmd": executable file not found in $PATH"#
        );
        let e = SupervisorError::from(WireError {
            kind: ErrorKind::NotFound,
            id: Some("c2".into()),
            message: "no such container".into(),
        });
        assert_eq!(e.to_string(), r#"container "c2": not found"#);
        assert_eq!(e.kind(), Some(ErrorKind::NotFound));
    }

    #[test]
    fn own_process_is_running() {
        assert!(process_running(std::process::id() as i32));
        assert!(!process_running(i32::MAX));
    }
}
