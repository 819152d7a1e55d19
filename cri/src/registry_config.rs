//! Registry host configuration in containerd's `hosts.toml` layout (containerd's
//! `config_path`, "certs.d"): for a registry `R`, the file `<dir>/R/hosts.toml` (or
//! `<dir>/_default/hosts.toml`) lists mirror hosts to try in order, then the upstream `server`.
//! A mirror for docker.io pointing at a local plain-HTTP registry is how every test here gets
//! its images:
//!
//! ```toml
//! server = "https://registry-1.docker.io"
//! [host."http://127.0.0.1:5000"]
//!   capabilities = ["pull", "resolve"]
//! ```
//!
//! Errors name the file and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What a host may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Pull,
    Resolve,
    Push,
}

/// One host to try for a registry, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// `http` or `https`.
    pub scheme: String,
    /// Host and port.
    pub host: String,
    /// API root path: `/v2` unless the host's URL has a path and `override_path` is set.
    pub path: String,
    pub capabilities: Vec<Capability>,
    pub skip_verify: bool,
    pub ca: Vec<PathBuf>,
    pub headers: BTreeMap<String, Vec<String>>,
}

impl RegistryHost {
    /// The base URL requests go to (`http://127.0.0.1:5000/v2`).
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }

    pub fn can(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: field {field}: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFields {
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    client: Option<toml::Value>,
    skip_verify: Option<bool>,
    header: Option<BTreeMap<String, OneOrMany>>,
    override_path: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    server: Option<String>,
    #[serde(flatten)]
    fields: HostFields,
    #[serde(default)]
    host: toml::map::Map<String, toml::Value>,
}

/// The default upstream of a registry when `server` is not set: HTTPS, except for a registry on
/// loopback, which containerd (`ConfigureHosts`) talks to over plain HTTP.
fn default_server(registry: &str) -> String {
    if registry == "docker.io" {
        "https://registry-1.docker.io".to_string()
    } else if is_localhost(registry) {
        format!("http://{registry}")
    } else {
        format!("https://{registry}")
    }
}

/// `localhost`, `127.x.y.z` or `::1`, with or without a port.
fn is_localhost(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The hosts to try for `registry` (`docker.io`, `127.0.0.1:5000`) with the configuration under
/// `dir`; without a file, just the registry itself over HTTPS.
pub fn hosts_for(dir: Option<&Path>, registry: &str) -> Result<Vec<RegistryHost>, ConfigError> {
    let file = dir.and_then(|d| {
        [registry, "_default"]
            .iter()
            .map(|name| d.join(name).join("hosts.toml"))
            .find(|p| p.is_file())
    });
    let Some(path) = file else {
        return Ok(vec![host_from(
            Path::new(""),
            "server",
            &default_server(registry),
            HostFields::default(),
        )?]);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&path, &text, registry)
}

/// Parses the text of a hosts.toml for `registry`.
pub fn parse(path: &Path, text: &str, registry: &str) -> Result<Vec<RegistryHost>, ConfigError> {
    let file: HostsFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut hosts = Vec::new();
    for (url, table) in file.host {
        let fields: HostFields =
            table
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Field {
                    path: path.to_path_buf(),
                    field: format!("host.\"{url}\""),
                    message: e.to_string(),
                })?;
        hosts.push(host_from(path, &format!("host.\"{url}\""), &url, fields)?);
    }
    let server = file.server.unwrap_or_else(|| default_server(registry));
    hosts.push(host_from(path, "server", &server, file.fields)?);
    Ok(hosts)
}

fn host_from(
    path: &Path,
    field: &str,
    url: &str,
    f: HostFields,
) -> Result<RegistryHost, ConfigError> {
    let err = |message: String| ConfigError::Field {
        path: path.to_path_buf(),
        field: field.to_string(),
        message,
    };
    let (scheme, rest) = match url.split_once("://") {
        Some((s @ ("http" | "https"), r)) => (s.to_string(), r),
        Some((s, _)) => return Err(err(format!("unsupported scheme {s:?} in {url:?}"))),
        // containerd takes a bare host as HTTPS.
        None => ("https".to_string(), url),
    };
    let (host, url_path) = match rest.split_once('/') {
        Some((h, p)) => (h.to_string(), format!("/{}", p.trim_end_matches('/'))),
        None => (rest.to_string(), String::new()),
    };
    if host.is_empty() {
        return Err(err(format!("no host in {url:?}")));
    }
    let path_part = if f.override_path.unwrap_or(false) {
        url_path
    } else if url_path.is_empty() || url_path == "/" {
        "/v2".to_string()
    } else {
        format!("{}/v2", url_path.trim_end_matches("/v2"))
    };
    let capabilities = match f.capabilities {
        None => vec![Capability::Pull, Capability::Resolve, Capability::Push],
        Some(list) => list
            .iter()
            .map(|c| match c.as_str() {
                "pull" => Ok(Capability::Pull),
                "resolve" => Ok(Capability::Resolve),
                "push" => Ok(Capability::Push),
                other => Err(err(format!("capabilities: unknown capability {other:?}"))),
            })
            .collect::<Result<_, _>>()?,
    };
    if f.client.is_some() {
        return Err(err(
            "client: client certificates are not supported yet".to_string()
        ));
    }
    Ok(RegistryHost {
        scheme,
        host,
        path: path_part,
        capabilities,
        skip_verify: f.skip_verify.unwrap_or(false),
        ca: f
            .ca
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        headers: f
            .header
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_vec()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_first_then_the_server() {
        let text = r#"
server = "https://registry-1.docker.io"

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]

[host."https://mirror.example/base"]
  skip_verify = true
  ca = "/etc/ca.pem"
  [host."https://mirror.example/base".header]
    x-token = "abc"
"#;
        let hosts = parse(Path::new("hosts.toml"), text, "docker.io").unwrap();
        let urls: Vec<String> = hosts.iter().map(RegistryHost::base_url).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:5000/v2",
                "https://mirror.example/base/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
        assert!(!hosts[0].can(Capability::Push) && hosts[0].can(Capability::Pull));
        assert!(hosts[1].skip_verify);
        assert_eq!(hosts[1].ca, [PathBuf::from("/etc/ca.pem")]);
        assert_eq!(hosts[1].headers["x-token"], ["abc"]);
        assert!(hosts[2].can(Capability::Push));
    }

    #[test]
    fn files_are_found_per_registry_with_a_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("docker.io")).unwrap();
        std::fs::write(
            dir.path().join("docker.io/hosts.toml"),
            "[host.\"http://127.0.0.1:5000\"]\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("_default")).unwrap();
        std::fs::write(
            dir.path().join("_default/hosts.toml"),
            "server = \"http://fallback:8080\"\n",
        )
        .unwrap();
        let hub = hosts_for(Some(dir.path()), "docker.io").unwrap();
        assert_eq!(hub[0].base_url(), "http://127.0.0.1:5000/v2");
        assert_eq!(hub[1].base_url(), "https://registry-1.docker.io/v2");
        let other = hosts_for(Some(dir.path()), "quay.io").unwrap();
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].base_url(), "http://fallback:8080/v2");
        let none = hosts_for(None, "registry.k8s.io").unwrap();
        assert_eq!(none[0].base_url(), "https://registry.k8s.io/v2");
        let local = hosts_for(None, "127.0.0.1:5001").unwrap();
        assert_eq!(local[0].base_url(), "http://127.0.0.1:5001/v2");
        assert!(is_localhost("localhost:5000") && is_localhost("[::1]:5000"));
        assert!(!is_localhost("10.0.0.1:5000"));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let p = Path::new("/etc/capstan/certs.d/docker.io/hosts.toml");
        let e = parse(p, "[host.\"ftp://x\"]\n", "docker.io")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hosts.toml") && e.contains("host.\"ftp://x\"") && e.contains("scheme"),
            "{e}"
        );
        let e = parse(
            p,
            "[host.\"http://x\"]\ncapabilities = [\"fly\"]\n",
            "docker.io",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("capabilities") && e.contains("fly"), "{e}");
        let e = parse(p, "sever = \"x\"\n", "docker.io")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hosts.toml") && e.contains("sever"), "{e}");
        let e = parse(p, "server = \n", "docker.io")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/capstan/certs.d/docker.io/hosts.toml:"),
            "{e}"
        );
    }
}
