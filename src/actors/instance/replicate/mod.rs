//! The replication part of a replicated instance's step: probe every pod's Redis, decide (pure,
//! in `decide::replication`), perform the one step decided. Runs when the rest of the instance
//! has nothing to write, so the config, template and Services come first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tracing::{info, warn};

mod routing;

use routing::{apply_services, move_primary_label, write_services};

use super::InstanceState;
use super::observe::Observed;
use super::report;
use super::target::Plan;
use crate::actors::metrics::MetricsMsg;
use crate::crd::{ReplicaPodStatus, ReplicationStatus, SwitchoverFailure, SwitchoverRecord};
use crate::decide::replication::{
    ReplicaPod, ReplicationLimits, ReplicationStep, ReplicationView, ReplicationWait,
    decide_replication,
};
use crate::decide::{is_ready, rollout_complete};
use crate::kube_io;
use crate::live::pods::PodAddress;
use crate::replication::{self, PodReplication, Role, awaiting_role};
use crate::resources::{CachedPod, REVISION_LABEL, ROLE_LABEL};

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

/// How often a replicated instance's pods are probed: quickly while something is in motion,
/// and at rest often enough that a primary that stops answering is replaced within seconds.
pub(super) const BUSY_PROBE: Duration = Duration::from_millis(500);
const IDLE_PROBE: Duration = Duration::from_secs(2);
/// While the switchover target waits to be routed to: `FAILOVER` goes out soon after it is.
const ROUTING_PROBE: Duration = Duration::from_millis(100);

