//! Pure builders of the Kubernetes objects a RedisInstance owns; no API calls here.

mod cached;
mod configmap;
mod drift;
mod network_policy;
mod replicated;
mod secret;
mod service;
mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::RedisInstance;

pub use cached::{
    CachedConfigMap, CachedContainerState, CachedContainerStatus, CachedNetworkPolicy, CachedPod,
    CachedPodCondition, CachedPodStatus, CachedSecret, CachedService, CachedStatefulSet,
    CachedStatefulSetSpec, InstanceLabelled, Labels, READY_CONDITION, config_hash_of,
    config_map_of, restarted_at_of,
};
pub use configmap::{
    config_map, config_map_name, is_revision_of, revision_config_map, revision_config_map_name,
    revision_of, shared_config_map_name,
};
pub use drift::{StatefulSetDrift, service_drifted, statefulset_drift};
pub use network_policy::{OPERATOR_POD_LABELS, network_policy, network_policy_drifted};
pub use replicated::{CONVERT_ANNOTATION, ROLE_LABEL, replicas_service, replicated, unconverted};
pub use secret::{SystemPasswords, acl_file_of, acl_secret, generated_auth_secret, system_secret};
pub use service::{
    headless_service, headless_service_name, legacy_primary_service_name, other_shape, service,
};
pub use statefulset::{
    CONFIG_HASH_ANNOTATION, CONFIG_VOLUME, DATA_VOLUME, RESTARTED_AT_ANNOTATION, TLS_ANNOTATION,
    image_of, mount_config_map, statefulset,
};

/// Label naming the instance an object belongs to; the watchers route events by it.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Label marking objects this operator manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`], and the field manager of every server-side apply.
pub const MANAGER: &str = "redis-operator";
/// Label the StatefulSet controller puts on each pod: the revision it was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
const NAME_LABEL: &str = "app.kubernetes.io/name";

/// Labels that select one instance's pods; also the StatefulSet's selector, so never change them.
pub fn selector_labels(instance: &RedisInstance) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), "redis".to_owned()),
        (INSTANCE_LABEL.to_owned(), instance.name_any()),
    ])
}

/// Labels on every owned object.
pub fn labels(instance: &RedisInstance) -> BTreeMap<String, String> {
    let mut labels = selector_labels(instance);
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
    labels
}

/// The label selector string of [`selector_labels`], for list calls.
pub fn selector_string(instance: &RedisInstance) -> String {
    selector_labels(instance)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Metadata of an object the instance controls: same namespace, our labels, an owner reference.
fn owned_meta(instance: &RedisInstance, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: instance.namespace(),
        labels: Some(labels(instance)),
        owner_references: Some(vec![controller_ref(instance)]),
        ..ObjectMeta::default()
    }
}

/// The controller owner reference to the instance, so the garbage collector removes its objects.
pub fn controller_ref(instance: &RedisInstance) -> OwnerReference {
    instance
        .controller_owner_ref(&())
        .expect("a RedisInstance read from the API has a name and uid")
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A RedisInstance as the API would return it, for builder tests.
    use crate::crd::{RedisInstance, RedisInstanceSpec, RestartStrategy, StorageSpec};

    pub fn instance(config: &[(&str, &str)]) -> RedisInstance {
        let mut instance = RedisInstance::new(
            "redis-example",
            RedisInstanceSpec {
                image: "redis:7.0".into(),
                replicas: 1,
                storage: StorageSpec {
                    size: "1Gi".into(),
                    storage_class_name: Some("standard".into()),
                    retention_policy: None,
                },
                config: crate::config::config_of(config),
                restart_strategy: RestartStrategy::RollingUpdate,
                config_update: Default::default(),
                rollout: Default::default(),
                replication: Default::default(),
                tls: None,
                network_policy: Default::default(),
                paused: false,
                auth: Default::default(),
            },
        );
        instance.metadata.namespace = Some("team-a".into());
        instance.metadata.uid = Some("4f1c2a8e-0000-4000-8000-000000000001".into());
        instance
    }
}
