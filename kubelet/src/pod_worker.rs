//! Pod workers: one task per pod UID that syncs the pod — upstream's podWorkers plus
//! kubeGenericRuntimeManager.SyncPod. A sync reads the runtime's view of the pod, computes a
//! plan with the pure `plan::compute_pod_actions`, applies it (pod cgroup, volumes, sandbox, image
//! pulls, init containers, sidecars, containers), and hands the resulting status to the status
//! manager. A pod being deleted goes through termination instead: containers stopped within
//! their grace period, the sandbox stopped and removed, volumes and the pod cgroup torn down, and
//! finally the API object deleted.
//!
//! A worker syncs when its pod changes, when the PLEG reports a container event, when a probe
//! result changes, and at least every resync period (back-off expiry, refreshed volumes).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use tokio::sync::mpsc;

use crate::env::{self, EnvContext, ObjectLookup};
use crate::events::{reason, EventRecorder};
use crate::object_cache::{CacheLookup, ObjectCache};
use crate::plan::config::{self as cfg, ContainerOptions, SandboxOptions};
use crate::plan::{self, labels, Plan, PodRuntimeStatus, RuntimeContainer};
use crate::pod_status::{self, StartFailure, StatusInputs};
use crate::probe::{ContainerProbeState, PodProbeState, ProbeContainerState, ProbeManager};
use crate::qos::{self, PodCgroups};
use crate::runtime::{image_spec, Runtime};
use crate::status_manager::StatusManager;
use crate::volume::dns::{self, DnsSettings};
use crate::volume::token::{self, TokenRequester};
use crate::volume::{VolumeManager, VolumeSources};
use cri::pb;

/// What every pod worker shares.
pub struct PodContext {
    pub runtime: Runtime,
    /// `capstan`, `containerd`, … (container IDs are `<name>://<id>`).
    pub runtime_name: String,
    pub client: kube::Client,
    pub node_name: String,
    pub host_ips: Vec<String>,
    pub pod_logs_dir: PathBuf,
    pub cgroups: Option<PodCgroups>,
    pub volumes: VolumeManager,
    pub dns: DnsSettings,
    pub node_allocatable: BTreeMap<String, Quantity>,
    pub probes: Arc<ProbeManager>,
    pub backoff: crate::backoff::Backoff,
    /// Image pull back-off, keyed `<pod uid>_<image>` (ImagePullBackOff).
    pub image_backoff: crate::backoff::Backoff,
    /// Kubelet events (Pulling, Created, Started, Killing, BackOff, …).
    pub events: EventRecorder,
    pub status: StatusManager,
    /// The watched ConfigMaps, Secrets and Services pods read.
    pub objects: ObjectCache,
    /// Service account tokens for serviceAccountToken projections (TokenRequest).
    pub tokens: Arc<dyn TokenRequester>,
    /// How often a worker syncs without being asked.
    pub resync: Duration,
}

/// What a worker is told.
#[derive(Debug)]
pub enum PodUpdate {
    /// The pod as the API (or a static manifest) has it now.
    Pod(Box<Pod>),
    /// Something happened in the runtime or a probe changed: sync again.
    Sync,
}

/// Starts the worker of one pod; it ends once the pod is terminated and its API object gone.
pub fn spawn_worker(ctx: Arc<PodContext>, pod: Pod) -> mpsc::UnboundedSender<PodUpdate> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut pod = pod;
        let mut worker = Worker::new(ctx.clone(), &pod);
        // upstream's operation types: the first sync creates, a changed pod updates, the rest
        // (events, timers) sync.
        let mut operation = "create";
        'work: loop {
            let started = std::time::Instant::now();
            let done = worker.sync(&pod).await;
            crate::metrics::metrics()
                .pod_worker_duration
                .with(operation)
                .observe_duration(started.elapsed());
            if done {
                break;
            }
            operation = "sync";
            // Wait for a reason to sync again: a pod change that matters, a runtime or probe
            // event, or the resync / back-off timer. A status-only change (usually our own
            // write coming back through the watch) updates the pod but does not sync, as
            // upstream's config source only reconciles such updates.
            let deadline = tokio::time::Instant::now() + worker.next_wait(ctx.resync);
            loop {
                let sync = tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(PodUpdate::Pod(p)) => {
                            let differs = differs_semantically(&pod, &p);
                            pod = *p;
                            if differs {
                                operation = "update";
                            }
                            differs
                        }
                        Some(PodUpdate::Sync) => true,
                        None => break 'work,
                    },
                    _ = tokio::time::sleep_until(deadline) => true,
                };
                if sync {
                    break;
                }
            }
            // Coalesce a burst of notifications into one sync.
            while let Ok(msg) = rx.try_recv() {
                if let PodUpdate::Pod(p) = msg {
                    pod = *p;
                }
            }
        }
        ctx.probes.remove_pod(worker.uid.as_str());
    });
    tx
}

