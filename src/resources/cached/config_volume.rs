//! The name of the ConfigMap a pod spec's config volume mounts, read from the spec's JSON
//! without keeping the rest of it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::resources::CONFIG_VOLUME;

#[derive(Deserialize, Serialize)]
struct Spec {
    #[serde(default)]
    volumes: Vec<Volume>,
}

#[derive(Deserialize, Serialize)]
struct Volume {
    name: String,
    #[serde(rename = "configMap", default, skip_serializing_if = "Option::is_none")]
    config_map: Option<Named>,
}

#[derive(Deserialize, Serialize)]
struct Named {
    #[serde(default)]
    name: String,
}

/// From a pod spec: the ConfigMap of its volume named [`CONFIG_VOLUME`], if any.
pub fn from_spec<'de, D: Deserializer<'de>>(spec: D) -> Result<Option<String>, D::Error> {
    let spec = Option::<Spec>::deserialize(spec)?;
    Ok(spec.and_then(|s| {
        s.volumes
            .into_iter()
            .find(|v| v.name == CONFIG_VOLUME)
            .and_then(|v| v.config_map)
            .map(|c| c.name)
    }))
}

/// Back to a pod spec holding that one volume, so that [`from_spec`] reads it again.
pub fn as_spec<S: Serializer>(config_map: &Option<String>, out: S) -> Result<S::Ok, S::Error> {
    let volumes = config_map
        .iter()
        .map(|name| Volume {
            name: CONFIG_VOLUME.to_owned(),
            config_map: Some(Named { name: name.clone() }),
        })
        .collect();
    Spec { volumes }.serialize(out)
}
