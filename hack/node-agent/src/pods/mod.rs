//! Running the pods bound to this node: a watch on them feeds one worker task per pod.
//!
//! ```text
//! watch pods (spec.nodeName=<node>) --> manager --(latest Pod / gone)--> PodWorker per uid
//!                                                       |-- Volumes   (files, PV dirs)
//!                                                       |-- Sandbox   (netns + veth + IP)
//!                                                       |-- launch    (env, argv, mounts per start)
//!                                                       `-- ContainerRuntime per container (+ Prober)
//!                                                             `-- logs::capture (stdout/stderr -> run files)
//! ```

mod container;
mod env;
mod files;
mod launch;
mod ownership;
mod probe;
mod prober;
mod sandbox;
mod security;
mod status;
mod volumes;
mod worker;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::events::Recorder;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use container::BackoffConfig;

use crate::ipam::Ipam;
use crate::logs;
use crate::mountpoints::MountPoints;
use crate::network::Network;
use worker::PodWorker;

/// What every pod worker shares.
pub struct Ctx {
    pub client: Client,
    pub node_name: String,
    /// Absolute: it is handed to processes running elsewhere in the filesystem.
    pub state_dir: PathBuf,
    pub network: Network,
    pub ipam: Mutex<Ipam>,
    pub backoff: BackoffConfig,
    pub mountpoints: MountPoints,
    pub recorder: Recorder,
    /// Upper bound for pods' grace periods when the agent itself stops.
    pub shutdown_grace: Duration,
    /// Where pods reach the API server (KUBERNETES_SERVICE_HOST/PORT), if it is forwarded.
    pub api_service: Option<std::net::SocketAddr>,
    /// The OCI layout the image `redis-operator` runs from.
    pub operator_image: Option<crate::oci::Layout>,
    /// The pods and log runs the kubelet port serves logs of.
    pub logs: Arc<logs::Registry>,
}

type Updates = watch::Sender<Option<Arc<Pod>>>;

/// Watches this node's pods until `shutdown`, then waits for every worker to stop its pod.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut workers: HashMap<String, Updates> = HashMap::new();
    // Uids whose worker has finished (pod deleted by us): later events for them are ignored.
    let mut finished: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut listing: Vec<Pod> = Vec::new();
    let mut first_listing = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                    ctx.logs.remove_pod(&uid);
                    finished.insert(uid);
                }
            }
            event = events.next() => match event {
                None => break,
                Some(Err(error)) => tracing::warn!(%error, "pod watch failed; retrying"),
                Some(Ok(WatchEvent::Init)) => listing.clear(),
                Some(Ok(WatchEvent::InitApply(pod))) => listing.push(pod),
                Some(Ok(WatchEvent::InitDone)) => {
                    let pods = std::mem::take(&mut listing);
                    let present: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
                    // Pods deleted while the watch was down.
                    for (uid, updates) in &workers {
                        if !present.contains(uid) {
                            let _ = updates.send(None);
                        }
                    }
                    if std::mem::take(&mut first_listing) {
                        remove_orphans(&ctx.state_dir, &present);
                    }
                    // Reserve every known pod IP before any new pod can be handed one.
                    let reserved: Vec<Option<Ipv4Addr>> = pods.iter().map(|p| reserve_ip(&ctx, p)).collect();
                    for (pod, ip) in pods.into_iter().zip(reserved) {
                        dispatch(&ctx, &mut workers, &finished, &mut tasks, &shutdown, pod, ip);
                    }
                }
                Some(Ok(WatchEvent::Apply(pod))) => {
                    dispatch(&ctx, &mut workers, &finished, &mut tasks, &shutdown, pod, None);
                }
                Some(Ok(WatchEvent::Delete(pod))) => {
                    let uid = pod.uid().unwrap_or_default();
                    if let Some(updates) = workers.get(&uid) {
                        let _ = updates.send(None);
                    }
                    finished.remove(&uid);
                }
            },
        }
    }
    // Workers watch the same token and stop their pods.
    while tasks.join_next().await.is_some() {}
}

fn reserve_ip(ctx: &Ctx, pod: &Pod) -> Option<Ipv4Addr> {
    let ip: Ipv4Addr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    let mut ipam = ctx.ipam.lock().unwrap_or_else(|e| e.into_inner());
    ipam.reserve(ip).then_some(ip)
}

fn dispatch(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, Updates>,
    finished: &HashSet<String>,
    tasks: &mut JoinSet<String>,
    shutdown: &CancellationToken,
    pod: Pod,
    reserved: Option<Ipv4Addr>,
) {
    let Some(uid) = pod.uid() else { return };
    if finished.contains(&uid) {
        return;
    }
    if let Some(updates) = workers.get(&uid) {
        let _ = updates.send(Some(Arc::new(pod)));
        return;
    }
    let ip = reserved.or_else(|| reserve_ip(ctx, &pod));
    let (updates, receiver) = watch::channel(Some(Arc::new(pod.clone())));
    ctx.logs.add_pod(&ctx.state_dir, &pod);
    let worker = PodWorker::new(ctx.clone(), pod, ip);
    let token = shutdown.clone();
    let key = uid.clone();
    tasks.spawn(async move {
        worker.run(receiver, token).await;
        key
    });
    workers.insert(uid, updates);
}

/// Pod directories of pods that no longer exist (deleted while the agent was down).
fn remove_orphans(state_dir: &Path, present: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(state_dir.join("pods")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // `<uid>` directories only; `<ns>_<name>_<uid>` log directories are kept.
        if !name.contains('_') && !present.contains(&name) {
            tracing::info!(uid = %name, "removing state of a pod that no longer exists");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Kills every process recorded by an earlier run (a crash leaves pods running unsupervised).
pub async fn reclaim(state_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(state_dir.join("pods")) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        killed += sandbox::kill_recorded(&entry.path()).await;
    }
    let _ = std::fs::remove_dir_all(launch::STAGE_FALLBACK);
    killed
}