/// The end of a CRI log file, enough for the termination message's tail (80 lines, 2 KiB of
/// messages): the last 16 KiB, from the first whole line in it.
fn read_log_end(path: &std::path::Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const WINDOW: u64 = 16 * 1024;
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(WINDOW);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(WINDOW).read_to_end(&mut buf);
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        // The window starts mid-line: drop that line.
        text = text
            .split_once('\n')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default();
    }
    text
}

/// Whether an update changes what the kubelet acts on (spec, labels, annotations, deletion), not
/// just the status (upstream's `podsDifferSemantically` decides between UPDATE and RECONCILE).
fn differs_semantically(old: &Pod, new: &Pod) -> bool {
    let (o, n) = (&old.metadata, &new.metadata);
    old.spec != new.spec
        || o.labels != n.labels
        || o.annotations != n.annotations
        || o.deletion_timestamp != n.deletion_timestamp
        || o.deletion_grace_period_seconds != n.deletion_grace_period_seconds
        || o.uid != n.uid
}

struct Worker {
    ctx: Arc<PodContext>,
    uid: String,
    /// Why containers could not start in the last sync (shown as their waiting reason).
    start_failures: HashMap<String, StartFailure>,
    /// The earliest back-off expiry, so the worker wakes for it.
    next_retry: Option<Duration>,
    probes_added: bool,
    /// The last pull error per image back-off key, quoted in the ImagePullBackOff message.
    pull_errors: std::sync::Mutex<HashMap<String, String>>,
    /// When this kubelet first saw the pod (`kubelet_pod_start_duration_seconds` runs from here
    /// to the first Running status).
    first_seen: std::time::Instant,
    /// Whether the pod's start was recorded (or it was running already when first seen).
    start_recorded: std::sync::atomic::AtomicBool,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Worker {
    fn new(ctx: Arc<PodContext>, pod: &Pod) -> Self {
        Worker {
            ctx,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            start_failures: HashMap::new(),
            next_retry: None,
            probes_added: false,
            pull_errors: Default::default(),
            first_seen: std::time::Instant::now(),
            // A pod already running when first seen (adopted after a restart) did not start now.
            start_recorded: std::sync::atomic::AtomicBool::new(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
            ),
        }
    }

    fn next_wait(&self, resync: Duration) -> Duration {
        self.next_retry.map_or(resync, |r| r.min(resync))
    }

    /// One sync; `true` when the pod is gone for good.
    async fn sync(&mut self, pod: &Pod) -> bool {
        if pod.metadata.deletion_timestamp.is_some() {
            return self.terminate(pod).await;
        }
        let failed = match self.sync_running(pod).await {
            Ok(()) => self
                .start_failures
                .values()
                .any(|f| f.reason != pod_status::CRASH_LOOP_BACK_OFF),
            Err(e) => {
                tracing::warn!("syncing pod {}: {e:#}", plan::pod_full_name(pod));
                true
            }
        };
        if failed {
            // Upstream's pod workers retry a failed sync after workerBackOffPeriod (10 s); a
            // successful one waits for an event or the sync frequency.
            let retry = crate::backoff::INITIAL_BACKOFF;
            self.next_retry = Some(self.next_retry.map_or(retry, |r| r.min(retry)));
        }
        false
    }

    async fn runtime_status(&self, pod: &Pod) -> anyhow::Result<PodRuntimeStatus> {
        let rt = &self.ctx.runtime;
        let selector = labels::pod_selector(&self.uid);
        let sandboxes = rt
            .list_pod_sandbox(Some(pb::PodSandboxFilter {
                label_selector: selector.clone(),
                ..Default::default()
            }))
            .await?;
        let mut sandbox_statuses = Vec::new();
        for s in sandboxes {
            if let Ok(st) = rt.pod_sandbox_status(&s.id, false).await {
                sandbox_statuses.extend(st.status);
            }
        }
        let containers = rt
            .list_containers(Some(pb::ContainerFilter {
                label_selector: selector,
                ..Default::default()
            }))
            .await?;
        let mut statuses = Vec::new();
        for c in containers {
            if let Ok(st) = rt.container_status(&c.id, false).await {
                if let Some(s) = st.status.as_ref() {
                    let mut rc = RuntimeContainer::from_cri(s);
                    self.add_termination_message(pod, &mut rc);
                    statuses.push(rc);
                }
            }
        }
        Ok(PodRuntimeStatus::new(sandbox_statuses, statuses))
    }

    /// Where the termination-message file of attempt `restart` of container `name` lives on the
    /// host (mounted at the container's terminationMessagePath).
    fn termination_message_file(&self, name: &str, restart: i32) -> PathBuf {
        self.ctx
            .volumes
            .pod_dir(&self.uid)
            .join("containers")
            .join(name)
            .join(format!("{restart}-termination-log"))
    }

    /// Reads an exited container's termination message back: its message file, or with
    /// `FallbackToLogsOnError` the tail of its log.
    fn add_termination_message(&self, pod: &Pod, rc: &mut RuntimeContainer) {
        if rc.state() != plan::ContainerState::Exited {
            return;
        }
        let file = std::fs::File::open(self.termination_message_file(&rc.name, rc.restart_count))
            .and_then(|f| {
                use std::io::Read;
                let mut buf = Vec::new();
                f.take(plan::MAX_TERMINATION_MESSAGE_LENGTH as u64)
                    .read_to_end(&mut buf)
                    .map(|_| buf)
            })
            .ok();
        let log = cfg::pod_log_dir(&self.ctx.pod_logs_dir, pod)
            .join(cfg::container_log_path(&rc.name, rc.restart_count));
        rc.add_termination_message(file.as_deref(), || {
            plan::termination_log_tail(&read_log_end(&log))
        });
    }

    /// The ConfigMaps, Secrets and Services a pod's volumes and environment may read: the
    /// watch-based object cache (no API call), once it has listed (or after a second, upstream's
    /// wait; lookups then fail and the pod waits).
    async fn objects(&self, pod: &Pod) -> CacheLookup {
        self.ctx
            .objects
            .wait_synced(pod, Duration::from_secs(1))
            .await;
        self.ctx.objects.lookup(pod)
    }

    async fn sync_running(&mut self, pod: &Pod) -> anyhow::Result<()> {
        let ctx = self.ctx.clone();
        let spec = pod.spec.clone().unwrap_or_default();
        if !self.probes_added {
            ctx.probes.add_pod(pod);
            self.probes_added = true;
        }
        self.start_failures.clear();
        self.next_retry = None;

        // Pod cgroup, volumes and DNS come before the sandbox.
        let cgroup_parent = match &ctx.cgroups {
            Some(c) => c.ensure_pod(pod)?,
            None => String::new(),
        };
        let objects = self.objects(pod).await;
        // Every sync re-projects configMap/secret/downwardAPI/projected volumes; the atomic
        // writer only writes when their content changed.
        let tokens = token::prefetch(ctx.tokens.as_ref(), pod).await;
        let setup = {
            let sources = VolumeSources {
                lookup: &objects,
                node_allocatable: &ctx.node_allocatable,
                tokens: Some(&tokens),
            };
            ctx.volumes.setup_all(pod, &sources)
        };
        let volumes = match setup {
            Ok(v) => v,
            Err(e) => {
                // Upstream: the pod waits in ContainerCreating and an event says why.
                ctx.events.pod_warning(
                    pod,
                    reason::FAILED_MOUNT,
                    format!("Unable to attach or mount volumes: {e}"),
                );
                for c in spec.containers.iter() {
                    self.start_failures.insert(
                        c.name.clone(),
                        StartFailure {
                            reason: "ContainerCreating".into(),
                            message: format!("unable to mount volumes: {e}"),
                        },
                    );
                }
                let st = self.runtime_status(pod).await?;
                self.report(pod, &st, false);
                return Err(e.into());
            }
        };
        let (pod_dns, _) = dns::pod_dns(pod, &ctx.dns);
        let sandbox_opts = SandboxOptions {
            pod_logs_dir: ctx.pod_logs_dir.clone(),
            dns: Some(pb::DnsConfig {
                servers: pod_dns.servers.clone(),
                searches: pod_dns.searches.clone(),
                options: pod_dns.options.clone(),
            }),
            cgroup_parent,
            ..Default::default()
        };

        let status = self.runtime_status(pod).await?;
        let plan = plan::compute_pod_actions(pod, &status, ctx.probes.results(), &ctx.backoff);
        for b in &plan.back_off {
            if let Some(c) = container_by_name(pod, &b.name) {
                ctx.events.container_warning(
                    pod,
                    c,
                    reason::BACK_OFF,
                    format!(
                        "Back-off restarting failed container {} in pod {}",
                        b.name,
                        plan::pod_full_name(pod)
                    ),
                );
            }
            self.start_failures.insert(
                b.name.clone(),
                StartFailure {
                    reason: "CrashLoopBackOff".into(),
                    message: b.message.clone(),
                },
            );
            self.next_retry = Some(self.next_retry.map_or(b.backoff, |r| r.min(b.backoff)));
        }
        self.apply(pod, &plan, &status, &sandbox_opts, &volumes, &objects)
            .await?;

        let after = self.runtime_status(pod).await?;
        self.update_probes(pod, &after);
        self.report(pod, &after, false);
        Ok(())
    }

    /// Applies a plan in upstream's order.
    async fn apply(
        &mut self,
        pod: &Pod,
        plan: &Plan,
        status: &PodRuntimeStatus,
        sandbox_opts: &SandboxOptions,
        volumes: &BTreeMap<String, crate::volume::MountedVolume>,
        objects: &(dyn ObjectLookup + Sync),
    ) -> anyhow::Result<()> {
        let ctx = self.ctx.clone();
        let rt = &ctx.runtime;
        let spec = pod.spec.clone().unwrap_or_default();
        if plan.kill_pod {
            self.kill_all(pod, status, None).await;
            if plan.create_sandbox {
                for id in plan::init_containers_to_purge(pod, status) {
                    let _ = rt.remove_container(&id).await;
                }
            }
        } else {
            for k in &plan.kill_containers {
                let c = container_by_name(pod, &k.name);
                let grace = plan::termination_grace_period(pod, c, Some(k.reason));
                let mut grace = grace;
                if let Some(c) = c {
                    let message = match k.reason {
                        plan::KillReason::LivenessProbe | plan::KillReason::StartupProbe => {
                            k.message.clone()
                        }
                        _ => format!("Stopping container {}", c.name),
                    };
                    ctx.events
                        .container_normal(pod, c, reason::KILLING, message);
                    grace = remaining_grace(grace, self.run_pre_stop(pod, c, &k.id, grace).await);
                }
                let _ = rt.stop_container(&k.id, grace).await;
            }
            for id in plan::init_containers_to_prune(pod, status) {
                let _ = rt.remove_container(&id).await;
            }
        }

        let mut sandbox_id = plan.sandbox_id.clone();
        let sandbox_config = cfg::sandbox_config(pod, plan.attempt, sandbox_opts);
        let mut pod_ips = status.ips.clone();
        if plan.create_sandbox {
            if !status.sandboxes.is_empty() {
                ctx.events.pod_normal(
                    pod,
                    reason::SANDBOX_CHANGED,
                    "Pod sandbox changed, it will be killed and re-created.".into(),
                );
            }
            let started = rt.run_pod_sandbox(sandbox_config.clone(), "").await;
            let m = crate::metrics::metrics();
            match &started {
                Ok(_) => m.started_pods.inc(),
                Err(_) => m.started_pods_errors.inc(),
            }
            sandbox_id = match started {
                Ok(id) => id,
                Err(e) => {
                    let msg = format!("Failed to create pod sandbox: {}", e.message());
                    ctx.events
                        .pod_warning(pod, reason::FAILED_CREATE_POD_SANDBOX, msg.clone());
                    anyhow::bail!(msg);
                }
            };
            if let Ok(st) = rt.pod_sandbox_status(&sandbox_id, false).await {
                if let Some(s) = st.status.as_ref() {
                    pod_ips = plan::sandbox_ips(s);
                }
            }
        }
        if sandbox_id.is_empty() {
            return Ok(());
        }
        // /etc/hosts for the pod now that its IPs are known.
        let node_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let hosts = dns::hosts_file_content(pod, &pod_ips, &ctx.dns.cluster_domain, &node_hosts);
        let (hosts_path, _) = ctx.volumes.write_pod_dns_files(&self.uid, &hosts, None)?;

        let inits = spec.init_containers.clone().unwrap_or_default();
        let starts: Vec<(bool, usize)> = plan
            .start_init
            .iter()
            .map(|i| (true, *i))
            .chain(plan.start_containers.iter().map(|i| (false, *i)))
            .collect();
        for (init, idx) in starts {
            let c = if init {
                &inits[idx]
            } else {
                &spec.containers[idx]
            };
            let result = self
                .start_container(
                    pod,
                    c,
                    status,
                    &sandbox_id,
                    &sandbox_config,
                    sandbox_opts,
                    volumes,
                    objects,
                    &pod_ips,
                    &hosts_path,
                )
                .await;
            let container_type = if init { "init_container" } else { "container" };
            let m = crate::metrics::metrics();
            match &result {
                Ok(()) => m.started_containers.with(container_type).inc(),
                Err(_) => m.started_containers_errors.with(container_type).inc(),
            }
            if let Err(f) = result {
                if f.reason == pod_status::ERR_IMAGE_PULL
                    || f.reason == pod_status::IMAGE_PULL_BACK_OFF
                {
                    // Upstream's pod worker retries a failed sync after its 10 s back-off
                    // period; the image back-off decides whether that retry pulls.
                    let retry = crate::backoff::INITIAL_BACKOFF;
                    self.next_retry = Some(self.next_retry.map_or(retry, |r| r.min(retry)));
                }
                ctx.events.container_warning(
                    pod,
                    c,
                    reason::FAILED,
                    format!("Error: {}", failure_event_detail(&f)),
                );
                tracing::info!(
                    "pod {}: container {}: {}: {}",
                    plan::pod_full_name(pod),
                    c.name,
                    f.reason,
                    f.message
                );
                self.start_failures.insert(c.name.clone(), f);
                if init && !plan::is_sidecar(c) {
                    // A failed regular init container ends this sync.
                    break;
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        &self,
        pod: &Pod,
        c: &Container,
        status: &PodRuntimeStatus,
        sandbox_id: &str,
        sandbox_config: &pb::PodSandboxConfig,
        sandbox_opts: &SandboxOptions,
        volumes: &BTreeMap<String, crate::volume::MountedVolume>,
        objects: &(dyn ObjectLookup + Sync),
        pod_ips: &[String],
        hosts_path: &std::path::Path,
    ) -> Result<(), StartFailure> {
        let ctx = &self.ctx;
        let rt = &ctx.runtime;
        let fail = |reason: &str, message: String| StartFailure {
            reason: reason.to_string(),
            message,
        };
        // Back-off bookkeeping: a restart after an exit counts.
        if let Some(t) = plan::last_exit(c, status) {
            ctx.backoff
                .next(&plan::stable_key(pod, c), crate::backoff::unix_nanos(t));
        }
        let image = c.image.clone().unwrap_or_default();
        let image_ref = self.ensure_image(pod, c, &image, sandbox_config).await?;

        let env = env::make_environment(
            pod,
            c,
            &EnvContext {
                lookup: objects,
                pod_ips,
                host_ips: &ctx.host_ips,
                node_allocatable: &ctx.node_allocatable,
                relaxed_names: true,
            },
        )
        .map_err(|e| fail("CreateContainerConfigError", e.to_string()))?;
        let mut mounts = vec![pb::Mount {
            container_path: "/etc/hosts".into(),
            host_path: hosts_path.to_string_lossy().into_owned(),
            ..Default::default()
        }];
        for m in c.volume_mounts.iter().flatten() {
            let Some(v) = volumes.get(&m.name) else {
                return Err(fail(
                    "CreateContainerConfigError",
                    format!(
                        "cannot find volume {:?} to mount into container {:?}",
                        m.name, c.name
                    ),
                ));
            };
            let (host, ro) = ctx
                .volumes
                .container_mount(v, m, &env.vars)
                .map_err(|e| fail("CreateContainerConfigError", e.to_string()))?;
            mounts.push(pb::Mount {
                container_path: m.mount_path.clone(),
                host_path: host.to_string_lossy().into_owned(),
                readonly: ro,
                ..Default::default()
            });
        }
        // The termination-message file lives in the pod's dir and is mounted into the container.
        let term_path = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        let restart = plan::next_restart_count(c, status).unwrap_or_else(|| {
            cfg::restart_count_from_log_dir(
                &cfg::pod_log_dir(&sandbox_opts.pod_logs_dir, pod).join(&c.name),
            )
        });
        let term_host = self.termination_message_file(&c.name, restart);
        if let Some(parent) = term_host.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(&term_host, b"");
        mounts.push(pb::Mount {
            container_path: term_path,
            host_path: term_host.to_string_lossy().into_owned(),
            ..Default::default()
        });
        let (image_uid, image_user) = self.image_user(&image_ref).await;
        let opts = ContainerOptions {
            image_ref: image_ref.clone(),
            envs: env.vars.clone(),
            mounts,
            oom_score_adj: qos_oom_score_adj(pod, c),
            cpu_cfs_quota: true,
            image_uid,
            image_user,
            ..Default::default()
        };
        let config = cfg::container_config(pod, c, restart, sandbox_opts, &opts)
            .map_err(|e| fail("CreateContainerConfigError", e.to_string()))?;
        let id = rt
            .create_container(sandbox_id, config, sandbox_config.clone())
            .await
            .map_err(|e| fail("CreateContainerError", e.message().to_string()))?;
        ctx.events.container_normal(
            pod,
            c,
            reason::CREATED,
            format!("Created container: {}", c.name),
        );
        rt.start_container(&id)
            .await
            .map_err(|e| fail("RunContainerError", e.message().to_string()))?;
        ctx.events.container_normal(
            pod,
            c,
            reason::STARTED,
            format!("Started container {}", c.name),
        );
        // postStart: exec or httpGet; a failure kills the container (upstream's behaviour).
        if let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            if let Err(msg) = self.run_handler(pod, c, &id, handler, 30).await {
                ctx.events
                    .container_warning(pod, c, reason::FAILED_POST_START_HOOK, msg.clone());
                ctx.events.container_normal(
                    pod,
                    c,
                    reason::KILLING,
                    format!("FailedPostStartHook: stopping container {}", c.name),
                );
                let _ = rt.stop_container(&id, 0).await;
                return Err(fail("PostStartHookError", msg));
            }
        }
        Ok(())
    }

    /// Pulls per imagePullPolicy, under the image pull back-off (upstream's `imageManager`);
    /// returns the image reference to run.
    async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
        image: &str,
        sandbox_config: &pb::PodSandboxConfig,
    ) -> Result<String, StartFailure> {
        let ctx = &self.ctx;
        let rt = &ctx.runtime;
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tagged_latest = !image.contains('@')
                && (image
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| !last.contains(':'))
                    || image.ends_with(":latest"));
            if tagged_latest {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let present = rt
            .image_status(image_spec(image), false)
            .await
            .ok()
            .flatten();
        match (policy.as_str(), present) {
            ("Never", None) => {
                let message =
                    format!("Container image {image:?} is not present with pull policy of Never");
                ctx.events
                    .container_warning(pod, c, reason::ERR_IMAGE_NEVER_PULL, message.clone());
                Err(StartFailure {
                    reason: "ErrImageNeverPull".into(),
                    message,
                })
            }
            ("Never", Some(img)) | ("IfNotPresent", Some(img)) => {
                ctx.events.container_normal(
                    pod,
                    c,
                    reason::PULLED,
                    format!("Container image {image:?} already present on machine"),
                );
                Ok(img.id)
            }
            _ => {
                let key = format!("{}_{}", self.uid, image);
                if ctx.image_backoff.remaining_since_update(&key).is_some() {
                    let mut message = format!("Back-off pulling image {image:?}");
                    ctx.events
                        .container_normal(pod, c, reason::BACK_OFF, message.clone());
                    // Upstream (1.30+) quotes the failed pull in the waiting message.
                    if let Some(prev) = self.pull_errors.lock().unwrap().get(&key) {
                        message = format!("{message}: {}: {prev}", pod_status::ERR_IMAGE_PULL);
                    }
                    return Err(StartFailure {
                        reason: pod_status::IMAGE_PULL_BACK_OFF.into(),
                        message,
                    });
                }
                ctx.events.container_normal(
                    pod,
                    c,
                    reason::PULLING,
                    format!("Pulling image {image:?}"),
                );
                let started = std::time::Instant::now();
                match rt
                    .pull_image(image_spec(image), None, Some(sandbox_config.clone()))
                    .await
                {
                    Ok(id) => {
                        ctx.events.container_normal(
                            pod,
                            c,
                            reason::PULLED,
                            format!(
                                "Successfully pulled image {image:?} in {}",
                                crate::backoff::go_duration(started.elapsed())
                            ),
                        );
                        Ok(id)
                    }
                    Err(e) => {
                        ctx.image_backoff.next_now(&key);
                        let message = e.message().to_string();
                        self.pull_errors
                            .lock()
                            .unwrap()
                            .insert(key.clone(), message.clone());
                        ctx.events.container_warning(
                            pod,
                            c,
                            reason::FAILED,
                            format!("Failed to pull image {image:?}: {message}"),
                        );
                        Err(StartFailure {
                            reason: pod_status::ERR_IMAGE_PULL.into(),
                            message,
                        })
                    }
                }
            }
        }
    }

    async fn image_user(&self, image_ref: &str) -> (Option<i64>, String) {
        match self
            .ctx
            .runtime
            .image_status(image_spec(image_ref), false)
            .await
        {
            Ok(Some(img)) => (img.uid.map(|u| u.value), img.username),
            _ => (None, String::new()),
        }
    }

    /// Runs an exec or httpGet lifecycle handler with a timeout; Err carries the message.
    async fn run_handler(
        &self,
        pod: &Pod,
        c: &Container,
        container_id: &str,
        handler: &k8s_openapi::api::core::v1::LifecycleHandler,
        timeout_secs: i64,
    ) -> Result<(), String> {
        if let Some(exec) = &handler.exec {
            let cmd = exec.command.clone().unwrap_or_default();
            let out = self
                .ctx
                .runtime
                .exec_sync(
                    container_id,
                    cmd.clone(),
                    Duration::from_secs(timeout_secs.max(1) as u64),
                )
                .await
                .map_err(|e| e.message().to_string())?;
            if out.exit_code != 0 {
                return Err(format!(
                    "Exec lifecycle hook ({cmd:?}) for Container {:?} in Pod {:?} failed - error: command exited with {}, message: {:?}",
                    c.name,
                    plan::pod_full_name(pod),
                    out.exit_code,
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
        } else if let Some(sleep) = &handler.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        }
        Ok(())
    }

    /// Runs the preStop hook within the grace period; returns how long it took, which the
    /// caller takes off the grace period left for the stop (upstream's `killContainer`).
    async fn run_pre_stop(&self, pod: &Pod, c: &Container, id: &str, grace: i64) -> Duration {
        let started = std::time::Instant::now();
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
            let result = tokio::time::timeout(
                Duration::from_secs(grace.max(1) as u64),
                self.run_handler(pod, c, id, h, grace),
            )
            .await;
            let message = match result {
                Ok(Ok(())) => None,
                Ok(Err(msg)) => Some(msg),
                Err(_) => Some(format!(
                    "PreStopHook failed: the hook of container {:?} did not finish within {grace}s",
                    c.name
                )),
            };
            if let Some(message) = message {
                self.ctx
                    .events
                    .container_warning(pod, c, reason::FAILED_PRE_STOP_HOOK, message);
            }
        }
        started.elapsed()
    }

    /// Stops every container of the pod (preStop first, within the grace period) and its
    /// sandboxes.
    async fn kill_all(&self, pod: &Pod, status: &PodRuntimeStatus, grace_override: Option<i64>) {
        let rt = &self.ctx.runtime;
        let mut stops = Vec::new();
        for rc in status
            .containers
            .iter()
            .filter(|c| c.state() == plan::ContainerState::Running)
        {
            let c = container_by_name(pod, &rc.name);
            let grace =
                grace_override.unwrap_or_else(|| plan::termination_grace_period(pod, c, None));
            let id = rc.id.clone();
            stops.push(async move {
                let mut grace = grace;
                if let Some(c) = c {
                    self.ctx.events.container_normal(
                        pod,
                        c,
                        reason::KILLING,
                        format!("Stopping container {}", c.name),
                    );
                    grace = remaining_grace(grace, self.run_pre_stop(pod, c, &id, grace).await);
                }
                let _ = rt.stop_container(&id, grace).await;
            });
        }
        futures::future::join_all(stops).await;
        for s in &status.sandboxes {
            let _ = rt.stop_pod_sandbox(&s.id).await;
        }
    }

    /// Termination: stop everything, clean up, delete the API object. `true` once gone.
    async fn terminate(&mut self, pod: &Pod) -> bool {
        let ctx = self.ctx.clone();
        let grace = pod.metadata.deletion_grace_period_seconds;
        let status = match self.runtime_status(pod).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    "terminating {}: reading the runtime: {e}",
                    plan::pod_full_name(pod)
                );
                return false;
            }
        };
        self.kill_all(pod, &status, grace).await;
        let rt = &ctx.runtime;
        for c in &status.containers {
            let _ = rt.remove_container(&c.id).await;
        }
        for s in &status.sandboxes {
            let _ = rt.remove_pod_sandbox(&s.id).await;
        }
        ctx.probes.remove_pod(&self.uid);
        let _ = ctx.volumes.teardown_pod(&self.uid);
        if let Some(cg) = &ctx.cgroups {
            let _ = cg.remove_pod(&self.uid);
        }
        let after = PodRuntimeStatus::new(Vec::new(), Vec::new());
        self.report(pod, &after, true);
        // The API object goes once nothing runs (upstream: the status manager's final delete).
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
            Err(e) => {
                tracing::warn!("deleting pod {ns}/{name}: {e}");
                false
            }
        }
    }

    fn update_probes(&self, pod: &Pod, st: &PodRuntimeStatus) {
        let spec = pod.spec.clone().unwrap_or_default();
        let containers = spec
            .containers
            .iter()
            .chain(
                spec.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| plan::is_sidecar(c)),
            )
            .map(|c| {
                let rc = st.find(&c.name);
                ContainerProbeState {
                    name: c.name.clone(),
                    id: rc.map(|r| r.id.clone()).unwrap_or_default(),
                    state: match rc {
                        Some(r) if r.state() == plan::ContainerState::Running => {
                            let started = r.started_at;
                            let elapsed = Duration::from_nanos((now_ns() - started).max(0) as u64);
                            let at = tokio::time::Instant::now()
                                .checked_sub(elapsed)
                                .unwrap_or_else(tokio::time::Instant::now);
                            ProbeContainerState::Running { started_at: at }
                        }
                        Some(r) if r.state() == plan::ContainerState::Exited => {
                            ProbeContainerState::Terminated
                        }
                        _ => ProbeContainerState::Waiting,
                    },
                }
            })
            .collect();
        self.ctx.probes.update_pod(
            &self.uid,
            PodProbeState {
                pod_ip: st.ips.first().cloned().unwrap_or_default(),
                terminal: false,
                terminating: pod.metadata.deletion_timestamp.is_some(),
                containers,
            },
        );
    }

    fn report(&self, pod: &Pod, st: &PodRuntimeStatus, terminal: bool) {
        let ctx = &self.ctx;
        let qos = qos::pod_qos(pod);
        let status = pod_status::generate(
            pod,
            st,
            &StatusInputs {
                runtime_name: &ctx.runtime_name,
                start_failures: &self.start_failures,
                health: ctx.probes.as_ref(),
                host_ips: &ctx.host_ips,
                qos_class: qos.as_str(),
                pod_is_terminal: terminal,
                now: Timestamp::now(),
            },
        );
        if status.phase.as_deref() == Some("Running")
            && !self
                .start_recorded
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            crate::metrics::metrics()
                .pod_start_duration
                .observe_duration(self.first_seen.elapsed());
        }
        ctx.status.set(pod, status);
    }
}

