//! Pod sandboxes: lifecycle and status, list filters, hostname, DNS config, host namespaces,
//! port mappings and sysctls (critest's "PodSandbox" and "Networking" groups). Everything a
//! container sees is checked from inside a busybox container with ExecSync.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use k8s_cri::v1 as pb;

use crate::cri::harness::{eventually, Ctx, Verdict, BUSYBOX};

const SLEEP: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

/// Run → Ready with an address on the pod network; Stop → NotReady; Remove → gone.
pub async fn sandbox_lifecycle(t: Ctx) -> Result<Verdict> {
    let (id, cfg) = t.pod("lifecycle").await?;
    let s = t.pod_status(&id).await?;
    ensure!(s.id == id, "status id: want {id}, got {}", s.id);
    ensure!(
        s.state == pb::PodSandboxState::SandboxReady as i32,
        "a running pod is Ready: {s:?}"
    );
    ensure!(s.metadata == cfg.metadata, "metadata echoed: {s:?}");
    ensure!(s.created_at > 0, "created_at is set: {s:?}");
    ensure!(
        s.labels == cfg.labels && s.annotations == cfg.annotations,
        "labels and annotations echoed: {s:?}"
    );
    let ip = s.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
    ensure!(
        ip.starts_with(&t.inst.subnet_prefix),
        "pod IP {ip:?} is from the CNI subnet {}0/24",
        t.inst.subnet_prefix
    );
    let listed = t.my_pods().await?;
    ensure!(
        listed.iter().any(|p| p.id == id),
        "ListPodSandbox shows the pod: {listed:?}"
    );
    t.rt()
        .stop_pod_sandbox(pb::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
    let s = t.pod_status(&id).await?;
    ensure!(
        s.state == pb::PodSandboxState::SandboxNotready as i32,
        "a stopped pod is NotReady: {s:?}"
    );
    // Stop is idempotent.
    t.rt()
        .stop_pod_sandbox(pb::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .context("a second StopPodSandbox")?;
    t.rt()
        .remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
    match t.pod_status(&id).await {
        Ok(s) => bail!("a removed pod still has a status: {s:?}"),
        Err(e) => {
            let code = e.downcast_ref::<tonic::Status>().map(|s| s.code());
            ensure!(
                code == Some(tonic::Code::NotFound),
                "status of a removed pod: want NotFound, got {e:#}"
            );
        }
    }
    ensure!(
        t.my_pods().await?.is_empty(),
        "ListPodSandbox still shows the removed pod"
    );
    Ok(Verdict::Pass)
}

/// ListPodSandbox filters by id, state and labels (and combinations).
pub async fn sandbox_list_filters(t: Ctx) -> Result<Verdict> {
    let mut a_cfg = t.pod_config("filter-a");
    a_cfg.labels.insert("role".into(), "a".into());
    let a = t.run_pod(&a_cfg).await?;
    let mut b_cfg = t.pod_config("filter-b");
    b_cfg.labels.insert("role".into(), "b".into());
    let b = t.run_pod(&b_cfg).await?;
    t.rt()
        .stop_pod_sandbox(pb::StopPodSandboxRequest {
            pod_sandbox_id: b.clone(),
        })
        .await?;
    let list = |f: pb::PodSandboxFilter| {
        let mut rt = t.rt();
        async move {
            let mut ids: Vec<String> = rt
                .list_pod_sandbox(pb::ListPodSandboxRequest { filter: Some(f) })
                .await?
                .into_inner()
                .items
                .into_iter()
                .map(|p| p.id)
                .collect();
            ids.sort();
            anyhow::Ok(ids)
        }
    };
    let mine = t.case_labels();
    let got = list(pb::PodSandboxFilter {
        id: a.clone(),
        ..Default::default()
    })
    .await?;
    ensure!(got == vec![a.clone()], "filter by id {a}: got {got:?}");
    let state = |s: pb::PodSandboxState| Some(pb::PodSandboxStateValue { state: s as i32 });
    let got = list(pb::PodSandboxFilter {
        state: state(pb::PodSandboxState::SandboxReady),
        label_selector: mine.clone(),
        ..Default::default()
    })
    .await?;
    ensure!(
        got == vec![a.clone()],
        "filter Ready: want [{a}], got {got:?}"
    );
    let got = list(pb::PodSandboxFilter {
        state: state(pb::PodSandboxState::SandboxNotready),
        label_selector: mine.clone(),
        ..Default::default()
    })
    .await?;
    ensure!(
        got == vec![b.clone()],
        "filter NotReady: want [{b}], got {got:?}"
    );
    let mut sel = mine.clone();
    sel.insert("role".into(), "b".into());
    let got = list(pb::PodSandboxFilter {
        label_selector: sel,
        ..Default::default()
    })
    .await?;
    ensure!(
        got == vec![b.clone()],
        "filter role=b: want [{b}], got {got:?}"
    );
    let got = list(pb::PodSandboxFilter {
        id: a.clone(),
        state: state(pb::PodSandboxState::SandboxNotready),
        ..Default::default()
    })
    .await?;
    ensure!(
        got.is_empty(),
        "filter id={a} and NotReady: want none, got {got:?}"
    );
    let mut both = vec![a, b];
    both.sort();
    let got = list(pb::PodSandboxFilter {
        label_selector: mine,
        ..Default::default()
    })
    .await?;
    ensure!(
        got == both,
        "filter by the case label: want {both:?}, got {got:?}"
    );
    Ok(Verdict::Pass)
}

/// The pod's hostname is what the config asks for.
pub async fn sandbox_hostname(t: Ctx) -> Result<Verdict> {
    let mut cfg = t.pod_config("hostname");
    cfg.hostname = "conformance-host".into();
    let pod = t.run_pod(&cfg).await?;
    let c = t
        .run(
            &pod,
            &cfg,
            t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]),
        )
        .await?;
    let out = t.sh(&c, "hostname; cat /etc/hostname").await?;
    ensure!(
        out == "conformance-host\nconformance-host\n",
        "hostname and /etc/hostname: got {out:?}"
    );
    Ok(Verdict::Pass)
}

