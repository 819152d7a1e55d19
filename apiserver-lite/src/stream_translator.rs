//! WebSocket → SPDY translation for `pods/exec` and `pods/attach` (upstream's
//! `StreamTranslatorHandler`, on by default since 1.30): kubectl and the client libraries speak
//! the WebSocket channel protocols (`v5.channel.k8s.io`, `v4.channel.k8s.io`) to the API server;
//! the API server speaks SPDY to the kubelet, as kubelets have always understood it.
//!
//! The client's side is served by `streaming::remotecommand` like any streaming server, with a
//! [`Backend`] whose exec/attach open a SPDY session to the kubelet (`streaming::client`) and
//! copy the channels over: stdin, stdout, stderr, resize. The kubelet's answer on its error
//! stream becomes the exit code (or the error) the WebSocket side reports, so kubectl's exit code
//! is the command's.

use std::net::SocketAddr;
use std::sync::Arc;

use streaming::client::{self, ClientError, ExecIo};
use streaming::remotecommand::{self, Command, Options, Timeouts};
use streaming::{Backend, Duplex, StreamError, StreamIo};

use crate::kubelet_client::KubeletClient;
use crate::pod_log::kubelet_connect;

/// How long the kubelet gets to open the SPDY streams (upstream's stream creation timeout).
const STREAM_CREATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves the client's WebSocket exec/attach, relaying it to the kubelet at `addr` as a SPDY
/// request for `target` (`/exec/{ns}/{pod}/{container}?…`).
pub fn serve<B: Send + 'static>(
    req: http::Request<B>,
    kubelets: KubeletClient,
    addr: SocketAddr,
    target: String,
    exec: bool,
) -> http::Response<streaming::httpstream::Body> {
    let (opts, cmd) = match Options::from_query(target.split_once('?').map(|(_, q)| q)) {
        Ok(o) => o,
        Err(e) => return streaming::httpstream::error_response(http::StatusCode::BAD_REQUEST, e),
    };
    let command = if exec {
        Command::Exec {
            container_id: String::new(),
            cmd,
        }
    } else {
        Command::Attach {
            container_id: String::new(),
        }
    };
    let backend = Arc::new(KubeletSpdy {
        kubelets,
        addr,
        target,
    });
    remotecommand::serve(
        req,
        backend,
        command,
        opts,
        Timeouts {
            idle: None,
            creation: STREAM_CREATION_TIMEOUT,
        },
    )
}

/// The kubelet end: one SPDY session per exec/attach.
struct KubeletSpdy {
    kubelets: KubeletClient,
    addr: SocketAddr,
    target: String,
}

impl KubeletSpdy {
    /// Runs the session; the status the kubelet wrote on the error stream.
    async fn relay(
        &self,
        io: StreamIo,
    ) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status, StreamError> {
        let tls = kubelet_connect(&self.kubelets, self.addr)
            .await
            .map_err(|e| {
                StreamError::Internal(format!(
                    "error dialing backend: dial tcp {}: {e}",
                    self.addr
                ))
            })?;
        let (session, protocol) =
            client::connect(tls, &self.target, &remotecommand::SPDY_PROTOCOLS)
                .await
                .map_err(|e| match e {
                    ClientError::Refused { body, .. } => StreamError::Internal(body),
                    e => StreamError::Internal(e.to_string()),
                })?;
        let status = client::exec(
            &session,
            &protocol,
            ExecIo {
                stdin: io.stdin,
                stdout: io.stdout,
                stderr: io.stderr,
                tty: io.tty,
                resize: io.resize,
            },
        )
        .await
        .map_err(|e| StreamError::Internal(e.to_string()));
        session.close();
        status
    }
}

/// The kubelet's own wording, without the prefix our side adds again.
fn message(
    status: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
    prefix: &str,
) -> String {
    let m = status.message.clone().unwrap_or_default();
    m.strip_prefix(prefix).map(str::to_string).unwrap_or(m)
}

#[async_trait::async_trait]
impl Backend for KubeletSpdy {
    async fn exec(&self, _: &str, _: Vec<String>, io: StreamIo) -> Result<i32, StreamError> {
        let status = self.relay(io).await?;
        client::exit_code(&status).ok_or_else(|| {
            StreamError::Internal(message(&status, "error executing command in container: "))
        })
    }

    async fn attach(&self, _: &str, io: StreamIo) -> Result<(), StreamError> {
        let status = self.relay(io).await?;
        match client::exit_code(&status) {
            Some(_) => Ok(()),
            None => Err(StreamError::Internal(message(
                &status,
                "error attaching to container: ",
            ))),
        }
    }

    async fn port_forward(&self, _: &str, _: u16, _: Box<dyn Duplex>) -> Result<(), StreamError> {
        Err(StreamError::InvalidArgument(
            "port-forward is not translated".into(),
        ))
    }
}
