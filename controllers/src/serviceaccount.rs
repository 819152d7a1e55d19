//! PLACEHOLDER: being written (replace this header).

use crate::ControllerContext;

pub async fn start(_ctx: ControllerContext) -> anyhow::Result<()> {
    std::future::pending().await
}

pub async fn start_root_ca_publisher(_ctx: ControllerContext) -> anyhow::Result<()> {
    std::future::pending().await
}
