//! The replication part of a replicated instance's step. A prober outside the step probes the
//! pods ([`prober`]); the step's observe reads its latest usable round, the role Services, and
//! (only when the decision needs them) the endpoints of the Services clients write through;
//! `decide::step` decides replication with the rest of the step; [`perform`] carries it out
//! after the step's report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use ractor::ActorRef;

mod observe;
mod perform;
mod prober;
mod routing;

use observe::Reach;

use super::observe::Observed;
use super::target::Plan;
use super::{InstanceMsg, InstanceState};
use crate::actors::metrics::MetricsMsg;
use crate::crd::ReplicationStatus;
use crate::decide::Replication;
use crate::decide::probes::{self, PodProbe};
use crate::decide::replication::{ReplicaPod, ReplicationLimits, ReplicationView};
use crate::decide::replication_act::{
    BUSY_PROBE, ReplicationFacts, ReplicationPlan, converting, failed_here, rolling, summarize,
};
use crate::decide::routing::{
    Listing, RoleServicesAct, RoleServicesView, RoutingMemory, legacy_to_retire, reads_listing,
    route, routing_target,
};
use crate::kube_io;
use crate::replication::{PodReplication, Role};
use crate::resources::{CachedService, replicas_service};
use tracing::info;

/// What the actor remembers of replication between steps; the decisions that must survive a
/// leader change are in status instead.
#[derive(Default)]
pub struct ReplicationMemory {
    /// Since when the recorded primary has not answered, by the probes' clock.
    primary_silent_since: Option<(String, Instant)>,
    /// The switchover target whose `FAILOVER` this process sent.
    switchover_sent: Option<String>,
    /// Each replica's lag at the last probe that saw the primary.
    last_lag: BTreeMap<String, i64>,
    /// The switchover target on its way into the primary's Services.
    routing: Option<RoutingMemory>,
    /// Role Services this actor applied, until the cache shows them.
    services: std::collections::HashMap<String, std::sync::Arc<crate::resources::CachedService>>,
    /// The prober's latest round.
    probes: Vec<PodProbe>,
    /// When this actor last sent a command that changes a pod's role: probes sent before it
    /// are not decided on.
    role_written: Option<Instant>,
    /// The last step waited for a probe: the next round starts a step whatever it shows.
    awaiting_probe: bool,
    /// What the last step asks of the prober; `None`: no prober (not replicated, or gone).
    wanted: Option<prober::Ask>,
    /// The prober, while the instance is replicated.
    prober: Option<prober::Prober>,
}

impl ReplicationMemory {
    /// Remembers nothing of the pods' roles.
    pub fn is_blank(&self) -> bool {
        self.primary_silent_since.is_none()
            && self.switchover_sent.is_none()
            && self.last_lag.is_empty()
            && self.routing.is_none()
            && self.probes.is_empty()
    }

    /// Holds role Services of its own writing that the cache does not show yet.
    pub fn holds_unseen_services(&self) -> bool {
        !self.services.is_empty()
    }

    /// Ends the prober (the actor stops, or the instance is no longer replicated) and forgets
    /// its last round: a prober started again later is not to be preceded by old answers.
    pub fn stop_prober(&mut self) {
        self.wanted = None;
        self.prober = None;
        self.probes.clear();
    }
}

/// Starts, updates or ends the prober as the last step asked: a task per replicated instance,
/// owned by its actor (dropped with it).
pub(super) fn sync_prober(myself: &ActorRef<InstanceMsg>, memory: &mut ReplicationMemory) {
    match (memory.wanted.clone(), &memory.prober) {
        (None, _) => memory.stop_prober(),
        (Some(ask), Some(prober)) => prober.ask(ask),
        (Some(ask), None) => memory.prober = Some(prober::Prober::start(myself.clone(), ask)),
    }
}

