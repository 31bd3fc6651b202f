//! The StatefulSet as the watch cache keeps it: its pod template's spec as JSON text.
//!
//! Parsed, that spec (containers, probes, volumes) is more than half of a cached StatefulSet's
//! memory, yet only drift detection reads it, and drift compares it as JSON anyway. Kept as
//! text in an annotation of the cached copy, it costs about a fifth. The annotation exists only
//! in this process: cached objects are never written back.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use serde_json::Value;

/// Template annotation of a cached StatefulSet holding its pod spec as JSON.
const POD_SPEC_JSON: &str = "redis-operator.internal/pod-spec-json";

/// Moves the pod template's spec into [`POD_SPEC_JSON`] and drops the claim templates (the
/// decisions never read them: they cannot change).
pub fn compact_statefulset(sts: &mut StatefulSet) {
    sts.spec.volume_claim_templates = None;
    let Some(pod_spec) = sts.spec.template.spec.take() else {
        return;
    };
    let Ok(text) = serde_json::to_string(&pod_spec) else {
        sts.spec.template.spec = Some(pod_spec);
        return;
    };
    sts.spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(POD_SPEC_JSON.to_owned(), text);
}

/// The pod template of a StatefulSet spec as JSON, whether it was compacted or not.
pub fn template_json(spec: &StatefulSetSpec) -> Value {
    let mut template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
    let text = template
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
        .and_then(|annotations| annotations.remove(POD_SPEC_JSON));
    if let (Some(Value::String(text)), Some(fields)) = (text, template.as_object_mut()) {
        fields.insert(
            "spec".to_owned(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        );
    }
    template
}

/// The Redis container's image in a template as [`template_json`] gives it.
pub fn image_in(template: &Value) -> Option<&str> {
    template.pointer("/spec/containers/0/image")?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::instance;
    use crate::resources::{image_of, statefulset};

    #[test]
    fn a_compacted_statefulset_shows_the_same_template() {
        let full = statefulset(&instance(&[("maxmemory", "1mb")]), "h1", Some("then"));
        let mut cached = full.clone();
        compact_statefulset(&mut cached);
        assert!(cached.spec.template.spec.is_none());
        assert!(cached.spec.volume_claim_templates.is_none());
        assert_eq!(template_json(&cached.spec), template_json(&full.spec));
        assert_eq!(
            template_json(&full.spec),
            serde_json::to_value(&full.spec.template).unwrap()
        );
        assert_eq!(
            image_in(&template_json(&cached.spec)),
            image_of(&full.spec),
            "the image is found in either form"
        );
        assert!(image_of(&full.spec).is_some());
    }
}
