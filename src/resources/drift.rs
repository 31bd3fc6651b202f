//! Whether a live object still holds what the operator set on it, field by field.
//!
//! The API server adds defaults and other controllers add their own fields, so "equal" would
//! always fail: a live object is in line when every field of the desired one has the same value
//! there. Lists must match in length (an added container is drift).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use serde::Serialize;
use serde_json::Value;

use super::cached::image_in;
use super::{
    CONFIG_HASH_ANNOTATION, CONFIG_VOLUME, CachedService, CachedStatefulSet,
    RESTARTED_AT_ANNOTATION, image_of,
};

/// What differs between the desired and the live StatefulSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatefulSetDrift {
    /// The container image differs: changing it restarts the pods.
    Image,
    /// Another part of the pod template differs: changing it restarts the pods.
    PodTemplate,
    /// Only fields outside the pod template (replicas, labels...): applied without a restart.
    Spec,
}

impl StatefulSetDrift {
    /// Fixed label for Events, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            StatefulSetDrift::Image => "Image",
            StatefulSetDrift::PodTemplate => "PodTemplate",
            StatefulSetDrift::Spec => "StatefulSetSpec",
        }
    }
}

/// Every field set in `desired` has the same value in `live`.
pub fn holds(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .all(|(key, value)| value.is_null() || have.get(key).is_some_and(|h| holds(value, h))),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| holds(w, h))
        }
        (want, have) => want == have,
    }
}

fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// How the live StatefulSet strays from the desired one, ignoring the config hash, restart
/// marker and the ConfigMap the config volume names (compared by the caller, since they decide
/// the kind of restart) and the immutable volume claim templates and service name.
pub fn statefulset_drift(
    desired: &StatefulSet,
    live: &CachedStatefulSet,
) -> Option<StatefulSetDrift> {
    let mut want = desired.spec.clone();
    if let Some(annotations) = want
        .template
        .metadata
        .as_mut()
        .and_then(|m| m.annotations.as_mut())
    {
        annotations.remove(CONFIG_HASH_ANNOTATION);
        annotations.remove(RESTARTED_AT_ANNOTATION);
    }
    let live_template = live.spec.template_json();
    let mut want_template = json(&want.template);
    unset_config_map_name(&mut want_template);
    if !holds(&want_template, &live_template) {
        return Some(if image_of(&want) != image_in(&live_template) {
            StatefulSetDrift::Image
        } else {
            StatefulSetDrift::PodTemplate
        });
    }
    want.volume_claim_templates = None;
    // Immutable too: a StatefulSet that names another Service is migrated, not repaired.
    want.service_name = None;
    let mut want_rest = json(&want);
    if let Some(fields) = want_rest.as_object_mut() {
        fields.remove("template");
    }
    let labels_hold = live.labels.hold(
        desired
            .metadata
            .labels
            .as_ref()
            .unwrap_or(&Default::default()),
    );
    if !labels_hold || !holds(&want_rest, &live.spec.rest_json()) {
        return Some(StatefulSetDrift::Spec);
    }
    None
}

/// Nulls the config volume's ConfigMap name in a pod template's JSON, so [`holds`] skips it.
fn unset_config_map_name(template: &mut Value) {
    let volumes = template
        .pointer_mut("/spec/volumes")
        .and_then(Value::as_array_mut);
    for volume in volumes.into_iter().flatten() {
        if volume.get("name").and_then(Value::as_str) == Some(CONFIG_VOLUME)
            && let Some(source) = volume.get_mut("configMap").and_then(Value::as_object_mut)
        {
            source.insert("name".to_owned(), Value::Null);
        }
    }
}

