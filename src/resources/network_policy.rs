//! The NetworkPolicy that opens an instance's Redis port only to its clients, its own pods
//! (replication) and the operator.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{CachedNetworkPolicy, owned_meta, selector_labels};
use crate::config::render::REDIS_PORT;
use crate::crd::{ClientSelector, RedisInstance};

/// The label the operator's own pods carry, in deploy/ and in the Helm chart alike.
pub const OPERATOR_POD_LABELS: (&str, &str) = ("app.kubernetes.io/name", "redis-operator");
/// The label the API server puts on every namespace, naming it.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// NetworkPolicy `<instance>`: ingress to the instance's pods only on the Redis port, and only
/// from the clients `spec.networkPolicy.clients` selects (default: every pod of the instance's
/// namespace), from the instance's own pods (replicas dial their primary on that port) and,
/// when the operator runs in a pod of `operator_namespace`, from the operator's pods. Other
/// ports of the pods take no ingress at all.
pub fn network_policy(instance: &RedisInstance, operator_namespace: Option<&str>) -> NetworkPolicy {
    let clients = instance
        .spec
        .network_policy
        .clients
        .clone()
        .unwrap_or_default();
    let mut from = vec![
        client_peer(clients),
        NetworkPolicyPeer {
            pod_selector: Some(matching(selector_labels(instance))),
            ..NetworkPolicyPeer::default()
        },
    ];
    if let Some(namespace) = operator_namespace {
        from.push(operator_peer(namespace));
    }
    NetworkPolicy {
        metadata: owned_meta(instance, instance.name_any()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(matching(selector_labels(instance))),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                ports: Some(vec![NetworkPolicyPort {
                    protocol: Some("TCP".into()),
                    port: Some(IntOrString::Int(REDIS_PORT)),
                    end_port: None,
                }]),
                from: Some(from),
            }]),
            egress: None,
        }),
    }
}

/// The user's selectors as a peer; with neither, `podSelector: {}` (every pod of the policy's
/// namespace), since a peer with no selector at all is invalid.
fn client_peer(clients: ClientSelector) -> NetworkPolicyPeer {
    let ClientSelector {
        namespace_selector,
        pod_selector,
    } = clients;
    let namespace_selector = namespace_selector.map(normalized);
    let pod_selector = pod_selector
        .map(normalized)
        .or_else(|| namespace_selector.is_none().then(LabelSelector::default));
    NetworkPolicyPeer {
        namespace_selector,
        pod_selector,
        ip_block: None,
    }
}

/// The operator's pods, by their label, in their namespace.
fn operator_peer(namespace: &str) -> NetworkPolicyPeer {
    let (key, value) = OPERATOR_POD_LABELS;
    NetworkPolicyPeer {
        namespace_selector: Some(matching(BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_owned(),
            namespace.to_owned(),
        )]))),
        pod_selector: Some(matching(BTreeMap::from([(
            key.to_owned(),
            value.to_owned(),
        )]))),
        ip_block: None,
    }
}

fn matching(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    }
}

/// Empty lists and maps dropped, as the API server returns them, so that a policy read back
/// compares equal to the one written.
fn normalized(mut selector: LabelSelector) -> LabelSelector {
    if selector.match_labels.as_ref().is_some_and(|l| l.is_empty()) {
        selector.match_labels = None;
    }
    if let Some(expressions) = selector.match_expressions.as_mut() {
        for expression in expressions.iter_mut() {
            if expression.values.as_ref().is_some_and(|v| v.is_empty()) {
                expression.values = None;
            }
        }
    }
    if selector
        .match_expressions
        .as_ref()
        .is_some_and(|e| e.is_empty())
    {
        selector.match_expressions = None;
    }
    selector
}

