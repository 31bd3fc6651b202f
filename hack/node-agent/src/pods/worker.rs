//! One pod's lifecycle, from volumes and sandbox through containers and probes to termination;
//! a task per pod, driven by pod updates and a short tick.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::container::{ContainerRuntime, Event};
use super::env::{self, Addresses};
use super::launch::{self, IMAGE_RETRY, Refusal, STAGE_FALLBACK};
use super::sandbox::{self, Sandbox};
use super::status::{self, PodView};
use super::volumes::Volumes;
use crate::image;
use crate::logs;

/// How often the worker checks its containers and reports status.
const TICK: Duration = Duration::from_millis(500);
/// How often file volumes are re-synced from their ConfigMaps/Secrets.
const VOLUME_SYNC: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Init,
    Main,
}

pub struct PodWorker {
    ctx: Arc<Ctx>,
    pod: Pod,
    /// `<state>/pods/<uid>`: volumes and pid records.
    pod_dir: PathBuf,
    /// `<state>/pods/<namespace>_<name>_<uid>`: container logs, kept after the pod is gone.
    log_dir: PathBuf,
    ip: Option<Ipv4Addr>,
    sandbox: Option<Sandbox>,
    volumes: Volumes,
    volumes_synced_at: Option<Instant>,
    init: Vec<ContainerRuntime>,
    containers: Vec<ContainerRuntime>,
    start_time: Timestamp,
    last_reported: Option<serde_json::Value>,
    /// The pod reached Succeeded/Failed: nothing runs any more.
    terminal: bool,
}

fn runtimes(
    ctx: &Ctx,
    specs: &[Container],
    previous: Option<&[ContainerStatus]>,
    init: bool,
) -> Vec<ContainerRuntime> {
    specs
        .iter()
        .map(|c| {
            let before = previous.and_then(|p| p.iter().find(|s| s.name == c.name));
            let sidecar = init && c.restart_policy.as_deref() == Some("Always");
            ContainerRuntime::new(
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                sidecar,
                before,
                ctx.backoff,
            )
        })
        .collect()
}

impl PodWorker {
    /// `ip` is the pod's address reserved from an earlier run, if any.
    pub fn new(ctx: Arc<Ctx>, pod: Pod, ip: Option<Ipv4Addr>) -> Self {
        let uid = pod.uid().unwrap_or_default();
        let pod_dir = ctx.state_dir.join("pods").join(&uid);
        let log_dir = logs::log_dir(
            &ctx.state_dir,
            &pod.namespace().unwrap_or_default(),
            &pod.name_any(),
            &uid,
        );
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let terminal = status.phase.as_deref().is_some_and(status::is_terminal);
        Self {
            init: runtimes(
                &ctx,
                spec.init_containers.as_deref().unwrap_or_default(),
                status.init_container_statuses.as_deref(),
                true,
            ),
            containers: runtimes(
                &ctx,
                &spec.containers,
                status.container_statuses.as_deref(),
                false,
            ),
            volumes: Volumes::new(&pod_dir),
            start_time: status.start_time.map_or_else(Timestamp::now, |t| t.0),
            ctx,
            pod,
            pod_dir,
            log_dir,
            ip,
            sandbox: None,
            volumes_synced_at: None,
            last_reported: None,
            terminal,
        }
    }

