//! Scheduling for a one-node cluster: binds pending pods to this node once their claims are
//! Bound (kube-scheduler's volume binding rule), via the pods/binding subresource.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::informer;

/// Pods that name another scheduler are left to it.
const SCHEDULER_NAME: &str = "default-scheduler";
/// Re-check even without watch events (a missed event must not strand a pod).
const RESYNC: Duration = Duration::from_secs(5);

/// Why a pod cannot be bound yet; reported as its PodScheduled=False message.
fn unschedulable(
    pod: &Pod,
    claims: &Store<PersistentVolumeClaim>,
    node_labels: &BTreeMap<String, String>,
) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let ns = pod.namespace().unwrap_or_default();
    let unbound: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
        .filter(|name| {
            let claim = claims.get(&ObjectRef::new(name).within(&ns));
            claim.and_then(|c| c.status.clone()?.phase).as_deref() != Some("Bound")
        })
        .collect();
    if !unbound.is_empty() {
        return Some(format!(
            "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims ({}).",
            unbound.join(", ")
        ));
    }
    let mismatched = spec
        .node_selector
        .iter()
        .flatten()
        .any(|(k, v)| node_labels.get(k) != Some(v));
    mismatched.then(|| {
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.".into()
    })
}

fn wants_us(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none()
        && spec.is_some_and(|s| s.node_name.as_deref().unwrap_or_default().is_empty())
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n == SCHEDULER_NAME)
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

pub async fn run(
    client: Client,
    node: String,
    node_labels: BTreeMap<String, String>,
    recorder: Recorder,
    shutdown: CancellationToken,
) {
    let (pods, pod_changes) = informer::cache(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields("spec.nodeName="),
    );
    let (claims, claim_changes) = informer::cache(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    );
    let mut changes = informer::merge(vec![pod_changes, claim_changes]);
    let mut ticker = tokio::time::interval(RESYNC);
    // Bound pods linger in the cache until the watch drops them; don't bind twice.
    let mut bound: HashSet<String> = HashSet::new();
    // The PodScheduled message last written per pod, to write only on change.
    let mut reported: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = changes.next() => {}
            _ = ticker.tick() => {}
        }
        for pod in pods.state() {
            let uid = pod.uid().unwrap_or_default();
            if !wants_us(&pod) || bound.contains(&uid) {
                continue;
            }
            if let Some(message) = unschedulable(&pod, &claims, &node_labels) {
                if reported.get(&uid) != Some(&message) {
                    mark_unschedulable(&client, &pod, &message).await;
                    reported.insert(uid, message);
                }
                continue;
            }
            match bind(&client, &pod, &node).await {
                Ok(()) => {
                    tracing::info!(pod = %pod_key(&pod), %node, "bound pod");
                    let event = Event {
                        type_: EventType::Normal,
                        reason: "Scheduled".into(),
                        note: Some(format!("Successfully assigned {} to {node}", pod_key(&pod))),
                        action: "Binding".into(),
                        secondary: None,
                    };
                    if let Err(error) = recorder.publish(&event, &pod.object_ref(&())).await {
                        tracing::debug!(%error, "failed to publish event");
                    }
                    bound.insert(uid.clone());
                    reported.remove(&uid);
                }
                Err(error) => tracing::warn!(pod = %pod_key(&pod), %error, "failed to bind pod"),
            }
        }
        // Forget pods that left the cache (bound or deleted).
        let live: HashSet<String> = pods.state().iter().filter_map(|p| p.uid()).collect();
        bound.retain(|uid| live.contains(uid));
        reported.retain(|uid, _| live.contains(uid));
    }
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.name_any()),
            namespace: Some(ns.clone()),
            uid: pod.uid(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..ObjectReference::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &pod.name_any(),
            &PostParams::default(),
            &binding,
        )
        .await
    {
        // Already bound (a stale cache entry): nothing to do.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => other.map(drop),
    }
}

async fn mark_unschedulable(client: &Client, pod: &Pod, message: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let patch = json!({ "status": { "conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastTransitionTime": Time(Timestamp::now()),
    }]}});
    if let Err(error) = api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        tracing::debug!(pod = %pod_key(pod), %error, "failed to report PodScheduled=False");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimStatus, PersistentVolumeClaimVolumeSource, PodSpec, Volume,
    };
    use kube::runtime::reflector;

    fn pod(claim: &str, selector: Option<(&str, &str)>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("redis-0".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                volumes: Some(vec![Volume {
                    name: "data".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.into(),
                        read_only: None,
                    }),
                    ..Volume::default()
                }]),
                node_selector: selector.map(|(k, v)| BTreeMap::from([(k.into(), v.into())])),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn claims(phase: &str) -> Store<PersistentVolumeClaim> {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Apply(PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data-redis-0".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            status: Some(PersistentVolumeClaimStatus {
                phase: Some(phase.into()),
                ..PersistentVolumeClaimStatus::default()
            }),
            ..PersistentVolumeClaim::default()
        }));
        store
    }

    #[test]
    fn waits_for_claims_to_be_bound() {
        let labels = crate::node::labels("local-node");
        let message = unschedulable(&pod("data-redis-0", None), &claims("Pending"), &labels);
        assert!(message.unwrap().contains("data-redis-0"));
        assert_eq!(
            unschedulable(&pod("data-redis-0", None), &claims("Bound"), &labels),
            None
        );
        assert!(unschedulable(&pod("missing", None), &claims("Bound"), &labels).is_some());
    }

    #[test]
    fn honours_node_selectors() {
        let labels = crate::node::labels("local-node");
        let bound = claims("Bound");
        let matching = pod("data-redis-0", Some(("kubernetes.io/os", "linux")));
        assert_eq!(unschedulable(&matching, &bound, &labels), None);
        let other = pod("data-redis-0", Some(("disktype", "ssd")));
        assert!(
            unschedulable(&other, &bound, &labels)
                .unwrap()
                .contains("selector")
        );
    }
}
