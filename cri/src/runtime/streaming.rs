//! The runtime side of `kubectl exec`, `attach` and `port-forward`: the built-in runtime as a
//! [`streaming::Backend`] (upstream: containerd's `criService.execInContainer`, `attachContainer`
//! and `portForward` behind the CRI streaming server).
//!
//! - **exec**: the pod's supervisor starts the process (libcontainer tenant, a pty from the
//!   container's devpts with a TTY) and hands us its stdio fds over its socket (`ExecStream`);
//!   we copy between them and the client's streams here, so no byte of an exec passes through
//!   the supervisor's loop, and learn the exit code on the same connection. A resize is
//!   `TIOCSWINSZ` on the pty master.
//! - **attach**: the supervisor hands us a dup of the container's stdin pipe (or its pty master)
//!   and streams a copy of its output (`Attach`). With `stdin_once` the attach takes the
//!   supervisor's only write end, so the container reads EOF when the client's stdin ends.
//! - **port-forward**: a short-lived thread enters the sandbox's network namespace, connects to
//!   the port on loopback and hands the socket back (a socket stays in the namespace it was made
//!   in); then the bytes are copied both ways.
//!
//! Everything an exec or attach holds (fds, the supervisor connection, copies) lives in the
//! future the streaming server awaits: no task is spawned, so a client that goes away (the future
//! is dropped, or a write to it fails) leaves nothing of ours behind. The process itself keeps
//! running, as with containerd; its stdin reads EOF and its output pipes are closed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use streaming::{Reader, StreamError, StreamIo, TerminalSize, Writer};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

use super::Runtime;
use crate::supervisor::{
    self, AttachEvent, ErrorKind, ExecStreamRequest, SupervisorClient, SupervisorError,
};