/// A round from the prober: remembered, with how long the recorded primary has been silent
/// and each replica's lag. `true`: a step is to decide on it (it changes what a decision
/// sees, a step waits for it, or the primary is silent and its silence grows).
pub(super) fn probed(state: &mut InstanceState, round: Vec<PodProbe>) -> bool {
    let Some(instance) = super::report::cached_instance(state) else {
        return false;
    };
    let status = instance
        .status
        .as_ref()
        .and_then(|s| s.replication.clone())
        .unwrap_or_default();
    let bound = instance.spec.replication.max_lag_bytes;
    let memory = &mut state.replication;
    let changed = probes::changes(&memory.probes, &round, bound);
    remember(memory, &status, &round);
    memory.probes = round;
    send_metrics(state);
    let memory = &state.replication;
    changed || memory.awaiting_probe || memory.primary_silent_since.is_some()
}

/// What a replicated instance's step observed of replication, owned so that its decision can
/// be performed after the report.
pub(super) struct Observation {
    replicas: Service,
    legacy: Option<std::sync::Arc<CachedService>>,
    cached_replicas: Option<std::sync::Arc<CachedService>>,
    written_replicas: Option<std::sync::Arc<CachedService>>,
    service_serving: Option<bool>,
    /// Each pod's usable answer, in the order of the snapshot's pods (see [`probes::usable`]).
    answers: Vec<Option<Option<PodReplication>>>,
    status: ReplicationStatus,
    listing: Option<Listing>,
    routing: Option<crate::decide::replication::Routing>,
    silent_for: Option<Duration>,
    last_lag: BTreeMap<String, i64>,
    switchover_sent: bool,
    limits: ReplicationLimits,
    rolling: bool,
    converting: bool,
    now: Timestamp,
}

/// Observes replication for a replicated plan's step: the prober's latest round as far as a
/// step may decide on it, the role Services, and the endpoints when the decision needs them.
/// `Ok(None)`: the plan is not replicated (and the prober is to stop).
pub(super) async fn observe(
    state: &mut InstanceState,
    plan: Option<&Plan>,
    seen: &Observed,
) -> Result<Option<Observation>, kube_io::Error> {
    let Some(plan) = plan.filter(|p| crate::resources::replicated(&p.instance)) else {
        state.replication.wanted = None;
        return Ok(None);
    };
    let memory = &state.replication;
    let answers: Vec<_> = seen
        .pods
        .iter()
        .map(|pod| {
            let name = pod.name_any();
            let probe = memory.probes.iter().find(|p| p.pod == name);
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let at = probes::Incarnation {
                uid,
                ip: observe::pod_ip(pod),
            };
            probes::usable(probe, at, memory.role_written).map(|a| a.cloned())
        })
        .collect();
    let replicas = replicas_service(&plan.instance);
    let replicas_name = replicas.name_any();
    let mut observation = Observation {
        legacy: observe::legacy_service(&state.args, seen),
        cached_replicas: observe::cached_service(&state.args, &replicas_name),
        written_replicas: memory.services.get(&replicas_name).cloned(),
        replicas,
        service_serving: None,
        answers,
        status: seen
            .instance
            .status
            .as_ref()
            .and_then(|s| s.replication.clone())
            .unwrap_or_default(),
        listing: None,
        routing: None,
        silent_for: memory
            .primary_silent_since
            .as_ref()
            .map(|(_, since)| since.elapsed()),
        last_lag: memory.last_lag.clone(),
        switchover_sent: false,
        limits: ReplicationLimits {
            route_settle: state.args.timings.route_settle,
            ..ReplicationLimits::from_spec(&plan.instance.spec.replication)
        },
        rolling: rolling(record(seen), seen.statefulset.as_deref()),
        converting: converting(&seen.instance),
        now: Timestamp::now(),
    };
    observation.switchover_sent = observation
        .status
        .switchover
        .as_ref()
        .is_some_and(|sw| memory.switchover_sent.as_ref() == Some(&sw.to));
    if legacy_to_retire(&observation.services_view(plan, seen)).is_some() {
        let name = &state.args.key.name;
        observation.service_serving = Some(!state.args.api.ready_endpoints(name).await?.is_empty());
    }
    // The endpoints of the Services clients write through, read only when the decision may
    // need them (as if nothing were held: a read too many is harmless): how long a
    // switchover target has been routed to, and a pod replaced once none lists it.
    let views = observation.views(seen);
    let needed = reads_listing(&observation.view(&views, seen), &observation.limits);
    let listing = match needed {
        true => Some(observe::listing(&state.args, seen).await?),
        false => None,
    };
    let target = routing_target(Some(&observation.status), &views);
    let routed = route(
        state.replication.routing.as_ref(),
        target,
        listing.as_ref(),
        Instant::now(),
    );
    if routed.newly_listed
        && let Some((pod, _)) = target
    {
        info!(%pod, "switchover target listed by the primary's Services");
    }
    state.replication.routing = routed.memory;
    drop(views);
    observation.listing = listing;
    observation.routing = routed.routing;
    Ok(Some(observation))
}

