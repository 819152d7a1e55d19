//! The workload executor handed to libcontainer: the last step inside the container's init
//! before `execve`. It does two things libcontainer's default executor does not:
//!
//! - `validate` looks the executable up with runc's wording (`exec: "x": executable file not
//!   found in $PATH`), so a CRI client sees the message it would get from containerd + runc;
//! - `exec` undoes what the supervisor did to its own signal state (all signals it reads through
//!   a signalfd are blocked, and Rust's start-up ignores SIGPIPE). Both survive `execve`, so
//!   without this every container would start with SIGCHLD blocked and SIGPIPE ignored.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// PATH used when the process environment has none (runc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone)]
pub struct SupervisorExecutor {
    inner: Box<dyn Executor>,
}

impl Default for SupervisorExecutor {
    fn default() -> Self {
        Self {
            inner: libcontainer::workload::default::get_executor(),
        }
    }
}

impl Executor for SupervisorExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        restore_signal_state();
        self.inner.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| ExecutorValidationError::ArgValidationError("no process".into()))?;
        let Some(arg0) = process.args().as_ref().and_then(|a| a.first()) else {
            return Err(ExecutorValidationError::ArgValidationError(
                "args must not be empty".into(),
            ));
        };
        let path = process
            .env()
            .as_ref()
            .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
            .unwrap_or(DEFAULT_PATH);
        look_path(arg0, path)
            .map(|_| ())
            .map_err(ExecutorValidationError::ArgValidationError)
    }
}

/// Go's `exec.LookPath` as runc reports it.
pub fn look_path(name: &str, path_var: &str) -> Result<PathBuf, String> {
    if name.contains('/') {
        let p = Path::new(name);
        return match p.metadata() {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(p.to_owned()),
            Ok(_) => Err(format!("exec: {name:?}: permission denied")),
            Err(_) => Err(format!(
                "exec: {name:?}: stat {name}: no such file or directory"
            )),
        };
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if let Ok(m) = candidate.metadata() {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "exec: {name:?}: executable file not found in $PATH"
    ))
}

/// Unblocks every signal and puts SIGPIPE back to its default action.
fn restore_signal_state() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    default_sigpipe();
}

#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: installing SIG_DFL registers no handler code, so no signal-safety rules apply;
    // this runs in the container's init process just before execve.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_path_messages() {
        assert_eq!(
            look_path("nosuchcmd", "/nonexistent:/also-not").unwrap_err(),
            r#"exec: "nosuchcmd": executable file not found in $PATH"#
        );
        assert_eq!(
            look_path("/no/such", "/bin").unwrap_err(),
            r#"exec: "/no/such": stat /no/such: no such file or directory"#
        );
        assert!(look_path("sh", "/nonexistent:/bin").is_ok());
    }
}
