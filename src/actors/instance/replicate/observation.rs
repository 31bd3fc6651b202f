//! What a replicated instance's step observes of replication, owned by the step so that its
//! perform phase can act on it: the prober's latest usable answers, the role Services, and
//! the endpoints when the decision needs them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tracing::info;

use super::super::observe::Observed;
use super::super::plan::Plan;
use super::Replicating;
use super::observe as cache;
use crate::crd::{ReplicationStatus, RolloutRecord};
use crate::decide::ReplicationInputs;
use crate::decide::probes;
use crate::decide::replication::{ReplicaPod, ReplicationLimits, ReplicationView, Routing};
use crate::decide::replication_act::{
    ReplicationFacts, converting, failed_here, rolling, summarize,
};
use crate::decide::routing::{
    Listing, RoleServicesView, legacy_to_retire, reads_listing, route, routing_target,
};
use crate::kube_io;
use crate::replication::PodReplication;
use crate::resources::{CachedService, replicas_service};

/// What a replicated instance's step observed of replication, for its decision and perform.
pub(in super::super) struct Observation {
    pub(super) replicas: Service,
    pub(super) legacy: Option<Arc<CachedService>>,
    cached_replicas: Option<Arc<CachedService>>,
    written_replicas: Option<Arc<CachedService>>,
    service_serving: Option<bool>,
    /// Each pod's usable answer, in the order of the snapshot's pods (see [`probes::usable`]).
    answers: Vec<Option<Option<PodReplication>>>,
    status: ReplicationStatus,
    listing: Option<Listing>,
    routing: Option<Routing>,
    silent_for: Option<Duration>,
    last_lag: BTreeMap<String, i64>,
    switchover_sent: bool,
    pub(super) limits: ReplicationLimits,
    rolling: bool,
    converting: bool,
    now: Timestamp,
}

/// Observes replication for a replicated plan's step: the prober's latest round as far as a
/// step may decide on it, the role Services, and the endpoints when the decision needs them.
/// `Ok(None)`: the plan is not replicated (and the prober is to stop).
pub(in super::super) async fn observe(
    state: Replicating<'_>,
    plan: Option<&Plan>,
    seen: &Observed,
) -> Result<Option<Observation>, kube_io::Error> {
    let Some(plan) = plan.filter(|p| crate::resources::replicated(&p.instance)) else {
        state.memory.wanted = None;
        return Ok(None);
    };
    let memory = &*state.memory;
    let answers: Vec<_> = seen
        .pods
        .iter()
        .map(|pod| {
            let name = pod.name_any();
            let probe = memory.probes.iter().find(|p| p.pod == name);
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let at = probes::Incarnation {
                uid,
                ip: cache::pod_ip(pod),
            };
            probes::usable(probe, at, memory.role_written).map(|a| a.cloned())
        })
        .collect();
    let replicas = replicas_service(&plan.instance);
    let replicas_name = replicas.name_any();
    let mut observation = Observation {
        legacy: cache::legacy_service(state.args, seen),
        cached_replicas: cache::cached_service(state.args, &replicas_name),
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
        now: crate::cluster_clock::now(),
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
        true => Some(cache::listing(state.args, seen).await?),
        false => None,
    };
    let target = routing_target(Some(&observation.status), &views);
    let routed = route(
        state.memory.routing.as_ref(),
        target,
        listing.as_ref(),
        Instant::now(),
    );
    if routed.newly_listed
        && let Some((pod, _)) = target
    {
        info!(%pod, "switchover target listed by the primary's Services");
    }
    state.memory.routing = routed.memory;
    drop(views);
    observation.listing = listing;
    observation.routing = routed.routing;
    Ok(Some(observation))
}

fn record(seen: &Observed) -> Option<&RolloutRecord> {
    seen.instance.status.as_ref()?.rollout.as_ref()
}

impl Observation {
    /// The pods as the replication decision reads them.
    pub(in super::super) fn views<'a>(&'a self, seen: &'a Observed) -> Vec<ReplicaPod<'a>> {
        cache::views(seen, &self.answers)
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

    /// What carrying out the decision reads.
    fn facts<'a>(&'a self, views: &[ReplicaPod], seen: &'a Observed) -> ReplicationFacts<'a> {
        ReplicationFacts {
            status: &self.status,
            summary: summarize(views, &self.last_lag, self.limits.max_lag_bytes),
            converting: self.converting,
            rollout_hash: record(seen).map(|r| r.config_hash.as_str()),
            rolling: self.rolling,
            now: self.now,
        }
    }

    /// What the step's decision reads of replication, from the pods as `views` shows them.
    pub(in super::super) fn parts<'a>(
        &'a self,
        plan: &'a Plan,
        seen: &'a Observed,
        views: &'a [ReplicaPod<'a>],
    ) -> Parts<'a> {
        Parts {
            services: self.services_view(plan, seen),
            view: self.view(views, seen),
            limits: &self.limits,
            facts: self.facts(views, seen),
        }
    }
}

/// The views [`ReplicationInputs`] borrows, built from an observation.
pub(in super::super) struct Parts<'a> {
    services: RoleServicesView<'a>,
    view: ReplicationView<'a>,
    limits: &'a ReplicationLimits,
    facts: ReplicationFacts<'a>,
}

impl Parts<'_> {
    /// As the step's one decision reads them.
    pub(in super::super) fn inputs(&self) -> ReplicationInputs<'_, '_> {
        ReplicationInputs {
            services: &self.services,
            view: &self.view,
            limits: self.limits,
            facts: &self.facts,
        }
    }
}