/// Tells the prober which pods the step saw and how to reach them, once the step's decision
/// has brought the credentials and TLS memory up to date; how often it probes stays as the
/// last replication step set it.
pub(super) fn ask_prober(state: &mut InstanceState, seen: &Observed) {
    let last = state.replication.wanted.as_ref();
    state.replication.wanted = Some(prober::Ask {
        pods: Reach::of(&state.tls, seen).targets(),
        access: state.access.clone(),
        every: last.map_or(BUSY_PROBE, |a| a.every),
        now: last.map_or(0, |a| a.now),
    });
}

fn record(seen: &Observed) -> Option<&crate::crd::RolloutRecord> {
    seen.instance.status.as_ref()?.rollout.as_ref()
}

impl Observation {
    /// The pods as the replication decision reads them.
    pub(super) fn views<'a>(&'a self, seen: &'a Observed) -> Vec<ReplicaPod<'a>> {
        observe::views(seen, &self.answers)
    }

    /// The role Services as `decide::routing::role_services` reads them.
    pub(super) fn services_view<'a>(
        &'a self,
        plan: &'a Plan,
        seen: &'a Observed,
    ) -> RoleServicesView<'a> {
        RoleServicesView {
            desired_service: &plan.service,
            service: seen.service.as_deref(),
            legacy: self.legacy.as_deref(),
            service_serving: self.service_serving,
            desired_replicas: &self.replicas,
            replicas: self.cached_replicas.as_deref(),
            replicas_written: self.written_replicas.as_deref(),
        }
    }

    /// What the replication decision reads of `views` (`paused` is the verdict's to set).
    pub(super) fn view<'a>(
        &'a self,
        views: &'a [ReplicaPod<'a>],
        seen: &'a Observed,
    ) -> ReplicationView<'a> {
        let rollout_hash = record(seen).map(|r| r.config_hash.as_str());
        ReplicationView {
            pods: views,
            replicas: seen.instance.spec.replicas,
            status: Some(&self.status),
            rolling: self.rolling,
            primary_silent_for: self.silent_for,
            switchover_sent: self.switchover_sent,
            last_lag: &self.last_lag,
            paused: false,
            switchover_halted: self.rolling && failed_here(&self.status, rollout_hash),
            routing: self.routing,
            listing: self.listing.as_ref(),
        }
    }

    /// The bounds of the decision.
    pub(super) fn limits(&self) -> &ReplicationLimits {
        &self.limits
    }

    /// What carrying out the decision reads.
    pub(super) fn facts<'a>(
        &'a self,
        views: &[ReplicaPod],
        seen: &'a Observed,
    ) -> ReplicationFacts<'a> {
        ReplicationFacts {
            status: &self.status,
            summary: summarize(views, &self.last_lag, self.limits.max_lag_bytes),
            converting: self.converting,
            rollout_hash: record(seen).map(|r| r.config_hash.as_str()),
            rolling: self.rolling,
            now: self.now,
        }
    }
}

/// The replication decided, apart from the step's views so that it is performed after the
/// report: a role Service write names the Service the observation holds.
pub(super) enum Decided {
    /// Delete the old `<name>-primary`.
    RetireLegacy,
    /// Apply `<name>-replicas`.
    ApplyReplicas,
    /// The pods' step.
    Pods {
        forget_written: bool,
        plan: Box<ReplicationPlan>,
    },
}

impl From<Replication<'_>> for Decided {
    fn from(decided: Replication<'_>) -> Self {
        match decided {
            Replication::RetireLegacy(_) => Decided::RetireLegacy,
            Replication::ApplyReplicas(_) => Decided::ApplyReplicas,
            Replication::Pods {
                forget_written,
                plan,
            } => Decided::Pods {
                forget_written,
                plan,
            },
        }
    }
}

