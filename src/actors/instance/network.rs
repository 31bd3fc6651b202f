//! Keeps an instance's NetworkPolicy: applied (and repaired) while `spec.networkPolicy.enabled`,
//! deleted when it is turned off. Taken before anything else of a step, so that an instance's
//! pods never run without it.

use std::sync::{Arc, LazyLock};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tracing::info;

use super::InstanceState;
use crate::crd::RedisInstance;
use crate::kube_io;
use crate::resources::{CachedNetworkPolicy, network_policy, network_policy_drifted};

/// The operator's namespace when it runs in a pod: the Deployment sets `POD_NAMESPACE` from
/// the pod's own metadata. Outside a pod (a process on a node, as in the end-to-end tests) the
/// operator reaches Redis from the host, which no pod selector can name: see
/// docs/operations.md#network-isolation.
pub(crate) static OPERATOR_NAMESPACE: LazyLock<Option<String>> = LazyLock::new(|| {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty())
});

/// A NetworkPolicy write whose watch event may not have arrived yet.
pub enum PolicyWrite {
    /// Applied: the object as the API server returned it.
    Applied(Arc<CachedNetworkPolicy>),
    /// Deleted: the uid of the object that was deleted.
    Deleted(String),
}

/// Applies or deletes the instance's NetworkPolicy when the cache shows it differs from the
/// spec. `Ok(true)`: it wrote.
pub(super) async fn step(
    state: &mut InstanceState,
    instance: &RedisInstance,
) -> Result<bool, kube_io::Error> {
    let cached = state.args.stores.network_policies.get(
        &ObjectRef::<CachedNetworkPolicy>::new(&state.args.key.name)
            .within(&state.args.key.namespace),
    );
    if let Some(live) = &cached
        && cache_caught_up(live, state.written.network_policy.as_ref())
    {
        state.written.network_policy = None;
    }
    if !instance.spec.network_policy.enabled {
        let Some(live) = cached else {
            state.written.network_policy = None;
            return Ok(false);
        };
        if matches!(&state.written.network_policy, Some(PolicyWrite::Deleted(uid)) if live.uid().as_ref() == Some(uid))
        {
            return Ok(false);
        }
        state.args.api.delete_network_policy(&live).await?;
        info!(
            network_policy = %live.name_any(),
            "deleted the NetworkPolicy: spec.networkPolicy.enabled is false"
        );
        state.written.network_policy = live.uid().map(PolicyWrite::Deleted);
        return Ok(true);
    }
    let desired = network_policy(instance, OPERATOR_NAMESPACE.as_deref());
    let current = match (&state.written.network_policy, cached) {
        (Some(PolicyWrite::Applied(mine)), _) => Some(mine.clone()),
        (_, cached) => cached,
    };
    if current.is_some_and(|live| !network_policy_drifted(&desired, &live)) {
        return Ok(false);
    }
    let applied = state.args.api.apply("NetworkPolicy", &desired).await?;
    info!(network_policy = %applied.name_any(), "applied the NetworkPolicy");
    let applied = CachedNetworkPolicy::from(&applied);
    state.written.network_policy = Some(PolicyWrite::Applied(Arc::new(applied)));
    Ok(true)
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
