//! The HTTP side of a streaming request, shared by exec, attach and port-forward: the upgrade
//! check and sub-protocol negotiation of apimachinery's `httpstream` (`Handshake`,
//! `X-Stream-Protocol-Version`), error responses, and query-string parsing.
//!
//! Both SPDY and WebSocket requests start as an HTTP/1.1 upgrade; the handlers answer
//! `101 Switching Protocols` and run the protocol on the upgraded connection in a task of their
//! own. A request that cannot be upgraded gets a plain-text error with upstream's wording:
//! 400 for a missing upgrade or a malformed request, 403 when no sub-protocol matches (what
//! `httpstream.Handshake` and `x/net/websocket` answer).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use http::{Response, StatusCode};
use http_body_util::Full;

/// The response body of every streaming handler.
pub type Body = Full<Bytes>;

/// The header a SPDY client lists its sub-protocols in, and the server answers with its pick.
pub const HEADER_PROTOCOL_VERSION: &str = "X-Stream-Protocol-Version";
/// The header listing the server's sub-protocols when negotiation failed.
pub const HEADER_ACCEPTED_PROTOCOL_VERSIONS: &str = "X-Accepted-Stream-Protocol-Versions";

/// A plain-text error response, as Go's `http.Error`.
pub fn error_response(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut body = msg.into();
    body.push('\n');
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("X-Content-Type-Options", "nosniff")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

fn header_tokens<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = String> + 'a {
    let name = name.to_owned();
    headers
        .get_all(name.as_str())
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
}

/// Whether `Connection` has the `upgrade` token and `Upgrade` names `protocol`
/// (case-insensitive).
pub fn is_upgrade_to(headers: &HeaderMap, protocol: &str) -> bool {
    header_tokens(headers, CONNECTION.as_str()).any(|t| t.eq_ignore_ascii_case("upgrade"))
        && header_tokens(headers, UPGRADE.as_str()).any(|t| t.eq_ignore_ascii_case(protocol))
}

/// Negotiates a SPDY sub-protocol (`httpstream.Handshake`): the first protocol the client lists
/// that the server supports. Errors are ready-made responses.
pub fn handshake(headers: &HeaderMap, server: &[&str]) -> Result<String, Box<Response<Body>>> {
    let client: Vec<String> = header_tokens(headers, HEADER_PROTOCOL_VERSION).collect();
    if client.is_empty() {
        return Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            format!("unable to upgrade: {HEADER_PROTOCOL_VERSION} is required"),
        )));
    }
    if let Some(p) = client.iter().find(|c| server.contains(&c.as_str())) {
        return Ok(p.clone());
    }
    let mut resp = error_response(
        StatusCode::FORBIDDEN,
        format!(
            "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
            client.join(" "),
            server.join(" ")
        ),
    );
    for p in server {
        resp.headers_mut().append(
            HEADER_ACCEPTED_PROTOCOL_VERSIONS,
            HeaderValue::from_str(p).expect("protocol names are header-safe"),
        );
    }
    Err(Box::new(resp))
}

/// Checks a SPDY upgrade request (`spdy.responseUpgrader`) and negotiates its sub-protocol.
pub fn spdy_handshake(headers: &HeaderMap, server: &[&str]) -> Result<String, Box<Response<Body>>> {
    if !is_upgrade_to(headers, crate::spdy::UPGRADE) {
        return Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            format!(
                "unable to upgrade: missing upgrade headers in request: Connection: {:?}, Upgrade: {:?}",
                headers.get(CONNECTION),
                headers.get(UPGRADE)
            ),
        )));
    }
    handshake(headers, server)
}

/// The `101 Switching Protocols` answer to a SPDY upgrade.
pub fn spdy_switching_protocols(protocol: &str) -> Response<Body> {
    let mut b = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, crate::spdy::UPGRADE);
    if !protocol.is_empty() {
        b = b.header(HEADER_PROTOCOL_VERSION, protocol);
    }
    b.body(Body::default())
        .expect("static response parts are valid")
}

/// Runs `serve` on the connection once the `101` response went out (hyper hands the upgraded
/// connection over only then).
pub fn spawn_upgraded<B, F, Fut>(req: http::Request<B>, serve: F)
where
    B: Send + 'static,
    F: FnOnce(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve(hyper_util::rt::TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!(error = %e, "streaming: the connection was not upgraded"),
        }
    });
}

/// The values of query parameter `name`, decoded (`%xx` and `+`), in order.
pub fn query_values(query: Option<&str>, name: &str) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// Whether query parameter `name` is true (`1`, `true`, as Go's `strconv.ParseBool`).
pub fn query_bool(query: Option<&str>, name: &str) -> bool {
    query_values(query, name)
        .first()
        .is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_decodes_and_repeats() {
        let q = Some("command=sh&command=-c&command=echo+a%20b%3B&stdin=true&tty=0&x=%zz");
        assert_eq!(query_values(q, "command"), ["sh", "-c", "echo a b;"]);
        assert!(query_bool(q, "stdin"));
        assert!(!query_bool(q, "tty"));
        assert!(!query_bool(q, "stdout"));
        assert_eq!(query_values(q, "x"), ["%zz"]);
    }

    #[test]
    fn handshake_picks_the_clients_first_supported_protocol() {
        let mut h = HeaderMap::new();
        h.append(
            HEADER_PROTOCOL_VERSION,
            "v5.channel.k8s.io".parse().unwrap(),
        );
        h.append(
            HEADER_PROTOCOL_VERSION,
            "v4.channel.k8s.io".parse().unwrap(),
        );
        h.append(
            HEADER_PROTOCOL_VERSION,
            "v3.channel.k8s.io".parse().unwrap(),
        );
        let got = handshake(&h, &["v3.channel.k8s.io", "v4.channel.k8s.io"]).unwrap();
        assert_eq!(got, "v4.channel.k8s.io");
        let err = handshake(&h, &["portforward.k8s.io"]).unwrap_err();
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        let err = handshake(&HeaderMap::new(), &["portforward.k8s.io"]).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
}
