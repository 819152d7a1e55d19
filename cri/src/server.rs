//! `capstan cri`: the RuntimeService and ImageService on a unix socket.

use std::future::Future;
use std::path::PathBuf;

/// What `capstan cri` is given on its command line.
#[derive(Clone, Debug)]
pub struct Config {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub registry_config_dir: Option<PathBuf>,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_cache_dir: PathBuf,
    /// The binary started as `<exe> supervise …` for each pod.
    pub supervisor_exe: PathBuf,
}

/// Serves CRI on `config.socket` until `shutdown` resolves.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let _ = (config, shutdown);
    anyhow::bail!("the CRI server is not built yet")
}
