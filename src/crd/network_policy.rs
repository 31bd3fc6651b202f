//! `spec.networkPolicy`: which pods may reach an instance's Redis port.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The NetworkPolicy `<name>` the operator keeps for an instance: Redis's port is open only to
/// the clients selected here, to the instance's own pods (replication) and to the operator.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// `false` deletes the NetworkPolicy: every pod that can route to the instance reaches it.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// The client pods allowed, as in a NetworkPolicy peer. Absent: every pod of the
    /// instance's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<ClientSelector>,
}

/// Pods selected by namespace and label; both absent selects every pod of the instance's
/// namespace.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientSelector {
    /// Namespaces whose pods may connect (`{}`: every namespace). Absent: the instance's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Pods, within those namespaces, that may connect. Absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

fn enabled_by_default() -> bool {
    true
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: enabled_by_default(),
            clients: None,
        }
    }
}

impl NetworkPolicySpec {
    /// Left out of a serialized spec when nothing differs from the default.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_means_enabled_for_the_own_namespace() {
        let spec: NetworkPolicySpec = serde_json::from_str("{}").unwrap();
        assert!(spec.enabled);
        assert_eq!(spec.clients, None);
        assert!(spec.is_default());
    }

    #[test]
    fn reads_the_client_selectors() {
        let spec: NetworkPolicySpec = serde_json::from_str(
            r#"{"enabled": true, "clients": {"namespaceSelector": {"matchLabels": {"team": "a"}}}}"#,
        )
        .unwrap();
        let clients = spec.clients.unwrap();
        let namespaces = clients.namespace_selector.unwrap();
        assert_eq!(namespaces.match_labels.unwrap()["team"], "a");
        assert_eq!(clients.pod_selector, None);
    }
}
