//! `node-agent`: the local cluster's only node. Wiring and signal handling; see README.md.

mod apiproxy;
mod binder;
mod capacity;
mod host;
mod image;
mod informer;
mod ipam;
mod kubelet_api;
mod logs;
mod mountpoints;
mod network;
mod node;
mod oci;
mod pods;
mod provisioner;
mod reaper;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Config};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use ipam::{Cidr, Ipam};
use mountpoints::MountPoints;
use network::Network;
use node::{NodeConfig, Registration};
use pods::{BackoffConfig, Ctx};
use provisioner::Provisioner;

/// A stand-in for kubelet, kube-scheduler and a volume provisioner on a one-node local cluster.
///
/// It registers a Node, binds pending pods to it once their PersistentVolumeClaims are Bound,
/// provisions directory-backed PersistentVolumes for the StorageClass it serves, and runs each
/// pod's containers as host processes: in a network namespace with its own pod IP (reachable
/// from the host), with volumes bind-mounted in a private mount namespace per container.
/// Images are not pulled: redis maps to host binaries (redis-server), and the operator's image
/// runs from an OCI image layout on disk, unpacked into a root filesystem, as its user.
///
/// Needs root. On SIGTERM/SIGINT it stops all pods gracefully and removes its network devices
/// and mount points; on start it first reclaims whatever a crashed run left behind.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Kubeconfig of the cluster; needs rights to bind pods and create PersistentVolumes.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Name of the Node object this agent registers and serves.
    #[arg(long, default_value = "local-node")]
    node_name: String,
    /// Pod volumes, pid records, logs (`pods/<ns>_<name>_<uid>/<container>.log`), PV directories.
    #[arg(long, default_value = ".local-cluster/node")]
    state_dir: PathBuf,
    /// Pod IPs come from here; its last usable address is the host's (the pods' gateway).
    #[arg(long, default_value = "10.244.0.0/16")]
    pod_cidr: Cidr,
    /// StorageClass whose claims this agent provisions.
    #[arg(long, default_value = "standard")]
    storage_class: String,
    /// Provisioner name that StorageClass names; set on the PVs this agent creates.
    #[arg(long, default_value = "local.redis-operator.dev/hostpath")]
    provisioner: String,
    /// Pod capacity reported on the Node.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// First crash-loop back-off delay (the kubelet's is 10s); it doubles per crash.
    #[arg(long, default_value_t = 10)]
    crash_backoff_seconds: u64,
    /// Crash-loop back-off ceiling (the kubelet's is 300s).
    #[arg(long, default_value_t = 300)]
    crash_backoff_max_seconds: u64,
    /// Longest grace period granted to a pod when the agent itself stops.
    #[arg(long, default_value_t = 20)]
    shutdown_grace_seconds: u64,
    /// Port on the pods' gateway address that forwards to `--api-upstream`; pods get
    /// KUBERNETES_SERVICE_HOST/PORT pointing there, so in-cluster clients work.
    #[arg(long)]
    api_proxy_port: Option<u16>,
    /// The API server's address on the host, for `--api-proxy-port`.
    #[arg(long, default_value = "127.0.0.1:6443")]
    api_upstream: std::net::SocketAddr,
    /// Port of the kubelet API on the node's InternalIP (the pods' gateway address), published
    /// in the Node's status: the API server reads container logs there for `kubectl logs`.
    /// Served only with --tls-cert-file and --tls-private-key-file.
    #[arg(long, default_value_t = 16447)]
    kubelet_port: u16,
    /// Serving certificate of the kubelet port (PEM); it must name the node's InternalIP.
    #[arg(long, requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// Private key of --tls-cert-file (PEM).
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// CA whose client certificates the kubelet port accepts (the API server's
    /// --kubelet-client-certificate); without it, every client is served.
    #[arg(long, requires = "tls_cert_file")]
    client_ca_file: Option<PathBuf>,
    /// OCI image layout (as `make image` writes it) that the image `redis-operator` runs from:
    /// its layers are unpacked under the state dir, and containers run its entrypoint there.
    #[arg(long)]
    operator_image_dir: Option<PathBuf>,
    /// Only remove what an earlier run left behind (processes, network devices, mount
    /// points), then exit.
    #[arg(long)]
    reclaim_only: bool,
    /// Only provision volumes for the StorageClass, pinned to no node, and bind each claim to
    /// its volume (as the PV controller's binder would, faster): no Node, no pods, no network
    /// or mounts. For clusters whose nodes are simulated (the scale profile).
    #[arg(long, conflicts_with = "reclaim_only")]
    provisioner_only: bool,
    /// With --provisioner-only: also remove pods being deleted at once (with their uid as a
    /// precondition), as the kubelet of a simulated node would.
    #[arg(long, requires = "provisioner_only")]
    remove_deleted_pods: bool,
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("failed to read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

async fn terminated() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// The provisioner alone, until SIGTERM/SIGINT. It touches no host network or mounts, so it can
/// run beside another cluster's full agent.
async fn provision_only(args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("failed to create {}", args.state_dir.display()))?;
    let state_dir = args.state_dir.canonicalize()?;
    let client = client(args.kubeconfig.as_ref()).await?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "node-agent".into(),
            instance: None,
        },
    );
    let shutdown = CancellationToken::new();
    let reaper = args
        .remove_deleted_pods
        .then(|| tokio::spawn(reaper::run(client.clone(), shutdown.clone())));
    let task = tokio::spawn(
        Provisioner {
            client,
            recorder,
            class: args.storage_class.clone(),
            name: args.provisioner.clone(),
            node: None,
            volumes_dir: state_dir.join("volumes"),
            bind_claims: true,
        }
        .run(shutdown.clone()),
    );
    tracing::info!(class = %args.storage_class, "provisioning volumes only");
    terminated().await?;
    shutdown.cancel();
    let _ = task.await;
    if let Some(reaper) = reaper {
        let _ = reaper.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Makes the path arguments absolute, then moves to `/`: the pods' processes start in the
/// agent's directory, and a checkout removed while the agent runs (a git worktree) would leave
/// every shell they start complaining that its working directory is gone.
fn leave_start_dir(args: &mut Args) -> anyhow::Result<()> {
    let paths = [
        args.kubeconfig.as_mut(),
        Some(&mut args.state_dir),
        args.tls_cert_file.as_mut(),
        args.tls_private_key_file.as_mut(),
        args.client_ca_file.as_mut(),
        args.operator_image_dir.as_mut(),
    ];
    for path in paths.into_iter().flatten() {
        if path.is_relative() {
            let here = std::env::current_dir().context("the directory the agent started in")?;
            *path = here.join(&*path);
        }
    }
    std::env::set_current_dir("/").context("moving to /")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    leave_start_dir(&mut args)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        // Plain text when logging to a file (hack/local-cluster does).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if args.provisioner_only {
        return provision_only(&args).await;
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("node-agent must run as root: it creates network namespaces and mounts");
    }
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("failed to create {}", args.state_dir.display()))?;
    let state_dir = args.state_dir.canonicalize()?;
    let mountpoints = MountPoints::new(&state_dir);

    let killed = pods::reclaim(&state_dir).await;
    Network::reclaim().await;
    mountpoints.remove_created();
    // Unpacked images: no container uses them any more, and the layout may have been rebuilt.
    let unpacked_images = state_dir.join("images");
    let _ = std::fs::remove_dir_all(&unpacked_images);
    if killed > 0 {
        tracing::info!(killed, "reclaimed processes of an earlier run");
    }
    if args.reclaim_only {
        return Ok(());
    }
    // Before anything is set up, so that a bad certificate fails the start at once.
    let kubelet_tls = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => Some(kubelet_api::tls_config(&kubelet_api::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.client_ca_file.clone(),
        })?),
        _ => None,
    };

    let network = Network::new(args.pod_cidr);
    network.setup().await?;
    let network_gateway = network.gateway();
    // Bound before the Node names the port. On the gateway, the node's InternalIP: the API
    // server dials that, and it is an address of this host, so nothing leaves it.
    let kubelet_listener = match &kubelet_tls {
        Some(_) => {
            let addr = std::net::SocketAddr::from((network_gateway, args.kubelet_port));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("failed to listen on {addr} (--kubelet-port)"))?;
            tracing::info!(%addr, "serving the kubelet API");
            Some(listener)
        }
        None => {
            tracing::info!("no --tls-cert-file: not serving the kubelet API (kubectl logs)");
            None
        }
    };
    let client = client(args.kubeconfig.as_ref()).await?;
    let registration = Registration::register(
        client.clone(),
        NodeConfig {
            name: args.node_name.clone(),
            pod_cidr: args.pod_cidr,
            host_ip: network.gateway(),
            state_dir: state_dir.clone(),
            max_pods: args.max_pods,
            kubelet_port: kubelet_listener.as_ref().map(|_| args.kubelet_port),
        },
    )
    .await?;
    tracing::info!(node = %args.node_name, pod_cidr = %args.pod_cidr, "node registered");

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "node-agent".into(),
            instance: Some(args.node_name.clone()),
        },
    );
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        node_name: args.node_name.clone(),
        state_dir: state_dir.clone(),
        network,
        ipam: Mutex::new(Ipam::new(args.pod_cidr)),
        backoff: BackoffConfig {
            initial: Duration::from_secs(args.crash_backoff_seconds),
            max: Duration::from_secs(args.crash_backoff_max_seconds),
            reset_after: Duration::from_secs(600),
        },
        mountpoints,
        recorder: recorder.clone(),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
        api_service: args
            .api_proxy_port
            .map(|port| std::net::SocketAddr::from((network_gateway, port))),
        operator_image: args
            .operator_image_dir
            .as_ref()
            .map(|dir| std::path::absolute(dir).map(|dir| oci::Layout::new(dir, unpacked_images)))
            .transpose()?,
        logs: Arc::default(),
    });
    let shutdown = CancellationToken::new();
    if let (Some(listener), Some(tls)) = (kubelet_listener, kubelet_tls) {
        tokio::spawn(kubelet_api::run(
            listener,
            tls,
            ctx.logs.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(listen) = ctx.api_service {
        let (upstream, shutdown) = (args.api_upstream, shutdown.clone());
        tokio::spawn(async move {
            if let Err(error) = apiproxy::run(listen, upstream, shutdown).await {
                tracing::error!(%error, "the API proxy for pods stopped");
            }
        });
    }
    let tasks = [
        tokio::spawn(registration.run(shutdown.clone())),
        tokio::spawn(binder::run(
            client.clone(),
            args.node_name.clone(),
            node::labels(&args.node_name),
            recorder.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(
            Provisioner {
                client: client.clone(),
                recorder,
                class: args.storage_class.clone(),
                name: args.provisioner.clone(),
                node: Some(args.node_name.clone()),
                volumes_dir: state_dir.join("volumes"),
                bind_claims: false,
            }
            .run(shutdown.clone()),
        ),
        tokio::spawn(pods::run(ctx.clone(), shutdown.clone())),
    ];

    terminated().await?;
    tracing::info!("stopping: terminating pods");
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    Network::reclaim().await;
    ctx.mountpoints.remove_created();
    tracing::info!("stopped");
    Ok(())
}
