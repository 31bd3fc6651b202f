//! The replication phase of a replicated instance's step, taken after its report when the rest
//! of the step wrote nothing: the role Services (observed, decided by
//! `decide::routing::role_services`, performed), then observe (every pod's Redis, and the
//! endpoints of the Services clients write through when the decision needs them), decide (one
//! pure call, with the routing memory brought up by `decide::routing::route`), perform.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

mod observe;
mod perform;
mod routing;

use observe::Reach;

use super::InstanceState;
use super::observe::Observed;
use super::target::Plan;
use crate::actors::metrics::MetricsMsg;
use crate::crd::ReplicationStatus;
use crate::decide::replication::{ReplicaPod, ReplicationLimits, ReplicationView};
use crate::decide::replication_act::{
    ReplicationFacts, ReplicationPlan, converting, failed_here, replication_step, rolling,
    summarize,
};
use crate::decide::routing::{
    RoleServicesView, RoutingMemory, legacy_to_retire, reads_listing, role_services, route,
    routing_target,
};
use crate::kube_io;
use crate::replication::Role;
use crate::resources::replicas_service;
use tracing::info;

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
    routing: Option<RoutingMemory>,
    /// Role Services this actor applied, until the cache shows them.
    services: std::collections::HashMap<String, std::sync::Arc<crate::resources::CachedService>>,
}

impl ReplicationMemory {
    /// Remembers nothing of the pods' roles.
    pub fn is_blank(&self) -> bool {
        self.primary_silent_since.is_none()
            && self.switchover_sent.is_none()
            && self.last_lag.is_empty()
            && self.routing.is_none()
    }

    /// Holds role Services of its own writing that the cache does not show yet.
    pub fn holds_unseen_services(&self) -> bool {
        !self.services.is_empty()
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
    let replicas = replicas_service(&plan.instance);
    let replicas_name = replicas.name_any();
    let legacy = observe::legacy_service(&state.args, seen);
    let cached_replicas = observe::cached_service(&state.args, &replicas_name);
    let written_replicas = state.replication.services.get(&replicas_name).cloned();
    let mut services = RoleServicesView {
        desired_service: &plan.service,
        service: seen.service.as_deref(),
        legacy: legacy.as_deref(),
        service_serving: None,
        desired_replicas: &replicas,
        replicas: cached_replicas.as_deref(),
        replicas_written: written_replicas.as_deref(),
    };
    if legacy_to_retire(&services).is_some() {
        let name = &state.args.key.name;
        services.service_serving = Some(!state.args.api.ready_endpoints(name).await?.is_empty());
    }
    let act = role_services(&services);
    if let Some(wrote) =
        routing::perform_services(&state.args.api, &mut state.replication, act, &replicas_name)
            .await?
    {
        return Ok(wrote);
    }
    let record = seen
        .instance
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref());
    let rolling = rolling(record, seen.statefulset.as_deref());
    let reach = Reach::of(&state.tls, seen);
    let probes = observe::probe(&state.access, &reach).await;
    let status = seen
        .instance
        .status
        .as_ref()
        .and_then(|s| s.replication.clone())
        .unwrap_or_default();
    let views = observe::views(seen, &reach, &probes);
    remember(&mut state.replication, &status, &views);
    send_metrics(state, &views);
    let now = Instant::now();
    let silent_for = state
        .replication
        .primary_silent_since
        .as_ref()
        .map(|(_, since)| now.duration_since(*since));
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
        routing: None,
        listing: None,
    };
    let limits = ReplicationLimits {
        route_settle: state.args.timings.route_settle,
        ..ReplicationLimits::from_spec(&plan.instance.spec.replication)
    };
    // The endpoints of the Services clients write through, read only when the decision needs
    // them: how long a switchover target has been routed to, and a pod replaced once none
    // lists it.
    let listing = match reads_listing(&view, &limits) {
        true => Some(observe::listing(&state.args, seen).await?),
        false => None,
    };
    let target = routing_target(Some(&status), &views);
    let routed = route(
        state.replication.routing.as_ref(),
        target,
        listing.as_ref(),
        now,
    );
    if routed.newly_listed
        && let Some((pod, _)) = target
    {
        info!(%pod, "switchover target listed by the primary's Services");
    }
    state.replication.routing = routed.memory;
    let view = ReplicationView {
        routing: routed.routing,
        listing: listing.as_ref(),
        ..view
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
