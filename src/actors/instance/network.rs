//! The NetworkPolicy of a step: the one the spec asks for, and the write decided for it.

use std::sync::{Arc, LazyLock};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use tracing::info;

use super::observe::Written;
use crate::crd::RedisInstance;
use crate::decide::PolicyAct;
pub use crate::decide::PolicyWrite;
use crate::kube_io::{self, InstanceApi};
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

/// The NetworkPolicy the spec asks for; `None` when `spec.networkPolicy.enabled` is false.
pub(super) fn desired(instance: &RedisInstance) -> Option<NetworkPolicy> {
    instance
        .spec
        .network_policy
        .enabled
        .then(|| network_policy(instance, OPERATOR_NAMESPACE.as_deref()))
}

/// Performs the NetworkPolicy write [`crate::decide::step`] decided.
pub(super) async fn perform(
    api: &InstanceApi,
    written: &mut Written,
    act: PolicyAct<'_>,
) -> Result<(), kube_io::Error> {
    match act {
        PolicyAct::Keep => {}
        PolicyAct::Delete(live) => {
            api.delete_network_policy(live).await?;
            info!(
                network_policy = %live.name_any(),
                "deleted the NetworkPolicy: spec.networkPolicy.enabled is false"
            );
            written.network_policy = live.uid().map(PolicyWrite::Deleted);
        }
        PolicyAct::Apply { desired, over } => {
            let mut desired = desired.clone();
            kube_io::over_seen(&mut desired.metadata, over.map(|seen| &seen.metadata));
            let applied = api.apply("NetworkPolicy", &desired).await?;
            info!(network_policy = %applied.name_any(), "applied the NetworkPolicy");
            let applied = CachedNetworkPolicy::from(&applied);
            written.network_policy = Some(PolicyWrite::Applied(Arc::new(applied)));
        }
    }
    Ok(())
}