/// The built-in runtime serves the streaming server directly: hand an `Arc<Runtime>` to it as
/// its `Arc<dyn streaming::Backend>`.
#[async_trait::async_trait]
impl streaming::Backend for Runtime {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        io: StreamIo,
    ) -> Result<i32, StreamError> {
        if cmd.is_empty() {
            return Err(StreamError::InvalidArgument(
                "exec needs a command".to_string(),
            ));
        }
        let (id, client) = self.running_container(container_id).await?;
        let req = ExecStreamRequest {
            id: id.clone(),
            args: cmd,
            env: Vec::new(),
            tty: io.tty,
            stdin: io.stdin.is_some(),
        };
        let session = client
            .exec_stream(req)
            .await
            .map_err(|e| exec_error(&id, e))?;
        if io.tty {
            exec_tty(session, io).await
        } else {
            exec_pipes(session, io).await
        }
    }

    async fn attach(&self, container_id: &str, io: StreamIo) -> Result<(), StreamError> {
        let (id, client) = self.running_container(container_id).await?;
        let session = client
            .attach(&id, io.stdin.is_some())
            .await
            .map_err(|e| match e.kind() {
                Some(ErrorKind::InvalidState) => not_running("CONTAINER_EXITED"),
                Some(ErrorKind::NotFound) => not_found(&id),
                _ => StreamError::Internal(format!("failed to attach to container {id:?}: {e}")),
            })?;
        attach(session, io).await
    }

    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
        stream: Box<dyn streaming::Duplex>,
    ) -> Result<(), StreamError> {
        let sb = self.sandbox(sandbox_id).map_err(|_| {
            StreamError::NotFound(format!(
                "failed to find sandbox {sandbox_id:?} in store: not found"
            ))
        })?;
        let (id, netns, stopped) = {
            let r = sb.record.read();
            (r.id.clone(), r.netns.clone(), r.stopped)
        };
        if stopped && netns.is_some() {
            return Err(StreamError::InvalidArgument(format!(
                "network namespace for sandbox {id:?} is closed"
            )));
        }
        let conn = connect_in_netns(netns.clone(), id.clone(), port).await?;
        conn.set_nonblocking(true)?;
        let conn = tokio::net::TcpStream::from_std(conn)?;
        match streaming::proxy::splice(stream, conn).await {
            Ok(_) => Ok(()),
            // One side reset the connection: that ends this forward, like a close.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Runtime {
    /// The full id and supervisor of a running container, or upstream's errors.
    async fn running_container(
        &self,
        container_id: &str,
    ) -> Result<(String, std::sync::Arc<SupervisorClient>), StreamError> {
        let c = self
            .container(container_id)
            .map_err(|s| StreamError::NotFound(s.message().to_string()))?;
        let (id, client, st) = self
            .supervised(&c)
            .await
            .map_err(|s| StreamError::Internal(s.message().to_string()))?;
        match st.status {
            supervisor::Status::Running => Ok((id, client)),
            supervisor::Status::Created => Err(not_running("CONTAINER_CREATED")),
            supervisor::Status::Exited => Err(not_running("CONTAINER_EXITED")),
        }
    }
}

/// containerd's refusal to exec in or attach to a container that does not run.
fn not_running(state: &str) -> StreamError {
    StreamError::InvalidArgument(format!("container is in {state} state"))
}

fn not_found(id: &str) -> StreamError {
    StreamError::NotFound(format!(
        "an error occurred when try to find container {id:?}: not found"
    ))
}

/// A failed exec start in containerd + runc's words (`kubectl exec` shows this).
fn exec_error(id: &str, e: SupervisorError) -> StreamError {
    match (e.kind(), &e) {
        (Some(ErrorKind::NotFound), _) => not_found(id),
        (Some(ErrorKind::InvalidState), _) => not_running("CONTAINER_EXITED"),
        (Some(ErrorKind::Exec), SupervisorError::Remote { message, .. }) => {
            StreamError::Internal(format!(
                "failed to exec in container: failed to start exec {:?}: OCI runtime exec failed: exec failed: {message}: unknown",
                super::state::new_id()
            ))
        }
        _ => StreamError::Internal(format!("failed to exec in container: {e}")),
    }
}

/// An exec without a TTY: stdin, stdout and stderr are pipes.
async fn exec_pipes(
    mut session: supervisor::ExecSession,
    io: StreamIo,
) -> Result<i32, StreamError> {
    let mut fds = std::mem::take(&mut session.fds).into_iter();
    let stdin_w = if io.stdin.is_some() { fds.next() } else { None };
    let (Some(stdout_r), Some(stderr_r)) = (fds.next(), fds.next()) else {
        return Err(StreamError::Internal("the exec's stdio is missing".into()));
    };
    let stdin = feed_stdin(io.stdin, stdin_w, None, false);
    let outputs = async {
        let exit = async {
            session
                .wait()
                .await
                .map_err(|e| StreamError::Internal(format!("waiting for the exec: {e}")))
        };
        let (code, _, _) = tokio::try_join!(
            exit,
            copy_out(stdout_r, io.stdout, false),
            copy_out(stderr_r, io.stderr, false)
        )?;
        Ok(code)
    };
    tokio::select! {
        r = outputs => r,
        _ = stdin => unreachable!("feeding stdin never finishes"),
    }
}

/// An exec with a TTY: one pty master for input and output, resizes on it.
async fn exec_tty(mut session: supervisor::ExecSession, io: StreamIo) -> Result<i32, StreamError> {
    let Some(master) = session.fds.pop() else {
        return Err(StreamError::Internal("the exec's pty is missing".into()));
    };
    let reader = master.try_clone()?;
    let stdin = feed_stdin(io.stdin, Some(master), io.resize, true);
    let outputs = async {
        let exit = async {
            session
                .wait()
                .await
                .map_err(|e| StreamError::Internal(format!("waiting for the exec: {e}")))
        };
        let (code, _) = tokio::try_join!(exit, copy_out(reader, io.stdout, true))?;
        Ok(code)
    };
    tokio::select! {
        r = outputs => r,
        _ = stdin => unreachable!("feeding stdin never finishes"),
    }
}

/// Attached: the container's output until it exits, while stdin (and resizes) go in.
async fn attach(mut session: supervisor::AttachSession, io: StreamIo) -> Result<(), StreamError> {
    let StreamIo {
        stdin,
        mut stdout,
        mut stderr,
        resize,
        ..
    } = io;
    let tty = session.tty;
    let input = feed_stdin(stdin, session.fd.take(), resize, tty);
    let output = async {
        while let Some(ev) = session
            .next()
            .await
            .map_err(|e| StreamError::Internal(format!("attach: {e}")))?
        {
            match ev {
                AttachEvent::Output {
                    stderr: false,
                    data,
                } => write_to(&mut stdout, &data).await?,
                AttachEvent::Output { stderr: true, data } => {
                    // With a TTY the terminal merged everything into stdout anyway.
                    let target = if tty { &mut stdout } else { &mut stderr };
                    write_to(target, &data).await?
                }
                AttachEvent::Exited(_) => break,
            }
        }
        for w in [&mut stdout, &mut stderr].into_iter().flatten() {
            let _ = w.shutdown().await;
        }
        Ok::<(), StreamError>(())
    };
    tokio::select! {
        r = output => r,
        _ = input => unreachable!("feeding stdin never finishes"),
    }
}

async fn write_to(w: &mut Option<Writer>, data: &[u8]) -> Result<(), StreamError> {
    if let Some(w) = w {
        w.write_all(data).await?;
        w.flush().await?;
    }
    Ok(())
}

/// Copies the client's stdin into `fd` until it ends, then closes `fd` (the process reads EOF;
/// with a TTY nothing more happens). With a pty, resizes are applied as they come, ahead of
/// input that arrived after them. Never returns: it is raced against the output.
async fn feed_stdin(
    stdin: Option<Reader>,
    fd: Option<OwnedFd>,
    mut resize: Option<mpsc::Receiver<TerminalSize>>,
    tty: bool,
) {
    let mut target = fd.and_then(|fd| FdStream::new(fd, false).ok());
    let mut stdin = stdin;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let resize_next = async {
            match (&mut resize, tty && target.is_some()) {
                (Some(r), true) => r.recv().await,
                _ => std::future::pending().await,
            }
        };
        let read_next = async {
            match (&mut stdin, &target) {
                (Some(s), Some(_)) => s.read(&mut buf).await.unwrap_or(0),
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            size = resize_next => match (size, &target) {
                (Some(size), Some(t)) => {
                    let _ = set_window_size(t, size);
                }
                _ => resize = None,
            },
            n = read_next => {
                if n == 0 {
                    stdin = None;
                    if !tty {
                        // EOF for the process.
                        target = None;
                    }
                    continue;
                }
                let Some(t) = target.as_mut() else { continue };
                if t.write_all(&buf[..n]).await.is_err() {
                    stdin = None;
                    target = None;
                }
            }
        }
    }
}

/// Copies one output fd to the client's stream (or nowhere) until EOF, then closes the stream.
async fn copy_out(fd: OwnedFd, w: Option<Writer>, pty: bool) -> Result<(), StreamError> {
    let mut r = FdStream::new(fd, pty)?;
    match w {
        Some(mut w) => {
            tokio::io::copy(&mut r, &mut w).await?;
            w.flush().await?;
            let _ = w.shutdown().await;
        }
        None => {
            tokio::io::copy(&mut r, &mut tokio::io::sink()).await?;
        }
    }
    Ok(())
}

/// `TIOCSWINSZ` on a pty master.
fn set_window_size(master: &FdStream, size: TerminalSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which lives across the call.
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(master.fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pipe end or pty master as a tokio stream (non-blocking, driven by epoll). A pty master
/// reports `EIO` once the terminal's other side is closed: with `eio_is_eof` that is the end.
struct FdStream {
    fd: AsyncFd<File>,
    eio_is_eof: bool,
}

impl FdStream {
    fn new(fd: OwnedFd, eio_is_eof: bool) -> io::Result<Self> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: the `File` owns the fd and lives inside the `AsyncFd`, which never replaces
        // or closes it before deregistering.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(File::from(fd))? };
        Ok(Self { fd, eio_is_eof })
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|f| f.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if this.eio_is_eof && e.raw_os_error() == Some(libc::EIO) => {
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.fd.poll_write_ready(cx))?;
            match guard.try_io(|f| f.get_ref().write(data)) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Connects to `port` on loopback inside `netns` (the host's with `None`) from a thread of its
/// own that enters the namespace and ends right after: IPv4 first, then IPv6, as containerd.
async fn connect_in_netns(
    netns: Option<PathBuf>,
    sandbox_id: String,
    port: u16,
) -> Result<TcpStream, StreamError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("port-forward".into())
        .spawn(move || {
            let _ = tx.send(connect_from_thread(netns, &sandbox_id, port));
        })?;
    rx.await
        .map_err(|_| StreamError::Internal("the port-forward thread died".into()))?
}

fn connect_from_thread(
    netns: Option<PathBuf>,
    sandbox_id: &str,
    port: u16,
) -> Result<TcpStream, StreamError> {
    let ns_name = netns
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "host".into());
    if let Some(path) = &netns {
        let f = File::open(path).map_err(|e| {
            StreamError::Internal(format!(
                "failed to execute portforward in network namespace {ns_name:?}: {e}"
            ))
        })?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            StreamError::Internal(format!(
                "failed to execute portforward in network namespace {ns_name:?}: {e}"
            ))
        })?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    match TcpStream::connect(v4) {
        Ok(s) => Ok(s),
        Err(e4) => TcpStream::connect(v6).map_err(|e6| {
            StreamError::Internal(format!(
                "failed to execute portforward in network namespace {ns_name:?}: failed to connect to localhost:{port} inside namespace {sandbox_id:?}, IPv4: dial tcp4 {v4}: connect: {} IPv6 dial tcp6 {v6}: connect: {} ",
                os_message(&e4),
                os_message(&e6)
            ))
        }),
    }
}

/// Go's wording of an errno (`connection refused`), without Rust's `(os error N)`.
fn os_message(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_lowercase(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_wording_matches_go() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(os_message(&e), "connection refused");
    }

    #[tokio::test]
    async fn fd_stream_pipes_bytes_and_eof() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut r = FdStream::new(r, false).unwrap();
        let mut w = FdStream::new(w, false).unwrap();
        w.write_all(b"hello").await.unwrap();
        drop(w);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello");
    }
}
