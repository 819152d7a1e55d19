//! Network configuration: finding and validating the node's config file, and building the config
//! each plugin gets on stdin (libcni's `buildOneConfig`: `name` and `cniVersion` from the list,
//! `prevResult`, and `runtimeConfig` holding only the capabilities the plugin declares).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::CniError;

/// File extensions libcni and containerd accept in the config directory.
pub const CONFIG_EXTENSIONS: &[&str] = &["conf", "conflist", "json"];

/// A network configuration list, normalised (a single `.conf` is wrapped as a one-plugin list).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    /// Each plugin's own config object (with its `type`).
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from (empty for built-in networks).
    pub source: PathBuf,
}

impl NetworkConfigList {
    /// Parses a `.conflist` document.
    pub fn from_conflist(file: &Path, bytes: &[u8]) -> Result<NetworkConfigList, CniError> {
        let bad = |msg: String| CniError::ConfigParse {
            file: file.to_path_buf(),
            msg,
        };
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let name = string_field(obj, "name").map_err(&bad)?;
        let cni_version = string_field(obj, "cniVersion").map_err(&bad)?;
        let disable_check = match obj.get("disableCheck") {
            None => false,
            Some(Value::Bool(b)) => *b,
            // libcni also accepts the string forms.
            Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
            Some(_) => return Err(bad("field \"disableCheck\" must be a boolean".into())),
        };
        let plugins = match obj.get("plugins") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            Some(Value::Array(_)) => return Err(bad("field \"plugins\" is empty".into())),
            Some(_) => return Err(bad("field \"plugins\" must be an array".into())),
            None => return Err(bad("missing field \"plugins\"".into())),
        };
        let mut out = Vec::new();
        for (i, p) in plugins.iter().enumerate() {
            let p = p
                .as_object()
                .ok_or_else(|| bad(format!("plugins[{i}] is not a JSON object")))?;
            check_type(p).map_err(|m| bad(format!("plugins[{i}]: {m}")))?;
            out.push(p.clone());
        }
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check,
            plugins: out,
            source: file.into(),
        })
    }

    /// Parses a single-plugin `.conf`/`.json` document and wraps it as a list.
    pub fn from_conf(file: &Path, bytes: &[u8]) -> Result<NetworkConfigList, CniError> {
        let bad = |msg: String| CniError::ConfigParse {
            file: file.to_path_buf(),
            msg,
        };
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        if obj.contains_key("plugins") {
            // A conflist saved with another extension: take it as such, like go-cni does.
            return Self::from_conflist(file, bytes);
        }
        let name = string_field(obj, "name").map_err(&bad)?;
        let cni_version = string_field(obj, "cniVersion").map_err(&bad)?;
        check_type(obj).map_err(&bad)?;
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check: false,
            plugins: vec![obj.clone()],
            source: file.into(),
        })
    }

    /// The list as a conflist JSON document (what the result cache keeps).
    pub fn to_bytes(&self) -> Vec<u8> {
        let v = serde_json::json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "disableCheck": self.disable_check,
            "plugins": self.plugins,
        });
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// containerd's `cni-loopback` network, attached before the pod network to bring up `lo`.
    pub fn loopback() -> NetworkConfigList {
        let mut plugin = Map::new();
        plugin.insert("type".into(), "loopback".into());
        NetworkConfigList {
            name: "cni-loopback".into(),
            cni_version: "1.0.0".into(),
            disable_check: false,
            plugins: vec![plugin],
            source: PathBuf::new(),
        }
    }

    /// The config for plugin `index` on stdin: its own object plus `name`, `cniVersion`,
    /// `prevResult` and the declared capabilities' `runtimeConfig`.
    pub fn plugin_config(
        &self,
        index: usize,
        prev_result: Option<&Value>,
        capability_args: &Map<String, Value>,
    ) -> Value {
        let mut conf = self.plugins[index].clone();
        conf.insert("name".into(), self.name.clone().into());
        conf.insert("cniVersion".into(), self.cni_version.clone().into());
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        let mut runtime = Map::new();
        if let Some(Value::Object(caps)) = conf.get("capabilities") {
            for (cap, enabled) in caps {
                if enabled == &Value::Bool(true) {
                    if let Some(arg) = capability_args.get(cap) {
                        runtime.insert(cap.clone(), arg.clone());
                    }
                }
            }
        }
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        Value::Object(conf)
    }
}

