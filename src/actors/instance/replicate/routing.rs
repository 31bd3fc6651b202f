//! How clients reach the primary: the Services beside the StatefulSet's, the role labels the
//! primary Service selects, and a switchover target's way into that Service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tracing::info;

use super::super::InstanceState;
use super::super::observe::Observed;
use super::super::target::Plan;
use crate::crd::ReplicationStatus;
use crate::decide::replication::{ReplicaPod, Routing};
use crate::decide::replication_act::BUSY_PROBE;
use crate::decide::routing::{self, Listing};
use crate::kube_io;
use crate::replication::Role;
use crate::resources::{
    CachedPod, CachedService, ROLE_LABEL, legacy_primary_service_name, replicas_service,
    service_drifted,
};

/// When the switchover target was first seen labelled primary, and listed ready.
#[derive(Debug)]
pub(super) struct RoutingMemory {
    pod: String,
    labelled: Instant,
    listed: Option<Instant>,
}

/// Labels the new primary (already labelled while it was routed to, unless the switchover was
/// finished by another leader), then the old one, now a replica, as a replica. Never the other
/// way round: the primary Service would route to nothing until the proxies' next sync; this
/// way it routes to both meanwhile, and the old one refuses writes (`-READONLY`): its Redis
/// reported the replica role before this step, so no write lands on it.
pub(super) async fn move_primary_label(
    state: &InstanceState,
    views: &[ReplicaPod<'_>],
    pods: &[&Arc<CachedPod>],
    from: &str,
    to: &str,
) -> Result<(), kube_io::Error> {
    let find = |name: &str| pods.iter().find(|p| p.name_any() == name).copied();
    let role_label =
        |name: &str| find(name).and_then(|p| p.labels.get(ROLE_LABEL).map(str::to_owned));
    let primary = Some(Role::Primary.as_str().to_owned());
    if let Some(pod) = find(to).filter(|_| role_label(to) != primary) {
        info!(pod = %to, "labelled primary");
        state
            .args
            .api
            .label_pod(pod, ROLE_LABEL, Some(Role::Primary.as_str()))
            .await?;
    }
    let demoted = views
        .iter()
        .any(|v| v.name == from && !v.deleting && v.probe.is_some_and(|r| r.role == Role::Replica));
    if let Some(pod) = find(from).filter(|_| demoted && role_label(from) == primary) {
        info!(pod = %from, "labelled replica");
        state
            .args
            .api
            .label_pod(pod, ROLE_LABEL, Some(Role::Replica.as_str()))
            .await?;
    }
    Ok(())
}

/// Where the recorded switchover's target stands, once labelled primary: how long since the
/// operator saw the label, and since the endpoints of every Service clients write through
/// list it as ready (read from the API server: EndpointSlices are not cached). With no such
/// Service there is nothing to wait for.
pub(super) async fn routing(
    state: &mut InstanceState,
    seen: &Observed,
    status: &ReplicationStatus,
    views: &[ReplicaPod<'_>],
    now: Instant,
) -> Result<Option<Routing>, kube_io::Error> {
    let target = status.switchover.as_ref().and_then(|sw| {
        views
            .iter()
            .find(|p| p.name == sw.to && p.role_label == Some(Role::Primary.as_str()))
    });
    let Some((name, ip)) = target.and_then(|p| Some((p.name.to_owned(), p.ip?.to_owned()))) else {
        state.replication.routing = None;
        return Ok(None);
    };
    let mut memory = match state.replication.routing.take() {
        Some(m) if m.pod == name => m,
        _ => RoutingMemory {
            pod: name.clone(),
            labelled: now,
            listed: None,
        },
    };
    let services = write_services(state, seen);
    let mut listed = true;
    for service in &services {
        match state.args.api.ready_endpoints(service).await {
            Ok(endpoints) if endpoints.contains(&ip) => {}
            Ok(_) => {
                listed = false;
                break;
            }
            Err(error) => {
                state.replication.routing = Some(memory);
                return Err(error);
            }
        }
    }
    if !listed {
        memory.listed = None;
    } else if memory.listed.is_none() {
        info!(pod = %name, "switchover target listed by the primary's Services");
        memory.listed = Some(now);
    }
    let routing = Routing {
        labelled_for: now.duration_since(memory.labelled),
        listed_for: if services.is_empty() {
            Some(Duration::MAX)
        } else {
            memory.listed.map(|since| now.duration_since(since))
        },
    };
    state.replication.routing = Some(memory);
    Ok(Some(routing))
}

/// The Services through which clients write to the primary (see
/// [`crate::decide::routing::write_services`]).
pub(super) fn write_services(state: &InstanceState, seen: &Observed) -> Vec<String> {
    let legacy = legacy_primary_service_name(&seen.instance);
    let cached = cached_service(state, &legacy);
    let name = &state.args.key.name;
    routing::write_services(name, seen.service.as_deref(), &legacy, cached.as_deref())
}

/// Reads the ready endpoints of every Service clients write through (EndpointSlices are not
/// cached: read from the API server, only when the decision needs them).
pub(super) async fn listing(
    state: &InstanceState,
    seen: &Observed,
) -> Result<Listing, kube_io::Error> {
    let mut services = Vec::new();
    for name in write_services(state, seen) {
        services.push(state.args.api.ready_endpoints(&name).await?);
    }
    Ok(Listing { services })
}

fn cached_service(state: &InstanceState, name: &str) -> Option<Arc<CachedService>> {
    state
        .args
        .stores
        .services
        .get(&ObjectRef::<CachedService>::new(name).within(&state.args.key.namespace))
}

/// `<name>-replicas`, applied when missing or changed; `<name>-primary` of earlier versions,
/// deleted once `<name>` is a ClusterIP Service that selects the primary and its EndpointSlices
/// list a ready pod (until then, writes go through it). `Some(None)`: it wrote.
pub(super) async fn apply_services(
    state: &mut InstanceState,
    plan: &Plan,
    seen: &Observed,
) -> Result<Option<Option<Duration>>, kube_io::Error> {
    let legacy = legacy_primary_service_name(&plan.instance);
    let replaced = seen
        .service
        .as_deref()
        .is_some_and(|svc| !svc.headless() && !service_drifted(&plan.service, svc));
    if let Some(old) = cached_service(state, &legacy).filter(|_| replaced)
        && old.metadata.deletion_timestamp.is_none()
        && !state
            .args
            .api
            .ready_endpoints(&state.args.key.name)
            .await?
            .is_empty()
    {
        state.args.api.delete_service(&old).await?;
        info!(service = %legacy, "deleted the old primary Service: writes go through the instance's Service");
        return Ok(Some(Some(BUSY_PROBE)));
    }
    let namespace = state.args.key.namespace.clone();
    for desired in [replicas_service(&plan.instance)] {
        let name = desired.name_any();
        let cached = state
            .args
            .stores
            .services
            .get(&ObjectRef::<CachedService>::new(&name).within(&namespace));
        match cached {
            Some(svc) if !service_drifted(&desired, &svc) => {
                state.replication_services.remove(&name);
                continue;
            }
            // Written by this actor, and the cache has not caught up yet.
            _ if state
                .replication_services
                .get(&name)
                .is_some_and(|w| !service_drifted(&desired, w)) =>
            {
                continue;
            }
            _ => {}
        }
        let applied = state.args.api.apply("Service", &desired).await?;
        info!(service = %name, "applied the role Service");
        state
            .replication_services
            .insert(name, Arc::new(CachedService::from(&applied)));
        return Ok(Some(None));
    }
    Ok(None)
}
