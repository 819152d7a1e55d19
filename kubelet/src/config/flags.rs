//! The kubelet's command-line flags, with upstream's names (`cmd/kubelet/app/options`), for the
//! settings people actually pass. Every flag is optional so that resolution can tell "given" from
//! "defaulted": a flag that is given overrides the config file's field, as upstream does. Values
//! are checked while parsing (clap names the flag in its error); the label and taint syntaxes are
//! upstream's (`--node-labels k=v,k2=v2`, `--register-with-taints k=v:NoSchedule,k2:NoExecute`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Taint;

use super::file::{CgroupDriver, KubeletAuthorizationMode};

/// `capstan kubelet` flags.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct KubeletArgs {
    /// KubeletConfiguration file (kubelet.config.k8s.io/v1beta1, YAML or JSON); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// kubeconfig for the API server; without it the in-cluster service account is used.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The node's name instead of the hostname.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// The node's IP address(es), comma-separated (one per family); default: the host's primary
    /// address.
    #[arg(long, value_name = "IP[,IP]", value_delimiter = ',')]
    pub node_ip: Vec<IpAddr>,
    /// A remote CRI runtime (`unix:///run/containerd/containerd.sock`); absent = the built-in one.
    #[arg(long, value_name = "ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,
    /// Directory for the kubelet's files, and the built-in runtime's (`<root-dir>/cri`).
    #[arg(long, value_name = "DIR")]
    pub root_dir: Option<PathBuf>,
    /// Directory of static pod manifests (the file's staticPodPath).
    #[arg(long, value_name = "DIR")]
    pub pod_manifest_path: Option<PathBuf>,
    /// cgroupfs or systemd.
    #[arg(long, value_name = "DRIVER")]
    pub cgroup_driver: Option<CgroupDriver>,
    /// The cgroup pods go under; it must exist.
    #[arg(long, value_name = "CGROUP")]
    pub cgroup_root: Option<String>,
    /// Directory of container logs (the file's podLogsDir).
    #[arg(long, value_name = "DIR")]
    pub pod_logs_dir: Option<PathBuf>,
    /// Labels the Node is registered with: `key=value,key2=value2`.
    #[arg(long, value_name = "LABELS", value_parser = parse_labels)]
    pub node_labels: Option<BTreeMap<String, String>>,
    /// Taints the Node is registered with: `key=value:Effect,key2:Effect`.
    #[arg(long, value_name = "TAINTS", value_parser = parse_taints)]
    pub register_with_taints: Option<TaintList>,
    /// The most pods this node runs.
    #[arg(long, value_name = "N")]
    pub max_pods: Option<u16>,
    /// Cluster DNS server addresses, comma-separated.
    #[arg(long, value_name = "IP[,IP]", value_delimiter = ',')]
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain (e.g. cluster.local).
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// The IP the kubelet server listens on (0.0.0.0 = all interfaces).
    #[arg(long, value_name = "IP")]
    pub address: Option<IpAddr>,
    /// The kubelet server's HTTPS port (default 10250; 0 turns the server off).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// The port of the plain-HTTP /healthz (default 10248; 0 turns it off).
    #[arg(long, value_name = "PORT")]
    pub healthz_port: Option<u16>,
    /// The IP /healthz listens on (default 127.0.0.1).
    #[arg(long, value_name = "IP")]
    pub healthz_bind_address: Option<IpAddr>,
    /// Built-in runtime: registry host configuration in containerd's layout (`DIR/<host>/hosts.toml`).
    #[arg(long, value_name = "DIR")]
    pub registry_config_dir: Option<PathBuf>,
    /// Built-in runtime: CNI network configuration directory (default /etc/cni/net.d).
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// Built-in runtime: CNI plugin directories, comma-separated (default /opt/cni/bin,/usr/lib/cni).
    #[arg(long, value_name = "DIR[,DIR]", value_delimiter = ',')]
    pub cni_bin_dir: Vec<PathBuf>,
    /// Built-in runtime: where CNI results are cached (default /var/lib/cni).
    #[arg(long, value_name = "DIR")]
    pub cni_cache_dir: Option<PathBuf>,
    /// The kubelet server's certificate (chain) instead of a self-signed one (the file's
    /// tlsCertFile).
    #[arg(long, value_name = "FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file (the file's tlsPrivateKeyFile).
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA bundle that verifies client certificates to the kubelet server (the file's
    /// authentication.x509.clientCAFile); default: the CA of the kubeconfig's cluster.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Serve requests without credentials as system:anonymous (default false).
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub anonymous_auth: Option<bool>,
    /// Check bearer tokens with a TokenReview to the API server (default true).
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub authentication_token_webhook: Option<bool>,
    /// AlwaysAllow or Webhook (SubjectAccessReview; the default).
    #[arg(long, value_name = "MODE")]
    pub authorization_mode: Option<KubeletAuthorizationMode>,
    /// kubeconfig with bootstrap credentials: when --kubeconfig is missing or its client
    /// certificate is not valid, a client certificate is requested with these and --kubeconfig
    /// is written.
    #[arg(long, value_name = "FILE", requires = "kubeconfig")]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Directory of the certificates the kubelet obtains (default <root-dir>/pki).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Renew the client certificate through the Certificates API before it expires (the file's
    /// rotateCertificates).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub rotate_certificates: Option<bool>,
    /// Request and renew the serving certificate through the Certificates API (the file's
    /// serverTLSBootstrap).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub rotate_server_certificates: Option<bool>,
}

