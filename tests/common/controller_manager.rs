//! A `capstan controller-manager` process for controller tests and benchmarks: its log goes to
//! a file in the API server's data dir (so tests can see which replica leads), and it is killed
//! on `Drop`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::ApiServer;

/// A `capstan controller-manager` process, killed on drop.
pub struct ControllerManager {
    child: Option<Child>,
    log: PathBuf,
}

impl ControllerManager {
    pub fn start(api: &ApiServer, name: &str, extra: &[&str]) -> ControllerManager {
        let log = api.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("creating the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["controller-manager", "--kubeconfig"])
            // Its own identity, system:kube-controller-manager, as `capstan server` runs it.
            .arg(api.dir.path().join("server/controller-manager.kubeconfig"))
            .args(["--bind-address", "127.0.0.1:0"])
            .args(extra)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting capstan controller-manager");
        ControllerManager {
            child: Some(child),
            log,
        }
    }

    /// The process id (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn leading(&self) -> bool {
        self.log().contains("successfully acquired lease")
    }

    /// The address of the health and metrics server.
    pub fn health_addr(&self) -> Option<String> {
        let log = self.log();
        let at = log.find("/metrics on http://")? + "/metrics on http://".len();
        Some(log[at..].split_whitespace().next()?.to_string())
    }

    /// The exit status once the process has ended (None while it runs).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok()?
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of {} ---", self.log.display());
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}
