//! A StatefulSet as the watch cache keeps it: its metadata, status, replicas and template
//! annotations typed, and the rest of its spec as JSON text.
//!
//! Parsed, the spec (containers, probes, volumes, claim templates) is most of a StatefulSet's
//! memory. Only drift detection reads it beyond replicas and the two template annotations, and
//! it compares it as JSON anyway. Claim templates are dropped: they cannot change.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;

use super::{Labels, from_json, split_metadata, to_json};
use crate::resources::{CONFIG_HASH_ANNOTATION, CONFIG_VOLUME, RESTARTED_AT_ANNOTATION};

/// The cached StatefulSet.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(from = "Wire")]
pub struct CachedStatefulSet {
    /// Its metadata (managed fields dropped by the watch), without its labels.
    pub metadata: ObjectMeta,
    /// Its labels.
    pub labels: Labels,
    /// Its spec, compacted.
    pub spec: CachedStatefulSetSpec,
    /// What the StatefulSet controller reports.
    pub status: Option<StatefulSetStatus>,
}

/// The StatefulSet as the API server sends it, with only the fields the cache keeps.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: CachedStatefulSetSpec,
    status: Option<StatefulSetStatus>,
}

impl From<Wire> for CachedStatefulSet {
    fn from(mut wire: Wire) -> Self {
        Self {
            labels: Labels::take(&mut wire.metadata),
            metadata: wire.metadata,
            spec: wire.spec,
            status: wire.status,
        }
    }
}

/// A StatefulSet spec as the cache keeps it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(from = "StatefulSetSpec")]
pub struct CachedStatefulSetSpec {
    /// Pods asked for.
    pub replicas: Option<i32>,
    config_hash: Option<String>,
    restarted_at: Option<String>,
    config_map: Option<String>,
    /// The pod template as JSON text.
    template: String,
    /// The spec without its pod template and claim templates, as JSON text.
    rest: String,
}

impl From<StatefulSetSpec> for CachedStatefulSetSpec {
    fn from(mut spec: StatefulSetSpec) -> Self {
        let annotation = |key: &str| {
            spec.template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(key))
                .cloned()
        };
        let config_hash = annotation(CONFIG_HASH_ANNOTATION);
        let restarted_at = annotation(RESTARTED_AT_ANNOTATION);
        let config_map = spec
            .template
            .spec
            .as_ref()
            .and_then(|pod| pod.volumes.as_ref())
            .and_then(|volumes| volumes.iter().find(|v| v.name == CONFIG_VOLUME))
            .and_then(|v| v.config_map.as_ref())
            .map(|c| c.name.clone());
        let template = to_json(&spec.template);
        spec.template = Default::default();
        spec.volume_claim_templates = None;
        let mut rest = serde_json::to_value(&spec).unwrap_or(Value::Null);
        if let Some(fields) = rest.as_object_mut() {
            fields.remove("template");
        }
        Self {
            replicas: spec.replicas,
            config_hash,
            restarted_at,
            config_map,
            template,
            rest: to_json(&rest),
        }
    }
}

impl CachedStatefulSetSpec {
    /// The pod template as JSON.
    pub fn template_json(&self) -> Value {
        from_json(&self.template)
    }

    /// The spec without its pod template and claim templates, as JSON.
    pub fn rest_json(&self) -> Value {
        from_json(&self.rest)
    }

    /// `serviceName`: the headless Service that names the pods.
    pub fn service_name(&self) -> Option<String> {
        self.rest_json()
            .get("serviceName")?
            .as_str()
            .map(str::to_owned)
    }
}

impl From<&StatefulSet> for CachedStatefulSet {
    /// The StatefulSet as the watch would have delivered it to the cache.
    fn from(sts: &StatefulSet) -> Self {
        let (metadata, labels) = split_metadata(&sts.metadata);
        Self {
            metadata,
            labels,
            spec: sts.spec.clone().into(),
            status: sts.status.clone(),
        }
    }
}

namespaced_resource!(CachedStatefulSet, "StatefulSet", "apps", "statefulsets");

/// The hash a live StatefulSet's pod template carries, if any.
pub fn config_hash_of(sts: &CachedStatefulSet) -> Option<&str> {
    sts.spec.config_hash.as_deref()
}

/// The restart marker a live StatefulSet's pod template carries, if any.
pub fn restarted_at_of(sts: &CachedStatefulSet) -> Option<&str> {
    sts.spec.restarted_at.as_deref()
}

/// The ConfigMap a live StatefulSet's pod template mounts as its config volume, if any.
pub fn config_map_of(sts: &CachedStatefulSet) -> Option<&str> {
    sts.spec.config_map.as_deref()
}

/// The Redis container's image in a template as [`CachedStatefulSetSpec::template_json`]
/// gives it.
pub fn image_in(template: &Value) -> Option<&str> {
    template.pointer("/spec/containers/0/image")?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::instance;
    use crate::resources::{image_of, statefulset};

    #[test]
    fn keeps_the_template_and_the_rest_of_the_spec_as_they_were() {
        let full = statefulset(&instance(&[("maxmemory", "1mb")]), "h1", Some("then"));
        let cached = CachedStatefulSet::from(&full);
        assert_eq!(
            cached.spec.template_json(),
            serde_json::to_value(&full.spec.template).unwrap()
        );
        let mut rest = serde_json::to_value(&full.spec).unwrap();
        let fields = rest.as_object_mut().unwrap();
        assert!(fields.remove("template").is_some());
        assert!(fields.remove("volumeClaimTemplates").is_some());
        assert_eq!(cached.spec.rest_json(), rest);
        assert_eq!(cached.spec.replicas, full.spec.replicas);
        assert_eq!(config_hash_of(&cached), Some("h1"));
        assert_eq!(restarted_at_of(&cached), Some("then"));
        assert_eq!(
            config_map_of(&cached),
            Some(crate::resources::revision_config_map_name("redis-example", "h1", false).as_str())
        );
        assert_eq!(
            image_in(&cached.spec.template_json()),
            image_of(&full.spec),
            "the image is found in the text"
        );
        assert!(image_of(&full.spec).is_some());
    }

    #[test]
    fn is_read_from_the_api_servers_json() {
        let full = statefulset(&instance(&[]), "h1", None);
        let json = serde_json::to_value(&full).unwrap();
        let cached: CachedStatefulSet = serde_json::from_value(json).unwrap();
        assert_eq!(cached, CachedStatefulSet::from(&full));
        assert!(std::mem::size_of::<CachedStatefulSet>() * 2 < std::mem::size_of::<StatefulSet>());
    }
}