/// Parsed `--register-with-taints` (a newtype, since clap would read a bare `Vec` as repeated
/// values).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaintList(pub Vec<Taint>);

/// `key=value,key2=value2` (upstream's mapStringString flag, as `--node-labels` takes it).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected key=value"))?;
        validate_label_key(k).map_err(|m| format!("{item:?}: {m}"))?;
        validate_label_value(v).map_err(|m| format!("{item:?}: {m}"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `key=value:Effect,key:Effect` (upstream's `--register-with-taints`).
pub fn parse_taints(s: &str) -> Result<TaintList, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (kv, effect) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("{item:?}: expected key[=value]:Effect"))?;
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv, None),
        };
        let taint = Taint {
            key: key.to_string(),
            value,
            effect: effect.to_string(),
            time_added: None,
        };
        validate_taint(&taint).map_err(|m| format!("{item:?}: {m}"))?;
        out.push(taint);
    }
    Ok(TaintList(out))
}

/// Upstream's taint checks: a qualified-name key, a label-value value, a known effect.
pub fn validate_taint(t: &Taint) -> Result<(), String> {
    validate_label_key(&t.key)?;
    if let Some(v) = &t.value {
        validate_label_value(v)?;
    }
    match t.effect.as_str() {
        "NoSchedule" | "PreferNoSchedule" | "NoExecute" => Ok(()),
        e => Err(format!(
            "invalid taint effect {e:?}, expected NoSchedule, PreferNoSchedule or NoExecute"
        )),
    }
}

/// A qualified name: an optional DNS-subdomain prefix and `/`, then 1–63 characters of
/// `[A-Za-z0-9_.-]` starting and ending alphanumeric.
pub fn validate_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(format!("invalid key prefix {p:?}: must be a DNS subdomain"));
        }
    }
    if name.is_empty() || !name_part_ok(name) {
        return Err(format!(
            "invalid key {k:?}: name part must be 1-63 alphanumeric characters, '-', '_' or '.', starting and ending alphanumeric"
        ));
    }
    Ok(())
}

/// A label value: empty, or what a key's name part may be.
pub fn validate_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || name_part_ok(v) {
        Ok(())
    } else {
        Err(format!(
            "invalid value {v:?}: must be at most 63 alphanumeric characters, '-', '_' or '.', starting and ending alphanumeric"
        ))
    }
}

fn name_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() <= 63
        && !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Labels in the `kubernetes.io` / `k8s.io` namespaces that a kubelet may set on its own Node
/// (upstream's `kubeletapis.KubeletLabels` plus the `kubelet.kubernetes.io` and
/// `node.kubernetes.io` namespaces); any other label there is refused, as upstream refuses it.
const ALLOWED_KUBERNETES_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// Whether a kubelet may set this label on its Node.
pub fn kubelet_may_set_label(key: &str) -> bool {
    let Some((ns, _)) = key.rsplit_once('/') else {
        return true;
    };
    let in_k8s = |n: &str| {
        n == "kubernetes.io"
            || n.ends_with(".kubernetes.io")
            || n == "k8s.io"
            || n.ends_with(".k8s.io")
    };
    if !in_k8s(ns) {
        return true;
    }
    let under = |n: &str, root: &str| n == root || n.ends_with(&format!(".{root}"));
    ALLOWED_KUBERNETES_LABELS.contains(&key)
        || under(ns, "kubelet.kubernetes.io")
        || under(ns, "node.kubernetes.io")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let l = parse_labels("a=b, example.com/x=y,empty=").unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l["example.com/x"], "y");
        assert_eq!(l["empty"], "");
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("-bad=x").is_err());
        assert!(parse_labels("k=bad value").is_err());
    }

    #[test]
    fn taints() {
        let t = parse_taints("k=v:NoSchedule,dedicated:NoExecute")
            .unwrap()
            .0;
        assert_eq!(t[0].key, "k");
        assert_eq!(t[0].value.as_deref(), Some("v"));
        assert_eq!(t[0].effect, "NoSchedule");
        assert_eq!(t[1].key, "dedicated");
        assert_eq!(t[1].value, None);
        assert!(parse_taints("k=v").is_err());
        assert!(parse_taints("k=v:Sometimes")
            .unwrap_err()
            .contains("effect"));
    }

    #[test]
    fn restricted_labels() {
        assert!(kubelet_may_set_label("a"));
        assert!(kubelet_may_set_label("example.com/a"));
        assert!(kubelet_may_set_label("node.kubernetes.io/role"));
        assert!(kubelet_may_set_label("x.kubelet.kubernetes.io/y"));
        assert!(kubelet_may_set_label("kubernetes.io/hostname"));
        assert!(!kubelet_may_set_label("node-role.kubernetes.io/master"));
        assert!(!kubelet_may_set_label("k8s.io/x"));
    }
}