/// One replication step. `Ok(None)`: it wrote; `Ok(Some(d))`: probe again in `d`.
pub(super) async fn step(
    state: &mut InstanceState,
    plan: &Plan,
    seen: &Observed,
    rolling: bool,
    paused: bool,
) -> Result<Option<Duration>, kube_io::Error> {
    if let Some(wrote) = apply_services(state, plan, seen).await? {
        return Ok(wrote);
    }
    let access = state.access.clone();
    let pods: Vec<&Arc<CachedPod>> = seen.pods.iter().collect();
    let tls: BTreeMap<String, _> = pods
        .iter()
        .map(|p| (p.name_any(), state.tls.for_pod(p)))
        .collect();
    let probes: Vec<Option<PodReplication>> =
        futures::future::join_all(pods.iter().map(|pod| async {
            let address = PodAddress {
                pod: pod.name_any(),
                ip: pod_ip(pod).map(str::to_owned),
                tls: tls.get(&pod.name_any()).cloned().flatten(),
            };
            replication::probe(&address, &access).await.ok()
        }))
        .await;
    let status = seen
        .instance
        .status
        .as_ref()
        .and_then(|s| s.replication.clone())
        .unwrap_or_default();
    let update_revision = seen
        .statefulset
        .as_deref()
        .and_then(|sts| sts.status.as_ref()?.update_revision.clone());
    let views: Vec<ReplicaPod> = pods
        .iter()
        .zip(&probes)
        .map(|(pod, probe)| ReplicaPod {
            name: pod.metadata.name.as_deref().unwrap_or_default(),
            ordinal: ordinal(pod),
            ip: pod_ip(pod),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            ready: is_ready(pod),
            up_to_date: update_revision.is_some()
                && pod.labels.get(REVISION_LABEL) == update_revision.as_deref(),
            role_label: pod.labels.get(ROLE_LABEL),
            probe: probe.as_ref(),
        })
        .collect();
    remember(&mut state.replication, &status, &views);
    let _ = state.args.metrics.send_message(MetricsMsg::Replication {
        key: state.args.key.clone(),
        primaries: u32::try_from(
            views
                .iter()
                .filter(|p| p.probe.is_some_and(|r| r.role == Role::Primary))
                .count(),
        )
        .unwrap_or(u32::MAX),
        lags: state
            .replication
            .last_lag
            .iter()
            .map(|(pod, lag)| (pod.clone(), *lag))
            .collect(),
    });
    let now = Instant::now();
    let silent_for = state
        .replication
        .primary_silent_since
        .as_ref()
        .map(|(_, since)| now.duration_since(*since));
    let routing = routing::routing(state, seen, &status, &views, now).await?;
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
        switchover_halted: rolling && failed_here(seen, &status),
        routing,
    };
    let limits = ReplicationLimits {
        route_settle: state.args.timings.route_settle,
        ..ReplicationLimits::from_spec(&plan.instance.spec.replication)
    };
    let decided = decide_replication(&view, &limits);
    tracing::debug!(step = decided.name(), ?decided, "replication step");
    let summary = summarize(&views, &state.replication.last_lag, limits.max_lag_bytes);
    let pod = |name: &str| pods.iter().find(|p| p.name_any() == name).copied();
    let address = |name: &str| PodAddress {
        pod: name.to_owned(),
        ip: pod(name).and_then(|p| pod_ip(p)).map(str::to_owned),
        tls: tls.get(name).cloned().flatten(),
    };
    let gate = state.args.api.limiter().clone();
    let redis_failed = |error: replication::Error| {
        warn!(%error, "replication command failed; trying again");
        Ok(Some(Duration::from_secs(1)))
    };
    match decided {
        ReplicationStep::Elect { pod, lost } => {
            let mut next = status.clone();
            let old = next.primary.replace(pod.clone());
            if lost {
                next.role_changes += 1;
                next.failovers += 1;
                role_changed(state, "Unplanned");
            }
            next.pods = summary;
            write(state, seen, plan, next).await?;
            let instance = &seen.instance;
            if lost {
                let note = format!(
                    "primary {} lost; promoting {pod}, the replica furthest ahead",
                    old.unwrap_or_default()
                );
                warn!(primary = %pod, "primary lost, failing over");
                state
                    .args
                    .api
                    .event(instance, true, "Failover", "Promote", note)
                    .await;
            } else if converting(instance) {
                // Told before any pod follows the primary, which replaces its data.
                warn!(primary = %pod, "converting to replication");
                let note = format!(
                    "converting to replication: {pod} is the primary and keeps its data; every other pod's own data is now replaced by a copy of it"
                );
                state
                    .args
                    .api
                    .event(instance, true, "ReplicationConversion", "Promote", note)
                    .await;
            } else {
                info!(primary = %pod, "primary elected");
                let note = format!("{pod} is the primary; the other pods replicate it");
                state
                    .args
                    .api
                    .event(instance, false, "PrimaryElected", "Promote", note)
                    .await;
            }
            Ok(None)
        }
        ReplicationStep::Promote { pod } => {
            info!(%pod, "REPLICAOF NO ONE: promoting the recorded primary");
            match replication::promote(&address(&pod), &access, &gate).await {
                Ok(()) => Ok(None),
                Err(e) => redis_failed(e),
            }
        }
        ReplicationStep::Follow { pod, primary_ip } => {
            info!(%pod, primary = %primary_ip, "REPLICAOF: following the primary");
            match replication::follow(&address(&pod), &primary_ip, &access, &gate).await {
                Ok(()) => Ok(None),
                Err(e) => redis_failed(e),
            }
        }
        ReplicationStep::Label { pod: name, role } => {
            match role {
                Some(Role::Primary) => info!(pod = %name, "labelled primary"),
                Some(Role::Replica) => info!(pod = %name, "labelled replica"),
                None => info!(pod = %name, "role label removed"),
            }
            if let Some(p) = pod(&name) {
                state
                    .args
                    .api
                    .label_pod(p, ROLE_LABEL, role.map(Role::as_str))
                    .await?;
            }
            // The pod's watch event brings the next step, once the cache shows the label.
            Ok(Some(BUSY_PROBE))
        }
        ReplicationStep::BeginSwitchover { from, to } => {
            let mut next = status.clone();
            next.switchover = Some(SwitchoverRecord {
                from: from.clone(),
                to: to.clone(),
                started_at: Time(Timestamp::now()),
            });
            next.pods = summary;
            write(state, seen, plan, next).await?;
            info!(%from, %to, "switchover recorded");
            Ok(None)
        }
        ReplicationStep::Switchover { from, to_ip } => {
            let to = status
                .switchover
                .as_ref()
                .map(|sw| sw.to.clone())
                .unwrap_or_default();
            info!(%from, %to, "FAILOVER TO the replica");
            let sent_at = Instant::now();
            let sent = replication::failover_to(
                &address(&from),
                &to_ip,
                limits.switchover_timeout,
                &access,
                &gate,
            )
            .await;
            if let Err(e) = sent {
                return redis_failed(e);
            }
            state.replication.switchover_sent = Some(to.clone());
            // Awaited here rather than probed on a timer: the primary label moves the moment
            // the handover is over, and `FAILOVER`'s own timeout bounds the wait.
            let bound = limits.switchover_timeout + Duration::from_secs(1);
            match replication::await_handover(
                &address(&from),
                &address(&to),
                &access,
                sent_at,
                bound,
            )
            .await
            {
                Ok(took) => {
                    let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
                    info!(%from, %to, took_ms, "FAILOVER over");
                }
                Err(error) => warn!(%error, "FAILOVER sent; its end not seen"),
            }
            Ok(Some(Duration::ZERO))
        }
        ReplicationStep::FinishSwitchover { to } => {
            let mut next = status.clone();
            let from = next.switchover.take().map(|sw| sw.from).unwrap_or_default();
            move_primary_label(state, &views, &pods, &from, &to).await?;
            next.primary = Some(to.clone());
            next.role_changes += 1;
            role_changed(state, "Planned");
            next.pods = summary;
            write(state, seen, plan, next).await?;
            state.replication.switchover_sent = None;
            info!(%from, %to, "switchover done");
            let note = format!("switched the primary role from {from} to {to}");
            state
                .args
                .api
                .event(&seen.instance, false, "Switchover", "Switchover", note)
                .await;
            Ok(None)
        }
        ReplicationStep::AbortSwitchover { message } => {
            let mut next = status.clone();
            next.switchover = None;
            next.switchover_failed = rollout_hash(seen).map(|config_hash| SwitchoverFailure {
                config_hash,
                message: message.clone(),
            });
            next.pods = summary;
            write(state, seen, plan, next).await?;
            state.replication.switchover_sent = None;
            warn!(%message, "switchover abandoned");
            state
                .args
                .api
                .event(
                    &seen.instance,
                    true,
                    "SwitchoverFailed",
                    "Switchover",
                    message,
                )
                .await;
            Ok(None)
        }
        ReplicationStep::ReplacePod { pod: name } => {
            // Clients of the primary's Service are cut only once its endpoints no longer list
            // the pod (it was the primary until the switchover): cut earlier, they would
            // reconnect to it.
            let ip = pod(&name).and_then(|p| pod_ip(p)).map(str::to_owned);
            if let Some(ip) = ip {
                for service in write_services(state, seen) {
                    if state
                        .args
                        .api
                        .ready_endpoints(&service)
                        .await?
                        .contains(&ip)
                    {
                        return Ok(Some(Duration::from_millis(250)));
                    }
                }
            }
            if let Some(p) = pod(&name) {
                info!(pod = %name, "replacing the pod for the restart");
                state.args.api.delete_pod(p).await?;
                state.written.deleted_pods.extend(p.uid());
            }
            Ok(Some(BUSY_PROBE))
        }
        ReplicationStep::Wait(ReplicationWait::Routing) => Ok(Some(ROUTING_PROBE)),
        ReplicationStep::Wait(_) | ReplicationStep::Idle => {
            if status.pods != summary {
                let mut next = status.clone();
                next.pods = summary;
                write(state, seen, plan, next).await?;
            }
            let idle = matches!(decided, ReplicationStep::Idle) && !rolling;
            Ok(Some(if idle { IDLE_PROBE } else { BUSY_PROBE }))
        }
    }
}

