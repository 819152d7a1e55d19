//! Container log rotation (upstream's `pkg/kubelet/logs/container_log_manager.go`). The runtime
//! writes each container's output to the `log_path` the kubelet chose (`<n>.log`); the kubelet
//! keeps those files bounded. Every `containerLogMonitorInterval` (10 s) it looks at the running
//! containers, up to `containerLogMaxWorkers` at once, and for a log larger than
//! `containerLogMaxSize` (10Mi):
//!
//! 1. drops leftovers of an interrupted round (`*.tmp`, and a plain rotated file whose `.gz`
//!    already exists);
//! 2. removes the oldest rotated files so that, with the live file and the one about to be
//!    rotated, at most `containerLogMaxFiles` (5) remain;
//! 3. gzips the rotated files that are still plain (written to `<f>.tmp`, renamed to `<f>.gz`);
//! 4. renames the live file to `<n>.log.<YYYYMMDD-HHMMSS>` and asks the runtime to reopen it
//!    (CRI `ReopenContainerLog`); if that fails the rename is undone.
//!
//! So the newest rotated file stays plain (`kubectl logs` of a just-rotated container reads it
//! cheaply) and older ones are compressed. A live file that has vanished is reopened. A log in
//! the kubelet's own layout that is below the size costs one `stat` and no CRI call, so a round
//! over many idle containers stays cheap; upstream asks ContainerStatus for every container.
//!
//! Rotated files of removed containers go: container GC deletes them with the container
//! ([`crate::container_gc::remove_container_logs`], upstream's `Clean`), and each round here also
//! sweeps `<podLogsDir>/*/<container>/<n>.log.*` whose container the runtime no longer lists (a
//! container removed another way, e.g. by pod termination). Live `<n>.log` files are left: the
//! restart count of a pod without containers is recovered from them. The file decisions are
//! [`rotation_plan`] and [`orphaned_rotated_logs`], pure functions over file names.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cri::pb;
use futures::StreamExt;

use crate::runtime::Runtime;

/// The rotated-file suffix layout (Go's `20060102-150405`).
pub const TIMESTAMP_FORMAT: &str = "%Y%m%d-%H%M%S";
/// The suffix of compressed rotated files.
pub const COMPRESS_SUFFIX: &str = ".gz";
/// The suffix of a file being compressed.
pub const TMP_SUFFIX: &str = ".tmp";

/// Upstream's `LogRotatePolicy` plus the worker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRotatePolicy {
    /// Bytes beyond which the live file is rotated.
    pub max_size: u64,
    /// Files kept per container, the live one included (at least 2).
    pub max_files: usize,
    /// Containers handled at once.
    pub max_workers: usize,
    /// How often the logs are checked.
    pub monitor_interval: Duration,
}

impl Default for LogRotatePolicy {
    fn default() -> Self {
        LogRotatePolicy {
            max_size: 10 << 20,
            max_files: 5,
            max_workers: 1,
            monitor_interval: Duration::from_secs(10),
        }
    }
}

impl LogRotatePolicy {
    /// The policy from the configuration file's settings (validated before).
    pub fn from_settings(s: &crate::config::KubeletConfiguration) -> Self {
        let max_size = crate::config::quantity::parse_milli(&s.container_log_max_size)
            .map(|m| (m / 1000).max(0) as u64)
            .unwrap_or(10 << 20);
        LogRotatePolicy {
            max_size,
            max_files: s.container_log_max_files.max(2) as usize,
            max_workers: s.container_log_max_workers.max(1) as usize,
            monitor_interval: s.container_log_monitor_interval,
        }
    }
}

/// The rotated siblings of a live log (`<log>.<anything>`), sorted by name (so by time).
pub fn rotated_logs(log: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// What one rotation does with the existing rotated files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationPlan {
    /// Files to delete: leftovers and the oldest beyond the limit.
    pub remove: Vec<PathBuf>,
    /// Plain rotated files to gzip.
    pub compress: Vec<PathBuf>,
}

