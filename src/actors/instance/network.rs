//! Performs the NetworkPolicy decision of a step: reads the cache, applies or deletes.

use std::sync::{Arc, LazyLock};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tracing::info;

use super::InstanceState;
use crate::crd::RedisInstance;
pub use crate::decide::PolicyWrite;
use crate::decide::{PolicyAct, PolicyView, network_step};
use crate::kube_io;
use crate::resources::{CachedNetworkPolicy, network_policy};

/// The operator's namespace when it runs in a pod: the Deployment sets `POD_NAMESPACE` from
/// the pod's own metadata. Outside a pod (a process on a node, as in the end-to-end tests) the
/// operator reaches Redis from the host, which no pod selector can name: see
/// docs/operations.md#network-isolation.
pub(crate) static OPERATOR_NAMESPACE: LazyLock<Option<String>> = LazyLock::new(|| {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty())
});

/// Applies or deletes the instance's NetworkPolicy as [`network_step`] decides from the cache
/// and the actor's last write. `Ok(true)`: it wrote.
pub(super) async fn step(
    state: &mut InstanceState,
    instance: &RedisInstance,
) -> Result<bool, kube_io::Error> {
    let cached = state.args.stores.network_policies.get(
        &ObjectRef::<CachedNetworkPolicy>::new(&state.args.key.name)
            .within(&state.args.key.namespace),
    );
    let desired = instance
        .spec
        .network_policy
        .enabled
        .then(|| network_policy(instance, OPERATOR_NAMESPACE.as_deref()));
    let written = state.written.network_policy.clone();
    let view = PolicyView {
        desired: desired.as_ref(),
        cached: cached.as_deref(),
        written: written.as_ref(),
    };
    let decided = network_step(&view);
    if decided.forget {
        state.written.network_policy = None;
    }
    match decided.act {
        PolicyAct::Keep => Ok(false),
        PolicyAct::Delete(live) => {
            state.args.api.delete_network_policy(live).await?;
            info!(
                network_policy = %live.name_any(),
                "deleted the NetworkPolicy: spec.networkPolicy.enabled is false"
            );
            state.written.network_policy = live.uid().map(PolicyWrite::Deleted);
            Ok(true)
        }
        PolicyAct::Apply(desired) => {
            let applied = state.args.api.apply("NetworkPolicy", desired).await?;
            info!(network_policy = %applied.name_any(), "applied the NetworkPolicy");
            let applied = CachedNetworkPolicy::from(&applied);
            state.written.network_policy = Some(PolicyWrite::Applied(Arc::new(applied)));
            Ok(true)
        }
    }
}
