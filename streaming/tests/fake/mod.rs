//! A fake runtime behind the streaming [`Backend`] seam, shared by the streaming tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use streaming::{Backend, Duplex, StreamError, StreamIo, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend with a few commands: `echo ARGS` (stdout, and `err` on stderr), `exit N`, `cat`
/// (stdin to stdout), `resize N` (records N terminal sizes), anything else fails to start.
/// Port-forward connects to 127.0.0.1:port; sandbox `bad` fails.
#[derive(Default)]
pub struct Fake {
    pub resizes: Mutex<Vec<TerminalSize>>,
    pub running: AtomicUsize,
}

struct Running<'a>(&'a AtomicUsize);
impl<'a> Running<'a> {
    fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::SeqCst);
        Running(c)
    }
}
impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Backend for Fake {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        io: StreamIo,
    ) -> Result<i32, StreamError> {
        let _running = Running::new(&self.running);
        assert_eq!(container_id, "c1");
        let StreamIo {
            stdin,
            stdout,
            stderr,
            resize,
            ..
        } = io;
        match cmd[0].as_str() {
            "echo" => {
                let mut out = stdout.expect("echo needs stdout");
                out.write_all(format!("{}\n", cmd[1..].join(" ")).as_bytes())
                    .await?;
                if let Some(mut err) = stderr {
                    err.write_all(b"err\n").await?;
                }
                Ok(0)
            }
            "exit" => Ok(cmd[1].parse().unwrap()),
            "cat" => {
                let (mut inp, mut out) = (
                    stdin.expect("cat needs stdin"),
                    stdout.expect("cat needs stdout"),
                );
                tokio::io::copy(&mut inp, &mut out).await?;
                out.shutdown().await?;
                Ok(0)
            }
            "resize" => {
                let want: usize = cmd[1].parse().unwrap();
                let mut sizes = resize.expect("resize needs a tty");
                for _ in 0..want {
                    let Some(s) = sizes.recv().await else { break };
                    self.resizes.lock().unwrap().push(s);
                }
                stdout.unwrap().write_all(b"resized\n").await?;
                Ok(0)
            }
            other => Err(StreamError::NotFound(format!(
                "executable file not found: {other}"
            ))),
        }
    }

    async fn attach(&self, _: &str, io: StreamIo) -> Result<(), StreamError> {
        let (mut inp, mut out) = (io.stdin.unwrap(), io.stdout.unwrap());
        tokio::io::copy(&mut inp, &mut out).await?;
        Ok(())
    }

    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
        mut stream: Box<dyn Duplex>,
    ) -> Result<(), StreamError> {
        if sandbox_id == "bad" {
            return Err(StreamError::NotFound("sandbox bad not found".into()));
        }
        // As a runtime does: the client's end of input half-closes the pod's connection; the
        // forward ends when the pod's side does.
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let (mut tr, mut tw) = tcp.into_split();
        let (mut sr, mut sw) = tokio::io::split(&mut stream);
        let upstream = async {
            let _ = tokio::io::copy(&mut sr, &mut tw).await;
            let _ = tw.shutdown().await;
            std::future::pending::<()>().await
        };
        let downstream = async {
            tokio::io::copy(&mut tr, &mut sw).await?;
            sw.shutdown().await
        };
        tokio::select! {
            _ = upstream => unreachable!(),
            r = downstream => Ok(r?),
        }
    }
}

/// A TCP server that answers every connection with `{tag}:` and the bytes it received.
pub async fn echo_listener(tag: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                s.write_all(tag.as_bytes()).await.unwrap();
                s.write_all(b":").await.unwrap();
                s.write_all(&got).await.unwrap();
            });
        }
    });
    port
}
