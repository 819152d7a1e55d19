//! The supervisor process itself (`capstan supervise --dir DIR`): one thread, one `poll(2)` loop.
//!
//! Like containerd's runc shim it is the parent (a child subreaper, in fact) of every container
//! of one pod, so exits are never lost whoever restarts above it. Unlike the shim it creates
//! the containers itself, through libcontainer as a library: forking is only safe from a
//! single-threaded process, so this file has no threads, no async runtime and no logging
//! framework. The loop multiplexes:
//!
//! - the listening socket `DIR/supervisor.sock` and its connections (JSON lines, see `proto`);
//! - a signalfd for SIGCHLD (reap with `waitpid(-1, WNOHANG|__WALL)`: libcontainer clones the
//!   container init with `CLONE_PARENT`) and SIGTERM/SIGINT (shut down);
//! - every container's stdout/stderr pipe, copied into the CRI log file (`crate::logs`);
//! - the pipes of running ExecSync calls, whose reply waits for the exit;
//! - streaming execs and attaches (`ExecStream`, `Attach`, each on a connection of its own): the
//!   process's pipes or pty master are handed to the runtime with `SCM_RIGHTS`, so the bytes of
//!   an exec never pass through this loop; only the exit is reported. An attach gets a dup of
//!   the container's stdin pipe (or its pty master) and a copy of its output, as `Output` lines.
//!
//! TTY containers and execs get their pty from libcontainer's console socket (runc's
//! `--console-socket`): the container's init opens the pty inside the container's devpts and
//! sends the master here; a container's master is read into the CRI log as stdout.
//!
//! Every state change is written to `DIR/containers/<id>.json` (write + rename) before anybody
//! is told, so a runtime that was away reads the truth from disk or from `State`/`List`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, ErrorKind as IoErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container as LcContainer;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::executor::SupervisorExecutor;

/// The address to bind or connect the socket in `dir` by. A unix socket path must fit in
/// `sun_path` (108 bytes), and a runtime root plus a 64-digit sandbox id need not; then the
/// socket is reached through `/proc/self/fd/<dir fd>/…`, which the kernel resolves like any path.
/// The returned handle keeps that fd open and must live until the bind or connect is done.
pub(crate) fn socket_address(dir: &Path) -> io::Result<(Option<File>, PathBuf)> {
    let direct = dir.join(SOCKET_NAME);
    if direct.as_os_str().len() < 100 {
        return Ok((None, direct));
    }
    let handle = File::open(dir)?;
    let path = PathBuf::from(format!(
        "/proc/self/fd/{}/{SOCKET_NAME}",
        std::os::fd::AsRawFd::as_raw_fd(&handle)
    ));
    Ok((Some(handle), path))
}
use super::proto::{
    ContainerState, CreateRequest, ErrorKind, Event, EventKind, ExecStreamRequest, ExecSyncRequest,
    ExecSyncResponse, InfoResponse, Request, Response, Status, WireError,
};
use crate::logs::{LineSplitter, LogFile, Stream, DEFAULT_MAX_LINE};

pub const SOCKET_NAME: &str = "supervisor.sock";
pub const LOG_NAME: &str = "supervisor.log";
pub const CONTAINERS_DIR: &str = "containers";
pub const LIBCONTAINER_DIR: &str = "libcontainer";
const EXEC_DIR: &str = "exec";
/// Periodic sweep even without signals: a lost SIGCHLD costs at most this long.
const SWEEP: Duration = Duration::from_millis(1000);
/// A subscriber that does not read is dropped once this much is queued for it.
const MAX_QUEUED: usize = 4 << 20;
/// How long shutdown waits for killed containers to be reaped.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Command-line options of `capstan supervise`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    pub dir: PathBuf,
    pub pid_namespace: bool,
    pub cgroup: Option<PathBuf>,
}