/// The pod's DNS config becomes the containers' /etc/resolv.conf.
pub async fn sandbox_dns_config(t: Ctx) -> Result<Verdict> {
    let mut cfg = t.pod_config("dns");
    cfg.dns_config = Some(pb::DnsConfig {
        servers: vec!["10.0.0.53".into(), "10.0.0.54".into()],
        searches: vec![
            "conformance.svc.cluster.local".into(),
            "cluster.local".into(),
        ],
        options: vec!["ndots:5".into(), "timeout:2".into()],
    });
    let pod = t.run_pod(&cfg).await?;
    let c = t
        .run(
            &pod,
            &cfg,
            t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]),
        )
        .await?;
    let resolv = t.sh(&c, "cat /etc/resolv.conf").await?;
    for want in [
        "nameserver 10.0.0.53",
        "nameserver 10.0.0.54",
        "search conformance.svc.cluster.local cluster.local",
        "options ndots:5 timeout:2",
    ] {
        ensure!(
            resolv.lines().any(|l| l.trim() == want),
            "/etc/resolv.conf has no line {want:?}: {resolv:?}"
        );
    }
    Ok(Verdict::Pass)
}

fn host_ns(kind: &str) -> Result<String> {
    Ok(std::fs::read_link(format!("/proc/self/ns/{kind}"))?
        .to_string_lossy()
        .into_owned())
}

