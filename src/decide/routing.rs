//! How clients reach a replicated instance's primary, decided: the role Services, the
//! Services clients write through and what their endpoints list, a switchover target's way
//! into them, and the role labels a finished switchover moves.
//!
//! Pure: the actor reads the caches and, when [`reads_listing`] or [`legacy_to_retire`] say
//! so, the endpoints (EndpointSlices are not cached), and performs what these return.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;

use super::replication::{
    ReplicaPod, ReplicationLimits, ReplicationStep, ReplicationView, ReplicationWait, Routing,
    decide_replication,
};
use crate::crd::ReplicationStatus;
use crate::replication::Role;
use crate::resources::{CachedService, service_drifted};

/// The ready endpoints of each Service clients write through (see [`write_services`]), as
/// read this step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Each Service's ready addresses.
    pub services: Vec<Vec<String>>,
}

impl Listing {
    /// Every such Service lists `ip` as ready (so does none, when there is no such Service).
    pub fn everywhere(&self, ip: &str) -> bool {
        self.services
            .iter()
            .all(|listed| listed.iter().any(|l| l == ip))
    }

    /// Some such Service still lists `ip`.
    pub fn anywhere(&self, ip: &str) -> bool {
        self.services
            .iter()
            .any(|listed| listed.iter().any(|l| l == ip))
    }
}

/// The Services through which clients write to the primary: `<name>` once it is a ClusterIP
/// Service, and `<name>-primary` of earlier versions while the cache shows it.
pub fn write_services(
    name: &str,
    service: Option<&CachedService>,
    legacy_name: &str,
    legacy: Option<&CachedService>,
) -> Vec<String> {
    let mut names = Vec::new();
    if service.is_some_and(|svc| !svc.headless()) {
        names.push(name.to_owned());
    }
    if legacy.is_some() {
        names.push(legacy_name.to_owned());
    }
    names
}

/// Whether the replication step needs the [`Listing`]: the recorded switchover's target
/// carries the primary label (how long it has been routed to is measured), or a pod is to be
/// replaced (not while a Service clients write through still lists it). `view` has no listing.
pub fn reads_listing(view: &ReplicationView, limits: &ReplicationLimits) -> bool {
    routing_target(view.status, view.pods).is_some()
        || decide_replication(view, limits) == ReplicationStep::Wait(ReplicationWait::Delisting)
}

/// The recorded switchover's target, once it carries the primary label, and its IP.
pub fn routing_target<'a>(
    status: Option<&ReplicationStatus>,
    pods: &[ReplicaPod<'a>],
) -> Option<(&'a str, &'a str)> {
    let switchover = status?.switchover.as_ref()?;
    let target = pods
        .iter()
        .find(|p| p.name == switchover.to && p.role_label == Some(Role::Primary.as_str()))?;
    Some((target.name, target.ip?))
}

/// When the operator first saw the switchover target labelled primary, and listed ready by
/// every Service clients write through (by its monotonic clock, so kept in the actor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingMemory {
    /// The target.
    pub pod: String,
    /// Since when it is labelled.
    pub labelled: Instant,
    /// Since when every Service lists it; `None` while one does not.
    pub listed: Option<Instant>,
}

/// Where a switchover target's routing stands after this step's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// What the actor remembers for the next step.
    pub memory: Option<RoutingMemory>,
    /// What the replication decision reads (see [`ReplicationView::routing`]).
    pub routing: Option<Routing>,
    /// Every Service lists the target from this step on, not before: worth a log line.
    pub newly_listed: bool,
}

/// Brings the routing memory up to this step: `target` from [`routing_target`], `listing`
/// as read (`None`: not read, nothing counts as listed).
pub fn route(
    memory: Option<&RoutingMemory>,
    target: Option<(&str, &str)>,
    listing: Option<&Listing>,
    now: Instant,
) -> Routed {
    let Some((pod, ip)) = target else {
        return Routed {
            memory: None,
            routing: None,
            newly_listed: false,
        };
    };
    let mut next = match memory {
        Some(m) if m.pod == pod => m.clone(),
        _ => RoutingMemory {
            pod: pod.to_owned(),
            labelled: now,
            listed: None,
        },
    };
    let listed = listing.is_some_and(|l| l.everywhere(ip));
    let newly_listed = listed && next.listed.is_none();
    next.listed = match listed {
        true => next.listed.or(Some(now)),
        false => None,
    };
    // With no Service clients write through, there is nothing to wait for.
    let none_to_wait_for = listing.is_some_and(|l| l.services.is_empty());
    let routing = Routing {
        labelled_for: now.duration_since(next.labelled),
        listed_for: match none_to_wait_for {
            true => Some(Duration::MAX),
            false => next.listed.map(|since| now.duration_since(since)),
        },
    };
    Routed {
        memory: Some(next),
        routing: Some(routing),
        newly_listed,
    }
}

