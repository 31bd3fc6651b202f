//! A Service as the watch cache keeps it: its metadata, and its spec as JSON text.
//!
//! Only drift detection reads the spec, and it compares it as JSON.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{Labels, from_json, split_metadata, to_json};

/// The cached Service.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(from = "Wire")]
pub struct CachedService {
    /// Its metadata (managed fields and owner references dropped by the watch), without its
    /// labels.
    pub metadata: ObjectMeta,
    /// Its labels.
    pub labels: Labels,
    spec: String,
}

/// The Service as the API server sends it, with only the fields the cache keeps.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default, deserialize_with = "as_text")]
    spec: String,
}

impl From<Wire> for CachedService {
    fn from(mut wire: Wire) -> Self {
        Self {
            labels: Labels::take(&mut wire.metadata),
            metadata: wire.metadata,
            spec: wire.spec,
        }
    }
}

fn as_text<'de, D: Deserializer<'de>>(spec: D) -> Result<String, D::Error> {
    Ok(to_json(&Value::deserialize(spec)?))
}

namespaced_resource!(CachedService, "Service", "", "services");

impl CachedService {
    /// The spec as JSON.
    pub fn spec_json(&self) -> Value {
        from_json(&self.spec)
    }

    /// Headless (`clusterIP: None`): `clusterIP` cannot change, so such a Service becomes a
    /// ClusterIP one only by being deleted and created again.
    pub fn headless(&self) -> bool {
        self.spec_json().get("clusterIP").and_then(Value::as_str) == Some("None")
    }
}

impl From<&Service> for CachedService {
    /// The Service as the watch would have delivered it to the cache.
    fn from(svc: &Service) -> Self {
        let (metadata, labels) = split_metadata(&svc.metadata);
        Self {
            metadata,
            labels,
            // Through a JSON value, so the text is the same as the watch's.
            spec: to_json(&serde_json::to_value(&svc.spec).unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::instance;
    use crate::resources::service;

    #[test]
    fn keeps_the_spec_as_it_was_read_from_the_api_servers_json() {
        let full = service(&instance(&[]));
        let cached: CachedService =
            serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        assert_eq!(
            cached.spec_json(),
            serde_json::to_value(&full.spec).unwrap()
        );
        assert_eq!(cached, CachedService::from(&full));
        let mut metadata = full.metadata.clone();
        assert_eq!(cached.labels, Labels::take(&mut metadata));
        assert_eq!(cached.metadata, metadata);
        assert!(!cached.headless());
        let headless = crate::resources::headless_service(&instance(&[]));
        assert!(CachedService::from(&headless).headless());
    }
}
