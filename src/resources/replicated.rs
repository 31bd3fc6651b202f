//! What a replicated instance adds to the objects: the pods' boot guard, the OnDelete update
//! strategy (the operator picks the order of a restart), the role label and the replicas'
//! Service (the primary's is `<name>`, see `service`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use kube::ResourceExt;

use super::{owned_meta, selector_labels};
use crate::crd::RedisInstance;
use crate::replication::{BOOT_PRIMARY_HOST, BOOT_PRIMARY_PORT, Role};

/// Pod label naming the pod's role: `primary` or `replica`.
pub const ROLE_LABEL: &str = "redis.github.com/role";
/// Annotation by which a user agrees to turn an instance that ran as several unrelated servers
/// into one primary and its replicas: every pod but the primary loses its own data.
pub const CONVERT_ANNOTATION: &str = "redis.github.com/convert-to-replication";

/// Whether the instance runs as one primary and its replicas: two pods or more, unless it ran
/// as several unrelated servers before replication existed and the user has not agreed to
/// the conversion. Once replicated, `status.replication` says so for good.
pub fn replicated(instance: &RedisInstance) -> bool {
    instance.spec.replicas >= 2 && !unconverted(instance)
}

/// Ran with several pods, each with data of its own, before replication was enabled.
pub fn unconverted(instance: &RedisInstance) -> bool {
    let Some(status) = &instance.status else {
        return false;
    };
    let agreed = instance
        .annotations()
        .get(CONVERT_ANNOTATION)
        .is_some_and(|v| v == "true");
    status.replication.is_none()
        && status.config_hash.is_some()
        && status.ready_replicas >= 2
        && !agreed
}

/// The extra arguments of a replicated pod's `redis-server`: it starts as a read-only replica
/// of nothing, and takes writes only once the operator has made it the primary.
pub fn boot_guard_args() -> Vec<String> {
    vec![
        "--replicaof".into(),
        BOOT_PRIMARY_HOST.into(),
        BOOT_PRIMARY_PORT.to_string(),
    ]
}

/// `<instance>-replicas`: the replicas, for reads.
pub fn replicas_service(instance: &RedisInstance) -> Service {
    let mut selector: BTreeMap<String, String> = selector_labels(instance);
    selector.insert(ROLE_LABEL.to_owned(), Role::Replica.as_str().to_owned());
    Service {
        metadata: owned_meta(instance, format!("{}-replicas", instance.name_any())),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![super::service::redis_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{RedisInstanceStatus, ReplicationStatus};
    use crate::resources::fixtures::instance;

    #[test]
    fn two_pods_or_more_replicate_unless_they_ran_unrelated_before() {
        let mut one = instance(&[]);
        one.spec.replicas = 1;
        assert!(!replicated(&one));
        let mut three = instance(&[]);
        three.spec.replicas = 3;
        assert!(replicated(&three), "a new instance");
        three.status = Some(RedisInstanceStatus {
            config_hash: Some("h".into()),
            ready_replicas: 1,
            ..RedisInstanceStatus::default()
        });
        assert!(
            replicated(&three),
            "one pod that ran, scaled up: its data stays on the primary"
        );
        three.status.as_mut().unwrap().ready_replicas = 3;
        assert!(
            !replicated(&three),
            "three unrelated servers: not without consent"
        );
        three
            .annotations_mut()
            .insert(CONVERT_ANNOTATION.into(), "true".into());
        assert!(replicated(&three), "consent given");
        three.annotations_mut().clear();
        three.status.as_mut().unwrap().replication = Some(ReplicationStatus::default());
        assert!(replicated(&three), "replicated once, replicated for good");
    }

    #[test]
    fn the_replicas_service_selects_the_instance_and_the_role() {
        let svc = replicas_service(&instance(&[]));
        assert_eq!(svc.metadata.name.as_deref(), Some("redis-example-replicas"));
        let selector = svc.spec.unwrap().selector.unwrap();
        assert_eq!(selector[ROLE_LABEL], "replica");
        assert_eq!(selector[crate::resources::INSTANCE_LABEL], "redis-example");
    }
}
