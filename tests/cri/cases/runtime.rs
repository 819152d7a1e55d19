//! Runtime information: `Version` and `Status`, as critest's "runtime info" group checks them.

use anyhow::{ensure, Context, Result};
use k8s_cri::v1 as pb;

use crate::cri::harness::{Ctx, Verdict};

/// Version names the runtime and its version and speaks CRI v1 (kubelet API version 0.1.0).
pub async fn version(t: Ctx) -> Result<Verdict> {
    let v = t
        .rt()
        .version(pb::VersionRequest {
            version: "v1".into(),
        })
        .await?
        .into_inner();
    ensure!(
        v.version == "0.1.0",
        "Version.version: want 0.1.0, got {v:?}"
    );
    ensure!(
        !v.runtime_name.is_empty(),
        "Version.runtime_name is empty: {v:?}"
    );
    ensure!(
        !v.runtime_version.is_empty(),
        "Version.runtime_version is empty: {v:?}"
    );
    ensure!(
        v.runtime_api_version == "v1",
        "Version.runtime_api_version: want v1, got {v:?}"
    );
    Ok(Verdict::Pass)
}

/// Status reports RuntimeReady and NetworkReady, both true, on a configured node.
pub async fn status_conditions(t: Ctx) -> Result<Verdict> {
    let s = t
        .rt()
        .status(pb::StatusRequest { verbose: false })
        .await?
        .into_inner()
        .status
        .context("Status returned no status")?;
    for want in ["RuntimeReady", "NetworkReady"] {
        let c = s
            .conditions
            .iter()
            .find(|c| c.r#type == want)
            .with_context(|| format!("no {want} condition in {s:?}"))?;
        ensure!(c.status, "{want} is false: {c:?}");
    }
    Ok(Verdict::Pass)
}
