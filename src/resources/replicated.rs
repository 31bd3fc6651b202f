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
/// the conversion. Once replicated, `status.replication` says so for good. Scaled down to one
/// pod, it stays replicated until the primary's role has moved to pod 0 (see `handing_over`).
pub fn replicated(instance: &RedisInstance) -> bool {
    (instance.spec.replicas >= 2 && !unconverted(instance)) || handing_over(instance)
}

/// Scaled down to one pod while the primary is a pod the scale removes, and another pod
/// serves beside it: the primary hands its role to pod 0 first (a switchover loses no
/// acknowledged write), then the instance becomes a single server. Scaling to zero hands
/// nothing over.
pub fn handing_over(instance: &RedisInstance) -> bool {
    let Some(status) = &instance.status else {
        return false;
    };
    let primary_ordinal = status
        .replication
        .as_ref()
        .and_then(|r| r.primary.as_deref())
        .and_then(|p| p.rsplit_once('-')?.1.parse::<i32>().ok());
    instance.spec.replicas == 1
        && primary_ordinal.is_some_and(|o| o >= 1)
        && status.ready_replicas >= 2
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
    fn scaled_to_one_pod_it_stays_replicated_until_pod_0_is_the_primary() {
        let scaled = |replicas: i32, primary: &str, ready: i32| {
            let mut inst = instance(&[]);
            inst.spec.replicas = replicas;
            inst.status = Some(RedisInstanceStatus {
                config_hash: Some("h".into()),
                ready_replicas: ready,
                replication: Some(ReplicationStatus {
                    primary: Some(primary.into()),
                    ..ReplicationStatus::default()
                }),
                ..RedisInstanceStatus::default()
            });
            inst
        };
        assert!(
            replicated(&scaled(1, "redis-example-2", 3)),
            "pod 2 hands over"
        );
        assert!(
            replicated(&scaled(1, "redis-example-1", 2)),
            "pod 1 hands over"
        );
        assert!(
            !replicated(&scaled(1, "redis-example-0", 3)),
            "pod 0 is the primary: a single server"
        );
        assert!(
            !replicated(&scaled(1, "redis-example-2", 1)),
            "no other pod serves: nothing to hand over to"
        );
        assert!(
            !replicated(&scaled(0, "redis-example-2", 3)),
            "scaled to zero"
        );
        assert!(
            !replicated(&scaled(1, "redis-example-\u{e9}", 3)),
            "a primary name without an ordinal"
        );
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
