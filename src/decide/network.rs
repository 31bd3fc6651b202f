//! What an instance's NetworkPolicy needs this step: nothing, an apply or a delete.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;

use crate::resources::{CachedNetworkPolicy, network_policy_drifted};

/// A NetworkPolicy write whose watch event may not have arrived yet.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyWrite {
    /// Applied: the object as the API server returned it.
    Applied(Arc<CachedNetworkPolicy>),
    /// Deleted: the uid of the object that was deleted.
    Deleted(String),
}

/// What the NetworkPolicy decision reads.
#[derive(Debug, Clone, Copy)]
pub struct PolicyView<'a> {
    /// The policy the spec asks for; `None` when `spec.networkPolicy.enabled` is false.
    pub desired: Option<&'a NetworkPolicy>,
    /// The policy as the cache shows it.
    pub cached: Option<&'a CachedNetworkPolicy>,
    /// The actor's last write of it, until the cache shows it.
    pub written: Option<&'a PolicyWrite>,
}

/// The write the NetworkPolicy needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PolicyAct<'a> {
    /// It is as the spec asks (or the last write is still on its way).
    Keep,
    /// Missing or drifted: apply the desired one over the one seen, if any (its uid goes with
    /// the write, so that one deleted and created again meanwhile makes it a conflict).
    Apply {
        /// The policy the spec asks for.
        desired: &'a NetworkPolicy,
        /// The policy the decision was taken over: the cache's, or the actor's last write.
        over: Option<&'a CachedNetworkPolicy>,
    },
    /// Present while the spec turned it off: delete the cached one.
    Delete(&'a CachedNetworkPolicy),
}

/// The NetworkPolicy decision: the write, and whether the actor's last write can be forgotten
/// (the cache caught up with it, or there is nothing left it could hide).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyStep<'a> {
    /// What to write.
    pub act: PolicyAct<'a>,
    /// Drop the remembered write before performing.
    pub forget: bool,
}

/// Decides the NetworkPolicy's write. Taken before anything else of a step, so that an
/// instance's pods never run without it.
pub fn network_step<'a>(view: &PolicyView<'a>) -> PolicyStep<'a> {
    let forget = view
        .cached
        .is_some_and(|live| cache_caught_up(live, view.written));
    let written = view.written.filter(|_| !forget);
    let Some(desired) = view.desired else {
        let act = match (view.cached, written) {
            (None, _) => PolicyAct::Keep,
            (Some(live), Some(PolicyWrite::Deleted(uid))) if live.uid().as_ref() == Some(uid) => {
                PolicyAct::Keep
            }
            (Some(live), _) => PolicyAct::Delete(live),
        };
        // Nothing cached: no write of ours is left to wait for.
        let forget = forget || view.cached.is_none();
        return PolicyStep { act, forget };
    };
    let current = match written {
        Some(PolicyWrite::Applied(mine)) => Some(mine.as_ref()),
        _ => view.cached,
    };
    let act = match current {
        Some(live) if !network_policy_drifted(desired, live) => PolicyAct::Keep,
        over => PolicyAct::Apply { desired, over },
    };
    PolicyStep { act, forget }
}

/// The cache shows this actor's last write or something newer.
fn cache_caught_up(live: &CachedNetworkPolicy, written: Option<&PolicyWrite>) -> bool {
    let version =
        |p: &CachedNetworkPolicy| p.resource_version().and_then(|v| v.parse::<u64>().ok());
    match written {
        None => true,
        Some(PolicyWrite::Applied(mine)) => match (version(live), version(mine)) {
            (Some(seen), Some(wrote)) => seen >= wrote,
            _ => true,
        },
        // The deleted object still shows while the cache is behind; anything else is newer.
        Some(PolicyWrite::Deleted(uid)) => live.uid().as_ref() != Some(uid),
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
