//! The StatefulSet that runs `redis-server` with the rendered config and a data volume per pod.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, ExecAction, KeyToPath,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;

use super::replicated::{boot_guard_args, replicated};
use super::service::headless_service_name;
use super::{labels, owned_meta, revision_of, selector_labels};
use crate::config::render::{CONFIG_DIR, CONFIG_FILE_KEY, DATA_DIR, REDIS_PORT};
use crate::crd::RedisInstance;

/// Pod-template annotation holding the SHA-256 of the redis.conf the pods were started with.
pub const CONFIG_HASH_ANNOTATION: &str = "redis.github.com/config-hash";
/// Pod-template annotation that forces a rolling restart when the hash alone has not changed
/// (the ConfigMap was rewritten behind the pods' back); carried forward on every apply.
pub const RESTARTED_AT_ANNOTATION: &str = "redis.github.com/restarted-at";
/// Pod-template annotation present when the pods serve TLS only (`spec.tls`): the operator
/// reaches each pod the way that pod was started, also while TLS is being turned on or off.
pub const TLS_ANNOTATION: &str = "redis.github.com/tls";
/// Name of the volumeClaimTemplate; PVCs are named `data-<instance>-<ordinal>`.
pub const DATA_VOLUME: &str = "data";
/// Name of the pod volume that holds redis.conf.
pub const CONFIG_VOLUME: &str = "config";
const ACL_VOLUME: &str = "acl";

/// The desired StatefulSet, its pod template stamped with `config_hash` and, once a forced
/// restart happened, its `restarted_at` marker, and mounting the ConfigMap of that revision
/// (see `configmap`; [`mount_config_map`] names another).
pub fn statefulset(
    instance: &RedisInstance,
    config_hash: &str,
    restarted_at: Option<&str>,
) -> StatefulSet {
    let mut annotations =
        BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned())]);
    if let Some(marker) = restarted_at {
        annotations.insert(RESTARTED_AT_ANNOTATION.to_owned(), marker.to_owned());
    }
    if instance.spec.tls.is_some() {
        annotations.insert(TLS_ANNOTATION.to_owned(), "true".to_owned());
    }
    let spec = &instance.spec;
    StatefulSet {
        metadata: owned_meta(instance, instance.name_any()),
        spec: StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(headless_service_name(instance)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(instance)),
                ..LabelSelector::default()
            },
            // A replicated instance's pods are replaced by the operator, replicas first.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some(
                    if replicated(instance) {
                        "OnDelete"
                    } else {
                        "RollingUpdate"
                    }
                    .into(),
                ),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: Some(retention_policy(instance)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(instance)),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(instance, config_hash)),
            },
            volume_claim_templates: Some(vec![data_claim(instance)]),
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

/// `spec.storage.retentionPolicy`, Retain/Retain by default. With `whenDeleted: Delete` the
/// StatefulSet controller makes the StatefulSet an owner of its claims, so a Recreate restart
/// deletes the StatefulSet with `propagationPolicy: Orphan` to keep them.
fn retention_policy(instance: &RedisInstance) -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    let policy = instance
        .spec
        .storage
        .retention_policy
        .clone()
        .unwrap_or_default();
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some(policy.when_deleted.as_str().into()),
        when_scaled: Some(policy.when_scaled.as_str().into()),
    }
}

/// The Redis container's image in a StatefulSet spec.
pub fn image_of(spec: &StatefulSetSpec) -> Option<&str> {
    spec.template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .as_deref()
}

/// Points the pod template's config volume at the ConfigMap `name`: a write that must not
/// restart the pods keeps the one they mount.
pub fn mount_config_map(sts: &mut StatefulSet, name: &str) {
    let volume = sts
        .spec
        .template
        .spec
        .as_mut()
        .and_then(|pod| pod.volumes.as_mut())
        .and_then(|volumes| volumes.iter_mut().find(|v| v.name == CONFIG_VOLUME))
        .and_then(|v| v.config_map.as_mut());
    if let Some(source) = volume {
        name.clone_into(&mut source.name);
    }
}