/// Upstream's `cleanupUnusedLogs` + `removeExcessLogs` + the compress step, over the rotated
/// files of one log (sorted oldest first) and the policy's `max_files`.
pub fn rotation_plan(rotated: &[PathBuf], max_files: usize) -> RotationPlan {
    let mut plan = RotationPlan::default();
    let name = |p: &PathBuf| p.to_string_lossy().into_owned();
    let all: Vec<String> = rotated.iter().map(name).collect();
    let mut kept: Vec<&PathBuf> = Vec::new();
    for (p, n) in rotated.iter().zip(&all) {
        let stale_tmp = n.ends_with(TMP_SUFFIX);
        let compressed_twin = !n.ends_with(COMPRESS_SUFFIX)
            && all.iter().any(|o| *o == format!("{n}{COMPRESS_SUFFIX}"));
        if stale_tmp || compressed_twin {
            plan.remove.push(p.clone());
        } else {
            kept.push(p);
        }
    }
    // The live file and the one rotated now count too.
    let max_rotated = max_files.saturating_sub(2);
    let excess = kept.len().saturating_sub(max_rotated);
    for p in kept.drain(..excess) {
        plan.remove.push(p.clone());
    }
    plan.compress = kept
        .into_iter()
        .filter(|p| !name(p).ends_with(COMPRESS_SUFFIX))
        .cloned()
        .collect();
    plan
}

/// The live log a rotated file belongs to: `<dir>/<n>.log.<suffix>` -> `<dir>/<n>.log`.
pub fn live_log_of(rotated: &Path) -> Option<PathBuf> {
    let name = rotated.file_name()?.to_str()?;
    let (stem, _) = name.split_once(".log.")?;
    Some(rotated.with_file_name(format!("{stem}.log")))
}

/// Rotated files whose live log is not the log of any container the runtime lists.
pub fn orphaned_rotated_logs(rotated: &[PathBuf], live: &HashSet<PathBuf>) -> Vec<PathBuf> {
    rotated
        .iter()
        .filter(|f| live_log_of(f).is_some_and(|l| !live.contains(&l)))
        .cloned()
        .collect()
}

/// A listed container's log path in the kubelet's layout
/// (`<podLogsDir>/<ns>_<name>_<uid>/<container>/<attempt>.log`), from its labels.
fn expected_log_path(pod_logs_dir: &Path, c: &pb::Container) -> Option<PathBuf> {
    use crate::plan::labels;
    let l = |k: &str| c.labels.get(k).map(String::as_str);
    let dir = format!(
        "{}_{}_{}",
        l(labels::POD_NAMESPACE)?,
        l(labels::POD_NAME)?,
        l(labels::POD_UID)?
    );
    let name = l(labels::CONTAINER_NAME)?;
    let attempt = c.metadata.as_ref().map_or(0, |m| m.attempt);
    Some(
        pod_logs_dir
            .join(dir)
            .join(crate::plan::config::container_log_path(
                name,
                attempt as i32,
            )),
    )
}

/// Every rotated-looking file two levels under the pod-logs dir.
fn rotated_files_under(pod_logs_dir: &Path) -> Vec<PathBuf> {
    let read = |d: &Path| -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .collect()
    };
    let mut out = Vec::new();
    for pod in read(pod_logs_dir) {
        for container in read(&pod.path()) {
            for f in read(&container.path()) {
                if f.file_name().to_string_lossy().contains(".log.") {
                    out.push(f.path());
                }
            }
        }
    }
    out
}

