//! Running one plugin binary per the CNI spec: the parameters in `CNI_*` environment variables,
//! the network config on stdin, a result (ADD) or nothing (DEL/CHECK) on stdout, and on failure a
//! non-zero exit with an error object `{code, msg, details}` on stdout.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::CniError;

/// The CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
        }
    }
}

/// The per-call parameters passed in the environment.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub command: Command,
    pub container_id: &'a str,
    /// Empty when the namespace is already gone (DEL).
    pub netns: &'a str,
    pub ifname: &'a str,
    /// `K=V;K=V`.
    pub args: &'a str,
}

/// Finds the plugin binary `plugin` in the first of `bin_dirs` that has it.
pub fn find_plugin(plugin: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    bin_dirs
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| CniError::PluginNotFound {
            plugin: plugin.to_string(),
            dirs: bin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        })
}

/// Runs `binary` with `config` on stdin; returns its parsed stdout (`Value::Null` if empty).
pub async fn run(
    plugin: &str,
    binary: &Path,
    bin_dirs: &[PathBuf],
    inv: &Invocation<'_>,
    config: &Value,
) -> Result<Value, CniError> {
    let cni_path = std::env::join_paths(bin_dirs).unwrap_or_default();
    let stdin_bytes = serde_json::to_vec(config).unwrap_or_default();
    let exec_err = |source| CniError::Exec {
        plugin: plugin.to_string(),
        command: inv.command.as_str(),
        source,
    };
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env("CNI_COMMAND", inv.command.as_str())
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = spawn_retrying_busy(&mut cmd).await.map_err(exec_err)?;
    let mut stdin = child.stdin.take();
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            // A plugin may exit without reading its config; a broken pipe is not our error.
            let _ = stdin.write_all(&stdin_bytes).await;
        }
        drop(stdin);
    };
    let (_, out) = tokio::join!(feed, child.wait_with_output());
    let out = out.map_err(exec_err)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(plugin_error(
            plugin,
            inv.command,
            &stdout,
            &out.stderr,
            out.status,
        ));
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout).map_err(|e| CniError::BadResult {
        plugin: plugin.to_string(),
        msg: format!(
            "{} output is not JSON ({e}): {}",
            inv.command.as_str(),
            truncate(&stdout)
        ),
    })
}

/// Spawns `cmd`, retrying for a short while on ETXTBSY: a plugin binary being replaced (an
/// upgrade copying it in), or just written by another thread of this process while a concurrent
/// fork still holds the write descriptor until its exec, cannot be executed for that moment.
async fn spawn_retrying_busy(
    cmd: &mut tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// Turns a failed plugin's output into the spec's error, or the raw output if it has none.
fn plugin_error(
    plugin: &str,
    command: Command,
    stdout: &str,
    stderr: &[u8],
    status: std::process::ExitStatus,
) -> CniError {
    if let Ok(Value::Object(e)) = serde_json::from_str::<Value>(stdout) {
        if let Some(msg) = e.get("msg").and_then(Value::as_str) {
            return CniError::Plugin {
                plugin: plugin.to_string(),
                command: command.as_str(),
                code: e.get("code").and_then(Value::as_u64).unwrap_or(0),
                msg: msg.to_string(),
                details: e
                    .get("details")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            };
        }
    }
    let stderr = String::from_utf8_lossy(stderr);
    CniError::PluginExit {
        plugin: plugin.to_string(),
        command: command.as_str(),
        status: status.to_string(),
        output: truncate(format!("{} {}", stdout.trim(), stderr.trim()).trim()),
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 2000;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn inv(command: Command) -> Invocation<'static> {
        Invocation {
            command,
            container_id: "c1",
            netns: "/x",
            ifname: "eth0",
            args: "A=1",
        }
    }

    #[tokio::test]
    async fn passes_env_and_stdin_and_parses_result() {
        let tmp = tempfile::tempdir().unwrap();
        script(
            tmp.path(),
            "echo-env",
            r#"read -r conf; printf '{"cniVersion":"1.0.0","env":"%s %s %s %s %s","conf":%s}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$conf""#,
        );
        let dirs = vec![PathBuf::from("/nonexistent"), tmp.path().to_path_buf()];
        let bin = find_plugin("echo-env", &dirs).unwrap();
        let v = run(
            "echo-env",
            &bin,
            &dirs,
            &inv(Command::Add),
            &serde_json::json!({"k": 1}),
        )
        .await
        .unwrap();
        assert_eq!(v["env"], "ADD c1 /x eth0 A=1");
        assert_eq!(v["conf"]["k"], 1);
    }

    #[tokio::test]
    async fn spec_errors_and_raw_failures_name_the_plugin() {
        let tmp = tempfile::tempdir().unwrap();
        script(
            tmp.path(),
            "fails",
            r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"bad thing","details":"more"}'; exit 1"#,
        );
        script(tmp.path(), "crashes", "echo boom >&2; exit 2");
        let dirs = vec![tmp.path().to_path_buf()];
        let e = run(
            "fails",
            &tmp.path().join("fails"),
            &dirs,
            &inv(Command::Add),
            &Value::Null,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("fails")
                && e.contains("ADD")
                && e.contains("code 7")
                && e.contains("bad thing")
                && e.contains("more"),
            "{e}"
        );
        let e = run(
            "crashes",
            &tmp.path().join("crashes"),
            &dirs,
            &inv(Command::Del),
            &Value::Null,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("crashes") && e.contains("DEL") && e.contains("boom"),
            "{e}"
        );
        let e = find_plugin("nope", &dirs).unwrap_err().to_string();
        assert!(
            e.contains("\"nope\"") && e.contains(&*tmp.path().to_string_lossy()),
            "{e}"
        );
    }
}