fn string_field(obj: &Map<String, Value>, field: &str) -> Result<String, String> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("field {field:?} is empty")),
        Some(_) => Err(format!("field {field:?} must be a string")),
        None => Err(format!("missing field {field:?}")),
    }
}

fn check_type(obj: &Map<String, Value>) -> Result<(), String> {
    let t = string_field(obj, "type")?;
    if t.contains('/') || t == "." || t == ".." {
        return Err(format!("field \"type\" {t:?} is not a plugin name"));
    }
    Ok(())
}

/// Finds the first config file in `dir` in lexical order (as libcni's `ConfFiles` + containerd).
pub fn first_config_file(dir: &Path) -> Result<Option<PathBuf>, CniError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CniError::ConfigRead {
                file: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| CONFIG_EXTENSIONS.contains(&e))
        })
        .collect();
    files.sort();
    Ok(files.into_iter().next())
}

/// Loads the node's network config: the first file of `dir`.
pub fn load_dir(dir: &Path) -> Result<NetworkConfigList, CniError> {
    let file = first_config_file(dir)?.ok_or_else(|| CniError::NoConfig { dir: dir.into() })?;
    let bytes = std::fs::read(&file).map_err(|source| CniError::ConfigRead {
        file: file.clone(),
        source,
    })?;
    if file.extension().is_some_and(|e| e == "conflist") {
        NetworkConfigList::from_conflist(&file, &bytes)
    } else {
        NetworkConfigList::from_conf(&file, &bytes)
    }
}

/// Parses `a.b.c` for comparisons (`0.4.0` and later get prevResult on DEL, CHECK exists).
pub fn version_at_least(version: &str, min: (u32, u32, u32)) -> bool {
    let mut it = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    v >= min
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, v: &str) {
        std::fs::write(dir.join(name), v).unwrap();
    }

    #[test]
    fn first_file_in_lexical_order_and_conf_is_wrapped() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "99-z.conflist",
            r#"{"cniVersion":"1.0.0","name":"z","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            tmp.path(),
            "10-a.conf",
            r#"{"cniVersion":"0.4.0","name":"a","type":"ptp","mtu":1400}"#,
        );
        write(tmp.path(), "00-ignored.txt", "x");
        let l = load_dir(tmp.path()).unwrap();
        assert_eq!((l.name.as_str(), l.cni_version.as_str()), ("a", "0.4.0"));
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.plugins[0]["mtu"], 1400);
        assert!(l.source.ends_with("10-a.conf"));
    }

    #[test]
    fn errors_name_the_dir_file_and_field() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load_dir(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("no network config found in")
                && err.contains(&*tmp.path().to_string_lossy()),
            "{err}"
        );
        for (doc, want) in [
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
                "missing field \"name\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "field \"plugins\" is empty",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#,
                "plugins[0]: missing field \"type\"",
            ),
            (
                r#"{"name":"n","plugins":[{"type":"x"}]}"#,
                "missing field \"cniVersion\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../x"}]}"#,
                "not a plugin name",
            ),
            ("{not json", "invalid JSON"),
        ] {
            write(tmp.path(), "10-net.conflist", doc);
            let err = load_dir(tmp.path()).unwrap_err().to_string();
            assert!(
                err.contains("10-net.conflist") && err.contains(want),
                "{doc}: {err}"
            );
        }
    }

    #[test]
    fn plugin_config_injects_name_version_prev_result_and_declared_capabilities() {
        let list = NetworkConfigList::from_conflist(
            Path::new("x.conflist"),
            json!({"cniVersion":"1.0.0","name":"net","plugins":[
                {"type":"bridge"},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}}
            ]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let caps = json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],
                          "bandwidth":{"ingressRate":1}});
        let caps = caps.as_object().unwrap();
        let c0 = list.plugin_config(0, None, caps);
        assert_eq!(
            c0,
            json!({"type":"bridge","name":"net","cniVersion":"1.0.0"})
        );
        let prev = json!({"cniVersion":"1.0.0","ips":[]});
        let c1 = list.plugin_config(1, Some(&prev), caps);
        assert_eq!(c1["prevResult"], prev);
        assert_eq!(
            c1["runtimeConfig"],
            json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]})
        );
    }

    #[test]
    fn versions() {
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(version_at_least("0.4.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
    }
}
