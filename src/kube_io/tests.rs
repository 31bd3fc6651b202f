//! The status and metadata patches and the API's refusals, without a cluster.

use super::*;

#[test]
fn a_terminating_namespace_is_told_apart_from_other_refusals() {
    let refusal = |cause: &str| {
        let status: kube::core::Status = serde_json::from_value(json!({
            "status": "Failure", "code": 403, "reason": "Forbidden", "message": "no",
            "details": {"name": "r", "kind": "services", "causes": [{"reason": cause}]}
        }))
        .unwrap();
        Error::Apply {
            kind: "Service",
            name: "r".into(),
            source: kube::Error::Api(status.into()),
        }
    };
    assert!(refusal("NamespaceTerminating").is_namespace_terminating());
    assert!(!refusal("Other").is_namespace_terminating());
    assert!(!refusal("NamespaceTerminating").is_invalid());
}

#[test]
fn a_uid_precondition_that_met_a_new_object_is_a_conflict_not_a_refusal() {
    // As the API server answers a merge patch whose uid is not the object's.
    let answer = |field: &str| {
        let status: kube::core::Status = serde_json::from_value(json!({
            "status": "Failure", "code": 422, "reason": "Invalid",
            "message": "ConfigMap \"c\" is invalid: ...: field is immutable",
            "details": {"name": "c", "kind": "ConfigMap", "causes": [{
                "reason": "FieldValueInvalid", "field": field,
                "message": "Invalid value: \"u-2\": field is immutable"
            }]}
        }))
        .unwrap();
        Error::Status {
            name: "c".into(),
            source: kube::Error::Api(status.into()),
        }
    };
    let replaced = answer("metadata.uid");
    assert!(replaced.is_conflict());
    assert!(!replaced.is_invalid());
    assert_eq!(replaced.reason(), "Conflict");
    let refused = answer("spec.replicas");
    assert!(refused.is_invalid());
    assert!(!refused.is_conflict());
}

#[test]
fn a_write_over_an_object_seen_carries_its_uid_and_version_unless_it_is_going() {
    let seen = |uid: &str, deleting: bool| ObjectMeta {
        uid: Some(uid.into()),
        resource_version: Some("41".into()),
        deletion_timestamp: deleting.then_some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        ),
        ..ObjectMeta::default()
    };
    let mut desired = ObjectMeta {
        uid: Some("left over".into()),
        resource_version: Some("left over".into()),
        ..ObjectMeta::default()
    };
    over_seen(&mut desired, Some(&seen("u-1", false)));
    assert_eq!(desired.uid.as_deref(), Some("u-1"));
    assert_eq!(desired.resource_version.as_deref(), Some("41"));
    // Being deleted: what comes next is a creation.
    over_seen(&mut desired, Some(&seen("u-1", true)));
    assert_eq!(
        (desired.uid.take(), desired.resource_version.take()),
        (None, None)
    );
    over_seen(&mut desired, None);
    assert_eq!((desired.uid, desired.resource_version), (None, None));
}

#[test]
fn metadata_patch_sets_or_removes_one_key_of_the_object_seen() {
    let set = metadata_patch(Some("uid-1".into()), "annotations", "k", Some("v"));
    assert_eq!(
        set,
        json!({ "metadata": { "uid": "uid-1", "annotations": { "k": "v" } } })
    );
    let removed = metadata_patch(Some("uid-1".into()), "labels", "k", None);
    assert_eq!(
        removed,
        json!({ "metadata": { "uid": "uid-1", "labels": { "k": null } } })
    );
}

fn seen_instance() -> RedisInstance {
    let mut instance = crate::resources::fixtures::instance(&[]);
    instance.metadata.uid = Some("uid-1".into());
    instance.metadata.resource_version = Some("42".into());
    instance
}

#[test]
fn status_patch_is_preconditioned_on_what_it_was_derived_from() {
    let patch = status_patch(&seen_instance(), &RedisInstanceStatus::default()).unwrap();
    assert_eq!(patch["metadata"]["uid"], "uid-1");
    assert_eq!(patch["metadata"]["resourceVersion"], "42");
}

#[test]
fn status_patch_clears_absent_fields() {
    let status = RedisInstanceStatus {
        restarts: 2,
        ..RedisInstanceStatus::default()
    };
    let patch = status_patch(&seen_instance(), &status).unwrap()["status"].take();
    assert_eq!(patch["restarts"], 2);
    let replicated = RedisInstanceStatus {
        replication: Some(crate::crd::ReplicationStatus::default()),
        ..RedisInstanceStatus::default()
    };
    let nested = status_patch(&seen_instance(), &replicated).unwrap()["status"].take();
    assert!(
        nested["replication"]
            .get("switchover")
            .is_some_and(|v| v.is_null())
    );
    assert!(patch["configHash"].is_null() && patch.get("configHash").is_some());
    assert!(patch.get("rejectedConfigHash").is_some());
}

#[test]
fn status_patch_names_every_field_a_status_can_omit() {
    use crate::crd::{Phase, RestartReason, RestartStrategy, RolloutRecord};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let full = RedisInstanceStatus {
        observed_generation: Some(1),
        config_hash: Some("h".into()),
        short_hash: Some("h".into()),
        ready_replicas: 1,
        restarts: 1,
        last_restart_time: Some(time.clone()),
        live_config_hash: Some("l".into()),
        refused_live_config_hash: Some("r".into()),
        pending_change: Some("p".into()),
        rejected_config_hash: Some("x".into()),
        acl_hash: Some("a".into()),
        healthy_spec: Some("{}".into()),
        valid_spec: Some("{}".into()),
        rollout: Some(RolloutRecord {
            config_hash: "h".into(),
            restarted_at: None,
            strategy: RestartStrategy::RollingUpdate,
            reason: RestartReason::ConfigChanged,
            started_at: time,
        }),
        stateful_set_generation: Some(3),
        replication: Some(crate::crd::ReplicationStatus::default()),
        phase: Some(Phase::Running),
        conditions: vec![Condition {
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            message: String::new(),
            observed_generation: None,
            reason: "R".into(),
            status: "True".into(),
            type_: "Ready".into(),
        }],
    };
    let every = serde_json::to_value(&full).unwrap();
    let cleared =
        status_patch(&seen_instance(), &RedisInstanceStatus::default()).unwrap()["status"].take();
    for key in every.as_object().unwrap().keys() {
        assert!(
            cleared.get(key).is_some(),
            "a status without {key} would not clear it"
        );
    }
}
