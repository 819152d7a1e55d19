//! A pod's `/etc/resolv.conf` and `/etc/hosts`, as upstream's kubelet computes them
//! (`pkg/kubelet/network/dns/dns.go`, `kubelet_pods.go` managedHostsFileContent).
//!
//! DNS: `dnsPolicy` picks the base — ClusterFirst (the cluster DNS servers, search
//! `<ns>.svc.<domain> svc.<domain> <domain>` then the host's searches, `options ndots:5`;
//! host-network pods fall back to the host's settings), ClusterFirstWithHostNet (cluster DNS even
//! on the host network), Default (the host's resolv.conf) or None (nothing) — and `dnsConfig`
//! is appended (servers and searches de-duplicated, options merged by name). Without cluster DNS
//! servers ClusterFirst falls back to Default with a warning, as upstream does. The runtime writes
//! resolv.conf from the [`PodDnsConfig`]; [`render_resolv_conf`] gives the same text.
//!
//! Hosts: the kubelet-managed file lists localhost entries, the pod's IPs with its hostname (and
//! FQDN when it has a subdomain), then the hostAliases; host-network pods get the node's
//! `/etc/hosts` under a different header plus the aliases.

use k8s_openapi::api::core::v1::{HostAlias, Pod};

/// upstream `defaultDNSOptions`.
pub const DEFAULT_DNS_OPTIONS: &[&str] = &["ndots:5"];
/// upstream `MaxDNSSearchPaths`.
pub const MAX_DNS_SEARCH_PATHS: usize = 32;
/// upstream `MaxDNSSearchListChars`.
pub const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
pub const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";
pub const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str =
    "# Kubernetes-managed hosts file (host network).\n";

/// The node's DNS settings (kubelet `clusterDNS`, `clusterDomain`, `resolvConf`).
#[derive(Debug, Clone, Default)]
pub struct DnsSettings {
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// Content of the host resolv.conf (`--resolv-conf`); `None` when set to "".
    pub host_resolv_conf: Option<String>,
    /// The node's IPs (for the loopback fallback without a host resolv.conf).
    pub node_ips: Vec<String>,
}

/// The pod's DNS configuration (CRI `DNSConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Parses resolv.conf text: nameservers, searches (trailing dots dropped, `.` skipped), options.
pub fn parse_resolv_conf(text: &str) -> PodDnsConfig {
    let mut c = PodDnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.first() {
            Some(&"nameserver") if fields.len() > 1 => c.servers.push(fields[1].to_string()),
            Some(&"search") => {
                c.searches = fields[1..]
                    .iter()
                    .filter(|s| **s != ".")
                    .map(|s| s.trim_end_matches('.').to_string())
                    .collect()
            }
            Some(&"options") => c.options.extend(fields[1..].iter().map(|s| s.to_string())),
            _ => {}
        }
    }
    c
}

/// The resolv.conf text containerd writes for a DNS config.
pub fn render_resolv_conf(c: &PodDnsConfig) -> String {
    let mut out = String::new();
    if !c.searches.is_empty() {
        out.push_str(&format!("search {}\n", c.searches.join(" ")));
    }
    for s in &c.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !c.options.is_empty() {
        out.push_str(&format!("options {}\n", c.options.join(" ")));
    }
    out
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn merge_options(existing: &[String], extra: &[(String, Option<String>)]) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match merged.iter_mut().find(|(n, _)| n == name) {
        Some(e) => e.1 = value.to_string(),
        None => merged.push((name.to_string(), value.to_string())),
    };
    for o in existing {
        match o.split_once(':') {
            Some((n, v)) => set(n, v),
            None => set(o, ""),
        }
    }
    for (n, v) in extra {
        set(n, v.as_deref().unwrap_or(""));
    }
    merged
        .into_iter()
        .map(|(n, v)| if v.is_empty() { n } else { format!("{n}:{v}") })
        .collect()
}

/// Trims the search list to upstream's limits; returns a warning when it had to.
fn fit_search_limits(searches: &mut Vec<String>) -> Option<String> {
    let mut trimmed = false;
    if searches.len() > MAX_DNS_SEARCH_PATHS {
        searches.truncate(MAX_DNS_SEARCH_PATHS);
        trimmed = true;
    }
    while searches.join(" ").len() > MAX_DNS_SEARCH_LIST_CHARS {
        searches.pop();
        trimmed = true;
    }
    trimmed.then(|| {
        format!(
            "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
            searches.join(" ")
        )
    })
}