fn role_changed(state: &InstanceState, kind: &'static str) {
    let key = state.args.key.clone();
    let _ = state
        .args
        .metrics
        .send_message(MetricsMsg::RoleChanged { key, kind });
}

async fn write(
    state: &mut InstanceState,
    seen: &Observed,
    plan: &Plan,
    replication: ReplicationStatus,
) -> Result<(), kube_io::Error> {
    let mut status = super::status::derive_status(state, seen, Some(plan));
    status.replication = Some(replication);
    report::store_status(state, seen, status).await
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

/// Each pod's role and link for status, and the lag of a replica further behind than `bound`,
/// in whole MiB: the exact lag changes with every write, so it is left to metrics, and status
/// is written only when a replica falls behind, catches up, or moves by a MiB.
fn summarize(
    pods: &[ReplicaPod],
    lags: &BTreeMap<String, i64>,
    bound: i64,
) -> Vec<ReplicaPodStatus> {
    const MIB: i64 = 1024 * 1024;
    pods.iter()
        .filter(|p| !p.deleting)
        .map(|p| {
            let (role, link) = match p.probe {
                None => ("unreachable", None),
                Some(r) if r.role == Role::Primary => ("primary", None),
                Some(r) if awaiting_role(r) => ("unassigned", None),
                Some(r) => (
                    "replica",
                    Some(if r.syncing {
                        "syncing"
                    } else if r.link_up {
                        "up"
                    } else {
                        "down"
                    }),
                ),
            };
            ReplicaPodStatus {
                name: p.name.to_owned(),
                role: role.to_owned(),
                link: link.map(str::to_owned),
                lag_bytes: lags
                    .get(p.name)
                    .filter(|lag| **lag > bound)
                    .map(|lag| lag / MIB * MIB),
            }
        })
        .collect()
}

fn pod_ip(pod: &CachedPod) -> Option<&str> {
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

/// The first election of an instance the user agreed to convert: it ran before with several
/// pods, each with data of its own.
fn converting(instance: &crate::crd::RedisInstance) -> bool {
    instance
        .annotations()
        .get(crate::resources::CONVERT_ANNOTATION)
        .is_some_and(|v| v == "true")
        && instance
            .status
            .as_ref()
            .is_some_and(|s| s.config_hash.is_some() && s.ready_replicas >= 2)
}

fn rollout_hash(seen: &Observed) -> Option<String> {
    let status = seen.instance.status.as_ref()?;
    Some(status.rollout.as_ref()?.config_hash.clone())
}

/// The restart in flight is the one whose switchover failed.
fn failed_here(seen: &Observed, status: &ReplicationStatus) -> bool {
    status
        .switchover_failed
        .as_ref()
        .is_some_and(|f| Some(&f.config_hash) == rollout_hash(seen).as_ref())
}

/// A restart of a replicated instance is the operator's to carry out: the template carries
/// the record and not every pod runs it yet.
pub(super) fn rolling(seen: &Observed) -> bool {
    let record = seen
        .instance
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref());
    match (record, seen.statefulset.as_deref()) {
        (Some(record), Some(sts)) => crate::decide::applied(record, sts) && !rollout_complete(sts),
        _ => false,
    }
}