impl Options {
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut o = Options::default();
        while let Some(a) = args.next() {
            match a.as_str() {
                "--dir" => o.dir = args.next().ok_or("--dir needs a value")?.into(),
                "--pid-namespace" => o.pid_namespace = true,
                "--cgroup" => o.cgroup = Some(args.next().ok_or("--cgroup needs a value")?.into()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if o.dir.as_os_str().is_empty() {
            return Err("--dir is required".into());
        }
        Ok(o)
    }
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn log(msg: impl AsRef<str>) {
    eprintln!(
        "{} {}",
        crate::logs::format_timestamp(SystemTime::now()),
        msg.as_ref()
    );
}

/// Runs the supervisor; returns the process exit code.
pub fn run(opts: Options) -> i32 {
    match Supervisor::setup(opts) {
        Ok(mut s) => {
            s.serve();
            0
        }
        Err(e) => {
            log(format!("supervisor failed to start: {e}"));
            1
        }
    }
}

struct OutPipe {
    file: File,
    stream: Stream,
    splitter: LineSplitter,
}

struct Container {
    state: ContainerState,
    pipes: Vec<OutPipe>,
    log: Option<LogFile>,
    /// The write end of the container's stdin pipe (CRI `stdin`), until it exits.
    stdin: Option<OwnedFd>,
    stdin_once: bool,
    /// The pty master of a TTY container (its reading dup is one of `pipes`).
    console: Option<OwnedFd>,
    /// Connections attached to this container, and the `Output` lines queued for them.
    attached: Vec<u64>,
    attach_buf: Vec<u8>,
    /// Set at exit: tell the attached connections and close them.
    attach_exit: Option<i32>,
    /// The OCI `linux.cgroupsPath`, for the OOM counters.
    cgroups_path: Option<PathBuf>,
    oom_base: u64,
}

struct ExecProc {
    pid: Pid,
    conn: u64,
    pipes: Vec<(File, bool)>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    deadline: Option<Instant>,
    timed_out: bool,
    exit_code: Option<i32>,
    process_file: PathBuf,
    /// A streaming exec: its stdio went to the runtime; the reply is only the exit.
    stream: bool,
}

struct Conn {
    id: u64,
    stream: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    subscribed: bool,
    /// Dedicated to one streaming exec or attach: no further requests are read.
    streaming: bool,
    /// Waiting for an ExecSync reply; further requests wait in `rbuf`.
    busy: bool,
    eof: bool,
    /// Close once `wbuf` is flushed.
    closing: bool,
}

#[derive(Clone, Copy)]
enum Target {
    Listener,
    Signals,
    Conn(usize),
    Pipe(usize, usize),
    ExecPipe(usize, usize),
}

struct Supervisor {
    dir: PathBuf,
    lc_root: PathBuf,
    listener: UnixListener,
    signals: SignalFd,
    conns: Vec<Conn>,
    next_conn: u64,
    next_exec: u64,
    containers: BTreeMap<String, Container>,
    execs: Vec<ExecProc>,
    pidns_init: Option<Pid>,
    shutdown: Option<u64>,
}

impl Supervisor {
    fn setup(opts: Options) -> io::Result<Self> {
        fs::create_dir_all(&opts.dir)?;
        let dir = fs::canonicalize(&opts.dir)?;
        detach(&dir)?;
        nix::sys::prctl::set_child_subreaper(true)?;
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(s);
        }
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        if let Some(cg) = &opts.cgroup {
            join_cgroup(cg).map_err(|e| io_context(e, format!("joining cgroup {cg:?}")))?;
        }
        let pidns_init = if opts.pid_namespace {
            Some(super::pidns::spawn_init()?)
        } else {
            None
        };
        let lc_root = dir.join(LIBCONTAINER_DIR);
        fs::create_dir_all(&lc_root)?;
        fs::create_dir_all(dir.join(CONTAINERS_DIR))?;
        let sock = dir.join(SOCKET_NAME);
        let _ = fs::remove_file(&sock);
        let (_dir_handle, addr) = socket_address(&dir)?;
        let listener = UnixListener::bind(&addr)?;
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let mut s = Supervisor {
            dir,
            lc_root,
            listener,
            signals,
            conns: Vec::new(),
            next_conn: 1,
            next_exec: 1,
            containers: BTreeMap::new(),
            execs: Vec::new(),
            pidns_init,
            shutdown: None,
        };
        s.load_states();
        log(format!(
            "supervisor {} serving {:?}",
            std::process::id(),
            s.dir.join(SOCKET_NAME)
        ));
        Ok(s)
    }

    /// Containers recorded by an earlier supervisor of this directory: those whose process is
    /// gone are marked exited with an unknown status (we were not their parent).
    fn load_states(&mut self) {
        let Ok(rd) = fs::read_dir(self.dir.join(CONTAINERS_DIR)) else {
            return;
        };
        for entry in rd.flatten() {
            let Ok(data) = fs::read(entry.path()) else {
                continue;
            };
            let Ok(mut state) = serde_json::from_slice::<ContainerState>(&data) else {
                continue;
            };
            if state.status != Status::Exited && !pid_alive(state.pid) {
                state.status = Status::Exited;
                state.finished_at = now_ns();
                state.exit_code = 255;
                state.reason = "Unknown".into();
                state.message = "the supervisor restarted; the exit status was lost".into();
            }
            let c = Container {
                state,
                pipes: Vec::new(),
                log: None,
                cgroups_path: None,
                oom_base: 0,
                stdin: None,
                stdin_once: false,
                console: None,
                attached: Vec::new(),
                attach_buf: Vec::new(),
                attach_exit: None,
            };
            self.persist(&c.state);
            self.containers.insert(c.state.id.clone(), c);
        }
    }

    fn serve(&mut self) {
        loop {
            let timeout = self.poll_timeout();
            let ready = match self.poll_once(timeout) {
                Ok(r) => r,
                Err(e) => {
                    log(format!("poll: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                    Vec::new()
                }
            };
            for (target, flags) in ready {
                self.handle_ready(target, flags);
            }
            self.reap();
            self.check_exec_deadlines();
            self.finish_execs();
            self.deliver_attach();
            self.flush_conns();
            if let Some(conn) = self.shutdown {
                self.do_shutdown(conn);
                return;
            }
        }
    }

    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        self.execs
            .iter()
            .filter_map(|e| e.deadline)
            .map(|d| d.saturating_duration_since(now))
            .fold(SWEEP, Duration::min)
    }

    fn poll_once(&self, timeout: Duration) -> io::Result<Vec<(Target, PollFlags)>> {
        let mut fds = Vec::new();
        let mut targets = Vec::new();
        fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        targets.push(Target::Listener);
        fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
        targets.push(Target::Signals);
        for (i, c) in self.conns.iter().enumerate() {
            let mut f = PollFlags::empty();
            if !c.eof {
                f |= PollFlags::POLLIN;
            }
            if !c.wbuf.is_empty() {
                f |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.stream.as_fd(), f));
            targets.push(Target::Conn(i));
        }
        for (ci, c) in self.containers.values().enumerate() {
            for (pi, p) in c.pipes.iter().enumerate() {
                fds.push(PollFd::new(p.file.as_fd(), PollFlags::POLLIN));
                targets.push(Target::Pipe(ci, pi));
            }
        }
        for (ei, e) in self.execs.iter().enumerate() {
            for (pi, (f, _)) in e.pipes.iter().enumerate() {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                targets.push(Target::ExecPipe(ei, pi));
            }
        }
        let ms = timeout.as_millis().min(u16::MAX as u128) as u16;
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(fds
            .iter()
            .zip(targets)
            .filter_map(|(fd, t)| {
                let r = fd.revents().unwrap_or(PollFlags::empty());
                (!r.is_empty()).then_some((t, r))
            })
            .collect())
    }

    fn handle_ready(&mut self, target: Target, flags: PollFlags) {
        match target {
            Target::Listener => self.accept(),
            Target::Signals => {
                while let Ok(Some(info)) = self.signals.read_signal() {
                    let sig = info.ssi_signo as i32;
                    if sig == Signal::SIGTERM as i32 || sig == Signal::SIGINT as i32 {
                        log(format!("signal {sig}: shutting down"));
                        self.shutdown.get_or_insert(0);
                    }
                }
            }
            Target::Conn(i) => {
                if flags.intersects(PollFlags::POLLOUT) {
                    flush_conn(&mut self.conns[i]);
                }
                if flags.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    self.read_conn(i);
                }
            }
            Target::Pipe(ci, pi) => {
                if let Some(c) = self.containers.values_mut().nth(ci) {
                    if !read_container_pipe(c, pi, false) {
                        let mut p = c.pipes.remove(pi);
                        finish_pipe(&mut c.log, &mut p);
                    }
                }
            }
            Target::ExecPipe(ei, pi) => {
                let e = &mut self.execs[ei];
                if !read_exec_pipe(e, pi) {
                    e.pipes.remove(pi);
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let id = self.next_conn;
                    self.next_conn += 1;
                    self.conns.push(Conn {
                        id,
                        stream,
                        rbuf: Vec::new(),
                        wbuf: Vec::new(),
                        subscribed: false,
                        streaming: false,
                        busy: false,
                        eof: false,
                        closing: false,
                    });
                }
                Err(e) if e.kind() == IoErrorKind::WouldBlock => return,
                Err(e) if e.kind() == IoErrorKind::Interrupted => {}
                Err(e) => {
                    log(format!("accept: {e}"));
                    return;
                }
            }
        }
    }

    fn read_conn(&mut self, i: usize) {
        let mut buf = [0u8; 8192];
        loop {
            match self.conns[i].stream.read(&mut buf) {
                Ok(0) => {
                    self.conns[i].eof = true;
                    break;
                }
                Ok(n) => self.conns[i].rbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == IoErrorKind::WouldBlock => break,
                Err(e) if e.kind() == IoErrorKind::Interrupted => {}
                Err(_) => {
                    self.conns[i].eof = true;
                    break;
                }
            }
        }
        self.process_requests(i);
    }

    fn process_requests(&mut self, i: usize) {
        loop {
            let c = &mut self.conns[i];
            if c.busy || c.subscribed || c.streaming || c.closing || self.shutdown.is_some() {
                return;
            }
            let Some(nl) = c.rbuf.iter().position(|&b| b == b'\n') else {
                return;
            };
            let line: Vec<u8> = c.rbuf.drain(..=nl).collect();
            let conn_id = c.id;
            let reply = match serde_json::from_slice::<Request>(&line) {
                Ok(req) => self.handle(conn_id, i, req),
                Err(e) => Some(err(
                    ErrorKind::InvalidArgument,
                    None,
                    format!("bad request: {e}"),
                )),
            };
            if let Some(reply) = reply {
                send(&mut self.conns[i], &reply);
            }
        }
    }

    /// Handles one request; `None` when the reply comes later (ExecSync, Shutdown).
    fn handle(&mut self, conn_id: u64, i: usize, req: Request) -> Option<Response> {
        Some(match req {
            Request::Create(r) => match self.create(r) {
                Ok(s) => Response::State(s),
                Err(e) => Response::Error(e),
            },
            Request::Start { id } => match self.start(&id) {
                Ok(s) => Response::State(s),
                Err(e) => Response::Error(e),
            },
            Request::Kill { id, signal, all } => match self.kill(&id, signal, all) {
                Ok(()) => Response::Ok,
                Err(e) => Response::Error(e),
            },
            Request::Delete { id, force } => match self.delete(&id, force) {
                Ok(()) => Response::Ok,
                Err(e) => Response::Error(e),
            },
            Request::State { id } => match self.containers.get(&id) {
                Some(c) => Response::State(c.state.clone()),
                None => not_found(&id),
            },
            Request::List => Response::List {
                containers: self.containers.values().map(|c| c.state.clone()).collect(),
            },
            Request::ExecSync(r) => match self.exec_sync(conn_id, r) {
                Ok(()) => {
                    self.conns[i].busy = true;
                    return None;
                }
                Err(e) => Response::Error(e),
            },
            Request::ExecStream(r) => match self.exec_stream(i, r) {
                Ok(()) => return None,
                Err(e) => Response::Error(e),
            },
            Request::Attach { id, stdin } => match self.attach(i, &id, stdin) {
                Ok(()) => return None,
                Err(e) => Response::Error(e),
            },
            Request::ReopenLog { id } => match self.containers.get_mut(&id) {
                None => not_found(&id),
                Some(c) => match c.log.as_mut().map(|l| l.reopen()) {
                    Some(Err(e)) => err(
                        ErrorKind::Internal,
                        Some(&id),
                        format!("reopening the log: {e}"),
                    ),
                    _ => Response::Ok,
                },
            },
            Request::Subscribe => {
                self.conns[i].subscribed = true;
                Response::Ok
            }
            Request::Info => Response::Info(InfoResponse {
                pid: std::process::id() as i32,
                pid_namespace: self
                    .pidns_init
                    .map(|p| PathBuf::from(format!("/proc/{p}/ns/pid"))),
                init_pid: self.pidns_init.map(|p| p.as_raw()),
            }),
            Request::Shutdown => {
                self.shutdown = Some(conn_id);
                return None;
            }
        })
    }

    fn create(&mut self, r: CreateRequest) -> Result<ContainerState, WireError> {
        let id = r.id.clone();
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(werr(
                ErrorKind::InvalidArgument,
                Some(&id),
                "invalid container id",
            ));
        }
        if self.containers.contains_key(&id) || self.lc_root.join(&id).exists() {
            return Err(werr(
                ErrorKind::AlreadyExists,
                Some(&id),
                "container already exists",
            ));
        }
        let config = r.bundle.join("config.json");
        let mut spec = Spec::load(&config).map_err(|e| {
            werr(
                ErrorKind::InvalidArgument,
                Some(&id),
                format!("loading {config:?}: {e}"),
            )
        })?;
        // libcontainer writes oom_score_adj into the *calling* process (this supervisor) before
        // forking; take it out of the spec and set it on the container's init instead.
        let oom_score_adj = take_oom_score_adj(&mut spec);
        if oom_score_adj.is_some() {
            spec.save(&config).map_err(|e| {
                werr(
                    ErrorKind::Internal,
                    Some(&id),
                    format!("rewriting {config:?}: {e}"),
                )
            })?;
        }
        let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        let mut log = match &r.log_path {
            Some(p) => Some(
                LogFile::open(p, r.max_log_size, r.max_log_files).map_err(|e| {
                    werr(
                        ErrorKind::Create,
                        Some(&id),
                        format!("opening log file {p:?}: {e}"),
                    )
                })?,
            ),
            None => None,
        };
        let ierr = |e: io::Error| werr(ErrorKind::Internal, Some(&id), e);
        let mut builder = ContainerBuilder::new(id.clone(), SyscallType::default())
            .with_root_path(&self.lc_root)
            .map_err(|e| werr(ErrorKind::Internal, Some(&id), chain(&e)))?
            .with_executor(SupervisorExecutor::default());
        let mut outputs = Vec::new();
        let mut stdin = None;
        let console = if r.tty {
            let cs = ConsoleSocket::bind(&self.dir, &format!("{id}.console.sock")).map_err(ierr)?;
            builder = builder.with_console_socket(Some(cs.path.clone()));
            Some(cs)
        } else {
            let (out_r, out_w) = pipe().map_err(ierr)?;
            let (err_r, err_w) = pipe().map_err(ierr)?;
            builder = builder.with_stdout(out_w).with_stderr(err_w);
            outputs.push((out_r, Stream::Stdout));
            outputs.push((err_r, Stream::Stderr));
            None
        };
        if r.stdin && !r.tty {
            let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| ierr(e.into()))?;
            builder = builder.with_stdin(rd);
            stdin = Some(wr);
        }
        let built = builder
            .as_init(&r.bundle)
            .with_systemd(false)
            .with_detach(true)
            .build();
        let lc = match built {
            Ok(c) => c,
            Err(e) => {
                // libcontainer removed its own state and cgroup; reap what it left.
                self.reap();
                let _ = fs::remove_dir_all(self.lc_root.join(&id));
                return Err(werr(ErrorKind::Create, Some(&id), create_message(&e)));
            }
        };
        let pid = lc.pid().map(|p| p.as_raw()).unwrap_or(0);
        let mut master = None;
        if let Some(cs) = console {
            let received = cs.receive().and_then(|m| {
                let reader = m.try_clone()?;
                fcntl(&reader, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
                Ok((m, reader))
            });
            match received {
                Ok((m, reader)) => {
                    outputs.push((reader, Stream::Stdout));
                    master = Some(m);
                }
                Err(e) => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    if let Ok(mut lc) = self.load_lc(&id) {
                        let _ = lc.delete(true);
                    }
                    self.reap();
                    let _ = fs::remove_dir_all(self.lc_root.join(&id));
                    return Err(werr(
                        ErrorKind::Create,
                        Some(&id),
                        format!("receiving the container's pty master: {e}"),
                    ));
                }
            }
        }
        let mut message = String::new();
        if let Some(want) = oom_score_adj {
            if let Some(note) = apply_oom_score_adj(pid, want) {
                message = note;
            }
        }
        if let (Some(l), false) = (&mut log, message.is_empty()) {
            let _ = l.write_record(SystemTime::now(), Stream::Stderr, false, message.as_bytes());
        }
        let oom_base = cgroups_path.as_deref().map(oom_kill_count).unwrap_or(0);
        let state = ContainerState {
            id: id.clone(),
            status: Status::Created,
            pid,
            bundle: r.bundle.clone(),
            log_path: r.log_path.clone(),
            created_at: now_ns(),
            message,
            ..Default::default()
        };
        let mut pipes = Vec::new();
        for (fd, stream) in outputs {
            pipes.push(OutPipe {
                file: File::from(fd),
                stream,
                splitter: LineSplitter::new(DEFAULT_MAX_LINE),
            });
        }
        self.containers.insert(
            id.clone(),
            Container {
                state: state.clone(),
                pipes,
                log,
                cgroups_path,
                oom_base,
                stdin,
                stdin_once: r.stdin_once,
                console: master,
                attached: Vec::new(),
                attach_buf: Vec::new(),
                attach_exit: None,
            },
        );
        self.changed(&id, EventKind::Created);
        Ok(state)
    }

    fn start(&mut self, id: &str) -> Result<ContainerState, WireError> {
        let c = self.containers.get(id).ok_or_else(|| nf(id))?;
        if c.state.status != Status::Created {
            return Err(werr(
                ErrorKind::InvalidState,
                Some(id),
                format!("container is {:?}, not created", c.state.status).to_lowercase(),
            ));
        }
        let mut lc = self.load_lc(id)?;
        lc.start().map_err(|e| {
            werr(
                ErrorKind::Internal,
                Some(id),
                format!("starting: {}", chain(&e)),
            )
        })?;
        let c = self.containers.get_mut(id).ok_or_else(|| nf(id))?;
        c.state.status = Status::Running;
        c.state.started_at = now_ns();
        let s = c.state.clone();
        self.changed(id, EventKind::Started);
        Ok(s)
    }

    fn kill(&mut self, id: &str, signal: i32, all: bool) -> Result<(), WireError> {
        let c = self.containers.get(id).ok_or_else(|| nf(id))?;
        let sig = Signal::try_from(signal).map_err(|_| {
            werr(
                ErrorKind::InvalidArgument,
                Some(id),
                format!("invalid signal {signal}"),
            )
        })?;
        if c.state.status == Status::Exited && !all {
            return Ok(());
        }
        if c.state.status != Status::Exited {
            // Signal the init directly: we are its parent, so its pid cannot have been reused.
            match kill(Pid::from_raw(c.state.pid), sig) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => {
                    return Err(werr(ErrorKind::Internal, Some(id), format!("kill: {e}")));
                }
            }
        }
        if all {
            if let Ok(mut lc) = self.load_lc(id) {
                let _ = lc_signal(signal).map(|s| lc.kill(s, true));
            }
        }
        Ok(())
    }

    fn delete(&mut self, id: &str, force: bool) -> Result<(), WireError> {
        let c = self.containers.get(id).ok_or_else(|| nf(id))?;
        if c.state.status == Status::Running {
            if !force {
                return Err(werr(
                    ErrorKind::InvalidState,
                    Some(id),
                    "cannot delete a running container; stop it first",
                ));
            }
            let _ = kill(Pid::from_raw(c.state.pid), Signal::SIGKILL);
            self.wait_for_exit(id, SHUTDOWN_WAIT);
        }
        if self.lc_root.join(id).exists() {
            match self.load_lc(id) {
                Ok(mut lc) => {
                    if let Err(e) = lc.delete(true) {
                        return Err(werr(
                            ErrorKind::Internal,
                            Some(id),
                            format!("deleting: {}", chain(&e)),
                        ));
                    }
                }
                Err(_) => {
                    let _ = fs::remove_dir_all(self.lc_root.join(id));
                }
            }
        }
        // A created container's init was killed by libcontainer; collect it.
        self.wait_for_exit(id, Duration::from_secs(2));
        let Some(mut c) = self.containers.remove(id) else {
            return Ok(());
        };
        drain_and_close(&mut c);
        let _ = fs::remove_file(self.state_path(id));
        self.broadcast(Event {
            kind: EventKind::Deleted,
            id: id.to_owned(),
            timestamp: now_ns(),
            state: c.state,
        });
        Ok(())
    }

    /// Blocks (briefly) until the container's init has been reaped.
    fn wait_for_exit(&mut self, id: &str, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            self.reap();
            match self.containers.get(id) {
                Some(c) if c.state.status != Status::Exited && c.state.pid > 0 => {}
                _ => return,
            }
            if Instant::now() >= until {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Checks that `id` runs and writes the OCI process of an exec (the container's, with
    /// `args`, `env` on top and `tty`) to a file of its own under `DIR/exec`.
    fn exec_process_file(
        &mut self,
        id: &str,
        args: &[String],
        extra_env: &[String],
        tty: bool,
    ) -> Result<PathBuf, WireError> {
        let c = self.containers.get(id).ok_or_else(|| nf(id))?;
        if c.state.status != Status::Running {
            return Err(werr(
                ErrorKind::InvalidState,
                Some(id),
                "container is not running",
            ));
        }
        if args.is_empty() {
            return Err(werr(
                ErrorKind::InvalidArgument,
                Some(id),
                "exec needs a command",
            ));
        }
        let spec = Spec::load(c.state.bundle.join("config.json"))
            .map_err(|e| werr(ErrorKind::Internal, Some(id), format!("loading spec: {e}")))?;
        let mut process = spec.process().clone().unwrap_or_default();
        let mut env: Vec<String> = process.env().clone().unwrap_or_default();
        for kv in extra_env {
            let key = kv.split('=').next().unwrap_or("");
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        process.set_args(Some(args.to_vec()));
        process.set_env(Some(env));
        process.set_terminal(Some(tty));
        process.set_oom_score_adj(None);
        let exec_dir = self.dir.join(EXEC_DIR);
        fs::create_dir_all(&exec_dir).map_err(|e| werr(ErrorKind::Internal, Some(id), e))?;
        let process_file = exec_dir.join(format!("{}-{}.json", id, self.next_exec));
        self.next_exec += 1;
        let json =
            serde_json::to_vec(&process).map_err(|e| werr(ErrorKind::Internal, Some(id), e))?;
        fs::write(&process_file, json).map_err(|e| werr(ErrorKind::Internal, Some(id), e))?;
        Ok(process_file)
    }

    fn exec_sync(&mut self, conn: u64, r: ExecSyncRequest) -> Result<(), WireError> {
        let id = r.id.as_str();
        let process_file = self.exec_process_file(id, &r.args, &r.env, false)?;
        let (out_r, out_w) = pipe().map_err(|e| werr(ErrorKind::Internal, Some(id), e))?;
        let (err_r, err_w) = pipe().map_err(|e| werr(ErrorKind::Internal, Some(id), e))?;
        let built = ContainerBuilder::new(id.to_owned(), SyscallType::default())
            .with_root_path(&self.lc_root)
            .map(|b| {
                b.with_stdout(out_w)
                    .with_stderr(err_w)
                    .with_executor(SupervisorExecutor::default())
                    .as_tenant()
                    .with_process(Some(&process_file))
                    .with_detach(true)
            })
            .and_then(|b| b.build());
        let pid = match built {
            Ok(pid) => pid,
            Err(e) => {
                let _ = fs::remove_file(&process_file);
                self.reap();
                return Err(werr(ErrorKind::Exec, Some(id), create_message(&e)));
            }
        };
        self.execs.push(ExecProc {
            pid: Pid::from_raw(pid.as_raw()),
            conn,
            pipes: vec![(File::from(out_r), true), (File::from(err_r), false)],
            stdout: Vec::new(),
            stderr: Vec::new(),
            deadline: (r.timeout_ms > 0)
                .then(|| Instant::now() + Duration::from_millis(r.timeout_ms)),
            timed_out: false,
            exit_code: None,
            process_file,
            stream: false,
        });
        Ok(())
    }

    /// Starts a streaming exec and sends its stdio fds on connection `i` (see
    /// `Request::ExecStream`).
    fn exec_stream(&mut self, i: usize, r: ExecStreamRequest) -> Result<(), WireError> {
        let id = r.id.clone();
        let process_file = self.exec_process_file(&id, &r.args, &r.env, r.tty)?;
        let started = self.start_exec_stream(&id, &r, &process_file);
        let (pid, theirs) = match started {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&process_file);
                return Err(e);
            }
        };
        let c = &mut self.conns[i];
        c.streaming = true;
        let conn = c.id;
        let reply = Response::ExecStarted { pid: pid.as_raw() };
        if let Err(e) = send_with_fds(c, &reply, &theirs) {
            log(format!("exec {id}: handing over the stdio: {e}"));
            c.eof = true;
            c.closing = true;
        }
        drop(theirs);
        self.execs.push(ExecProc {
            pid,
            conn,
            pipes: Vec::new(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            deadline: None,
            timed_out: false,
            exit_code: None,
            process_file,
            stream: true,
        });
        Ok(())
    }

    /// Starts the process of a streaming exec; returns its pid and the runtime's ends of its
    /// stdio in the order `Response::ExecStarted` documents.
    fn start_exec_stream(
        &mut self,
        id: &str,
        r: &ExecStreamRequest,
        process_file: &Path,
    ) -> Result<(Pid, Vec<OwnedFd>), WireError> {
        let ierr = |e: io::Error| werr(ErrorKind::Internal, Some(id), e);
        let new_pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| ierr(e.into()));
        let mut builder = ContainerBuilder::new(id.to_owned(), SyscallType::default())
            .with_root_path(&self.lc_root)
            .map_err(|e| werr(ErrorKind::Internal, Some(id), chain(&e)))?
            .with_executor(SupervisorExecutor::default());
        let mut theirs: Vec<OwnedFd> = Vec::new();
        let console = if r.tty {
            let name = format!("{}-{}.console.sock", id, self.next_exec);
            let cs = ConsoleSocket::bind(&self.dir, &name).map_err(ierr)?;
            builder = builder.with_console_socket(Some(cs.path.clone()));
            Some(cs)
        } else {
            if r.stdin {
                let (rd, wr) = new_pipe()?;
                builder = builder.with_stdin(rd);
                theirs.push(wr);
            }
            let (out_r, out_w) = new_pipe()?;
            let (err_r, err_w) = new_pipe()?;
            builder = builder.with_stdout(out_w).with_stderr(err_w);
            theirs.push(out_r);
            theirs.push(err_r);
            None
        };
        let built = builder
            .as_tenant()
            .with_process(Some(process_file))
            .with_detach(true)
            .build();
        let pid = match built {
            Ok(pid) => Pid::from_raw(pid.as_raw()),
            Err(e) => {
                self.reap();
                return Err(werr(ErrorKind::Exec, Some(id), create_message(&e)));
            }
        };
        if let Some(cs) = console {
            let received = cs.receive();
            cs.remove_links(&self.lc_root.join(id));
            match received {
                Ok(master) => theirs.push(master),
                Err(e) => {
                    let _ = kill(pid, Signal::SIGKILL);
                    self.orphan_exec(pid);
                    return Err(werr(
                        ErrorKind::Exec,
                        Some(id),
                        format!("receiving the exec's pty master: {e}"),
                    ));
                }
            }
        }
        Ok((pid, theirs))
    }

    /// An exec that failed after its process started: reap it without telling anybody.
    fn orphan_exec(&mut self, pid: Pid) {
        self.execs.push(ExecProc {
            pid,
            conn: 0,
            pipes: Vec::new(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            deadline: None,
            timed_out: false,
            exit_code: None,
            process_file: PathBuf::new(),
            stream: true,
        });
    }

    /// Attaches connection `i` to container `id` (see `Request::Attach`).
    fn attach(&mut self, i: usize, id: &str, want_stdin: bool) -> Result<(), WireError> {
        let c = self.containers.get_mut(id).ok_or_else(|| nf(id))?;
        if c.state.status != Status::Running {
            return Err(werr(
                ErrorKind::InvalidState,
                Some(id),
                "container is not running",
            ));
        }
        let tty = c.console.is_some();
        let fd = if let Some(master) = &c.console {
            Some(
                master
                    .try_clone()
                    .map_err(|e| werr(ErrorKind::Internal, Some(id), e))?,
            )
        } else if want_stdin && c.stdin.is_some() {
            if c.stdin_once {
                // The attach owns it now: when it lets go, the container reads EOF.
                c.stdin.take()
            } else {
                c.stdin
                    .as_ref()
                    .map(|w| w.try_clone())
                    .transpose()
                    .map_err(|e| werr(ErrorKind::Internal, Some(id), e))?
            }
        } else {
            None
        };
        let conn = &mut self.conns[i];
        conn.streaming = true;
        let reply = Response::Attached {
            tty,
            fd: fd.is_some(),
        };
        let fds: Vec<OwnedFd> = fd.into_iter().collect();
        if let Err(e) = send_with_fds(conn, &reply, &fds) {
            log(format!("attach {id}: {e}"));
            conn.eof = true;
            conn.closing = true;
            return Ok(());
        }
        c.attached.push(conn.id);
        Ok(())
    }

    /// Hands queued output to the attached connections, and tells them about an exit.
    fn deliver_attach(&mut self) {
        let conns = &mut self.conns;
        for c in self.containers.values_mut() {
            if c.attached.is_empty() {
                c.attach_buf.clear();
                c.attach_exit = None;
                continue;
            }
            c.attached
                .retain(|id| conns.iter().any(|x| x.id == *id && !x.closing));
            let exit_line = c.attach_exit.take().map(|exit_code| {
                let mut l = serde_json::to_vec(&Response::Exited { exit_code }).unwrap_or_default();
                l.push(b'\n');
                l
            });
            for conn in conns.iter_mut().filter(|x| c.attached.contains(&x.id)) {
                if conn.wbuf.len() > MAX_QUEUED {
                    // A client that does not read loses its attach, not our memory.
                    conn.eof = true;
                    conn.closing = true;
                    continue;
                }
                conn.wbuf.extend_from_slice(&c.attach_buf);
                if let Some(l) = &exit_line {
                    conn.wbuf.extend_from_slice(l);
                    conn.closing = true;
                }
            }
            c.attach_buf.clear();
            if exit_line.is_some() {
                c.attached.clear();
            }
        }
    }

    fn check_exec_deadlines(&mut self) {
        let now = Instant::now();
        for e in &mut self.execs {
            if e.exit_code.is_none() && !e.timed_out && e.deadline.is_some_and(|d| d <= now) {
                e.timed_out = true;
                let _ = kill(e.pid, Signal::SIGKILL);
            }
        }
    }

    fn finish_execs(&mut self) {
        let mut i = 0;
        while i < self.execs.len() {
            if self.execs[i].exit_code.is_none() {
                i += 1;
                continue;
            }
            let mut e = self.execs.remove(i);
            if e.stream {
                let _ = fs::remove_file(&e.process_file);
                if let Some(c) = self.conns.iter_mut().find(|c| c.id == e.conn) {
                    send(
                        c,
                        &Response::Exited {
                            exit_code: e.exit_code.unwrap_or(-1),
                        },
                    );
                    c.closing = true;
                }
                continue;
            }
            // Output written before the exit is in the pipes; whatever a left-behind child
            // writes later is not part of this exec's answer.
            for pi in (0..e.pipes.len()).rev() {
                read_exec_pipe(&mut e, pi);
            }
            let _ = fs::remove_file(&e.process_file);
            let reply = Response::Exec(ExecSyncResponse {
                stdout: std::mem::take(&mut e.stdout),
                stderr: std::mem::take(&mut e.stderr),
                exit_code: if e.timed_out {
                    -1
                } else {
                    e.exit_code.unwrap_or(-1)
                },
                timed_out: e.timed_out,
            });
            if let Some(c) = self.conns.iter_mut().find(|c| c.id == e.conn) {
                send(c, &reply);
                c.busy = false;
            }
            if let Some(ci) = self.conns.iter().position(|c| c.id == e.conn) {
                self.process_requests(ci);
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Exited(pid, code)) => self.on_exit(pid, code, None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.on_exit(pid, 128 + sig as i32, Some(sig as i32))
                }
                Ok(WaitStatus::StillAlive) => return,
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, code: i32, signal: Option<i32>) {
        if let Some(e) = self.execs.iter_mut().find(|e| e.pid == pid) {
            e.exit_code = Some(code);
            return;
        }
        if self.pidns_init == Some(pid) {
            log(format!("pid namespace init {pid} exited ({code})"));
            return;
        }
        let Some(id) = self
            .containers
            .iter()
            .find(|(_, c)| c.state.pid == pid.as_raw() && c.state.status != Status::Exited)
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        let Some(c) = self.containers.get_mut(&id) else {
            return;
        };
        for pi in 0..c.pipes.len() {
            read_container_pipe(c, pi, true);
        }
        let oom = c
            .cgroups_path
            .as_deref()
            .is_some_and(|p| oom_kill_count(p) > c.oom_base);
        c.state.status = Status::Exited;
        c.state.finished_at = now_ns();
        c.state.exit_code = code;
        c.state.signal = signal;
        c.state.oom_killed = oom;
        // Attached clients get what was drained above, then the exit, then EOF.
        if !c.attached.is_empty() {
            c.attach_exit = Some(code);
        }
        c.stdin = None;
        c.console = None;
        c.state.reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .into();
        self.changed(&id, EventKind::Exited);
    }

    fn load_lc(&self, id: &str) -> Result<LcContainer, WireError> {
        LcContainer::load(self.lc_root.join(id)).map_err(|e| {
            werr(
                ErrorKind::Internal,
                Some(id),
                format!("loading container state: {}", chain(&e)),
            )
        })
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.dir.join(CONTAINERS_DIR).join(format!("{id}.json"))
    }

    fn persist(&self, state: &ContainerState) {
        let path = self.state_path(&state.id);
        let tmp = path.with_extension("json.tmp");
        let res = serde_json::to_vec(state)
            .map_err(io::Error::other)
            .and_then(|data| {
                let mut f = File::create(&tmp)?;
                f.write_all(&data)?;
                f.sync_data()?;
                fs::rename(&tmp, &path)
            });
        if let Err(e) = res {
            log(format!("persisting {path:?}: {e}"));
        }
    }

    /// Persists the container's state, then tells the subscribers.
    fn changed(&mut self, id: &str, kind: EventKind) {
        let Some(c) = self.containers.get(id) else {
            return;
        };
        let state = c.state.clone();
        self.persist(&state);
        self.broadcast(Event {
            kind,
            id: id.to_owned(),
            timestamp: now_ns(),
            state,
        });
    }

    fn broadcast(&mut self, event: Event) {
        let Ok(mut line) = serde_json::to_vec(&event) else {
            return;
        };
        line.push(b'\n');
        for c in self.conns.iter_mut().filter(|c| c.subscribed) {
            if c.wbuf.len() > MAX_QUEUED {
                c.eof = true;
                c.closing = true;
                continue;
            }
            c.wbuf.extend_from_slice(&line);
        }
    }

    fn flush_conns(&mut self) {
        for c in &mut self.conns {
            flush_conn(c);
        }
        self.conns.retain(|c| {
            let drop_it =
                (c.eof && c.wbuf.is_empty() && !c.busy) || (c.closing && c.wbuf.is_empty());
            !drop_it
        });
    }

    fn do_shutdown(&mut self, conn: u64) {
        log("shutting down");
        let ids: Vec<String> = self.containers.keys().cloned().collect();
        for id in &ids {
            if let Some(c) = self.containers.get(id) {
                if c.state.status != Status::Exited && c.state.pid > 0 {
                    let _ = kill(Pid::from_raw(c.state.pid), Signal::SIGKILL);
                }
            }
            if let Ok(mut lc) = self.load_lc(id) {
                let _ = lc_signal(libc::SIGKILL).map(|s| lc.kill(s, true));
            }
        }
        for e in &self.execs {
            let _ = kill(e.pid, Signal::SIGKILL);
        }
        for id in &ids {
            self.wait_for_exit(id, SHUTDOWN_WAIT);
        }
        for id in &ids {
            if let Err(e) = self.delete(id, true) {
                log(format!("shutdown: {}", e.message));
            }
        }
        if let Some(init) = self.pidns_init.take() {
            let _ = kill(init, Signal::SIGKILL);
            let _ = waitpid(init, Some(WaitPidFlag::__WALL));
        }
        self.reap();
        for d in [CONTAINERS_DIR, LIBCONTAINER_DIR, EXEC_DIR] {
            let _ = fs::remove_dir_all(self.dir.join(d));
        }
        let _ = fs::remove_file(self.dir.join(SOCKET_NAME));
        let _ = fs::remove_file(self.dir.join(LOG_NAME));
        let _ = fs::remove_dir(&self.dir);
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) {
            send(c, &Response::Ok);
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_write_timeout(Some(Duration::from_secs(2)));
            let data = std::mem::take(&mut c.wbuf);
            let _ = c.stream.write_all(&data);
        }
    }
}

/// Reads what is available from a container pipe into the log; `false` at EOF.
fn read_container_pipe(c: &mut Container, pi: usize, drain_only: bool) -> bool {
    let Some(p) = c.pipes.get_mut(pi) else {
        return true;
    };
    let mut buf = [0u8; 32 * 1024];
    loop {
        match p.file.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                let now = SystemTime::now();
                let stream = p.stream;
                let log = &mut c.log;
                p.splitter.push(&buf[..n], &mut |line, partial| {
                    if let Some(l) = log.as_mut() {
                        let _ = l.write_record(now, stream, partial, line);
                    }
                });
                if !c.attached.is_empty() {
                    push_output(&mut c.attach_buf, stream, &buf[..n]);
                }
                if !drain_only && n < buf.len() {
                    return true;
                }
            }
            Err(e) if e.kind() == IoErrorKind::Interrupted => {}
            Err(e) if e.kind() == IoErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

fn finish_pipe(log: &mut Option<LogFile>, p: &mut OutPipe) {
    let now = SystemTime::now();
    let stream = p.stream;
    p.splitter.finish(&mut |line, partial| {
        if let Some(l) = log.as_mut() {
            let _ = l.write_record(now, stream, partial, line);
        }
    });
}

fn drain_and_close(c: &mut Container) {
    for pi in 0..c.pipes.len() {
        read_container_pipe(c, pi, true);
    }
    let mut pipes = std::mem::take(&mut c.pipes);
    for p in &mut pipes {
        finish_pipe(&mut c.log, p);
    }
}

fn read_exec_pipe(e: &mut ExecProc, pi: usize) -> bool {
    let Some((f, is_out)) = e.pipes.get_mut(pi) else {
        return true;
    };
    let target = if *is_out {
        &mut e.stdout
    } else {
        &mut e.stderr
    };
    let mut buf = [0u8; 16 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => target.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == IoErrorKind::Interrupted => {}
            Err(err) if err.kind() == IoErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// Queues an `Output` line with `data` for attached clients.
fn push_output(buf: &mut Vec<u8>, stream: Stream, data: &[u8]) {
    use base64::Engine;
    let line = Response::Output {
        stream: stream.as_str().to_owned(),
        data: base64::engine::general_purpose::STANDARD.encode(data),
    };
    if let Ok(l) = serde_json::to_vec(&line) {
        buf.extend_from_slice(&l);
        buf.push(b'\n');
    }
}

/// Sends a reply line with `fds` attached (`SCM_RIGHTS`). It is the first line on a fresh
/// connection, so it fits the socket buffer; whatever does not is queued without the fds.
fn send_with_fds(c: &mut Conn, reply: &Response, fds: &[OwnedFd]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    use std::os::fd::AsRawFd;
    flush_conn(c);
    if !c.wbuf.is_empty() {
        return Err(io::Error::other("the connection has unsent data"));
    }
    let mut line = serde_json::to_vec(reply).map_err(io::Error::other)?;
    line.push(b'\n');
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let iov = [io::IoSlice::new(&line)];
    let n = loop {
        match sendmsg::<UnixAddr>(
            c.stream.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => break n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    c.wbuf.extend_from_slice(&line[n..]);
    Ok(())
}

/// A listening socket for libcontainer's `--console-socket`: the container's init (or an exec's
/// process) connects through it and sends its pty master.
struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// How long the pty master may take to arrive after libcontainer's build returned (it is sent
/// before the process is reported started, so it is normally there already).
const CONSOLE_WAIT: Duration = Duration::from_secs(10);

impl ConsoleSocket {
    fn bind(dir: &Path, name: &str) -> io::Result<Self> {
        let sub = dir.join("console");
        fs::create_dir_all(&sub)?;
        let path = sub.join(name);
        let _ = fs::remove_file(&path);
        let handle = File::open(&sub)?;
        let addr = format!(
            "/proc/self/fd/{}/{name}",
            std::os::fd::AsRawFd::as_raw_fd(&handle)
        );
        let listener = UnixListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener, path })
    }

    /// Accepts the connection and receives the pty master.
    fn receive(&self) -> io::Result<OwnedFd> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
        use std::os::fd::{AsRawFd, FromRawFd};
        wait_readable(self.listener.as_fd(), CONSOLE_WAIT)?;
        let (stream, _) = self.listener.accept()?;
        wait_readable(stream.as_fd(), CONSOLE_WAIT)?;
        let mut buf = [0u8; 256];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
        let msg = recvmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut master = None;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in this process for us; nobody
                    // else owns it.
                    #[allow(unsafe_code)]
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    master.get_or_insert(owned);
                }
            }
        }
        master.ok_or_else(|| io::Error::other("no pty master came with the console message"))
    }

    /// Removes the symlinks libcontainer made to this socket in the container's directory.
    fn remove_links(&self, container_dir: &Path) {
        let Ok(rd) = fs::read_dir(container_dir) else {
            return;
        };
        for e in rd.flatten() {
            if fs::read_link(e.path()).is_ok_and(|t| t == self.path) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, limit: Duration) -> io::Result<()> {
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                IoErrorKind::TimedOut,
                "timed out waiting for the console socket",
            ));
        }
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        let ms = left.as_millis().min(u16::MAX as u128) as u16;
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn send(c: &mut Conn, reply: &Response) {
    if let Ok(mut line) = serde_json::to_vec(reply) {
        line.push(b'\n');
        c.wbuf.extend_from_slice(&line);
    }
    flush_conn(c);
}

fn flush_conn(c: &mut Conn) {
    while !c.wbuf.is_empty() {
        match c.stream.write(&c.wbuf) {
            Ok(0) => break,
            Ok(n) => {
                c.wbuf.drain(..n);
            }
            Err(e) if e.kind() == IoErrorKind::Interrupted => {}
            Err(e) if e.kind() == IoErrorKind::WouldBlock => break,
            Err(_) => {
                c.wbuf.clear();
                c.eof = true;
                c.closing = true;
                break;
            }
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((r, w))
}

fn werr(kind: ErrorKind, id: Option<&str>, message: impl ToString) -> WireError {
    WireError {
        kind,
        id: id.map(str::to_owned),
        message: message.to_string(),
    }
}

fn err(kind: ErrorKind, id: Option<&str>, message: impl ToString) -> Response {
    Response::Error(werr(kind, id, message))
}

fn nf(id: &str) -> WireError {
    werr(ErrorKind::NotFound, Some(id), "no such container")
}

fn not_found(id: &str) -> Response {
    Response::Error(nf(id))
}

fn io_context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// An error and its sources, `: `-joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The message a CRI client sees for a failed create or exec: runc's wording for a missing
/// executable when libcontainer's init reported one, the whole error chain otherwise.
fn create_message(e: &dyn std::error::Error) -> String {
    let full = chain(e);
    match full.find("exec: \"") {
        Some(start) => {
            let rest = &full[start..];
            let end = rest
                .find("$PATH")
                .map(|i| i + "$PATH".len())
                .or_else(|| rest.find("directory").map(|i| i + "directory".len()))
                .or_else(|| {
                    rest.find("permission denied")
                        .map(|i| i + "permission denied".len())
                })
                .unwrap_or(rest.len());
            format!("unable to start container process: {}", &rest[..end])
        }
        None => full,
    }
}

fn take_oom_score_adj(spec: &mut Spec) -> Option<i32> {
    let mut process = spec.process().clone()?;
    let v = process.oom_score_adj()?;
    process.set_oom_score_adj(None);
    spec.set_process(Some(process));
    Some(v)
}

/// Sets the container init's oom_score_adj. Lowering it below what the process inherited needs
/// CAP_SYS_RESOURCE; like containerd's `restrict_oom_score_adj` we then keep the current value
/// and return a note for the container's status instead of failing.
fn apply_oom_score_adj(pid: i32, want: i32) -> Option<String> {
    let path = format!("/proc/{pid}/oom_score_adj");
    let current: i32 = fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if want == current {
        return None;
    }
    match fs::write(&path, want.to_string()) {
        Ok(()) => None,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            Some(format!(
                "oom_score_adj {want} restricted to {current}: lowering it needs CAP_SYS_RESOURCE"
            ))
        }
        Err(e) => Some(format!("oom_score_adj {want} not applied: {e}")),
    }
}

/// The kernel's OOM-kill counter of a container's memory cgroup (v1 `memory.oom_control`
/// `oom_kill`, v2 `memory.events` `oom_kill`); 0 when unknown.
pub fn oom_kill_count(cgroups_path: &Path) -> u64 {
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    let candidates = [
        (
            Path::new("/sys/fs/cgroup/memory")
                .join(rel)
                .join("memory.oom_control"),
            "oom_kill",
        ),
        (
            Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
            "oom_kill",
        ),
    ];
    for (file, key) in candidates {
        if let Ok(text) = fs::read_to_string(&file) {
            for line in text.lines() {
                let mut it = line.split_whitespace();
                if it.next() == Some(key) {
                    return it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                }
            }
        }
    }
    0
}

/// libcontainer's signal type (it links another nix version).
fn lc_signal(signal: i32) -> Option<libcontainer::signal::Signal> {
    libcontainer::signal::Signal::try_from(signal).ok()
}

fn pid_alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None).is_ok()
}

