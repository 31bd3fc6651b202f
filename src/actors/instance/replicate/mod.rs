//! The replication phase of a replicated instance's step, taken after its report when the rest
//! of the step wrote nothing: the role Services, then observe (every pod's Redis, the routing),
//! decide (one pure call), perform.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

mod perform;
mod routing;

use routing::apply_services;

use super::InstanceState;
use super::observe::Observed;
use super::target::Plan;
use crate::actors::metrics::MetricsMsg;
use crate::auth::Access;
use crate::crd::ReplicationStatus;
use crate::decide::is_ready;
use crate::decide::replication::{ReplicaPod, ReplicationLimits, ReplicationView};
use crate::decide::replication_act::{
    ReplicationFacts, ReplicationPlan, converting, failed_here, replication_step, rolling,
    summarize,
};
use crate::kube_io;
use crate::live::pods::PodAddress;
use crate::replication::{self, PodReplication, Role};
use crate::resources::{CachedPod, REVISION_LABEL, ROLE_LABEL};
use crate::tls::client::ClientTls;
/// What the actor remembers of replication between steps; the decisions that must survive a
/// leader change are in status instead.
#[derive(Debug, Default)]
pub struct ReplicationMemory {
    /// Since when the recorded primary has not answered.
    primary_silent_since: Option<(String, Instant)>,
    /// The switchover target whose `FAILOVER` this process sent.
    switchover_sent: Option<String>,
    /// Each replica's lag at the last probe that saw the primary.
    last_lag: BTreeMap<String, i64>,
    /// The switchover target on its way into the primary's Services.
    routing: Option<routing::RoutingMemory>,
}

impl ReplicationMemory {
    /// Remembers nothing of the pods' roles.
    pub fn is_blank(&self) -> bool {
        self.primary_silent_since.is_none()
            && self.switchover_sent.is_none()
            && self.last_lag.is_empty()
            && self.routing.is_none()
    }
}

/// The replication phase. `paused`: the main decision holds a change. `Ok(None)`: it wrote;
/// `Ok(Some(d))`: probe again in `d`.
pub(super) async fn step(
    state: &mut InstanceState,
    plan: &Plan,
    seen: &Observed,
    paused: bool,
) -> Result<Option<Duration>, kube_io::Error> {
    // The role Services first: a write of them ends the step, before any pod is probed.
    if let Some(wrote) = apply_services(state, plan, seen).await? {
        return Ok(wrote);
    }
    let record = seen
        .instance
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref());
    let rolling = rolling(record, seen.statefulset.as_deref());
    let reach = Reach::of(state, seen);
    let probes = probe(&state.access, &reach).await;
    let status = seen
        .instance
        .status
        .as_ref()
        .and_then(|s| s.replication.clone())
        .unwrap_or_default();
    let views = views(seen, &reach, &probes);
    remember(&mut state.replication, &status, &views);
    send_metrics(state, &views);
    let now = Instant::now();
    let silent_for = state
        .replication
        .primary_silent_since
        .as_ref()
        .map(|(_, since)| now.duration_since(*since));
    let routing = routing::routing(state, seen, &status, &views, now).await?;
    let rollout_hash = record.map(|r| r.config_hash.as_str());
    let view = ReplicationView {
        pods: &views,
        replicas: plan.instance.spec.replicas,
        status: Some(&status),
        rolling,
        primary_silent_for: silent_for,
        switchover_sent: status
            .switchover
            .as_ref()
            .is_some_and(|sw| state.replication.switchover_sent.as_ref() == Some(&sw.to)),
        last_lag: &state.replication.last_lag,
        paused,
        switchover_halted: rolling && failed_here(&status, rollout_hash),
        routing,
    };
    let limits = ReplicationLimits {
        route_settle: state.args.timings.route_settle,
        ..ReplicationLimits::from_spec(&plan.instance.spec.replication)
    };
    let facts = ReplicationFacts {
        status: &status,
        summary: summarize(&views, &state.replication.last_lag, limits.max_lag_bytes),
        converting: converting(&seen.instance),
        rollout_hash,
        rolling,
        now: Timestamp::now(),
    };
    let ReplicationPlan { step: decided, act } = replication_step(&view, &limits, &facts);
    tracing::debug!(step = decided.name(), ?decided, "replication step");
    let done = perform::Done {
        plan,
        seen,
        reach: &reach,
        views: &views,
        switchover_timeout: limits.switchover_timeout,
    };
    perform::perform(state, &done, decided, act).await
}