/// The role labels a finished switchover from `from` to `to` moves, in order: the new primary
/// (already labelled while it was routed to, unless another leader finished the switchover),
/// then the old one, now a replica, as a replica. Never the other way round: the primary
/// Service would route to nothing until the proxies' next sync; this way it routes to both
/// meanwhile, and the old one refuses writes (`-READONLY`): its Redis reported the replica
/// role before this step, so no write lands on it.
pub fn primary_label_moves(pods: &[ReplicaPod], from: &str, to: &str) -> Vec<(String, Role)> {
    let primary = Some(Role::Primary.as_str());
    let label = |name: &str| pods.iter().find(|p| p.name == name).map(|p| p.role_label);
    let mut moves = Vec::new();
    if label(to).is_some_and(|l| l != primary) {
        moves.push((to.to_owned(), Role::Primary));
    }
    let demoted = pods
        .iter()
        .any(|p| p.name == from && !p.deleting && p.probe.is_some_and(|r| r.role == Role::Replica));
    if demoted && label(from) == Some(primary) {
        moves.push((from.to_owned(), Role::Replica));
    }
    moves
}

/// What the role Services decision reads.
#[derive(Debug, Clone, Copy)]
pub struct RoleServicesView<'a> {
    /// The Service `<name>` the spec builds.
    pub desired_service: &'a Service,
    /// `<name>` as the cache shows it.
    pub service: Option<&'a CachedService>,
    /// `<name>-primary` of earlier versions, as the cache shows it.
    pub legacy: Option<&'a CachedService>,
    /// The endpoints of `<name>` list a ready pod; `None`: not read (see [`legacy_to_retire`]).
    pub service_serving: Option<bool>,
    /// `<name>-replicas` as the spec builds it.
    pub desired_replicas: &'a Service,
    /// `<name>-replicas` as the cache shows it.
    pub replicas: Option<&'a CachedService>,
    /// This actor's last write of `<name>-replicas`, until the cache shows it.
    pub replicas_written: Option<&'a CachedService>,
}

/// The role Services' write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RoleServicesAct<'a> {
    /// Delete `<name>-primary`: writes go through `<name>`, which serves.
    RetireLegacy(&'a CachedService),
    /// Apply `<name>-replicas`: missing or changed, over the one seen if any (its uid goes
    /// with the write).
    ApplyReplicas {
        /// The role Service the spec asks for.
        desired: &'a Service,
        /// The one the decision was taken over: the cache's, else the actor's last write.
        over: Option<&'a CachedService>,
    },
    /// Nothing to write. `forget_written`: the cache shows `<name>-replicas` as desired, so
    /// the actor's own write is no longer needed.
    Keep { forget_written: bool },
}

/// `<name>-primary` of earlier versions, when it is to be deleted once `<name>` serves:
/// `<name>` is the ClusterIP Service the spec builds (it selects the primary), and the old
/// one is not being deleted already. Only then are `<name>`'s endpoints read.
pub fn legacy_to_retire<'a>(view: &RoleServicesView<'a>) -> Option<&'a CachedService> {
    let replaced = view
        .service
        .is_some_and(|svc| !svc.headless() && !service_drifted(view.desired_service, svc));
    view.legacy
        .filter(|old| replaced && old.metadata.deletion_timestamp.is_none())
}

/// Decides the role Services' write: the old primary Service retired once `<name>` lists a
/// ready pod (until then writes go through it), then `<name>-replicas` applied when missing
/// or changed.
pub fn role_services<'a>(view: &RoleServicesView<'a>) -> RoleServicesAct<'a> {
    if let Some(old) = legacy_to_retire(view)
        && view.service_serving == Some(true)
    {
        return RoleServicesAct::RetireLegacy(old);
    }
    let desired = view.desired_replicas;
    if view
        .replicas
        .is_some_and(|svc| !service_drifted(desired, svc))
    {
        return RoleServicesAct::Keep {
            forget_written: true,
        };
    }
    // Written by this actor, and the cache has not caught up yet.
    if view
        .replicas_written
        .is_some_and(|mine| !service_drifted(desired, mine))
    {
        return RoleServicesAct::Keep {
            forget_written: false,
        };
    }
    RoleServicesAct::ApplyReplicas {
        desired,
        over: view.replicas.or(view.replicas_written),
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "routing_services_tests.rs"]
mod services_tests;