/// The pod's DNS configuration and any warning event message (upstream `GetPodDNS`).
pub fn pod_dns(pod: &Pod, s: &DnsSettings) -> (PodDnsConfig, Vec<String>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let mut warnings = Vec::new();
    #[derive(PartialEq)]
    enum Kind {
        Cluster,
        Host,
        None,
    }
    let mut kind = match policy {
        "None" => Kind::None,
        "ClusterFirstWithHostNet" => Kind::Cluster,
        "ClusterFirst" if !host_network => Kind::Cluster,
        _ => Kind::Host,
    };
    if kind == Kind::Cluster && s.cluster_dns.is_empty() {
        warnings.push(format!(
            "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"{policy}\" policy. Falling back to \"Default\" policy."
        ));
        kind = Kind::Host;
    }
    let host = match &s.host_resolv_conf {
        Some(text) => parse_resolv_conf(text),
        None => {
            let mut servers: Vec<String> = s
                .node_ips
                .iter()
                .map(|ip| if ip.contains(':') { "::1" } else { "127.0.0.1" }.to_string())
                .collect();
            if servers.is_empty() {
                servers.push("127.0.0.1".into());
            }
            PodDnsConfig {
                servers: dedup(servers),
                searches: vec![".".into()],
                options: Vec::new(),
            }
        }
    };
    let mut c = match kind {
        Kind::None => PodDnsConfig::default(),
        Kind::Host => host,
        Kind::Cluster => {
            let searches = if s.cluster_domain.is_empty() {
                host.searches
            } else {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                let d = &s.cluster_domain;
                let mut v = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
                v.extend(host.searches);
                dedup(v)
            };
            PodDnsConfig {
                servers: s.cluster_dns.clone(),
                searches,
                options: DEFAULT_DNS_OPTIONS.iter().map(|s| s.to_string()).collect(),
            }
        }
    };
    if let Some(dc) = &spec.dns_config {
        let mut servers = std::mem::take(&mut c.servers);
        servers.extend(dc.nameservers.clone().unwrap_or_default());
        c.servers = dedup(servers);
        let mut searches = std::mem::take(&mut c.searches);
        searches.extend(dc.searches.clone().unwrap_or_default());
        c.searches = dedup(searches);
        let extra: Vec<(String, Option<String>)> = dc
            .options
            .iter()
            .flatten()
            .map(|o| (o.name.clone().unwrap_or_default(), o.value.clone()))
            .collect();
        c.options = merge_options(&c.options, &extra);
    }
    if let Some(w) = fit_search_limits(&mut c.searches) {
        warnings.push(w);
    }
    (c, warnings)
}

/// Upstream `GeneratePodHostNameAndDomain`: `spec.hostname` or the pod name (cut to 63
/// characters), and `<subdomain>.<ns>.svc.<cluster-domain>` when a subdomain is set.
pub fn pod_hostname_and_domain(pod: &Pod, cluster_domain: &str) -> (String, String) {
    let spec = pod.spec.as_ref();
    let hostname = match spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
    {
        Some(h) => h.to_string(),
        None => {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            if name.len() > 63 {
                name[..63].trim_end_matches(['-', '.']).to_string()
            } else {
                name.to_string()
            }
        }
    };
    let domain = match spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|d| !d.is_empty())
    {
        Some(sub) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            format!("{sub}.{ns}.svc.{cluster_domain}")
        }
        None => String::new(),
    };
    (hostname, domain)
}

fn host_alias_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.clone().unwrap_or_default().join("\t");
        out.push_str(&format!("{}\t{names}\n", a.ip));
    }
    out
}

