//! How clients reach a replicated instance's primary, decided: the Services clients write
//! through and what their endpoints list.
//!
//! Pure: the actor reads the caches and, when [`reads_listing`] says so, the endpoints
//! (EndpointSlices are not cached), and performs what these return.

use super::replication::{
    ReplicationLimits, ReplicationStep, ReplicationView, ReplicationWait, decide_replication,
};
use crate::resources::CachedService;

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

/// Whether the replication step needs the [`Listing`]: a pod is to be replaced, which waits
/// while a Service clients write through still lists it. `view` has no listing.
pub fn reads_listing(view: &ReplicationView, limits: &ReplicationLimits) -> bool {
    decide_replication(view, limits) == ReplicationStep::Wait(ReplicationWait::Delisting)
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