/// The grace period left after a preStop hook took `spent` (upstream gives the stop at least
/// 2 s more: `minimumGracePeriodInSeconds`).
fn remaining_grace(grace: i64, spent: Duration) -> i64 {
    const MINIMUM_GRACE_PERIOD: i64 = 2;
    if grace <= 0 {
        return grace;
    }
    (grace - spent.as_secs() as i64).max(MINIMUM_GRACE_PERIOD)
}

/// What upstream's `Failed` event says after `Error: `: the image errors by name, the others by
/// their message.
fn failure_event_detail(f: &StartFailure) -> &str {
    match f.reason.as_str() {
        pod_status::ERR_IMAGE_PULL | pod_status::IMAGE_PULL_BACK_OFF | "ErrImageNeverPull" => {
            &f.reason
        }
        _ => &f.message,
    }
}

fn container_by_name<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// Upstream's GetContainerOOMScoreAdjust: guaranteed −997, best-effort 1000, burstable between.
fn qos_oom_score_adj(pod: &Pod, _c: &Container) -> i64 {
    match qos::pod_qos(pod) {
        qos::QosClass::Guaranteed => -997,
        qos::QosClass::BestEffort => 1000,
        qos::QosClass::Burstable => 999,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u", "resourceVersion": "1"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap()
    }

    #[test]
    fn only_spec_metadata_and_deletion_changes_sync() {
        let old = pod();
        let mut status_only = pod();
        status_only.metadata.resource_version = Some("2".into());
        status_only.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        assert!(!differs_semantically(&old, &status_only));

        let mut deleted = pod();
        deleted.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert!(differs_semantically(&old, &deleted));
        let mut relabelled = pod();
        relabelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        assert!(differs_semantically(&old, &relabelled));
        let mut respecced = pod();
        respecced.spec.as_mut().unwrap().containers[0].image = Some("other".into());
        assert!(differs_semantically(&old, &respecced));
    }

    #[test]
    fn the_log_end_starts_at_a_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let line = format!("2026-01-01T00:00:00Z stdout F {}\n", "x".repeat(100));
        std::fs::write(
            &path,
            line.repeat(1000) + "2026-01-01T00:00:00Z stdout F last\n",
        )
        .unwrap();
        let end = read_log_end(&path);
        assert!(end.len() <= 16 * 1024);
        assert!(
            end.starts_with("2026-01-01T00:00:00Z stdout F x"),
            "{}",
            &end[..40]
        );
        assert!(plan::termination_log_tail(&end).ends_with("x\nlast\n"));
        std::fs::write(&path, "t stdout F short\n").unwrap();
        assert_eq!(read_log_end(&path), "t stdout F short\n");
        assert_eq!(read_log_end(&dir.path().join("none")), "");
    }

    #[test]
    fn pre_stop_time_comes_off_the_grace_period_with_a_floor() {
        assert_eq!(remaining_grace(30, Duration::from_secs(10)), 20);
        assert_eq!(remaining_grace(30, Duration::from_secs(29)), 2);
        assert_eq!(remaining_grace(0, Duration::from_secs(1)), 0);
    }
}
