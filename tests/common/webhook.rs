//! A test admission webhook server with its own TLS: an rcgen-minted CA (its PEM is the
//! webhooks' `caBundle`) and a serving certificate for 127.0.0.1, served by plain threads with
//! rustls (one thread per kept-alive connection). The path picks the behaviour:
//!
//! - `/allow`: allowed; `/deny`: refused with code 403 and a message;
//! - `/label`: allowed with a JSONPatch adding the label `webhook-added=yes` and a warning;
//! - `/count`: allowed with a JSONPatch setting the annotation `count-calls` to one more than the
//!   object carries (so a reinvocation shows);
//! - `/slow`: answers after 3 s; `/garbage`: answers 200 with a body that is not JSON;
//! - `/wronguid`: an AdmissionReview answer for another request's uid.
//!
//! Every review received is recorded (`reviews()`). Self-contained, so the webhook benchmark
//! includes it too (`#[path]`).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

pub struct WebhookServer {
    pub addr: SocketAddr,
    /// The CA that signed the serving certificate (PEM).
    pub ca_pem: String,
    reviews: Arc<Mutex<Vec<Value>>>,
    /// Whether received reviews are recorded (the benchmark turns it off).
    record: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl WebhookServer {
    pub fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut ca_params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "test-webhook-ca");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let ca = ca_params.self_signed(&ca_key).expect("the CA certificate");
        let ca_pem = ca.pem();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("the CA issuer");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("serving certificate parameters");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("a serving key");
        let cert = params
            .signed_by(&key, &issuer)
            .expect("the serving certificate");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("a TLS server configuration");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the webhook server");
        let addr = listener.local_addr().unwrap();
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (reviews, record, stop) = (reviews.clone(), record.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(tcp) = conn else { continue };
                    let _ = tcp.set_nodelay(true);
                    let (config, reviews, record, stop) = (
                        config.clone(),
                        reviews.clone(),
                        record.clone(),
                        stop.clone(),
                    );
                    std::thread::spawn(move || serve(tcp, config, reviews, record, stop));
                }
            })
        };
        WebhookServer {
            addr,
            ca_pem,
            reviews,
            record,
            stop,
            accept: Some(accept),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The caBundle field value (base64 of the CA PEM).
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    /// The `request` of every review received so far.
    pub fn reviews(&self) -> Vec<Value> {
        self.reviews.lock().unwrap().clone()
    }

    pub fn set_recording(&self, on: bool) {
        self.record.store(on, Ordering::SeqCst);
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    reviews: Arc<Mutex<Vec<Value>>>,
    record: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut reader = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    while !stop.load(Ordering::SeqCst) {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if record.load(Ordering::SeqCst) {
            reviews.lock().unwrap().push(review["request"].clone());
        }
        let route = path.split('?').next().unwrap_or("").to_string();
        let answer = respond(&route, &review);
        let stream = reader.get_mut();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if stream.write_all(head.as_bytes()).is_err()
            || stream.write_all(&answer).is_err()
            || stream.flush().is_err()
        {
            return;
        }
    }
}

fn patch(ops: Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(ops.to_string())
}

/// The answer for one review at `route`.
fn respond(route: &str, review: &Value) -> Vec<u8> {
    let req = &review["request"];
    let uid = req["uid"].clone();
    let version = review["apiVersion"].clone();
    let reply = |response: Value| {
        json!({"apiVersion": version, "kind": "AdmissionReview", "response": response})
            .to_string()
            .into_bytes()
    };
    match route {
        "/deny" => reply(json!({
            "uid": uid,
            "allowed": false,
            "status": {"code": 403, "message": "pods are not welcome here"},
        })),
        "/label" => {
            let has_labels = req["object"]["metadata"]["labels"].is_object();
            let op = if has_labels {
                json!([{"op": "add", "path": "/metadata/labels/webhook-added", "value": "yes"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"webhook-added": "yes"}}])
            };
            reply(json!({
                "uid": uid,
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": patch(op),
                "warnings": ["labelled by the test webhook"],
            }))
        }
        "/count" => {
            let annotations = &req["object"]["metadata"]["annotations"];
            let n: u64 = annotations["count-calls"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let op = if annotations.is_object() {
                json!([{"op": "add", "path": "/metadata/annotations/count-calls", "value": (n + 1).to_string()}])
            } else {
                json!([{"op": "add", "path": "/metadata/annotations", "value": {"count-calls": "1"}}])
            };
            reply(
                json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch(op)}),
            )
        }
        "/slow" => {
            std::thread::sleep(Duration::from_secs(3));
            reply(json!({"uid": uid, "allowed": true}))
        }
        "/garbage" => b"this is not an AdmissionReview".to_vec(),
        "/wronguid" => reply(json!({"uid": "not-the-request", "allowed": true})),
        _ => reply(json!({"uid": uid, "allowed": true})),
    }
}
