//! Performs how clients reach the primary, as `decide::routing` decided it: the role Services'
//! writes and the role labels a finished switchover moves.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use tracing::info;

use super::ReplicationMemory;
use super::observe::Reach;
use crate::decide::replication_act::BUSY_PROBE;
use crate::decide::routing::RoleServicesAct;
use crate::kube_io::{self, InstanceApi};
use crate::replication::Role;
use crate::resources::{CachedService, ROLE_LABEL};

/// Sets the role labels [`crate::decide::routing::primary_label_moves`] named, in its order.
pub(super) async fn move_primary_label(
    api: &InstanceApi,
    reach: &Reach<'_>,
    moves: &[(String, Role)],
) -> Result<(), kube_io::Error> {
    for (name, role) in moves {
        if let Some(pod) = reach.pod(name) {
            match role {
                Role::Primary => info!(pod = %name, "labelled primary"),
                Role::Replica => info!(pod = %name, "labelled replica"),
            }
            let value = Some(role.as_str());
            api.label_pod(pod, ROLE_LABEL, value).await?;
        }
    }
    Ok(())
}

/// Performs the role Services' write [`crate::decide::routing::role_services`] decided.
/// `Some(wake)`: it wrote, and the step ends (`None`: take the next one now).
pub(super) async fn perform_services(
    api: &InstanceApi,
    memory: &mut ReplicationMemory,
    act: RoleServicesAct<'_>,
    replicas_name: &str,
) -> Result<Option<Option<Duration>>, kube_io::Error> {
    match act {
        RoleServicesAct::RetireLegacy(old) => {
            api.delete_service(old).await?;
            info!(service = %old.name_any(), "deleted the old primary Service: writes go through the instance's Service");
            Ok(Some(Some(BUSY_PROBE)))
        }
        RoleServicesAct::ApplyReplicas { desired, over } => {
            let name = desired.name_any();
            let mut desired = desired.clone();
            kube_io::over_seen(&mut desired.metadata, over.map(|seen| &seen.metadata));
            let applied = api.apply("Service", &desired).await?;
            info!(service = %name, "applied the role Service");
            let applied = Arc::new(CachedService::from(&applied));
            memory.services.insert(name, applied);
            Ok(Some(None))
        }
        RoleServicesAct::Keep { forget_written } => {
            if forget_written {
                memory.services.remove(replicas_name);
            }
            Ok(None)
        }
    }
}