    pub async fn run(
        mut self,
        mut updates: watch::Receiver<Option<Arc<Pod>>>,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    // The kubelet leaves pods alone when it stops; this agent cannot, as its
                    // containers are its children. Stop them, keep volumes for the next run.
                    self.stop_all(self.grace().min(self.ctx.shutdown_grace)).await;
                    self.teardown(false).await;
                    return;
                }
                changed = updates.changed() => {
                    let latest = updates.borrow_and_update().clone();
                    match latest {
                        Some(pod) if changed.is_ok() => self.pod = (*pod).clone(),
                        _ => {
                            // Deleted outright (e.g. --force): clean up, nothing to delete.
                            tracing::info!(pod = %self.key(), "pod gone; cleaning up");
                            self.stop_all(self.grace()).await;
                            self.teardown(true).await;
                            return;
                        }
                    }
                }
                _ = ticker.tick() => {}
            }
            if self.pod.metadata.deletion_timestamp.is_some() {
                tracing::info!(pod = %self.key(), "pod terminating");
                self.stop_all(self.grace()).await;
                self.teardown(true).await;
                self.delete_from_api().await;
                return;
            }
            if !self.terminal {
                self.step().await;
                self.report().await;
            }
        }
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.pod.namespace().unwrap_or_default(),
            self.pod.name_any()
        )
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    /// The pod's grace period: the deletion's, else the spec's; at least 1s.
    fn grace(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| self.pod.spec.as_ref()?.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0).max(1))
    }

    fn addresses(&self) -> Option<Addresses> {
        Some(Addresses {
            pod_ip: self.ip?,
            host_ip: self.ctx.network.gateway(),
        })
    }

    /// Publishes an Event about one of the pod's containers.
    async fn event(&self, type_: EventType, reason: &str, container: &str, note: String) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            // The recorder folds events with equal actions into one series; per container,
            // "Started main" must not count as another "Started init".
            action: format!("{reason}/{container}"),
            secondary: None,
        };
        if let Err(error) = self
            .ctx
            .recorder
            .publish(&event, &self.pod.object_ref(&()))
            .await
        {
            tracing::debug!(%error, "failed to publish event");
        }
    }

    /// One pass: provide volumes and sandbox, notice exits and probe failures, start what is due.
    async fn step(&mut self) {
        if let Err(message) = self.prepare().await {
            tracing::debug!(pod = %self.key(), %message, "pod not ready to start containers");
            for c in self.init.iter_mut().chain(self.containers.iter_mut()) {
                c.wait("ContainerCreating", Some(message.clone()), Duration::ZERO);
            }
            self.mark_unsupported_images();
            return;
        }
        let grace = self.grace();
        for group in [Group::Init, Group::Main] {
            for i in 0..self.group(group).len() {
                let failed = match self.group_mut(group)[i].poll().await {
                    Some(Event::ProbeFailed(message)) => Some(message),
                    Some(Event::Exited) | None => None,
                };
                if let Some(message) = failed {
                    let name = self.group(group)[i].name.clone();
                    self.event(EventType::Warning, "Unhealthy", &name, message.clone())
                        .await;
                    self.event(
                        EventType::Normal,
                        "Killing",
                        &name,
                        format!("Container {name} failed a probe, will be restarted"),
                    )
                    .await;
                    self.group_mut(group)[i].stop(grace, true).await;
                }
            }
        }
        let policy = self.restart_policy();
        if !self.step_init(&policy).await {
            for c in &mut self.containers {
                c.wait("PodInitializing", None, Duration::ZERO);
            }
            return;
        }
        let now = Instant::now();
        for i in 0..self.containers.len() {
            let c = &mut self.containers[i];
            if let Some(t) = c.termination() {
                let restart = match policy.as_str() {
                    "Never" => false,
                    "OnFailure" => t.exit_code != 0 || t.probe_failure,
                    _ => true,
                };
                if restart {
                    c.schedule_restart();
                }
            }
            if self.containers[i].is_due(now) {
                self.start(Group::Main, i).await;
            }
        }
    }

    /// Runs init containers in order; true once all are done (sidecars: started).
    async fn step_init(&mut self, policy: &str) -> bool {
        let now = Instant::now();
        for i in 0..self.init.len() {
            let c = &mut self.init[i];
            if c.sidecar {
                if c.termination().is_some() {
                    c.schedule_restart();
                }
                if c.is_due(now) {
                    self.start(Group::Init, i).await;
                }
                if !self.init[i].is_running() {
                    return false;
                }
                continue;
            }
            match c.termination().map(|t| t.exit_code) {
                Some(0) => continue,
                Some(_) if policy == "Never" => return false,
                Some(_) => c.schedule_restart(),
                None => {}
            }
            if c.is_due(now) {
                self.start(Group::Init, i).await;
            }
            return false;
        }
        true
    }

    fn group(&self, group: Group) -> &[ContainerRuntime] {
        match group {
            Group::Init => &self.init,
            Group::Main => &self.containers,
        }
    }

    fn group_mut(&mut self, group: Group) -> &mut [ContainerRuntime] {
        match group {
            Group::Init => &mut self.init,
            Group::Main => &mut self.containers,
        }
    }

    fn spec_of(&self, group: Group, i: usize) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        match group {
            Group::Init => spec.init_containers.as_ref()?.get(i).cloned(),
            Group::Main => spec.containers.get(i).cloned(),
        }
    }

    /// Unsupported images show as such even while the pod waits for volumes.
    fn mark_unsupported_images(&mut self) {
        for group in [Group::Init, Group::Main] {
            for i in 0..self.group(group).len() {
                let Some(spec) = self.spec_of(group, i) else {
                    continue;
                };
                if let Err(e) = image::resolve(spec.image.as_deref().unwrap_or_default()) {
                    self.group_mut(group)[i].wait(
                        "ImageNotSupported",
                        Some(e.to_string()),
                        IMAGE_RETRY,
                    );
                }
            }
        }
    }

    /// Allocates the IP, syncs volumes (first time and every few seconds) and creates the sandbox.
    async fn prepare(&mut self) -> Result<(), String> {
        if self.ip.is_none() {
            let ip = self
                .ctx
                .ipam
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .allocate();
            self.ip = Some(ip.map_err(|e| e.to_string())?);
        }
        let addresses = self.addresses().ok_or("no pod IP")?;
        if self
            .volumes_synced_at
            .is_none_or(|t| t.elapsed() >= VOLUME_SYNC)
        {
            match self
                .volumes
                .sync(&self.ctx.client, &self.pod, addresses)
                .await
            {
                Ok(()) => self.volumes_synced_at = Some(Instant::now()),
                // Before the first start that blocks the pod; later, running containers keep
                // the last good files, as with the kubelet.
                Err(e) if self.volumes_synced_at.is_none() => return Err(e.to_string()),
                Err(e) => tracing::warn!(pod = %self.key(), error = %e, "volume sync failed"),
            }
        }
        if self.sandbox.is_none() {
            let hostname = env::hostname(&self.pod);
            let sandbox = Sandbox::create(
                &self.ctx.network,
                addresses.pod_ip,
                &hostname,
                &self.pod_dir,
            )
            .await
            .map_err(|e| e.to_string())?;
            tracing::info!(pod = %self.key(), ip = %addresses.pod_ip, pid = sandbox.pid, "sandbox ready");
            self.sandbox = Some(sandbox);
        }
        Ok(())
    }

    async fn start(&mut self, group: Group, i: usize) {
        let Some(spec) = self.spec_of(group, i) else {
            return;
        };
        let Some((sandbox, addresses)) = self.sandbox.as_ref().zip(self.addresses()) else {
            return;
        };
        let pod = launch::PodRefs {
            ctx: &self.ctx,
            pod: &self.pod,
            volumes: &self.volumes,
            sandbox_pid: sandbox.pid,
            addresses,
            pod_dir: &self.pod_dir,
            log_dir: &self.log_dir,
        };
        match launch::launch(&pod, &spec).await {
            Ok(launch) => {
                let argv = launch.argv.join(" ");
                match self.group_mut(group)[i].start(launch).await {
                    Ok(()) => {
                        tracing::info!(pod = %self.key(), container = %spec.name, %argv, "container started");
                        self.event(
                            EventType::Normal,
                            "Started",
                            &spec.name,
                            format!("Started container {}", spec.name),
                        )
                        .await;
                    }
                    Err(message) => {
                        tracing::warn!(pod = %self.key(), container = %spec.name, %message, "container failed to start");
                        self.event(EventType::Warning, "Failed", &spec.name, message)
                            .await;
                    }
                }
            }
            Err(Refusal {
                reason,
                message,
                retry,
            }) => {
                let c = &mut self.group_mut(group)[i];
                let repeated = c.waiting_reason() == Some(reason);
                let delay = retry.unwrap_or_else(|| c.retry_delay());
                c.wait(reason, Some(message.clone()), delay);
                // Said once; retries of the same failure only at debug level.
                if repeated {
                    tracing::debug!(pod = %self.key(), container = %spec.name, reason, %message, "container still cannot start");
                } else {
                    tracing::warn!(pod = %self.key(), container = %spec.name, reason, %message, "container cannot start");
                }
                self.event(EventType::Warning, "Failed", &spec.name, message)
                    .await;
            }
        }
    }

    /// Patches the status when it changed; a terminal phase also releases the sandbox.
    async fn report(&mut self) {
        let now = Instant::now();
        let view = PodView {
            pod_ip: self.sandbox.as_ref().map(|s| s.ip),
            host_ip: self.ctx.network.gateway(),
            start_time: self.start_time,
            sandbox_ready: self.sandbox.is_some(),
            init: self.init.iter().map(|c| c.view(now)).collect(),
            containers: self.containers.iter().map(|c| c.view(now)).collect(),
        };
        let status = status::build(&self.pod, &view, Timestamp::now());
        let terminal = status.phase.as_deref().is_some_and(status::is_terminal);
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
        if self.last_reported.as_ref() != Some(&value) {
            let api: Api<Pod> = Api::namespaced(
                self.ctx.client.clone(),
                &self.pod.namespace().unwrap_or_default(),
            );
            let patch = Patch::Merge(json!({ "status": value }));
            match api
                .patch_status(&self.pod.name_any(), &PatchParams::default(), &patch)
                .await
            {
                Ok(pod) => {
                    // The patched pod carries the condition times the next comparison needs.
                    self.pod = pod;
                    self.last_reported = Some(value);
                }
                Err(error) => {
                    tracing::warn!(pod = %self.key(), %error, "failed to update pod status");
                    return;
                }
            }
        }
        if terminal {
            tracing::info!(pod = %self.key(), phase = ?status.phase, "pod finished");
            self.stop_all(self.grace()).await;
            self.teardown(false).await;
            self.terminal = true;
        }
    }

    /// Stops main containers together, then init containers (sidecars outlive the main ones).
    async fn stop_all(&mut self, grace: Duration) {
        let running: Vec<String> = self
            .containers
            .iter()
            .filter(|c| c.is_running())
            .map(|c| c.name.clone())
            .collect();
        for name in running {
            self.event(
                EventType::Normal,
                "Killing",
                &name,
                format!("Stopping container {name}"),
            )
            .await;
        }
        futures::future::join_all(self.containers.iter_mut().map(|c| c.stop(grace, false))).await;
        futures::future::join_all(self.init.iter_mut().map(|c| c.stop(grace, false))).await;
    }

    /// Releases sandbox, IP and pid records; `remove_volumes` also deletes the pod directory
    /// (emptyDirs, projected files). PV directories live elsewhere and stay.
    async fn teardown(&mut self, remove_volumes: bool) {
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.destroy(&self.ctx.network).await;
        }
        sandbox::kill_recorded(&self.pod_dir).await;
        if let Some(ip) = self.ip.take() {
            self.ctx
                .ipam
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .release(ip);
        }
        if remove_volumes {
            let _ = std::fs::remove_dir_all(&self.pod_dir);
        }
        let _ = std::fs::remove_dir_all(
            Path::new(STAGE_FALLBACK).join(self.pod.uid().unwrap_or_default()),
        );
    }

    /// The kubelet's last word on a terminating pod: delete it for good.
    async fn delete_from_api(&self) {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&self.pod.name_any(), &params).await {
            Ok(_) => tracing::info!(pod = %self.key(), "pod deleted"),
            Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
            Err(error) => tracing::warn!(pod = %self.key(), %error, "failed to delete pod"),
        }
    }
}
