//! What a conformance case sees: a `Ctx` with CRI clients for the runtime under test, builders for
//! the pod and container configs the way the kubelet fills them in, and waiting helpers. A `Ctx`
//! remembers every pod it ran; the runner stops and removes them after the case, whether it
//! passed, failed, panicked or timed out, so cases do not have to clean up on their own.
//!
//! Cases run concurrently on one shared instance per runtime: they tell their objects apart by a
//! label unique to the case (`LABEL_CASE`), never by listing everything.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use k8s_cri::v1 as pb;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::instance::{Instance, Kind};

/// Label put on every pod and container a case creates, with the case's unique id as value.
pub const LABEL_CASE: &str = "conformance.capstan.dev/case";
/// The image most cases run: busybox through the docker.io mirror.
pub const BUSYBOX: &str = "docker.io/library/busybox:latest";
/// Entrypoint/Cmd/Env/WorkingDir/User 1000:1000/StopSignal SIGINT/labels all set.
pub const CONFIG_IMAGE: &str = "127.0.0.1:5000/capstan-test/config:1.0";
/// A distinct image (own config digest), so removing it never touches what other cases use.
pub const LAYERS_IMAGE: &str = "127.0.0.1:5000/capstan-test/layers:1.0";

/// What a case concluded, when it did not fail.
pub enum Verdict {
    Pass,
    /// The case does not apply to this runtime; the reason is published in the report.
    NotApplicable(String),
}

#[derive(Clone)]
pub struct Ctx {
    pub inst: Arc<Instance>,
    inner: Arc<Inner>,
}

struct Inner {
    case: String,
    uid: String,
    pods: Mutex<Vec<String>>,
    notes: Mutex<Vec<String>>,
}

