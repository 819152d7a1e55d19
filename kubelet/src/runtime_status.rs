//! The runtime health check (upstream's `updateRuntimeUp` and `runtimeState`): every 5 s the
//! kubelet asks the runtime for its CRI `Status`. A runtime that has not answered for 30 s
//! (upstream's `maxWaitForContainerRuntime`) is "container runtime is down"; one that answers
//! with `RuntimeReady` false is "container runtime not ready: …", with `NetworkReady` false
//! "container runtime network not ready: …" (upstream's messages); until the first answer the
//! check "may not have completed yet", so a starting node is not Ready before the runtime has
//! said that its network is. They become the Node's Ready condition through
//! [`NodeStatusInputs`], next to PLEG's own error, which this leaves alone.

use std::time::{Duration, Instant};

use cri::pb;

use crate::node::NodeStatusInputs;
use crate::runtime::Runtime;

/// How often the runtime is asked.
pub const PERIOD: Duration = Duration::from_secs(5);
/// How long the runtime may fail to answer before it is down.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

const DOWN: &str = "container runtime is down";
const NOT_READY: &str = "container runtime not ready";
/// Upstream's message while no status has been seen (`lastBaseRuntimeSync` zero).
pub const NOT_YET: &str = "container runtime status check may not have completed yet";

/// Runs the check until the task is dropped.
pub async fn run(runtime: Runtime, inputs: NodeStatusInputs) {
    let mut last_ok = Instant::now();
    let mut latest: Option<pb::StatusResponse> = None;
    loop {
        match tokio::time::timeout(PERIOD, runtime.status(false)).await {
            Ok(Ok(s)) => {
                last_ok = Instant::now();
                latest = Some(s);
            }
            Ok(Err(e)) => tracing::warn!("container runtime status check failed: {}", e.message()),
            Err(_) => tracing::warn!("container runtime status check timed out"),
        }
        let (runtime_errors, network_errors) =
            errors(latest.as_ref(), last_ok.elapsed() > MAX_WAIT);
        inputs.update(|s| {
            s.runtime_errors
                .retain(|e| ![DOWN, NOT_READY, NOT_YET].iter().any(|m| e.starts_with(m)));
            s.runtime_errors.extend(runtime_errors);
            s.network_errors = network_errors;
        });
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = inputs.runtime_recheck_requested() => {}
        }
    }
}

/// The runtime and network errors from the last answer, and whether the runtime is down.
fn errors(status: Option<&pb::StatusResponse>, down: bool) -> (Vec<String>, Vec<String>) {
    let mut runtime = Vec::new();
    let mut network = Vec::new();
    if down {
        runtime.push(DOWN.to_string());
    }
    let Some(s) = status else {
        if !down {
            runtime.push(NOT_YET.to_string());
        }
        return (runtime, network);
    };
    let conditions = s
        .status
        .as_ref()
        .map(|st| st.conditions.as_slice())
        .unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c.r#type == t);
    match find("RuntimeReady") {
        Some(c) if c.status => {}
        c => runtime.push(format!("{NOT_READY}: {}", describe(c, "RuntimeReady"))),
    }
    match find("NetworkReady") {
        Some(c) if c.status => {}
        c => network.push(format!(
            "container runtime network not ready: {}",
            describe(c, "NetworkReady")
        )),
    }
    (runtime, network)
}

/// Upstream's `RuntimeCondition.String()`: `Type=status reason:R message:M` (`<nil>` if absent).
fn describe(c: Option<&pb::RuntimeCondition>, t: &str) -> String {
    match c {
        Some(c) => format!(
            "{}={} reason:{} message:{}",
            c.r#type, c.status, c.reason, c.message
        ),
        None => format!("{t}=<nil>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(runtime: bool, network: bool) -> pb::StatusResponse {
        let c = |t: &str, ok: bool| pb::RuntimeCondition {
            r#type: t.into(),
            status: ok,
            reason: if ok { "" } else { "NetworkPluginNotReady" }.into(),
            message: if ok { "" } else { "cni plugin not initialized" }.into(),
        };
        pb::StatusResponse {
            status: Some(pb::RuntimeStatus {
                conditions: vec![c("RuntimeReady", runtime), c("NetworkReady", network)],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn messages_as_upstream() {
        assert_eq!(errors(Some(&status(true, true)), false), (vec![], vec![]));
        assert_eq!(
            errors(Some(&status(true, false)), false).1,
            ["container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized"]
        );
        let (rt, _) = errors(Some(&status(true, true)), true);
        assert_eq!(rt, ["container runtime is down"]);
        // No answer yet: not ready, as upstream's zero lastBaseRuntimeSync.
        assert_eq!(errors(None, false).0, [NOT_YET]);
        assert_eq!(errors(None, true).0, ["container runtime is down"]);
        assert!(errors(Some(&status(false, true)), false).0[0]
            .starts_with("container runtime not ready: RuntimeReady=false"));
    }
}
