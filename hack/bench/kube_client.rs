//! The `--kubeconfig` argument and the client the floor programs of `make bench-scale` share.

use std::path::PathBuf;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The file after `--kubeconfig`; `usage` is what is printed without one.
pub fn kubeconfig_arg(usage: &str) -> anyhow::Result<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--kubeconfig" {
            return args
                .next()
                .map(PathBuf::from)
                .ok_or_else(|| anyhow::anyhow!("--kubeconfig needs a file"));
        }
    }
    anyhow::bail!("usage: {usage}")
}

/// A client of the cluster `path` names.
pub async fn client(path: &PathBuf) -> anyhow::Result<Client> {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(path)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}
