//! A NetworkPolicy as the watch cache keeps it: its metadata, and its spec as JSON text.
//!
//! Drift detection compares the spec whole with the one the operator builds. The text is the
//! spec read into k8s-openapi's type and written back, so it holds exactly the fields that type
//! knows, as the whole object held them: a field a newer API server adds is dropped here as it
//! was there, and never counts as drift.

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

use super::{Labels, split_metadata, to_json};

/// The cached NetworkPolicy.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(from = "Wire")]
pub struct CachedNetworkPolicy {
    /// Its metadata (managed fields and owner references dropped by the watch), without its
    /// labels.
    pub metadata: ObjectMeta,
    /// Its labels.
    pub labels: Labels,
    spec: String,
}

/// The NetworkPolicy as the API server sends it, with only the fields the cache keeps.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default = "absent", deserialize_with = "as_text")]
    spec: String,
}

impl From<Wire> for CachedNetworkPolicy {
    fn from(mut wire: Wire) -> Self {
        Self {
            labels: Labels::take(&mut wire.metadata),
            metadata: wire.metadata,
            spec: wire.spec,
        }
    }
}

fn absent() -> String {
    spec_text(None)
}

fn as_text<'de, D: Deserializer<'de>>(spec: D) -> Result<String, D::Error> {
    Ok(spec_text(
        Option::<NetworkPolicySpec>::deserialize(spec)?.as_ref(),
    ))
}

/// A spec as the cache keeps it; an absent one is JSON `null`.
pub(crate) fn spec_text(spec: Option<&NetworkPolicySpec>) -> String {
    to_json(&spec)
}

namespaced_resource!(
    CachedNetworkPolicy,
    "NetworkPolicy",
    "networking.k8s.io",
    "networkpolicies"
);

impl CachedNetworkPolicy {
    /// Whether its spec is `spec`, field for field.
    pub fn spec_is(&self, spec: Option<&NetworkPolicySpec>) -> bool {
        self.spec == spec_text(spec)
    }
}

impl From<&NetworkPolicy> for CachedNetworkPolicy {
    /// The NetworkPolicy as the watch would have delivered it to the cache.
    fn from(policy: &NetworkPolicy) -> Self {
        let (metadata, labels) = split_metadata(&policy.metadata);
        Self {
            metadata,
            labels,
            spec: spec_text(policy.spec.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::instance;
    use crate::resources::network_policy;

    #[test]
    fn keeps_the_spec_as_k8s_openapi_reads_it_from_the_api_servers_json() {
        let full = network_policy(&instance(&[]), Some("redis-operator"));
        let mut json = serde_json::to_value(&full).unwrap();
        // A field this k8s-openapi does not know, as a newer API server could send.
        json["spec"]["somethingNew"] = serde_json::json!(true);
        let cached: CachedNetworkPolicy = serde_json::from_value(json).unwrap();
        assert_eq!(cached, CachedNetworkPolicy::from(&full));
        assert!(cached.spec_is(full.spec.as_ref()));
        assert_eq!(
            cached.labels.to_map(),
            full.metadata.labels.clone().unwrap()
        );
        assert_eq!(cached.metadata.labels, None);
        let other = network_policy(&instance(&[]), None);
        assert!(!cached.spec_is(other.spec.as_ref()));
        assert!(!cached.spec_is(None));
        let without: CachedNetworkPolicy =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert!(without.spec_is(None));
    }
}
