//! Joining by token against a real `capstan server` (tests/common/server.rs): the public
//! `kube-public/cluster-info` is readable anonymously and signed for the join token by the
//! bootstrap signer; token discovery (`src/agent/discovery.rs`, included here) succeeds with the
//! right token and CA pin and fails clearly with a wrong token secret, an unknown token id, a wrong
//! pin or no pin; signatures of removed and expired tokens go away; anonymous users still cannot
//! list Secrets.

mod common;

#[path = "../src/agent/discovery.rs"]
#[allow(dead_code)]
mod discovery;

use std::time::Duration;

use common::server::Server;
use discovery::DiscoveryError;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use machinery::bootstraptoken as bt;
use serde_json::json;

/// An anonymous client that does not verify the server (as discovery's first request).
fn anonymous(url: &str) -> kube::Client {
    let mut config = kube::Config::new(url.parse().unwrap());
    config.accept_invalid_certs = true;
    kube::Client::try_from(config).unwrap()
}

/// Waits until cluster-info's data satisfies `f`; the last data seen otherwise.
async fn wait_cluster_info(
    client: &kube::Client,
    what: &str,
    f: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) -> std::collections::BTreeMap<String, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    let mut last = Default::default();
    for _ in 0..300 {
        if let Ok(cm) = api.get("cluster-info").await {
            last = cm.data.unwrap_or_default();
            if f(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: cluster-info never got there; its data: {last:#?}");
}

fn token_secret(id: &str, secret: &str, expiration: Option<&str>) -> Secret {
    let mut data = json!({
        "token-id": id,
        "token-secret": secret,
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
    });
    if let Some(e) = expiration {
        data["expiration"] = json!(e);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": data,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_discovery_against_capstan_server() {
    // The binary picks ring at start; so does this test (aws-lc-rs is linked too).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut server = Server::start();
    let url = format!("https://127.0.0.1:{}", server.api_port);
    let token_path = server.data_dir.join("server/token");
    let mut token = String::new();
    for _ in 0..300 {
        token = std::fs::read_to_string(&token_path).unwrap_or_default();
        if !token.trim().is_empty() {
            break;
        }
        server.assert_alive();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = token.trim().to_string();
    let (id, secret) = bt::parse_token(&token).expect("a join token in DIR/server/token");
    let (id, secret) = (id.to_string(), secret.to_string());
    let ca_pem = std::fs::read_to_string(server.data_dir.join("server/ca.crt")).unwrap();
    let pin = discovery::ca_cert_hashes(&ca_pem).unwrap().remove(0);

    // Anonymous: cluster-info is readable and gets signed for the join token.
    let anon = anonymous(&url);
    let sig_key = format!("jws-kubeconfig-{id}");
    let data = wait_cluster_info(&anon, "signed for the join token", |d| {
        d.contains_key(&sig_key)
    })
    .await;
    let kubeconfig = &data["kubeconfig"];
    assert!(
        kubeconfig.contains(&format!("server: {url}")),
        "cluster-info names the server: {kubeconfig}"
    );
    assert_eq!(
        data[&sig_key],
        bt::compute_detached_signature(kubeconfig, &id, &secret),
        "the signature is the detached JWS of the kubeconfig"
    );
    assert!(data[&sig_key].contains(".."), "detached: empty payload");

    // Anonymous users get nothing else: listing Secrets is 403.
    let secrets: Api<Secret> = Api::namespaced(anon.clone(), "kube-system");
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "anonymous list secrets: {s:?}"),
        other => panic!("anonymous list secrets must be 403, got {other:?}"),
    }
    let other_cms: Api<ConfigMap> = Api::namespaced(anon.clone(), "kube-public");
    match other_cms.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "anonymous list configmaps: {s:?}"),
        other => panic!("anonymous list configmaps must be 403, got {other:?}"),
    }

    // Discovery with the right token and pin.
    let info = discovery::fetch_cluster_info(&url, &token, std::slice::from_ref(&pin), false)
        .await
        .expect("discovery with the join token and the CA pin");
    assert_eq!(info.server, url);
    assert_eq!(info.ca_pem, ca_pem);
    // Without a pin only when told to skip CA verification.
    let err = discovery::fetch_cluster_info(&url, &token, &[], false)
        .await
        .unwrap_err();
    assert!(matches!(err, DiscoveryError::NoPins), "{err}");
    let unpinned = discovery::fetch_cluster_info(&url, &token, &[], true)
        .await
        .expect("discovery skipping CA verification");
    assert_eq!(unpinned, info);

    // A wrong token secret.
    let wrong = format!("{id}.{}", "0".repeat(16));
    let err = discovery::fetch_cluster_info(&url, &wrong, std::slice::from_ref(&pin), false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::BadSignature(i) if *i == id),
        "wrong secret: {err}"
    );
    assert!(err.to_string().contains("JWS signature"), "{err}");
    // An unknown token id.
    let err = discovery::fetch_cluster_info_within(
        &url,
        "zzzzzz.0123456789abcdef",
        std::slice::from_ref(&pin),
        false,
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::NoSignature(i) if i == "zzzzzz"),
        "unknown id: {err}"
    );
    assert!(err.to_string().contains("\"zzzzzz\""), "{err}");
    // A wrong pin.
    let err = discovery::fetch_cluster_info(
        &url,
        &token,
        &[format!("sha256:{}", "ab".repeat(32))],
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::PinMismatch { found } if found == &vec![pin.clone()]),
        "wrong pin: {err}"
    );

    // Another token is signed, and its signature goes with its Secret; one that expires loses
    // its signature when it expires.
    let admin = machinery::client::build_client(Some(&server.kubeconfig()), "join-test")
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "kube-system");
    secrets
        .create(
            &PostParams::default(),
            &token_secret("bbbbbb", "0123456789abcdef", None),
        )
        .await
        .unwrap();
    let expires = (k8s_openapi::jiff::Timestamp::now() + Duration::from_secs(4)).to_string();
    secrets
        .create(
            &PostParams::default(),
            &token_secret("cccccc", "0123456789abcdef", Some(&expires)),
        )
        .await
        .unwrap();
    wait_cluster_info(&anon, "signed for the new tokens", |d| {
        d.contains_key("jws-kubeconfig-bbbbbb") && d.contains_key("jws-kubeconfig-cccccc")
    })
    .await;
    secrets
        .delete("bootstrap-token-bbbbbb", &DeleteParams::default())
        .await
        .unwrap();
    let data = wait_cluster_info(&anon, "unsigned for removed and expired tokens", |d| {
        !d.contains_key("jws-kubeconfig-bbbbbb") && !d.contains_key("jws-kubeconfig-cccccc")
    })
    .await;
    assert!(data.contains_key(&sig_key), "the join token stays signed");
    server.assert_alive();
}
