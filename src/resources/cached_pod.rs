//! A pod as the watch cache keeps it: its metadata and the few status fields the decisions read.
//!
//! A k8s-openapi `Pod` is 2.4 KB before any field is set, most of it the spec the operator
//! never reads; at 10,000 pods that alone is 24 MB. This type is deserialised straight from
//! the watch, so the rest of the pod is never held, not even briefly.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ContainerState, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The cached pod: metadata and the status the decisions read.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct CachedPod {
    /// The pod's metadata (managed fields dropped by the watch).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the kubelet reports.
    pub status: Option<CachedPodStatus>,
}

/// The fields of a `PodStatus` the operator reads.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    /// Readiness comes from here.
    pub conditions: Option<Vec<PodCondition>>,
    /// Crashes come from here.
    pub container_statuses: Option<Vec<CachedContainerStatus>>,
    /// Where live config changes reach the pod's Redis.
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
}

/// The fields of a `ContainerStatus` the operator reads: how the current and the last run ended.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedContainerStatus {
    /// The current run.
    pub state: Option<ContainerState>,
    /// The run before it.
    pub last_state: Option<ContainerState>,
}

impl kube::Resource for CachedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl From<&Pod> for CachedPod {
    /// The same pod as the watch would have delivered it.
    fn from(pod: &Pod) -> Self {
        let json = serde_json::to_value(pod).unwrap_or_default();
        serde_json::from_value(json).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerStateTerminated, ContainerStatus, PodSpec, PodStatus,
    };

    #[test]
    fn keeps_what_the_decisions_read_and_nothing_else() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("redis-example-0".into());
        pod.metadata.uid = Some("u1".into());
        pod.spec = Some(PodSpec::default());
        let last = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                message: Some("refused".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "redis".into(),
                image: "redis:7".into(),
                last_state: Some(last.clone()),
                ..Default::default()
            }]),
            pod_ip: Some("10.0.0.7".into()),
            host_ip: Some("10.0.0.1".into()),
            ..Default::default()
        });
        let cached = CachedPod::from(&pod);
        assert_eq!(cached.metadata, pod.metadata);
        let status = cached.status.expect("status kept");
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(status.conditions, pod.status.as_ref().unwrap().conditions);
        assert_eq!(
            status.container_statuses,
            Some(vec![CachedContainerStatus {
                state: None,
                last_state: Some(last),
            }])
        );
        let json = serde_json::to_string(&status).unwrap();
        assert!(
            !json.contains("hostIP") && !json.contains("redis:7"),
            "{json}"
        );
    }

    #[test]
    fn is_smaller_than_half_a_pod() {
        assert!(
            std::mem::size_of::<CachedPod>() * 2 < std::mem::size_of::<Pod>(),
            "{} against {}",
            std::mem::size_of::<CachedPod>(),
            std::mem::size_of::<Pod>()
        );
    }
}