/// How to reach each pod of the step: the pods as the cache shows them, and each one's TLS.
pub(super) struct Reach<'a> {
    pods: Vec<&'a Arc<CachedPod>>,
    tls: BTreeMap<String, Option<Arc<ClientTls>>>,
}

impl<'a> Reach<'a> {
    fn of(state: &InstanceState, seen: &'a Observed) -> Self {
        let pods: Vec<&Arc<CachedPod>> = seen.pods.iter().collect();
        let tls = pods
            .iter()
            .map(|p| (p.name_any(), state.tls.for_pod(p)))
            .collect();
        Reach { pods, tls }
    }

    /// The pod named `name`, if the cache shows it.
    pub(super) fn pod(&self, name: &str) -> Option<&'a Arc<CachedPod>> {
        self.pods.iter().find(|p| p.name_any() == name).copied()
    }

    /// Where `name`'s Redis listens.
    pub(super) fn address(&self, name: &str) -> PodAddress {
        PodAddress {
            pod: name.to_owned(),
            ip: self.pod(name).and_then(|p| pod_ip(p)).map(str::to_owned),
            tls: self.tls.get(name).cloned().flatten(),
        }
    }
}

/// Every pod's `INFO replication`, asked at once; `None` for a pod that did not answer.
async fn probe(access: &Access, reach: &Reach<'_>) -> Vec<Option<PodReplication>> {
    futures::future::join_all(reach.pods.iter().map(|pod| async {
        let address = PodAddress {
            pod: pod.name_any(),
            ip: pod_ip(pod).map(str::to_owned),
            tls: reach.tls.get(&pod.name_any()).cloned().flatten(),
        };
        replication::probe(&address, access).await.ok()
    }))
    .await
}

/// The pods as the replication decision reads them.
fn views<'a>(
    seen: &'a Observed,
    reach: &Reach<'a>,
    probes: &'a [Option<PodReplication>],
) -> Vec<ReplicaPod<'a>> {
    let update_revision = seen
        .statefulset
        .as_deref()
        .and_then(|sts| sts.status.as_ref()?.update_revision.as_ref());
    reach
        .pods
        .iter()
        .zip(probes)
        .map(|(pod, probe)| ReplicaPod {
            name: pod.metadata.name.as_deref().unwrap_or_default(),
            ordinal: ordinal(pod),
            ip: pod_ip(pod),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            ready: is_ready(pod),
            up_to_date: update_revision.is_some()
                && pod.labels.get(REVISION_LABEL) == update_revision.map(String::as_str),
            role_label: pod.labels.get(ROLE_LABEL),
            probe: probe.as_ref(),
        })
        .collect()
}

/// The primaries found and each replica's lag, for metrics.
fn send_metrics(state: &InstanceState, views: &[ReplicaPod]) {
    let primaries = views
        .iter()
        .filter(|p| p.probe.is_some_and(|r| r.role == Role::Primary))
        .count();
    let _ = state.args.metrics.send_message(MetricsMsg::Replication {
        key: state.args.key.clone(),
        primaries: u32::try_from(primaries).unwrap_or(u32::MAX),
        lags: state
            .replication
            .last_lag
            .iter()
            .map(|(pod, lag)| (pod.clone(), *lag))
            .collect(),
    });
}

/// Notes when the recorded primary stopped answering and how far behind each replica is.
fn remember(memory: &mut ReplicationMemory, status: &ReplicationStatus, pods: &[ReplicaPod]) {
    let Some(name) = status.primary.as_deref() else {
        memory.primary_silent_since = None;
        return;
    };
    let primary = pods.iter().find(|p| p.name == name && !p.deleting);
    match primary.and_then(|p| p.probe) {
        Some(probe) if probe.role == Role::Primary => {
            memory.primary_silent_since = None;
            memory.last_lag = pods
                .iter()
                .filter_map(|p| {
                    let r = p.probe?;
                    (r.role == Role::Replica && r.replid == probe.replid)
                        .then(|| (p.name.to_owned(), (probe.offset - r.offset).max(0)))
                })
                .collect();
        }
        _ => {
            let fresh = memory
                .primary_silent_since
                .as_ref()
                .is_none_or(|(n, _)| n != name);
            if fresh {
                memory.primary_silent_since = Some((name.to_owned(), Instant::now()));
            }
        }
    }
}

pub(super) fn pod_ip(pod: &CachedPod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.pod_ip.as_deref())
}

fn ordinal(pod: &CachedPod) -> i32 {
    pod.metadata
        .name
        .as_deref()
        .and_then(|n| n.rsplit_once('-'))
        .and_then(|(_, o)| o.parse().ok())
        .unwrap_or(-1)
}