fn pod_spec(instance: &RedisInstance, config_hash: &str) -> PodSpec {
    let mut command = vec![
        "redis-server".into(),
        format!("{CONFIG_DIR}/{CONFIG_FILE_KEY}"),
    ];
    if replicated(instance) {
        command.extend(boot_guard_args());
    }
    let mut mounts = vec![
        VolumeMount {
            name: CONFIG_VOLUME.into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![Volume {
        name: CONFIG_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: revision_of(instance, config_hash),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if crate::auth::enabled(instance) {
        // The whole directory, not a subPath: a subPath mount never sees the Secret change.
        mounts.push(VolumeMount {
            name: ACL_VOLUME.into(),
            mount_path: crate::auth::ACL_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(acl_volume(instance));
    }
    let (mut tls_volumes, mut tls_mounts) = tls_volume(instance);
    volumes.append(&mut tls_volumes);
    mounts.append(&mut tls_mounts);
    let redis = Container {
        name: "redis".into(),
        image: Some(instance.spec.image.clone()),
        command: Some(command),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(readiness_probe(instance.spec.tls.is_some())),
        // A failed run's status then carries the end of its output, where Redis says why it
        // refused its config file; the operator reads it to tell a refused config from a crash.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(container_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    PodSpec {
        containers: vec![redis],
        volumes: Some(volumes),
        // Redis flushes its AOF and, with `save` set, writes an RDB on SIGTERM.
        termination_grace_period_seconds: Some(30),
        enable_service_links: Some(false),
        security_context: Some(pod_security_context()),
        ..PodSpec::default()
    }
}

/// The ACL file of `<name>-acl`, projected by key so that nothing else added to that Secret
/// could reach the pod. Readable by Redis's group alone.
fn acl_volume(instance: &RedisInstance) -> Volume {
    Volume {
        name: ACL_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(crate::auth::acl_secret_name(instance)),
            items: Some(vec![KeyToPath {
                key: crate::auth::ACL_FILE_KEY.into(),
                path: crate::auth::ACL_FILE_KEY.into(),
                ..KeyToPath::default()
            }]),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The official redis image's `redis` user and group: Redis runs as it, never as root.
pub const REDIS_UID: i64 = 999;

/// Redis as `redis`, its data volume handed to that group on mount (so an existing volume
/// written by root becomes writable), under the runtime's default seccomp profile.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(REDIS_UID),
        run_as_group: Some(REDIS_UID),
        fs_group: Some(REDIS_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// No capabilities and no way to gain any; the root filesystem read-only, as Redis writes only
/// under `dir` (the data volume) and reads its config from the config volume.
fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// `spec.tls`'s Secret as a whole directory (never `subPath`: the kubelet refreshes only whole
/// volumes, and a renewed certificate must reach the files Redis reloads).
fn tls_volume(instance: &RedisInstance) -> (Vec<Volume>, Vec<VolumeMount>) {
    let Some(tls) = &instance.spec.tls else {
        return (Vec::new(), Vec::new());
    };
    let volume = Volume {
        name: crate::tls::TLS_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(tls.secret_name.clone()),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: crate::tls::TLS_VOLUME.into(),
        mount_path: crate::tls::TLS_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    (vec![volume], vec![mount])
}

/// Ready once Redis answers commands: PONG, or NOAUTH when a password is set. A server still
/// loading its dataset answers LOADING and stays unready. Under TLS the probe verifies the
/// server against the Secret's CA, as any client does.
fn readiness_probe(tls: bool) -> Probe {
    let tls_args = if tls {
        format!("{} ", crate::tls::redis_cli_args())
    } else {
        String::new()
    };
    Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                format!("redis-cli {tls_args}-p {REDIS_PORT} ping | grep -Eq '^(PONG|NOAUTH)'"),
            ]),
        }),
        initial_delay_seconds: Some(1),
        period_seconds: Some(2),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn data_claim(instance: &RedisInstance) -> PersistentVolumeClaim {
    let storage = &instance.spec.storage;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(labels(instance)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Retention, RetentionPolicy};
    use crate::resources::fixtures::instance;
    use crate::resources::{CachedStatefulSet, config_hash_of, restarted_at_of};

    #[test]
    fn runs_redis_with_the_mounted_config_and_hash() {
        let sts = statefulset(&instance(&[]), "abc123", None);
        assert_eq!(
            config_hash_of(&CachedStatefulSet::from(&sts)),
            Some("abc123")
        );
        let spec = sts.spec;
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some("redis-example-headless"));
        let pod = spec.template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(
            container.command.as_deref().unwrap(),
            ["redis-server", "/usr/local/etc/redis/redis.conf"]
        );
        let mounts: Vec<_> = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(
            mounts,
            [
                ("config", "/usr/local/etc/redis"),
                ("data", "/data"),
                ("acl", "/etc/redis-acl")
            ]
        );
        let volumes = pod.volumes.clone().unwrap();
        assert_eq!(
            volumes[0].config_map.as_ref().unwrap().name,
            "redis-example-config-abc123",
            "the ConfigMap of the template's own revision"
        );
        // Only the ACL file is projected, from a Secret that holds nothing else.
        let acl = volumes[1].secret.as_ref().unwrap();
        assert_eq!(acl.secret_name.as_deref(), Some("redis-example-acl"));
        let keys: Vec<&str> = acl.items.iter().flatten().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["users.acl"]);
        assert!(container.readiness_probe.is_some());
        assert_eq!(
            container.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError"),
            "a crash's status must carry Redis's last output"
        );
    }

    #[test]
    fn the_config_volume_can_name_another_config_map() {
        let mut sts = statefulset(&instance(&[]), "abc123", None);
        mount_config_map(&mut sts, "redis-example-config");
        let cached = CachedStatefulSet::from(&sts);
        assert_eq!(
            crate::resources::config_map_of(&cached),
            Some("redis-example-config")
        );
        assert_eq!(config_hash_of(&cached), Some("abc123"));
    }

    #[test]
    fn redis_runs_as_the_redis_user_without_privileges() {
        let pod = statefulset(&instance(&[]), "h", None)
            .spec
            .template
            .spec
            .unwrap();
        let context = pod.security_context.unwrap();
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(
            (context.run_as_user, context.run_as_group, context.fs_group),
            (Some(999), Some(999), Some(999))
        );
        assert_eq!(context.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let container = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(container.read_only_root_filesystem, Some(true));
        assert_eq!(container.privileged, None);
        let capabilities = container.capabilities.unwrap();
        assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(capabilities.add, None);
    }

    fn sts_annotations(sts: &StatefulSet) -> BTreeMap<String, String> {
        sts.spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap_or_default()
    }

    #[test]
    fn tls_mounts_the_whole_secret_and_probes_over_tls() {
        let mut tls = instance(&[]);
        tls.spec.tls = Some(crate::crd::TlsSpec {
            secret_name: "redis-tls".into(),
            auth_clients: true,
        });
        let sts = statefulset(&tls, "h", None);
        let pod = sts.spec.template.spec.unwrap();
        let volume = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "tls")
            .unwrap();
        assert_eq!(
            volume.secret.unwrap().secret_name.as_deref(),
            Some("redis-tls")
        );
        let redis = &pod.containers[0];
        let mount = redis
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "tls")
            .unwrap();
        assert_eq!(mount.mount_path, "/tls");
        assert_eq!(mount.sub_path, None, "a subPath mount never refreshes");
        let probe = redis.readiness_probe.as_ref().unwrap();
        let command = probe.exec.as_ref().unwrap().command.as_ref().unwrap();
        assert!(
            command[2].starts_with("redis-cli --tls --cacert /tls/ca.crt --cert /tls/tls.crt --key /tls/tls.key -p 6379 ping"),
            "{command:?}"
        );
        assert_eq!(
            sts_annotations(&statefulset(&tls, "h", None))
                .get(TLS_ANNOTATION)
                .map(String::as_str),
            Some("true")
        );
        let plain = statefulset(&instance(&[]), "h", None);
        assert!(!sts_annotations(&plain).contains_key(TLS_ANNOTATION));
        let pod = plain.spec.template.spec.unwrap();
        assert!(!pod.volumes.unwrap().iter().any(|v| v.name == "tls"));
    }

    #[test]
    fn restart_marker_is_carried_on_the_template() {
        let plain = statefulset(&instance(&[]), "h", None);
        let marked = statefulset(&instance(&[]), "h", Some("2026-11-27T03:00:00Z"));
        let (plain, marked) = (
            CachedStatefulSet::from(&plain),
            CachedStatefulSet::from(&marked),
        );
        assert_eq!(restarted_at_of(&plain), None);
        assert_eq!(restarted_at_of(&marked), Some("2026-11-27T03:00:00Z"));
        assert_eq!(config_hash_of(&marked), Some("h"));
    }

    #[test]
    fn claim_template_uses_spec_storage_and_is_retained() {
        let sts = statefulset(&instance(&[]), "h", None);
        let spec = sts.spec;
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"],
            Quantity("1Gi".into())
        );
        let retention = spec.persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    }

    #[test]
    fn retention_policy_follows_the_spec() {
        let mut ri = instance(&[]);
        ri.spec.storage.retention_policy = Some(RetentionPolicy {
            when_deleted: Retention::Delete,
            when_scaled: Retention::Retain,
        });
        let retention = statefulset(&ri, "h", None)
            .spec
            .persistent_volume_claim_retention_policy
            .unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        ri.spec.storage.retention_policy = Some(RetentionPolicy {
            when_deleted: Retention::Retain,
            when_scaled: Retention::Delete,
        });
        let retention = statefulset(&ri, "h", None)
            .spec
            .persistent_volume_claim_retention_policy
            .unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Delete"));
    }

    #[test]
    fn selector_matches_template_labels() {
        let sts = statefulset(&instance(&[]), "h", None);
        let spec = sts.spec;
        let template_labels = spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in spec.selector.match_labels.unwrap() {
            assert_eq!(template_labels.get(&k), Some(&v));
        }
    }
}
