//! The public `kube-public/cluster-info` ConfigMap, as kubeadm's `bootstrap-token` phase makes it
//! (`cmd/kubeadm/app/phases/bootstraptoken/clusterinfo`): its `kubeconfig` names the API server
//! and embeds the cluster CA, the bootstrap signer adds one `jws-kubeconfig-<token-id>` per
//! signing token, and anonymous users may read it (the Role `kubeadm:bootstrap-signer-clusterinfo`
//! and its RoleBinding to `system:anonymous` in kube-public) — so a joining agent that holds only
//! the join token learns where the API server is and which CA to trust (`agent::discovery`).
//! Anonymous requests get nothing else: RBAC grants them only this ConfigMap and upstream's
//! `system:public-info-viewer` paths.

use std::net::SocketAddr;

use anyhow::Context;
use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, PostParams};
use machinery::bootstraptoken as bt;

/// kubeadm's names for the Role and RoleBinding.
pub const ROLE_NAME: &str = "kubeadm:bootstrap-signer-clusterinfo";

/// The API server's URL as agents should use it: the listen address, or the advertise address
/// when the server listens on every address.
pub fn server_url(listen: SocketAddr, advertise: std::net::IpAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        advertise
    } else {
        listen.ip()
    };
    format!("https://{}", SocketAddr::new(ip, listen.port()))
}

/// The `kubeconfig` of cluster-info: one cluster (named "" as kubeadm's) with the server and the
/// CA, no users or contexts.
pub fn kubeconfig(server: &str, ca_pem: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n"
    )
}

/// [`ensure`] for `capstan server`: the URL from its listen and advertise addresses, the CA from
/// its server dir.
pub async fn ensure_for(
    client: &kube::Client,
    server_dir: &std::path::Path,
    listen: SocketAddr,
    advertise: std::net::IpAddr,
) -> anyhow::Result<()> {
    let ca = server_dir.join(apiserver_lite::pki::CA_CERT);
    let ca_pem =
        std::fs::read_to_string(&ca).with_context(|| format!("reading {}", ca.display()))?;
    ensure(client, &server_url(listen, advertise), &ca_pem).await
}

/// Creates cluster-info (or sets its `kubeconfig` when the server's address or CA changed; the
/// signer then re-signs it) and the Role and RoleBinding that let anonymous users get it.
pub async fn ensure(client: &kube::Client, server: &str, ca_pem: &str) -> anyhow::Result<()> {
    let content = kubeconfig(server, ca_pem);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), bt::CLUSTER_INFO_NAMESPACE);
    match cms.get_opt(bt::CLUSTER_INFO_NAME).await? {
        None => {
            let mut cm = ConfigMap {
                data: Some([(bt::KUBECONFIG_KEY.to_string(), content)].into()),
                ..Default::default()
            };
            cm.metadata.name = Some(bt::CLUSTER_INFO_NAME.into());
            match cms.create(&PostParams::default(), &cm).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e).context("creating kube-public/cluster-info"),
            }
        }
        Some(mut cm) => {
            let data = cm.data.get_or_insert_with(Default::default);
            if data.get(bt::KUBECONFIG_KEY) != Some(&content) {
                data.insert(bt::KUBECONFIG_KEY.into(), content);
                cms.replace(bt::CLUSTER_INFO_NAME, &PostParams::default(), &cm)
                    .await
                    .context("updating kube-public/cluster-info")?;
            }
        }
    }

    let rules = vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        resource_names: Some(vec![bt::CLUSTER_INFO_NAME.into()]),
        verbs: vec!["get".into()],
        ..Default::default()
    }];
    let anonymous = Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "User".into(),
        name: "system:anonymous".into(),
        ..Default::default()
    };
    ensure_role(
        client,
        bt::CLUSTER_INFO_NAMESPACE,
        ROLE_NAME,
        rules,
        anonymous,
    )
    .await
    .context("creating the cluster-info RBAC")
}

/// Creates the Role `name` in `namespace` with `rules` and a RoleBinding of the same name that
/// grants it to `subject` (left alone when they exist).
pub async fn ensure_role(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    rules: Vec<PolicyRule>,
    subject: Subject,
) -> Result<(), kube::Error> {
    let mut role = Role {
        rules: Some(rules),
        ..Default::default()
    };
    role.metadata.name = Some(name.into());
    let mut binding = RoleBinding {
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.into(),
        },
        subjects: Some(vec![subject]),
        ..Default::default()
    };
    binding.metadata.name = Some(name.into());
    let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    for r in [
        roles.create(&PostParams::default(), &role).await.map(drop),
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .map(drop),
    ] {
        match r {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_prefers_the_listen_address() {
        let adv: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            server_url("127.0.0.1:6443".parse().unwrap(), adv),
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            server_url("0.0.0.0:6443".parse().unwrap(), adv),
            "https://192.0.2.7:6443"
        );
        assert_eq!(
            server_url("[::]:6443".parse().unwrap(), "fd00::1".parse().unwrap()),
            "https://[fd00::1]:6443"
        );
    }
}
