//! The batch controllers end to end against apiserver-lite. Job and ttl-after-finished run in a
//! `capstan controller-manager` process (so it can be killed mid-run); the test plays the kubelet
//! through the status API ([`Kubelet`]: each new pod runs, succeeds or fails as the test's
//! script says, and graceful deletions are confirmed). The CronJob controller runs in-process on a
//! [`ManualClock`] the test moves, so schedules a minute apart take milliseconds.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::controller_manager::ControllerManager;
use common::{eventually, http_raw, ApiServer};
use controllers::cronjob::{CronJobController, ManualClock};
use controllers::ControllerContext;
use machinery::informer::InformerFactory;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";
const PODS: &str = "/api/v1/namespaces/default/pods";

/// What the fake kubelet does with a new pod.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// Running and Ready until the test finishes it.
    Run,
    Succeed,
    /// Failed with this exit code of container `main`.
    Fail(i32),
    /// Failed with exit code 137 and a DisruptionTarget condition (an eviction).
    Disrupted,
}

type Script = Arc<dyn Fn(&Value) -> Outcome + Send + Sync>;

fn to_value(raw: (u16, Vec<u8>)) -> (u16, Value) {
    (raw.0, serde_json::from_slice(&raw.1).unwrap_or(Value::Null))
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Plays the kubelet for every pod in `default`: new pods get their [`Outcome`], pods being
/// deleted are confirmed with a grace-0 delete. Stops on drop.
struct Kubelet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubelet {
    fn start(api: &ApiServer, script: Script) -> Kubelet {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, addr) = (stop.clone(), api.addr.clone());
        let thread = std::thread::spawn(move || {
            let mut handled: HashSet<String> = HashSet::new();
            let mut confirmed: HashSet<String> = HashSet::new();
            while !flag.load(Ordering::SeqCst) {
                let (_, list) = to_value(http_raw(&addr, "GET", PODS, "", b""));
                for p in list["items"].as_array().cloned().unwrap_or_default() {
                    let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
                    let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                    if !p["metadata"]["deletionTimestamp"].is_null() {
                        if confirmed.insert(uid) {
                            http_raw(
                                &addr,
                                "DELETE",
                                &format!("{PODS}/{name}"),
                                "application/json",
                                br#"{"gracePeriodSeconds":0}"#,
                            );
                        }
                        continue;
                    }
                    if !handled.insert(uid) {
                        continue;
                    }
                    set_outcome(&addr, &name, script(&p));
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        Kubelet {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes the pod status a kubelet would for `outcome`.
fn set_outcome(addr: &str, name: &str, outcome: Outcome) {
    let t = now();
    let terminated = |code: i32| {
        json!([{"name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                         "startedAt": t, "finishedAt": t}}}])
    };
    let status = match outcome {
        Outcome::Run => json!({"phase": "Running", "startTime": t, "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": t}]}),
        Outcome::Succeed => json!({"phase": "Succeeded", "containerStatuses": terminated(0)}),
        Outcome::Fail(code) => json!({"phase": "Failed", "containerStatuses": terminated(code)}),
        Outcome::Disrupted => json!({"phase": "Failed", "containerStatuses": terminated(137),
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI", "lastTransitionTime": t}]}),
    };
    let body = json!({"status": status}).to_string();
    http_raw(
        addr,
        "PATCH",
        &format!("{PODS}/{name}/status"),
        "application/merge-patch+json",
        body.as_bytes(),
    );
}

fn get(api: &ApiServer, path: &str) -> Value {
    let (code, body) = api.http("GET", path, "application/json", b"");
    assert!(code == 200 || code == 404, "GET {path}: {code} {body}");
    if code == 404 {
        Value::Null
    } else {
        body
    }
}

fn create(api: &ApiServer, path: &str, body: Value) -> Value {
    let (code, out) = api.http(
        "POST",
        path,
        "application/json",
        body.to_string().as_bytes(),
    );
    assert!(code == 201 || code == 200, "POST {path}: {code} {out}");
    out
}

fn patch(api: &ApiServer, path: &str, body: Value) {
    let (code, out) = api.http(
        "PATCH",
        path,
        "application/merge-patch+json",
        body.to_string().as_bytes(),
    );
    assert_eq!(code, 200, "PATCH {path}: {out}");
}

fn job(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": "busybox", "command": ["true"]}]}});
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec})
}

fn get_job(api: &ApiServer, name: &str) -> Value {
    get(api, &format!("{JOBS}/{name}"))
}

fn condition(job: &Value, type_: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

fn pods_of(api: &ApiServer, job: &str) -> Vec<Value> {
    get(
        api,
        &format!("{PODS}?labelSelector=batch.kubernetes.io%2Fjob-name%3D{job}"),
    )["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn index(p: &Value) -> Option<i64> {
    p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        .as_str()?
        .parse()
        .ok()
}

fn has_finalizer(p: &Value) -> bool {
    p["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == "batch.kubernetes.io/job-tracking"))
}

/// Waits for the Job's terminal condition and returns the Job.
fn wait_finished(api: &ApiServer, name: &str, type_: &str) -> Value {
    let mut last = Value::Null;
    let start = std::time::Instant::now();
    while start.elapsed() < T {
        last = get_job(api, name);
        if condition(&last, type_).is_some() {
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "job {name} never got condition {type_}; last status: {}",
        last["status"]
    );
}

fn controller_manager(api: &ApiServer, name: &str) -> ControllerManager {
    ControllerManager::start(
        api,
        name,
        &[
            "--leader-elect=false",
            "--controllers=job,ttl-after-finished,garbagecollector",
            "--job-pod-failure-backoff=100ms",
            "--job-sync-batch-period=50ms",
        ],
    )
}

#[test]
fn an_indexed_job_retries_a_failing_index_up_to_the_backoff_limit() {
    let api = ApiServer::start();
    let _cm = controller_manager(&api, "cm");
    let _kubelet = Kubelet::start(
        &api,
        Arc::new(|p| match index(p) {
            Some(1) => Outcome::Fail(1),
            _ => Outcome::Succeed,
        }),
    );
    create(
        &api,
        JOBS,
        job(
            "indexed",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed", "backoffLimit": 2}),
        ),
    );
    let j = wait_finished(&api, "indexed", "Failed");
    let failed = condition(&j, "Failed").unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{failed}");
    assert!(condition(&j, "FailureTarget").is_some(), "{}", j["status"]);
    assert_eq!(j["status"]["completedIndexes"], "0,2", "{}", j["status"]);
    assert_eq!(j["status"]["succeeded"], 2);
    assert_eq!(
        j["status"]["failed"], 3,
        "backoffLimit 2: the third failure fails the job"
    );
    let pods = pods_of(&api, "indexed");
    let of_one: Vec<&Value> = pods.iter().filter(|p| index(p) == Some(1)).collect();
    assert_eq!(of_one.len(), 3, "index 1 was tried three times");
    assert!(
        pods.iter().all(|p| !has_finalizer(p)),
        "every pod was released"
    );
    // The index is in the annotation, the label, the env (downward API) and the hostname.
    let p = of_one[0];
    assert_eq!(
        p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
        "1"
    );
    assert!(p["metadata"]["generateName"]
        .as_str()
        .unwrap()
        .starts_with("indexed-1-"));
    assert_eq!(p["spec"]["hostname"], "indexed-1");
    let env = &p["spec"]["containers"][0]["env"][0];
    assert_eq!(env["name"], "JOB_COMPLETION_INDEX");
    assert_eq!(
        env["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    // The API server generated the selector and labels.
    assert!(j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"].is_string());
    assert_eq!(p["metadata"]["labels"]["job-name"], "indexed");
}

#[test]
fn backoff_limit_per_index_fails_only_the_failing_index() {
    let api = ApiServer::start();
    let _cm = controller_manager(&api, "cm");
    let _kubelet = Kubelet::start(
        &api,
        Arc::new(|p| match index(p) {
            Some(1) => Outcome::Fail(1),
            _ => Outcome::Succeed,
        }),
    );
    create(
        &api,
        JOBS,
        job(
            "perindex",
            json!({"completions": 4, "parallelism": 2, "completionMode": "Indexed", "backoffLimitPerIndex": 1}),
        ),
    );
    let j = wait_finished(&api, "perindex", "Failed");
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "FailedIndexes",
        "{}",
        j["status"]
    );
    assert_eq!(j["status"]["failedIndexes"], "1", "{}", j["status"]);
    assert_eq!(
        j["status"]["completedIndexes"], "0,2,3",
        "the other indexes still ran"
    );
    assert_eq!(j["status"]["failed"], 2);
    let mut counts: Vec<String> = pods_of(&api, "perindex")
        .iter()
        .filter(|p| index(p) == Some(1))
        .map(|p| {
            p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        ["0", "1"],
        "index 1 ran once more after its first failure"
    );
}

#[test]
fn a_job_with_five_completions_runs_at_most_two_pods_at_a_time_and_completes() {
    let api = ApiServer::start();
    let _cm = controller_manager(&api, "cm");
    let _kubelet = Kubelet::start(&api, Arc::new(|_| Outcome::Run));
    create(
        &api,
        JOBS,
        job("par", json!({"completions": 5, "parallelism": 2})),
    );
    let mut most = 0;
    let start = std::time::Instant::now();
    loop {
        assert!(
            start.elapsed() < T,
            "job par did not complete: {}",
            get_job(&api, "par")["status"]
        );
        let j = get_job(&api, "par");
        if condition(&j, "Complete").is_some() {
            break;
        }
        let pods = pods_of(&api, "par");
        let running: Vec<&Value> = pods
            .iter()
            .filter(|p| {
                p["metadata"]["deletionTimestamp"].is_null()
                    && !matches!(phase(p), "Succeeded" | "Failed")
            })
            .collect();
        most = most.max(running.len());
        assert!(
            running.len() <= 2,
            "{} pods run at once, parallelism is 2",
            running.len()
        );
        // Finish one running pod at a time.
        if let Some(p) = running.iter().find(|p| phase(p) == "Running") {
            set_outcome(
                &api.addr,
                p["metadata"]["name"].as_str().unwrap(),
                Outcome::Succeed,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let j = get_job(&api, "par");
    assert_eq!(most, 2, "two pods ran together");
    assert_eq!(j["status"]["succeeded"], 5, "{}", j["status"]);
    assert!(j["status"]["completionTime"].is_string());
    assert!(condition(&j, "SuccessCriteriaMet").is_some());
    let pods = pods_of(&api, "par");
    assert_eq!(pods.len(), 5, "one pod per completion");
    assert!(pods.iter().all(|p| !has_finalizer(p)));
}

#[test]
fn finished_pods_are_counted_once_across_a_controller_manager_kill() {
    let api = ApiServer::start();
    let mut cm = controller_manager(&api, "cm1");
    let _kubelet = Kubelet::start(&api, Arc::new(|_| Outcome::Succeed));
    create(
        &api,
        JOBS,
        job("count", json!({"completions": 40, "parallelism": 10})),
    );
    // Kill the controller-manager while pods are finishing and being counted.
    eventually(T, "some pods to be counted", || {
        get_job(&api, "count")["status"]["succeeded"]
            .as_i64()
            .unwrap_or(0)
            >= 8
    });
    cm.kill9();
    let _cm = controller_manager(&api, "cm2");
    let j = wait_finished(&api, "count", "Complete");
    let pods = pods_of(&api, "count");
    let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
    assert_eq!(
        j["status"]["succeeded"].as_i64(),
        Some(succeeded),
        "every succeeded pod is counted exactly once: {}",
        j["status"]
    );
    assert!(succeeded >= 40);
    assert!(
        pods.iter().all(|p| !has_finalizer(p)),
        "every pod was released"
    );
    assert!(j["status"]["uncountedTerminatedPods"]["succeeded"].is_null());
}

#[test]
fn pod_failure_policy_ignores_disruptions_and_fails_the_job_on_exit_code_42() {
    let api = ApiServer::start();
    let _cm = controller_manager(&api, "cm");
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _kubelet = Kubelet::start(
        &api,
        Arc::new(move |_| match seen.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => Outcome::Disrupted,
            _ => Outcome::Fail(42),
        }),
    );
    create(
        &api,
        JOBS,
        job(
            "pfp",
            json!({"completions": 1, "parallelism": 1, "backoffLimit": 0, "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            ]}}),
        ),
    );
    let j = wait_finished(&api, "pfp", "Failed");
    let failed = condition(&j, "Failed").unwrap();
    assert_eq!(failed["reason"], "PodFailurePolicy", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("failed with exit code 42 matching FailJob rule at index 1"),
        "{failed}"
    );
    // Two disruptions were ignored (not counted, even with backoffLimit 0), the third pod failed it.
    assert_eq!(j["status"]["failed"], 1, "{}", j["status"]);
    assert_eq!(pods_of(&api, "pfp").len(), 3);
}

#[test]
fn a_suspended_job_deletes_its_pods_and_resumes() {
    let api = ApiServer::start();
    let _cm = controller_manager(&api, "cm");
    let _kubelet = Kubelet::start(&api, Arc::new(|_| Outcome::Run));
    create(
        &api,
        JOBS,
        job("sus", json!({"completions": 2, "parallelism": 2})),
    );
    eventually(T, "two running pods", || {
        pods_of(&api, "sus")
            .iter()
            .filter(|p| phase(p) == "Running")
            .count()
            == 2
    });
    patch(
        &api,
        &format!("{JOBS}/sus"),
        json!({"spec": {"suspend": true}}),
    );
    eventually(T, "the pods to be gone and the job suspended", || {
        let j = get_job(&api, "sus");
        pods_of(&api, "sus").is_empty()
            && condition(&j, "Suspended").is_some_and(|c| c["reason"] == "JobSuspended")
            && j["status"]["active"] == 0
    });
    let j = get_job(&api, "sus");
    assert_eq!(
        j["status"]["failed"], 0,
        "pods deleted by a suspension are not failures: {}",
        j["status"]
    );
    patch(
        &api,
        &format!("{JOBS}/sus"),
        json!({"spec": {"suspend": false}}),
    );
    eventually(T, "two new running pods", || {
        pods_of(&api, "sus")
            .iter()
            .filter(|p| phase(p) == "Running")
            .count()
            == 2
    });
    let j = get_job(&api, "sus");
    let c = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Suspended")
        .cloned()
        .unwrap();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("JobResumed"))
    );
    for p in pods_of(&api, "sus") {
        set_outcome(
            &api.addr,
            p["metadata"]["name"].as_str().unwrap(),
            Outcome::Succeed,
        );
    }
    let j = wait_finished(&api, "sus", "Complete");
    assert_eq!(j["status"]["succeeded"], 2);
}

#[test]
fn active_deadline_seconds_fails_a_running_job_and_removes_its_pods() {
    let api = ApiServer::start();
    let _cm = controller_manager(&api, "cm");
    let _kubelet = Kubelet::start(&api, Arc::new(|_| Outcome::Run));
    create(
        &api,
        JOBS,
        job(
            "deadline",
            json!({"completions": 3, "parallelism": 3, "activeDeadlineSeconds": 2}),
        ),
    );
    let j = wait_finished(&api, "deadline", "Failed");
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "DeadlineExceeded"
    );
    eventually(T, "the pods to be deleted", || {
        pods_of(&api, "deadline").is_empty()
    });
    let j = get_job(&api, "deadline");
    assert_eq!(j["status"]["active"], 0);
    assert_eq!(
        j["status"]["failed"], 3,
        "running pods of a failed job count as failed"
    );
}

#[test]
fn ttl_seconds_after_finished_deletes_the_job_and_its_pods() {
    let api = ApiServer::start();
    let _cm = controller_manager(&api, "cm");
    let _kubelet = Kubelet::start(&api, Arc::new(|_| Outcome::Succeed));
    create(
        &api,
        JOBS,
        job("ttl", json!({"ttlSecondsAfterFinished": 1})),
    );
    // Only the TTL controller deletes Jobs here; it may do so before this loop sees Complete
    // (finish times have whole seconds), so either is fine on the way.
    eventually(T, "the job to complete or be gone", || {
        let j = get_job(&api, "ttl");
        j.is_null() || condition(&j, "Complete").is_some()
    });
    eventually(T, "the job and its pod to be deleted", || {
        get_job(&api, "ttl").is_null() && pods_of(&api, "ttl").is_empty()
    });
}

// ---- CronJob, in-process on a manual clock ----

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    options: controllers::Options,
}

/// The CronJob controller on its own runtime with a manual clock; stopped on drop.
struct Cron {
    rt: Option<tokio::runtime::Runtime>,
    ctl: CronJobController,
    clock: Arc<ManualClock>,
}

impl Cron {
    fn start(api: &ApiServer) -> Cron {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let kubeconfig = api.kubeconfig();
        let client = rt
            .block_on(machinery::client::build_client(
                Some(&kubeconfig),
                "cronjob-test",
            ))
            .expect("client");
        let options = Cli::parse_from(["controller-manager"]).options;
        let ctx = ControllerContext {
            informers: InformerFactory::new(client.clone()),
            client,
            options: Arc::new(options),
        };
        let clock = Arc::new(ManualClock::starting_now());
        let ctl = rt.block_on(async { CronJobController::new(&ctx, clock.clone()) });
        let run = ctl.clone();
        rt.spawn(async move { run.run(2).await });
        let informers = ctx.informers.clone();
        rt.block_on(async move { informers.start() });
        Cron {
            rt: Some(rt),
            ctl,
            clock,
        }
    }

    /// Moves the clock one minute and lets the controller look.
    fn minute_passes(&self) {
        self.clock.advance(Duration::from_secs(60));
        self.ctl.resync();
    }
}

impl Drop for Cron {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

const CRONJOBS: &str = "/apis/batch/v1/namespaces/default/cronjobs";

fn cronjob(name: &str, policy: &str, extra: Value) -> Value {
    let mut spec = json!({"schedule": "* * * * *", "concurrencyPolicy": policy,
        "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox"}]}}}}});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name}, "spec": spec})
}

/// The cron job's Jobs by name (those not being deleted).
fn cron_jobs(api: &ApiServer, cj: &str) -> BTreeMap<String, Value> {
    get(api, JOBS)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == cj)
        .filter(|j| j["metadata"]["deletionTimestamp"].is_null())
        .map(|j| (j["metadata"]["name"].as_str().unwrap().to_string(), j))
        .collect()
}

fn active_names(api: &ApiServer, cj: &str) -> Vec<String> {
    let c = get(api, &format!("{CRONJOBS}/{cj}"));
    let mut names: Vec<String> = c["status"]["active"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// What the Job controller would write when a Job ends.
fn finish_job(api: &ApiServer, name: &str, type_: &str) {
    let t = now();
    patch(
        api,
        &format!("{JOBS}/{name}/status"),
        json!({"status": {"startTime": t, "completionTime": if type_ == "Complete" { json!(t) } else { Value::Null },
            "conditions": [{"type": type_, "status": "True", "lastTransitionTime": t}]}}),
    );
}

#[test]
fn a_forbid_cronjob_skips_schedules_while_its_job_runs() {
    let api = ApiServer::start();
    let cron = Cron::start(&api);
    create(&api, CRONJOBS, cronjob("forbid", "Forbid", json!({})));
    cron.minute_passes();
    eventually(T, "the first job", || cron_jobs(&api, "forbid").len() == 1);
    let first = cron_jobs(&api, "forbid").into_keys().next().unwrap();
    eventually(T, "the job to be active", || {
        active_names(&api, "forbid") == [first.clone()]
    });
    let minutes: i64 = first.trim_start_matches("forbid-").parse().unwrap();
    let job = &cron_jobs(&api, "forbid")[&first];
    assert!(
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .is_string()
    );
    // Two more minutes pass while the job runs: nothing new starts.
    cron.minute_passes();
    cron.minute_passes();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        cron_jobs(&api, "forbid").len(),
        1,
        "Forbid started a second job"
    );
    // Once it finishes, the most recent missed time (minute 2) runs at once; minute 1 is skipped.
    finish_job(&api, &first, "Complete");
    eventually(T, "a second job", || cron_jobs(&api, "forbid").len() == 2);
    let second = cron_jobs(&api, "forbid")
        .into_keys()
        .find(|n| *n != first)
        .unwrap();
    let m2: i64 = second.trim_start_matches("forbid-").parse().unwrap();
    assert_eq!(
        m2,
        minutes + 2,
        "the latest missed schedule runs, the older one does not"
    );
    eventually(T, "the second job to be the only active one", || {
        active_names(&api, "forbid") == [second.clone()]
    });
    let c = get(&api, &format!("{CRONJOBS}/forbid"));
    assert!(
        c["status"]["lastSuccessfulTime"].is_string(),
        "{}",
        c["status"]
    );
    assert!(c["status"]["lastScheduleTime"].is_string());
}

#[test]
fn a_replace_cronjob_replaces_its_running_job() {
    let api = ApiServer::start();
    let cron = Cron::start(&api);
    create(&api, CRONJOBS, cronjob("replace", "Replace", json!({})));
    cron.minute_passes();
    eventually(T, "the first job", || {
        active_names(&api, "replace").len() == 1
    });
    let first = active_names(&api, "replace")[0].clone();
    cron.minute_passes();
    eventually(T, "the job to be replaced", || {
        let active = active_names(&api, "replace");
        active.len() == 1 && active[0] != first && !cron_jobs(&api, "replace").contains_key(&first)
    });
}

#[test]
fn an_allow_cronjob_runs_jobs_concurrently_and_history_limits_prune() {
    let api = ApiServer::start();
    let cron = Cron::start(&api);
    create(
        &api,
        CRONJOBS,
        cronjob(
            "allow",
            "Allow",
            json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1}),
        ),
    );
    for n in 1..=3 {
        cron.minute_passes();
        eventually(T, "one more concurrent job", || {
            active_names(&api, "allow").len() == n
        });
    }
    let names = active_names(&api, "allow");
    finish_job(&api, &names[0], "Complete");
    finish_job(&api, &names[1], "Complete");
    finish_job(&api, &names[2], "Failed");
    eventually(
        T,
        "history pruned to one successful and one failed job",
        || {
            let left: Vec<String> = cron_jobs(&api, "allow").into_keys().collect();
            left == [names[1].clone(), names[2].clone()]
        },
    );
    eventually(T, "the finished jobs to leave the active list", || {
        active_names(&api, "allow").is_empty()
    });
    // Suspended: no new job however much time passes.
    patch(
        &api,
        &format!("{CRONJOBS}/allow"),
        json!({"spec": {"suspend": true}}),
    );
    std::thread::sleep(Duration::from_millis(300));
    cron.minute_passes();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        cron_jobs(&api, "allow").len(),
        2,
        "a suspended cronjob started a job"
    );
}