/// The pod's /etc/hosts. `node_hosts` is the node's /etc/hosts, used for host-network pods.
pub fn hosts_file_content(
    pod: &Pod,
    pod_ips: &[String],
    cluster_domain: &str,
    node_hosts: &str,
) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let aliases = spec.host_aliases.unwrap_or_default();
    if spec.host_network.unwrap_or(false) {
        return format!(
            "{MANAGED_HOSTS_HEADER_HOST_NETWORK}{node_hosts}{}",
            host_alias_entries(&aliases)
        );
    }
    let (hostname, domain) = pod_hostname_and_domain(pod, cluster_domain);
    let mut out = String::from(MANAGED_HOSTS_HEADER);
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        if domain.is_empty() {
            out.push_str(&format!("{ip}\t{hostname}\n"));
        } else {
            out.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n"));
        }
    }
    out.push_str(&host_alias_entries(&aliases));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const HOST_RESOLV: &str = "# generated\nnameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch corp.example. lab.example .\noptions edns0 ndots:2\n";

    fn settings() -> DnsSettings {
        DnsSettings {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: Some(HOST_RESOLV.into()),
            node_ips: vec!["192.168.1.50".into()],
        }
    }

    fn pod(policy: Option<&str>, host_network: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                dns_policy: policy.map(Into::into),
                host_network: Some(host_network),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cluster_first() {
        let (c, w) = pod_dns(&pod(None, false), &settings());
        assert!(w.is_empty());
        assert_eq!(
            c,
            PodDnsConfig {
                servers: strs(&["10.96.0.10"]),
                searches: strs(&[
                    "shop.svc.cluster.local",
                    "svc.cluster.local",
                    "cluster.local",
                    "corp.example",
                    "lab.example"
                ]),
                options: strs(&["ndots:5"]),
            }
        );
        assert_eq!(
            render_resolv_conf(&c),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_network_and_default() {
        let host = parse_resolv_conf(HOST_RESOLV);
        // ClusterFirst on the host network behaves as Default.
        assert_eq!(
            pod_dns(&pod(Some("ClusterFirst"), true), &settings()).0,
            host
        );
        assert_eq!(pod_dns(&pod(Some("Default"), false), &settings()).0, host);
        assert_eq!(host.options, strs(&["edns0", "ndots:2"]));
        // ClusterFirstWithHostNet uses the cluster DNS on the host network.
        let (c, _) = pod_dns(&pod(Some("ClusterFirstWithHostNet"), true), &settings());
        assert_eq!(c.servers, strs(&["10.96.0.10"]));
        // Without cluster DNS: fall back with a warning.
        let mut s = settings();
        s.cluster_dns.clear();
        let (c, w) = pod_dns(&pod(None, false), &s);
        assert_eq!(c, host);
        assert!(w[0].contains("Falling back to \"Default\" policy"), "{w:?}");
        // No host resolv.conf: loopback and search ".".
        s.host_resolv_conf = None;
        let (c, _) = pod_dns(&pod(Some("Default"), false), &s);
        assert_eq!(c.servers, strs(&["127.0.0.1"]));
        assert_eq!(c.searches, strs(&["."]));
    }

    #[test]
    fn none_with_dns_config_and_merging() {
        let mut p = pod(Some("None"), false);
        p.spec.as_mut().unwrap().dns_config = Some(PodDNSConfig {
            nameservers: Some(strs(&["1.1.1.1", "1.1.1.1"])),
            searches: Some(strs(&["a.example"])),
            options: Some(vec![PodDNSConfigOption {
                name: Some("ndots".into()),
                value: Some("1".into()),
            }]),
        });
        let (c, _) = pod_dns(&p, &settings());
        assert_eq!(
            c,
            PodDnsConfig {
                servers: strs(&["1.1.1.1"]),
                searches: strs(&["a.example"]),
                options: strs(&["ndots:1"]),
            }
        );
        // ClusterFirst + dnsConfig: appended, option overridden in place, new one added.
        let mut p = pod(None, false);
        p.spec.as_mut().unwrap().dns_config = Some(PodDNSConfig {
            nameservers: Some(strs(&["10.96.0.10", "8.8.8.8"])),
            searches: Some(strs(&["cluster.local", "extra.example"])),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        });
        let (c, _) = pod_dns(&p, &settings());
        assert_eq!(c.servers, strs(&["10.96.0.10", "8.8.8.8"]));
        assert_eq!(c.searches.last().unwrap(), "extra.example");
        assert_eq!(
            c.searches.iter().filter(|s| *s == "cluster.local").count(),
            1
        );
        assert_eq!(c.options, strs(&["ndots:2", "edns0"]));
    }

    #[test]
    fn search_limits() {
        let mut p = pod(Some("None"), false);
        p.spec.as_mut().unwrap().dns_config = Some(PodDNSConfig {
            searches: Some((0..40).map(|i| format!("d{i}.example")).collect()),
            ..Default::default()
        });
        let (c, w) = pod_dns(&p, &settings());
        assert_eq!(c.searches.len(), MAX_DNS_SEARCH_PATHS);
        assert!(w[0].starts_with("Search Line limits were exceeded"));
    }

    #[test]
    fn hosts_files() {
        let mut p = pod(None, false);
        let ips = strs(&["10.0.0.5", "fd00::5"]);
        let spec = p.spec.as_mut().unwrap();
        spec.host_aliases = Some(vec![HostAlias {
            ip: "10.1.2.3".into(),
            hostnames: Some(strs(&["foo.local", "bar.local"])),
        }]);
        assert_eq!(
            hosts_file_content(&p, &ips, "cluster.local", ""),
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.0.0.5\tweb-0\nfd00::5\tweb-0\n\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"
        );
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("db".into());
        spec.subdomain = Some("backend".into());
        let text = hosts_file_content(&p, &ips[..1], "cluster.local", "");
        assert!(
            text.contains("10.0.0.5\tdb.backend.shop.svc.cluster.local\tdb\n"),
            "{text}"
        );
        // Host network: the node's file under its own header.
        let mut p = pod(None, true);
        p.spec.as_mut().unwrap().host_aliases = None;
        assert_eq!(
            hosts_file_content(&p, &ips, "cluster.local", "127.0.0.1 localhost\n"),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
        );
        // Long pod names are cut to 63 characters without a trailing '-'.
        let mut p = pod(None, false);
        p.metadata.name = Some(format!("{}-{}", "a".repeat(62), "b"));
        assert_eq!(pod_hostname_and_domain(&p, "c").0, "a".repeat(62));
    }
}