/// Gzips `path` to `path.gz` through `path.tmp`, then removes `path`.
pub fn compress_log(path: &Path) -> io::Result<()> {
    let with = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    let (tmp, gz) = (with(TMP_SUFFIX), with(COMPRESS_SUFFIX));
    let result = (|| {
        let mut input = std::fs::File::open(path)?;
        let out = std::fs::File::create(&tmp)?;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut input, &mut enc)?;
        enc.finish()?.flush()?;
        std::fs::rename(&tmp, &gz)?;
        std::fs::remove_file(path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationRound {
    /// Containers whose log was rotated.
    pub rotated: Vec<String>,
    /// Rotated files of containers that are gone, removed.
    pub removed: Vec<PathBuf>,
}

/// The log manager: the runtime, the policy and the pod-logs dir.
#[derive(Clone)]
pub struct ContainerLogManager {
    runtime: Runtime,
    policy: LogRotatePolicy,
    pod_logs_dir: PathBuf,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
}

impl ContainerLogManager {
    pub fn new(runtime: Runtime, policy: LogRotatePolicy, pod_logs_dir: PathBuf) -> Self {
        ContainerLogManager {
            runtime,
            policy,
            pod_logs_dir,
            clock: Arc::new(SystemTime::now),
        }
    }

    /// The same with an injected clock (the rotated files' timestamps).
    pub fn with_clock(mut self, clock: Arc<dyn Fn() -> SystemTime + Send + Sync>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs [`ContainerLogManager::rotate_logs`] every monitor interval, forever.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.policy.monitor_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.rotate_logs().await {
                tracing::warn!("container log rotation: listing containers: {e}");
            }
        }
    }

    /// One round: rotates the running containers' big logs and removes rotated files of
    /// containers that are gone.
    pub async fn rotate_logs(&self) -> Result<RotationRound, tonic::Status> {
        let containers = self.runtime.list_containers(None).await?;
        let live: HashSet<PathBuf> = containers
            .iter()
            .filter_map(|c| expected_log_path(&self.pod_logs_dir, c))
            .collect();
        let running = containers
            .into_iter()
            .filter(|c| c.state == pb::ContainerState::ContainerRunning as i32);
        let rotated = futures::stream::iter(running)
            .map(|c| async move {
                let expected = expected_log_path(&self.pod_logs_dir, &c);
                match self.check(&c.id, expected.as_deref()).await {
                    Ok(true) => Some(c.id),
                    Ok(false) => None,
                    Err(e) => {
                        tracing::warn!(container = %c.id, "rotating container log: {e}");
                        None
                    }
                }
            })
            .buffer_unordered(self.policy.max_workers)
            .filter_map(futures::future::ready)
            .collect()
            .await;
        let dir = self.pod_logs_dir.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let orphans = orphaned_rotated_logs(&rotated_files_under(&dir), &live);
            orphans
                .into_iter()
                .filter(|f| match std::fs::remove_file(f) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!("removing rotated log {}: {e}", f.display());
                        false
                    }
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        Ok(RotationRound { rotated, removed })
    }

    /// Rotates one container's log if it is over the size; `Ok(true)` if it did.
    /// `expected` is the log path the kubelet's layout gives the container: while that file is
    /// below the size, the round needs no CRI call for it.
    async fn check(&self, id: &str, expected: Option<&Path>) -> Result<bool, String> {
        if let Some(Ok(m)) = expected.map(std::fs::metadata) {
            if m.len() < self.policy.max_size {
                return Ok(false);
            }
        }
        let status = self
            .runtime
            .container_status(id, false)
            .await
            .map_err(|e| format!("container status: {e}"))?;
        let Some(st) = status.status else {
            return Ok(false);
        };
        if st.state != pb::ContainerState::ContainerRunning as i32 || st.log_path.is_empty() {
            return Ok(false);
        }
        let log = PathBuf::from(&st.log_path);
        match std::fs::metadata(&log) {
            Ok(m) if m.len() < self.policy.max_size => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Someone removed the live file: have the runtime create it again.
                self.runtime
                    .reopen_container_log(id)
                    .await
                    .map_err(|e| format!("reopening missing log {}: {e}", log.display()))?;
                return Ok(false);
            }
            Err(e) => return Err(format!("stat {}: {e}", log.display())),
        }
        self.rotate(id, &log).await.map(|()| true)
    }

    async fn rotate(&self, id: &str, log: &Path) -> Result<(), String> {
        let plan = rotation_plan(&rotated_logs(log), self.policy.max_files);
        let compress = plan.compress.clone();
        tokio::task::spawn_blocking(move || {
            for p in &plan.remove {
                if let Err(e) = std::fs::remove_file(p) {
                    if e.kind() != io::ErrorKind::NotFound {
                        return Err(format!("removing {}: {e}", p.display()));
                    }
                }
            }
            for p in &compress {
                compress_log(p).map_err(|e| format!("compressing {}: {e}", p.display()))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())??;

        let stamp = chrono::DateTime::<chrono::Utc>::from((self.clock)())
            .format(TIMESTAMP_FORMAT)
            .to_string();
        let mut rotated = log.as_os_str().to_owned();
        rotated.push(format!(".{stamp}"));
        let rotated = PathBuf::from(rotated);
        std::fs::rename(log, &rotated)
            .map_err(|e| format!("renaming {} to {}: {e}", log.display(), rotated.display()))?;
        if let Err(e) = self.runtime.reopen_container_log(id).await {
            // The runtime still writes the renamed file: put it back so the size check retries.
            if let Err(e2) = std::fs::rename(&rotated, log) {
                tracing::error!(
                    "renaming {} back to {} after a failed reopen: {e2}",
                    rotated.display(),
                    log.display()
                );
            }
            return Err(format!("reopening the container log: {e}"));
        }
        tracing::debug!(container = %id, "rotated log to {}", rotated.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| PathBuf::from(format!("/l/{n}")))
            .collect()
    }

    #[test]
    fn keeps_max_files_minus_two_rotated_and_compresses_all_but_none_new() {
        let rotated = paths(&[
            "0.log.20240101-000000.gz",
            "0.log.20240102-000000.gz",
            "0.log.20240103-000000.gz",
            "0.log.20240104-000000",
        ]);
        let p = rotation_plan(&rotated, 5);
        // 5 files: live + about-to-rotate + 3 rotated -> the oldest goes.
        assert_eq!(p.remove, paths(&["0.log.20240101-000000.gz"]));
        assert_eq!(p.compress, paths(&["0.log.20240104-000000"]));
        let p = rotation_plan(&rotated, 2);
        assert_eq!(p.remove, rotated);
        assert!(p.compress.is_empty());
    }

    #[test]
    fn drops_leftovers_of_an_interrupted_round() {
        let rotated = paths(&[
            "0.log.20240101-000000",
            "0.log.20240101-000000.gz",
            "0.log.20240102-000000.tmp",
            "0.log.20240102-000000",
        ]);
        let p = rotation_plan(&rotated, 5);
        assert_eq!(
            p.remove,
            paths(&["0.log.20240101-000000", "0.log.20240102-000000.tmp"])
        );
        assert_eq!(p.compress, paths(&["0.log.20240102-000000"]));
    }

    #[test]
    fn rotated_files_of_gone_containers() {
        let files = paths(&[
            "ns_p_u/app/0.log.20240101-000000.gz",
            "ns_p_u/app/0.log.20240102-000000",
            "ns_p_u/app/1.log.20240103-000000",
            "ns_q_v/web/2.log.20240101-000000.tmp",
        ]);
        let live: HashSet<PathBuf> = paths(&["ns_p_u/app/1.log"]).into_iter().collect();
        assert_eq!(
            orphaned_rotated_logs(&files, &live),
            paths(&[
                "ns_p_u/app/0.log.20240101-000000.gz",
                "ns_p_u/app/0.log.20240102-000000",
                "ns_q_v/web/2.log.20240101-000000.tmp",
            ])
        );
        assert_eq!(
            live_log_of(Path::new("/l/ns_p_u/app/3.log.20240101-000000.gz")),
            Some(PathBuf::from("/l/ns_p_u/app/3.log"))
        );
        assert_eq!(live_log_of(Path::new("/l/x/app/3.log")), None);
    }

    #[test]
    fn compress_round_trips() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("0.log.20240101-000000");
        std::fs::write(&f, b"hello\n".repeat(1000)).unwrap();
        compress_log(&f).unwrap();
        assert!(!f.exists());
        let gz = dir.path().join("0.log.20240101-000000.gz");
        let mut out = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello\n".repeat(1000));
        assert_eq!(
            rotated_logs(&dir.path().join("0.log")),
            vec![gz],
            "no .tmp left"
        );
    }

    #[test]
    fn policy_from_settings() {
        let mut s = crate::config::KubeletConfiguration::default();
        assert_eq!(
            LogRotatePolicy::from_settings(&s),
            LogRotatePolicy::default()
        );
        s.container_log_max_size = "1Ki".into();
        assert_eq!(LogRotatePolicy::from_settings(&s).max_size, 1024);
    }
}
