//! A ConfigMap as the watch cache keeps it: its metadata and the text of `redis.conf`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

use super::{Labels, split_metadata};
use crate::config::render::CONFIG_FILE_KEY;

/// The cached ConfigMap.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(from = "Wire")]
pub struct CachedConfigMap {
    /// Its metadata (managed fields and owner references dropped by the watch), without its
    /// labels.
    pub metadata: ObjectMeta,
    /// Its labels.
    pub labels: Labels,
    /// Its `redis.conf` key, the only one the operator writes or reads.
    pub config_text: Option<String>,
    /// `immutable: true`: its data can never change (a revision's, under `configUpdate: Restart`).
    pub immutable: Option<bool>,
}

/// The ConfigMap as the API server sends it, with only the fields the cache keeps.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default, rename = "data", deserialize_with = "config_file")]
    config_text: Option<String>,
    #[serde(default)]
    immutable: Option<bool>,
}

impl From<Wire> for CachedConfigMap {
    fn from(mut wire: Wire) -> Self {
        Self {
            labels: Labels::take(&mut wire.metadata),
            metadata: wire.metadata,
            config_text: wire.config_text,
            immutable: wire.immutable,
        }
    }
}

fn config_file<'de, D: Deserializer<'de>>(data: D) -> Result<Option<String>, D::Error> {
    let data = Option::<BTreeMap<String, String>>::deserialize(data)?;
    Ok(data.and_then(|mut keys| keys.remove(CONFIG_FILE_KEY)))
}

namespaced_resource!(CachedConfigMap, "ConfigMap", "", "configmaps");

impl From<&ConfigMap> for CachedConfigMap {
    /// The ConfigMap as the watch would have delivered it to the cache.
    fn from(cm: &ConfigMap) -> Self {
        let (metadata, labels) = split_metadata(&cm.metadata);
        Self {
            metadata,
            labels,
            config_text: cm
                .data
                .as_ref()
                .and_then(|d| d.get(CONFIG_FILE_KEY))
                .cloned(),
            immutable: cm.immutable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::render::render;
    use crate::resources::config_map;
    use crate::resources::fixtures::instance;

    #[test]
    fn keeps_the_config_file_read_from_the_api_servers_json() {
        let ri = instance(&[("maxmemory", "1mb")]);
        let rendered = render(&ri.spec.config);
        let mut full = config_map(&ri, &rendered);
        full.data
            .as_mut()
            .unwrap()
            .insert("other".into(), "not read".into());
        let cached: CachedConfigMap =
            serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        assert_eq!(cached.config_text.as_deref(), Some(rendered.text.as_str()));
        assert_eq!(cached, CachedConfigMap::from(&full));
        let empty: CachedConfigMap =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert_eq!(empty.config_text, None);
        let revision = crate::resources::revision_config_map(&ri, &rendered, &rendered.hash);
        let cached: CachedConfigMap =
            serde_json::from_value(serde_json::to_value(&revision).unwrap()).unwrap();
        assert_eq!(cached.immutable, Some(true));
    }
}