/// Runs one pod with `ns` of the given mode (pod-level and container-level options alike) and
/// returns the container's `readlink /proc/self/ns/<kind>`.
async fn ns_of(t: &Ctx, name: &str, ns: &str, node: bool) -> Result<String> {
    let mode = if node {
        pb::NamespaceMode::Node as i32
    } else {
        pb::NamespaceMode::Pod as i32
    };
    let mut opts = pb::NamespaceOption::default();
    match ns {
        "net" => opts.network = mode,
        "pid" => {
            opts.pid = if node {
                mode
            } else {
                pb::NamespaceMode::Container as i32
            }
        }
        "ipc" => opts.ipc = mode,
        _ => bail!("unknown namespace {ns}"),
    }
    let mut cfg = t.pod_config(name);
    if ns == "net" && node {
        // As the kubelet does: a pod on the node's network keeps the node's UTS namespace and
        // so asks for no hostname (runc refuses to set one without a private UTS namespace).
        cfg.hostname = String::new();
    }
    if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.namespace_options = Some(opts.clone());
    }
    let pod = t.run_pod(&cfg).await?;
    let mut cc = t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]);
    if let Some(sc) = cc.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.namespace_options = Some(opts);
    }
    let c = t.run(&pod, &cfg, cc).await?;
    Ok(t.sh(&c, &format!("readlink /proc/self/ns/{ns}"))
        .await?
        .trim()
        .to_string())
}

async fn host_namespace(t: Ctx, ns: &str) -> Result<Verdict> {
    let host = host_ns(ns)?;
    let shared = ns_of(&t, &format!("host-{ns}"), ns, true).await?;
    ensure!(
        shared == host,
        "with the node's {ns} namespace the container sees {shared}, the host is in {host}"
    );
    let own = ns_of(&t, &format!("own-{ns}"), ns, false).await?;
    ensure!(
        own != host,
        "without the node's {ns} namespace the container must not be in the host's ({host})"
    );
    Ok(Verdict::Pass)
}

/// hostNetwork: the container is in the node's network namespace (and otherwise is not).
pub async fn sandbox_host_network(t: Ctx) -> Result<Verdict> {
    host_namespace(t, "net").await
}

/// hostPID: the container is in the node's PID namespace (and otherwise is not).
pub async fn sandbox_host_pid(t: Ctx) -> Result<Verdict> {
    host_namespace(t, "pid").await
}

/// hostIPC: the container is in the node's IPC namespace (and otherwise is not).
pub async fn sandbox_host_ipc(t: Ctx) -> Result<Verdict> {
    host_namespace(t, "ipc").await
}

/// A hostPort on 127.0.0.1 reaches a container's `nc -l` server (portmap DNAT from loopback).
pub async fn sandbox_port_mapping(t: Ctx) -> Result<Verdict> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cfg = t.pod_config("ports");
    cfg.port_mappings = vec![pb::PortMapping {
        protocol: pb::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: port as i32,
        host_ip: "127.0.0.1".into(),
    }];
    let pod = t.run_pod(&cfg).await?;
    t.run(
        &pod,
        &cfg,
        t.container_config(
            "server",
            BUSYBOX,
            &[
                "sh",
                "-c",
                "trap 'exit 0' TERM; while true; do echo hello-from-pod | nc -l -p 8080; done",
            ],
        ),
    )
    .await?;
    let got = eventually(
        Duration::from_secs(20),
        "the container's server through 127.0.0.1:hostPort",
        || async move {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let got = tokio::task::spawn_blocking(move || -> Result<String> {
                let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut buf = String::new();
                s.read_to_string(&mut buf)?;
                Ok(buf)
            })
            .await??;
            Ok(got.contains("hello-from-pod").then_some(got))
        },
    )
    .await?;
    ensure!(got.trim() == "hello-from-pod", "got {got:?}");
    Ok(Verdict::Pass)
}

/// Namespaced sysctls from the pod config are set in the pod's namespaces.
pub async fn sandbox_sysctls(t: Ctx) -> Result<Verdict> {
    let mut cfg = t.pod_config("sysctls");
    if let Some(l) = cfg.linux.as_mut() {
        l.sysctls = HashMap::from([
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
            (
                "net.ipv4.ip_local_port_range".to_string(),
                "33000 34000".to_string(),
            ),
        ]);
    }
    let pod = t.run_pod(&cfg).await?;
    let c = t
        .run(
            &pod,
            &cfg,
            t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]),
        )
        .await?;
    let out = t
        .sh(
            &c,
            "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_local_port_range",
        )
        .await?;
    let words: Vec<&str> = out.split_whitespace().collect();
    ensure!(
        words == ["1", "33000", "34000"],
        "sysctls inside the pod: {out:?}"
    );
    Ok(Verdict::Pass)
}