impl Ctx {
    pub fn new(inst: Arc<Instance>, case: &str) -> Ctx {
        let uid = format!(
            "{}-{:x}",
            case.replace('_', "-"),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        Ctx {
            inst,
            inner: Arc::new(Inner {
                case: case.to_string(),
                uid,
                pods: Mutex::new(Vec::new()),
                notes: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn kind(&self) -> Kind {
        self.inst.kind
    }

    pub fn rt(&self) -> RuntimeServiceClient<Channel> {
        self.inst.rt()
    }

    pub fn img(&self) -> ImageServiceClient<Channel> {
        self.inst.img()
    }

    /// The case's unique id (label value, pod uid prefix).
    pub fn uid(&self) -> &str {
        &self.inner.uid
    }

    /// Records a remark that goes into the report next to the result (a known deviation).
    pub fn note(&self, s: impl Into<String>) {
        self.inner.notes.lock().unwrap().push(s.into());
    }

    pub fn notes(&self) -> Vec<String> {
        self.inner.notes.lock().unwrap().clone()
    }

    pub fn case_labels(&self) -> HashMap<String, String> {
        HashMap::from([(LABEL_CASE.to_string(), self.inner.uid.clone())])
    }

    /// Where this case's pod logs go.
    pub fn log_dir(&self, pod: &str) -> PathBuf {
        self.inst.dir.join("logs").join(&self.inner.uid).join(pod)
    }

    /// A pod config as the kubelet fills it in: metadata, hostname, log dir, cgroup parent.
    pub fn pod_config(&self, name: &str) -> pb::PodSandboxConfig {
        let log_dir = self.log_dir(name);
        let _ = std::fs::create_dir_all(&log_dir);
        pb::PodSandboxConfig {
            metadata: Some(pb::PodSandboxMetadata {
                name: name.to_string(),
                uid: format!("{}-{name}", self.inner.uid),
                namespace: "conformance".into(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: log_dir.to_string_lossy().into_owned(),
            labels: self.case_labels(),
            annotations: HashMap::from([("conformance.capstan.dev/pod".into(), name.into())]),
            linux: Some(pb::LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/{}-{name}", self.inst.cgroup_parent, self.inner.uid),
                security_context: Some(pb::LinuxSandboxSecurityContext {
                    namespace_options: Some(pb::NamespaceOption::default()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A container config running `cmd` (as `command`) in `image`, logging to `<name>.log`.
    pub fn container_config(&self, name: &str, image: &str, cmd: &[&str]) -> pb::ContainerConfig {
        pb::ContainerConfig {
            metadata: Some(pb::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(pb::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            labels: self.case_labels(),
            linux: Some(pb::LinuxContainerConfig {
                resources: Some(pb::LinuxContainerResources::default()),
                security_context: Some(pb::LinuxContainerSecurityContext {
                    namespace_options: Some(pb::NamespaceOption::default()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    /// Pulls `image` unless this instance already has it.
    pub async fn ensure_image(&self, image: &str) -> Result<()> {
        let status = self
            .img()
            .image_status(pb::ImageStatusRequest {
                image: Some(spec(image)),
                verbose: false,
            })
            .await
            .with_context(|| format!("ImageStatus {image}"))?
            .into_inner();
        if status.image.is_some() {
            return Ok(());
        }
        self.pull(image).await.map(|_| ())
    }

    pub async fn pull(&self, image: &str) -> Result<String> {
        Ok(self
            .img()
            .pull_image(pb::PullImageRequest {
                image: Some(spec(image)),
                ..Default::default()
            })
            .await
            .with_context(|| format!("PullImage {image}"))?
            .into_inner()
            .image_ref)
    }

    /// RunPodSandbox; the pod is removed after the case.
    pub async fn run_pod(&self, config: &pb::PodSandboxConfig) -> Result<String> {
        let id = self
            .rt()
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .context("RunPodSandbox")?
            .into_inner()
            .pod_sandbox_id;
        self.inner.pods.lock().unwrap().push(id.clone());
        Ok(id)
    }

    /// A pod with the default config, named `name`.
    pub async fn pod(&self, name: &str) -> Result<(String, pb::PodSandboxConfig)> {
        let cfg = self.pod_config(name);
        Ok((self.run_pod(&cfg).await?, cfg))
    }

    pub async fn create(
        &self,
        pod: &str,
        pod_cfg: &pb::PodSandboxConfig,
        cfg: pb::ContainerConfig,
    ) -> Result<String> {
        if let Some(i) = &cfg.image {
            self.ensure_image(&i.image).await?;
        }
        Ok(self
            .rt()
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(cfg),
                sandbox_config: Some(pod_cfg.clone()),
            })
            .await
            .context("CreateContainer")?
            .into_inner()
            .container_id)
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        self.rt()
            .start_container(pb::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .context("StartContainer")?;
        Ok(())
    }

    /// CreateContainer + StartContainer.
    pub async fn run(
        &self,
        pod: &str,
        pod_cfg: &pb::PodSandboxConfig,
        cfg: pb::ContainerConfig,
    ) -> Result<String> {
        let id = self.create(pod, pod_cfg, cfg).await?;
        self.start(&id).await?;
        Ok(id)
    }

    pub async fn status(&self, id: &str) -> Result<pb::ContainerStatus> {
        self.rt()
            .container_status(pb::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .with_context(|| format!("ContainerStatus {id}"))?
            .into_inner()
            .status
            .ok_or_else(|| anyhow!("ContainerStatus {id} returned no status"))
    }

    pub async fn pod_status(&self, id: &str) -> Result<pb::PodSandboxStatus> {
        self.rt()
            .pod_sandbox_status(pb::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            })
            .await
            .with_context(|| format!("PodSandboxStatus {id}"))?
            .into_inner()
            .status
            .ok_or_else(|| anyhow!("PodSandboxStatus {id} returned no status"))
    }

    /// Waits until the container is in `state`; returns its status.
    pub async fn wait_state(
        &self,
        id: &str,
        state: pb::ContainerState,
        timeout: Duration,
    ) -> Result<pb::ContainerStatus> {
        let start = Instant::now();
        loop {
            let s = self.status(id).await?;
            if s.state == state as i32 {
                return Ok(s);
            }
            if start.elapsed() > timeout {
                bail!(
                    "container {id} did not reach {state:?} within {timeout:?}; it is {:?} (reason {:?}, message {:?})",
                    pb::ContainerState::try_from(s.state),
                    s.reason,
                    s.message
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// ExecSync with a timeout in seconds; returns (stdout, stderr, exit code).
    pub async fn exec(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<(String, String, i32)> {
        let r = self
            .rt()
            .exec_sync(pb::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .with_context(|| format!("ExecSync {cmd:?}"))?
            .into_inner();
        Ok((
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
            r.exit_code,
        ))
    }

    /// `sh -c script` in the container; stdout, failing unless it exits 0.
    pub async fn sh(&self, id: &str, script: &str) -> Result<String> {
        let (out, err, code) = self.exec(id, &["sh", "-c", script], 20).await?;
        if code != 0 {
            bail!("`{script}` exited {code}; stdout {out:?}, stderr {err:?}");
        }
        Ok(out)
    }

    /// Waits until the container's log file contains `needle`; returns the whole file.
    pub async fn wait_log(&self, path: &Path, needle: &str, timeout: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            if log.contains(needle) {
                return Ok(log);
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} does not contain {needle:?} after {timeout:?}; it holds {log:?}",
                    path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pods of this case (by label), as ListPodSandbox shows them.
    pub async fn my_pods(&self) -> Result<Vec<pb::PodSandbox>> {
        Ok(self
            .rt()
            .list_pod_sandbox(pb::ListPodSandboxRequest {
                filter: Some(pb::PodSandboxFilter {
                    label_selector: self.case_labels(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items)
    }

    /// Containers of this case (by label).
    pub async fn my_containers(&self) -> Result<Vec<pb::Container>> {
        Ok(self
            .rt()
            .list_containers(pb::ListContainersRequest {
                filter: Some(pb::ContainerFilter {
                    label_selector: self.case_labels(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers)
    }

    /// Stops and removes every pod this case ran (best effort; after the case).
    pub async fn cleanup(&self) -> Result<()> {
        let pods: Vec<String> = self.inner.pods.lock().unwrap().drain(..).collect();
        let mut errors = Vec::new();
        let mut rt = self.rt();
        for id in pods {
            if let Err(e) = rt
                .stop_pod_sandbox(pb::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
            {
                if e.code() != tonic::Code::NotFound {
                    errors.push(format!("StopPodSandbox {id}: {e}"));
                }
            }
            if let Err(e) = rt
                .remove_pod_sandbox(pb::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
            {
                if e.code() != tonic::Code::NotFound {
                    errors.push(format!("RemovePodSandbox {id}: {e}"));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!(
                "cleaning up after {}: {}",
                self.inner.case,
                errors.join("; ")
            )
        }
    }

    /// What this instance has on the node right now (see `NodeSnapshot`).
    pub fn snapshot(&self) -> NodeSnapshot {
        NodeSnapshot::take(&self.inst)
    }
}

pub fn spec(image: &str) -> pb::ImageSpec {
    pb::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// The traces one runtime instance leaves on the node: mounts under its directory, network
/// namespaces (all of /run/netns, and nsfs mounts under the directory), interfaces on its
/// bridge, and its processes (the runtime, everything whose command line names the instance's
/// directory — shims, supervisors — and all their descendants). Two snapshots around a case
/// that ran alone on the instance must be equal once its pods are gone.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct NodeSnapshot {
    pub mounts: BTreeSet<String>,
    pub netns: BTreeSet<String>,
    pub bridge_ports: BTreeSet<String>,
    pub processes: BTreeSet<String>,
}

impl NodeSnapshot {
    pub fn take(inst: &Instance) -> NodeSnapshot {
        let dir = format!("{}/", inst.dir.display());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounts = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .map(str::to_string)
            .collect();
        let netns = std::fs::read_dir("/run/netns")
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let bridge_ports = std::fs::read_dir(format!("/sys/class/net/{}/brif", inst.bridge))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        NodeSnapshot {
            mounts,
            netns,
            bridge_ports,
            processes: instance_processes(inst, &dir),
        }
    }

    /// What `after` has that `self` had not, as a readable list (empty when clean).
    pub fn leftovers(&self, after: &NodeSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        let diff =
            |what: &str, a: &BTreeSet<String>, b: &BTreeSet<String>, out: &mut Vec<String>| {
                for x in b.difference(a) {
                    out.push(format!("{what} {x}"));
                }
            };
        diff("mount", &self.mounts, &after.mounts, &mut out);
        diff("netns", &self.netns, &after.netns, &mut out);
        diff(
            "bridge port",
            &self.bridge_ports,
            &after.bridge_ports,
            &mut out,
        );
        diff("process", &self.processes, &after.processes, &mut out);
        out
    }
}

fn instance_processes(inst: &Instance, dir: &str) -> BTreeSet<String> {
    let mut parent = HashMap::new();
    let mut cmdline = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(0);
            let cmd = std::fs::read(e.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            if stat.split_whitespace().nth(2) == Some("Z") {
                continue;
            }
            parent.insert(pid, ppid);
            cmdline.insert(pid, cmd);
        }
    }
    let mut ours: BTreeSet<u32> = cmdline
        .iter()
        .filter(|(_, c)| c.contains(dir))
        .map(|(p, _)| *p)
        .collect();
    ours.extend(inst.pid());
    loop {
        let more: Vec<u32> = parent
            .iter()
            .filter(|(p, pp)| !ours.contains(p) && ours.contains(pp))
            .map(|(p, _)| *p)
            .collect();
        if more.is_empty() {
            break;
        }
        ours.extend(more);
    }
    ours.into_iter()
        .filter_map(|p| cmdline.get(&p).map(|c| format!("{p} {}", c.trim())))
        .collect()
}

/// Fails with a readable message unless `r` is an error; returns the gRPC status.
pub fn expect_err<T: std::fmt::Debug>(what: &str, r: Result<T>) -> Result<tonic::Status> {
    match r {
        Ok(v) => bail!("{what} should have failed, it returned {v:?}"),
        Err(e) => match e.downcast_ref::<tonic::Status>() {
            Some(s) => Ok(s.clone()),
            None => Ok(tonic::Status::unknown(format!("{e:#}"))),
        },
    }
}

/// Waits until `f` returns Some, polling every 100 ms; fails with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_err = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what} {last_err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
