//! PLACEHOLDER: being written (replace this header).

use crate::ControllerContext;

pub async fn start(_ctx: ControllerContext) -> anyhow::Result<()> {
    std::future::pending().await
}