/// Whether the live policy differs from the desired one in its spec or lacks one of its labels.
pub fn network_policy_drifted(desired: &NetworkPolicy, live: &CachedNetworkPolicy) -> bool {
    !live.spec_is(desired.spec.as_ref()) || !live.labels.hold(desired.labels())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NetworkPolicySpec as Spec;
    use crate::resources::fixtures::instance;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn peers(policy: &NetworkPolicy) -> Vec<NetworkPolicyPeer> {
        let rules = policy.spec.as_ref().unwrap().ingress.as_ref().unwrap();
        assert_eq!(rules.len(), 1, "one rule: the Redis port");
        rules[0].from.clone().unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Option<LabelSelector> {
        Some(matching(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ))
    }

    #[test]
    fn selects_the_instance_pods_and_opens_only_the_redis_port() {
        let policy = network_policy(&instance(&[]), None);
        assert_eq!(policy.name_any(), "redis-example");
        assert_eq!(policy.namespace().as_deref(), Some("team-a"));
        assert_eq!(
            policy.labels()["app.kubernetes.io/managed-by"],
            "redis-operator"
        );
        let owner = &policy.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "RedisInstance");
        assert_eq!(owner.controller, Some(true));
        let spec = policy.spec.as_ref().unwrap();
        assert_eq!(
            spec.pod_selector,
            labels(&[
                ("app.kubernetes.io/instance", "redis-example"),
                ("app.kubernetes.io/name", "redis"),
            ])
        );
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
        let ports = spec.ingress.as_ref().unwrap()[0].ports.clone().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, Some(IntOrString::Int(6379)));
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(spec.egress, None, "egress is not restricted");
    }

    #[test]
    fn by_default_admits_the_own_namespace_and_the_own_pods() {
        let from = peers(&network_policy(&instance(&[]), None));
        assert_eq!(from.len(), 2, "no operator peer outside a pod: {from:?}");
        assert_eq!(from[0].namespace_selector, None, "the policy's namespace");
        assert_eq!(from[0].pod_selector, Some(LabelSelector::default()));
        assert_eq!(from[1].namespace_selector, None);
        assert_eq!(
            from[1].pod_selector,
            network_policy(&instance(&[]), None)
                .spec
                .unwrap()
                .pod_selector
        );
    }

    #[test]
    fn admits_the_operator_pods_of_its_namespace() {
        let from = peers(&network_policy(&instance(&[]), Some("redis-operator")));
        assert_eq!(from.len(), 3);
        assert_eq!(
            from[2].namespace_selector,
            labels(&[("kubernetes.io/metadata.name", "redis-operator")])
        );
        assert_eq!(
            from[2].pod_selector,
            labels(&[("app.kubernetes.io/name", "redis-operator")])
        );
    }

    #[test]
    fn uses_the_client_selectors_given() {
        let mut ri = instance(&[]);
        ri.spec.network_policy = Spec {
            enabled: true,
            clients: Some(ClientSelector {
                namespace_selector: labels(&[("team", "a")]),
                pod_selector: None,
            }),
        };
        let from = peers(&network_policy(&ri, None));
        assert_eq!(from[0].namespace_selector, labels(&[("team", "a")]));
        assert_eq!(from[0].pod_selector, None, "every pod of those namespaces");

        ri.spec.network_policy.clients = Some(ClientSelector {
            namespace_selector: None,
            pod_selector: labels(&[("role", "client")]),
        });
        let from = peers(&network_policy(&ri, None));
        assert_eq!(from[0].namespace_selector, None, "the instance's namespace");
        assert_eq!(from[0].pod_selector, labels(&[("role", "client")]));
        assert_eq!(from.len(), 2, "the instance's own pods stay admitted");
    }

    #[test]
    fn empty_selector_fields_are_dropped_as_the_api_server_does() {
        let mut ri = instance(&[]);
        ri.spec.network_policy.clients = Some(ClientSelector {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::new()),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "team".into(),
                    operator: "Exists".into(),
                    values: Some(vec![]),
                }]),
            }),
            pod_selector: None,
        });
        let from = peers(&network_policy(&ri, None));
        let namespaces = from[0].namespace_selector.clone().unwrap();
        assert_eq!(namespaces.match_labels, None);
        assert_eq!(namespaces.match_expressions.unwrap()[0].values, None);
    }

    #[test]
    fn drift_is_a_changed_spec_or_a_missing_label() {
        let desired = network_policy(&instance(&[]), None);
        let mut live = desired.clone();
        live.labels_mut().insert("extra".into(), "kept".into());
        assert!(
            !network_policy_drifted(&desired, &CachedNetworkPolicy::from(&live)),
            "extra labels are theirs"
        );
        live.labels_mut().remove("app.kubernetes.io/managed-by");
        assert!(network_policy_drifted(
            &desired,
            &CachedNetworkPolicy::from(&live)
        ));
        let mut live = desired.clone();
        live.spec.as_mut().unwrap().ingress = None;
        assert!(network_policy_drifted(
            &desired,
            &CachedNetworkPolicy::from(&live)
        ));
    }

    #[test]
    fn reads_back_equal_after_a_json_round_trip() {
        let desired = network_policy(&instance(&[]), Some("ops"));
        let json = serde_json::to_string(&desired).unwrap();
        let read: CachedNetworkPolicy = serde_json::from_str(&json).unwrap();
        assert!(!network_policy_drifted(&desired, &read));
    }
}