/// The live Service lacks something the operator set (ports, selector, labels), or selects by
/// more than it does (the selector is the operator's alone: `<name>` gains and loses the role).
pub fn service_drifted(desired: &Service, live: &CachedService) -> bool {
    let live_spec = live.spec_json();
    let selector = |spec: &Value| spec.get("selector").cloned().unwrap_or(Value::Null);
    let desired_spec = json(&desired.spec);
    selector(&desired_spec) != selector(&live_spec)
        || !holds(&desired_spec, &live_spec)
        || !live.labels.hold(
            desired
                .metadata
                .labels
                .as_ref()
                .unwrap_or(&Default::default()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::instance;
    use crate::resources::{service, statefulset};
    use serde_json::json;

    #[test]
    fn defaults_added_by_the_server_are_not_drift() {
        let desired = json!({"a": 1, "b": {"c": [1, 2]}});
        let live = json!({"a": 1, "b": {"c": [1, 2], "d": true}, "e": "x"});
        assert!(holds(&desired, &live));
        assert!(!holds(&desired, &json!({"a": 2, "b": {"c": [1, 2]}})));
        assert!(!holds(&desired, &json!({"a": 1, "b": {"c": [1, 2, 3]}})));
        assert!(!holds(&desired, &json!({"a": 1})));
    }

    #[test]
    fn statefulset_drift_is_classified() {
        let desired = statefulset(&instance(&[]), "h1", None);
        let mut live = statefulset(&instance(&[]), "h0", Some("then"));
        assert_eq!(
            statefulset_drift(&desired, &CachedStatefulSet::from(&live)),
            None,
            "hash and marker are not drift"
        );
        let mut earlier = live.clone();
        earlier.spec.service_name = Some("redis-example".into());
        let earlier = CachedStatefulSet::from(&earlier);
        assert_eq!(
            statefulset_drift(&desired, &earlier),
            None,
            "the service name cannot be repaired, only migrated"
        );
        assert_eq!(
            earlier.spec.service_name().as_deref(),
            Some("redis-example")
        );

        live.spec.replicas = Some(3);
        assert_eq!(
            statefulset_drift(&desired, &CachedStatefulSet::from(&live)),
            Some(StatefulSetDrift::Spec)
        );

        let mut image = statefulset(&instance(&[]), "h1", None);
        image.spec.template.spec.as_mut().unwrap().containers[0].image = Some("redis:6.2".into());
        assert_eq!(
            statefulset_drift(&desired, &CachedStatefulSet::from(&image)),
            Some(StatefulSetDrift::Image)
        );

        let mut shared = statefulset(&instance(&[]), "h1", None);
        crate::resources::mount_config_map(&mut shared, "redis-example-config");
        assert_eq!(
            statefulset_drift(&desired, &CachedStatefulSet::from(&shared)),
            None,
            "the mounted ConfigMap goes with the hash, compared by the caller"
        );
        let mut no_config = statefulset(&instance(&[]), "h1", None);
        no_config
            .spec
            .template
            .spec
            .as_mut()
            .unwrap()
            .volumes
            .as_mut()
            .unwrap()
            .remove(0);
        assert_eq!(
            statefulset_drift(&desired, &CachedStatefulSet::from(&no_config)),
            Some(StatefulSetDrift::PodTemplate),
            "a config volume removed by hand is drift"
        );

        let mut probe = statefulset(&instance(&[]), "h1", None);
        probe.spec.template.spec.as_mut().unwrap().containers[0].readiness_probe = None;
        assert_eq!(
            statefulset_drift(&desired, &CachedStatefulSet::from(&probe)),
            Some(StatefulSetDrift::PodTemplate)
        );
    }

    #[test]
    fn service_with_other_ports_drifted() {
        let desired = service(&instance(&[]));
        let mut live = desired.clone();
        assert!(!service_drifted(&desired, &CachedService::from(&live)));
        let mut wider = desired.clone();
        let selector = wider.spec.as_mut().unwrap().selector.as_mut().unwrap();
        selector.insert(crate::resources::ROLE_LABEL.into(), "primary".into());
        assert!(
            service_drifted(&desired, &CachedService::from(&wider)),
            "a selector with a key more selects fewer pods"
        );
        live.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 6380;
        assert!(service_drifted(&desired, &CachedService::from(&live)));
    }
}
