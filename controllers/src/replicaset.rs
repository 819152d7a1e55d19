//! PLACEHOLDER: being written (replace this header).

use crate::ControllerContext;

pub async fn start_replicaset(_ctx: ControllerContext) -> anyhow::Result<()> {
    std::future::pending().await
}

pub async fn start_replication_controller(_ctx: ControllerContext) -> anyhow::Result<()> {
    std::future::pending().await
}