/// New session, stdin from /dev/null, stdout and stderr to `DIR/supervisor.log`.
fn detach(dir: &Path) -> io::Result<()> {
    let _ = nix::unistd::setsid();
    let null = File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    let logf = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG_NAME))?;
    nix::unistd::dup2_stdout(&logf)?;
    nix::unistd::dup2_stderr(&logf)?;
    Ok(())
}

/// Moves this process into `cgroup`: an absolute cgroupfs directory, or a cgroup path that is
/// joined in every v1 hierarchy (or the v2 root) — the supervisor's own cgroup outside the
/// pod's limits.
pub fn join_cgroup(cgroup: &Path) -> io::Result<()> {
    let pid = std::process::id().to_string();
    let root = Path::new("/sys/fs/cgroup");
    if cgroup.starts_with(root) {
        fs::create_dir_all(cgroup)?;
        return fs::write(cgroup.join("cgroup.procs"), &pid);
    }
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(rel);
        fs::create_dir_all(&dir)?;
        return fs::write(dir.join("cgroup.procs"), &pid);
    }
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "unified" || name == "systemd" || entry.file_type()?.is_symlink() {
            continue;
        }
        let hier = entry.path();
        if !hier.join("cgroup.procs").exists() {
            continue;
        }
        let mut dir = hier.clone();
        for comp in rel.components() {
            let parent = dir.clone();
            dir.push(comp);
            if !dir.exists() {
                fs::create_dir(&dir)?;
                if name.contains("cpuset") {
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let v = fs::read_to_string(parent.join(f))?;
                        fs::write(dir.join(f), v.trim())?;
                    }
                }
            }
        }
        fs::write(dir.join("cgroup.procs"), &pid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = Options::parse(
            ["--dir", "/x", "--pid-namespace", "--cgroup", "/c"]
                .into_iter()
                .map(String::from),
        )
        .unwrap();
        assert_eq!(o.dir, PathBuf::from("/x"));
        assert!(o.pid_namespace);
        assert_eq!(o.cgroup, Some(PathBuf::from("/c")));
        assert!(Options::parse(std::iter::empty()).is_err());
        assert!(Options::parse(["--bogus".to_string()].into_iter()).is_err());
    }

    #[test]
    fn missing_executable_message() {
        #[derive(Debug)]
        struct E(String);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for E {}
        let e = E(r#"failed to run container process: channel error: error in executing process : executor validation failed: exec: "nosuchcmd": executable file not found in $PATH"#.into());
        assert_eq!(
            create_message(&e),
            r#"unable to start container process: exec: "nosuchcmd": executable file not found in $PATH"#
        );
    }
}
