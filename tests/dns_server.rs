//! Cluster DNS in a full `capstan server`: the kube-dns Service on the service CIDR's 10th
//! address, the node's EndpointSlice with its DNS server's real port, pods given upstream's
//! resolv.conf, and a pod resolving `kubernetes.default.svc.cluster.local` and a test Service
//! (by full and short name, through the search path) via the kube-dns ClusterIP.
//!
//! The busybox image's `nslookup` (Debian's busybox-static) is not usable for this, so the pod
//! runs the host's glibc `getent` from a read-only hostPath mount of `/usr`, through the host's
//! dynamic loader: glibc's stub resolver reads the pod's resolv.conf as any pod's libc does.

mod common;

use std::time::Duration;

use common::dns::{answers, query};
use common::eventually;
use common::server::Server;
use hickory_proto::rr::RecordType;

const RESOLVER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: resolver}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: r
    image: busybox
    command:
    - sh
    - -c
    - |
      cat /etc/resolv.conf | sed 's/^/resolv: /'
      for n in kubernetes.default.svc.cluster.local web.default.svc.cluster.local web kubernetes.default; do
        for i in 1 2 3 4 5 6 7 8 9 10; do
          out=$(/host/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path /host/usr/lib/x86_64-linux-gnu /host/usr/bin/getent ahostsv4 $n | head -1)
          [ -n "$out" ] && break
          sleep 1
        done
        echo "resolved $n: $out"
      done
      echo done
      sleep 3600
    volumeMounts: [{name: usr, mountPath: /host/usr, readOnly: true}]
  volumes: [{name: usr, hostPath: {path: /usr}}]
"#;

#[test]
fn pods_resolve_services_through_the_kube_dns_cluster_ip() {
    let mut server = Server::start();
    server.wait_ready();
    let dns_ip = format!("{}10", server.service_prefix);

    // The kube-dns Service on the 10th address, ports named for the node's slices.
    let svc = server.kubectl_json(&["-n", "kube-system", "get", "service", "kube-dns"]);
    assert_eq!(svc["spec"]["clusterIP"], dns_ip.as_str(), "{svc}");
    assert_eq!(svc["metadata"]["labels"]["k8s-app"], "kube-dns");
    let mut slice = serde_json::Value::Null;
    eventually(
        Duration::from_secs(20),
        "the node's kube-dns EndpointSlice",
        || {
            let out = server.kubectl(&[
                "-n",
                "kube-system",
                "get",
                "endpointslice",
                &format!("kube-dns-{}", server.node_name),
                "-o",
                "json",
            ]);
            slice = serde_json::from_slice(&out.stdout).unwrap_or_default();
            out.status.success()
        },
    );
    let port = slice["ports"][0]["port"].as_u64().expect("a port") as u16;
    assert_ne!(
        port, 53,
        "the test server listens on a free port (--cluster-dns-port 0)"
    );
    let node_addr = slice["endpoints"][0]["addresses"][0]
        .as_str()
        .unwrap()
        .to_string();

    // From the host: straight at the node's server, then through the cluster IP (the proxy's DNAT).
    let direct: std::net::SocketAddr = format!("{node_addr}:{port}").parse().unwrap();
    let m = query(
        direct,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        false,
    );
    assert_eq!(answers(&m), vec![format!("{}1", server.service_prefix)]);
    let via_service: std::net::SocketAddr = format!("{dns_ip}:53").parse().unwrap();
    eventually(
        Duration::from_secs(20),
        "the kube-dns ClusterIP answers from the host",
        || {
            common::dns::try_query(
                via_service,
                "kube-dns.kube-system.svc.cluster.local.",
                RecordType::A,
                false,
            )
            .is_ok_and(|m| answers(&m) == vec![dns_ip.clone()])
        },
    );
    let m = query(
        via_service,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        true,
    );
    assert_eq!(
        answers(&m).len(),
        1,
        "over TCP through the cluster IP: {m:?}"
    );

    // A pod: upstream's resolv.conf, and names resolved by its libc through the cluster IP.
    server.apply("resolver.yaml", RESOLVER);
    let web_ip = server.kubectl_json(&["get", "service", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let mut logs = String::new();
    eventually(
        Duration::from_secs(90),
        "the resolver pod's lookups",
        || {
            server.assert_alive();
            let out = server.kubectl(&["logs", "resolver"]);
            logs = String::from_utf8_lossy(&out.stdout).into_owned();
            logs.lines().any(|l| l == "done")
        },
    );
    assert!(
        logs.contains(&format!("resolv: nameserver {dns_ip}")),
        "{logs}"
    );
    assert!(
        logs.contains("resolv: search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{logs}"
    );
    assert!(logs.contains("resolv: options ndots:5"), "{logs}");
    let resolved = |name: &str| {
        logs.lines()
            .find_map(|l| l.strip_prefix(&format!("resolved {name}: ")))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    };
    let api_ip = format!("{}1", server.service_prefix);
    assert_eq!(
        resolved("kubernetes.default.svc.cluster.local").as_deref(),
        Some(api_ip.as_str()),
        "{logs}"
    );
    assert_eq!(
        resolved("web.default.svc.cluster.local").as_deref(),
        Some(web_ip.as_str()),
        "{logs}"
    );
    assert_eq!(
        resolved("web").as_deref(),
        Some(web_ip.as_str()),
        "the search path: {logs}"
    );
    assert_eq!(
        resolved("kubernetes.default").as_deref(),
        Some(api_ip.as_str()),
        "{logs}"
    );
}