/// Performs the replication decided, after the step's report: its status write must follow
/// the report's, which derives status from the cache and would write the older replication
/// record back. `Ok(None)`: it wrote; `Ok(Some(d))`: look again in `d`.
pub(super) async fn perform(
    state: &mut InstanceState,
    plan: &Plan,
    seen: &Observed,
    observation: &Observation,
    decided: Decided,
) -> Result<Option<Duration>, kube_io::Error> {
    let replicas_name = observation.replicas.name_any();
    let memory = &mut state.replication;
    let services = match &decided {
        Decided::RetireLegacy => observation
            .legacy
            .as_deref()
            .map(RoleServicesAct::RetireLegacy),
        Decided::ApplyReplicas => Some(RoleServicesAct::ApplyReplicas(&observation.replicas)),
        Decided::Pods { .. } => None,
    };
    if let Some(act) = services {
        let api = &state.args.api;
        let wrote = routing::perform_services(api, memory, act, &replicas_name).await?;
        return Ok(wrote.unwrap_or(Some(Duration::MAX)));
    }
    let Decided::Pods {
        forget_written,
        plan: planned,
    } = decided
    else {
        return Ok(Some(Duration::MAX));
    };
    if forget_written {
        memory.services.remove(&replicas_name);
    }
    let ReplicationPlan { step, act } = *planned;
    tracing::debug!(step = step.name(), ?step, "replication step");
    memory.awaiting_probe = act.wake == Some(Duration::ZERO);
    if act.role_written {
        // Before the command: a round already under way may not show it.
        memory.role_written = Some(Instant::now());
        memory.awaiting_probe = true;
    }
    if let Some(ask) = memory.wanted.as_mut() {
        ask.every = act.wake.filter(|d| !d.is_zero()).unwrap_or(BUSY_PROBE);
        if memory.awaiting_probe {
            ask.now += 1;
        }
    }
    let reach = Reach::of(&state.tls, seen);
    let views = observation.views(seen);
    let done = perform::Done {
        plan,
        seen,
        reach: &reach,
        views: &views,
        switchover_timeout: observation.limits.switchover_timeout,
    };
    perform::perform(state, &done, step, act).await
}

/// The primaries found and each replica's lag, for metrics.
fn send_metrics(state: &InstanceState) {
    let memory = &state.replication;
    let primaries = memory
        .probes
        .iter()
        .filter(|p| p.answer.as_ref().is_some_and(|r| r.role == Role::Primary))
        .count();
    let _ = state.args.metrics.send_message(MetricsMsg::Replication {
        key: state.args.key.clone(),
        primaries: u32::try_from(primaries).unwrap_or(u32::MAX),
        lags: memory
            .last_lag
            .iter()
            .map(|(pod, lag)| (pod.clone(), *lag))
            .collect(),
    });
}

/// Notes when the recorded primary stopped answering, by the round's clock, and how far
/// behind each replica is.
fn remember(memory: &mut ReplicationMemory, status: &ReplicationStatus, round: &[PodProbe]) {
    let Some(name) = status.primary.as_deref() else {
        memory.primary_silent_since = None;
        return;
    };
    let primary = round.iter().find(|p| p.pod == name);
    match primary.and_then(|p| p.answer.as_ref()) {
        Some(probe) if probe.role == Role::Primary => {
            memory.primary_silent_since = None;
            memory.last_lag = round
                .iter()
                .filter_map(|p| {
                    let r = p.answer.as_ref()?;
                    (r.role == Role::Replica && r.replid == probe.replid)
                        .then(|| (p.pod.clone(), (probe.offset - r.offset).max(0)))
                })
                .collect();
        }
        _ => {
            let fresh = memory
                .primary_silent_since
                .as_ref()
                .is_none_or(|(n, _)| n != name);
            if fresh {
                let at = primary.map_or_else(Instant::now, |p| p.at);
                memory.primary_silent_since = Some((name.to_owned(), at));
            }
        }
    }
}
