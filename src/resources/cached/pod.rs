//! A pod as the watch cache keeps it: its metadata, the labels, annotations and few status
//! fields the decisions read.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::Labels;
use crate::resources::{
    CONFIG_HASH_ANNOTATION, INSTANCE_LABEL, RESTARTED_AT_ANNOTATION, REVISION_LABEL, ROLE_LABEL,
    TLS_ANNOTATION,
};

/// The pod condition that tells whether it passes its readiness probe.
pub const READY_CONDITION: &str = "Ready";

/// The labels of a pod the operator reads: the instance routes its watch events, the revision
/// tells whether it runs the current template, the role which Services select it.
const READ_LABELS: [&str; 3] = [INSTANCE_LABEL, REVISION_LABEL, ROLE_LABEL];

/// The annotations of a pod the operator reads, all from its StatefulSet's template: the
/// config it runs, its restart marker, and whether it serves TLS.
const READ_ANNOTATIONS: [&str; 3] = [
    CONFIG_HASH_ANNOTATION,
    RESTARTED_AT_ANNOTATION,
    TLS_ANNOTATION,
];

/// The cached pod: metadata, the labels the operator reads, the ConfigMap its config volume
/// names, and the status the decisions read.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(from = "Wire", into = "Wire")]
pub struct CachedPod {
    /// The pod's metadata (managed fields dropped by the watch), without its labels and
    /// annotations.
    pub metadata: ObjectMeta,
    /// Of its labels, those in [`READ_LABELS`].
    pub labels: Labels,
    /// Of its annotations, those in [`READ_ANNOTATIONS`].
    pub annotations: Labels,
    /// The ConfigMap its config volume mounts: a revision's, or the shared `<name>-config` of
    /// a pod started before revisions existed. The only part of the spec kept.
    pub config_map: Option<String>,
    /// What the kubelet reports.
    pub status: Option<CachedPodStatus>,
}

/// The pod as the API server sends it, with only the fields the cache keeps.
#[derive(Deserialize, Serialize)]
struct Wire {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(
        default,
        rename = "spec",
        deserialize_with = "super::config_volume::from_spec",
        serialize_with = "super::config_volume::as_spec"
    )]
    config_map: Option<String>,
    status: Option<CachedPodStatus>,
}

impl From<Wire> for CachedPod {
    fn from(mut wire: Wire) -> Self {
        let metadata = &mut wire.metadata;
        if let Some(labels) = metadata.labels.as_mut() {
            labels.retain(|key, _| READ_LABELS.contains(&key.as_str()));
        }
        let mut annotations = metadata.annotations.take().unwrap_or_default();
        annotations.retain(|key, _| READ_ANNOTATIONS.contains(&key.as_str()));
        Self {
            labels: Labels::take(metadata),
            annotations: Labels::from(&annotations),
            metadata: wire.metadata,
            config_map: wire.config_map,
            status: wire.status,
        }
    }
}

impl From<CachedPod> for Wire {
    fn from(pod: CachedPod) -> Self {
        let labels = pod.labels.to_map();
        let annotations = pod.annotations.to_map();
        Self {
            metadata: ObjectMeta {
                labels: (!labels.is_empty()).then_some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..pod.metadata
            },
            config_map: pod.config_map,
            status: pod.status,
        }
    }
}

/// The fields of a `PodStatus` the operator reads.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    /// Readiness comes from here.
    pub conditions: Option<Vec<CachedPodCondition>>,
    /// Crashes come from here.
    pub container_statuses: Option<Vec<CachedContainerStatus>>,
    /// Where live config changes reach the pod's Redis.
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
}

/// The fields of a `PodCondition` the operator reads.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct CachedPodCondition {
    /// `Ready`, `PodScheduled`...
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
}

/// The fields of a `ContainerStatus` the operator reads: how the current and the last run ended.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedContainerStatus {
    /// The current run.
    pub state: Option<CachedContainerState>,
    /// The run before it.
    pub last_state: Option<CachedContainerState>,
}

/// How a run ended, if it did; whether it is running or waiting is not read.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct CachedContainerState {
    /// Exit code and message of an ended run.
    pub terminated: Option<ContainerStateTerminated>,
}

namespaced_resource!(CachedPod, "Pod", "", "pods");

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
    use crate::resources::InstanceLabelled;
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, ContainerState, ContainerStateRunning, ContainerStatus,
        PodCondition, PodSpec, PodStatus, Volume,
    };

    #[test]
    fn keeps_what_the_decisions_read_and_nothing_else() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("redis-example-0".into());
        pod.metadata.uid = Some("u1".into());
        pod.metadata.labels = Some(
            [
                (INSTANCE_LABEL, "redis-example"),
                (REVISION_LABEL, "redis-example-5d4f8"),
                (ROLE_LABEL, "primary"),
                ("app.kubernetes.io/name", "redis"),
                ("statefulset.kubernetes.io/pod-name", "redis-example-0"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        );
        pod.metadata.annotations = Some(
            [
                (CONFIG_HASH_ANNOTATION, "0123456789ab"),
                (TLS_ANNOTATION, "true"),
                ("kubectl.kubernetes.io/default-container", "redis"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        );
        pod.spec = Some(PodSpec {
            volumes: Some(vec![
                Volume {
                    name: "data".into(),
                    ..Default::default()
                },
                Volume {
                    name: "config".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: "redis-example-config-0123456789ab".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        });
        let ended = ContainerStateTerminated {
            exit_code: 1,
            message: Some("refused".into()),
            ..Default::default()
        };
        let last = ContainerState {
            terminated: Some(ended.clone()),
            ..Default::default()
        };
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                message: Some("all containers ready".into()),
                ..Default::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "redis".into(),
                image: "redis:7".into(),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                }),
                last_state: Some(last),
                ..Default::default()
            }]),
            pod_ip: Some("10.0.0.7".into()),
            host_ip: Some("10.0.0.1".into()),
            ..Default::default()
        });
        let cached = CachedPod::from(&pod);
        let unlabelled = ObjectMeta {
            labels: None,
            annotations: None,
            ..pod.metadata.clone()
        };
        assert_eq!(
            cached.metadata, unlabelled,
            "labels and annotations moved out of the metadata"
        );
        assert_eq!(
            cached.annotations.get(CONFIG_HASH_ANNOTATION),
            Some("0123456789ab")
        );
        assert_eq!(cached.annotations.get(TLS_ANNOTATION), Some("true"));
        assert_eq!(
            cached.annotations.to_map().len(),
            2,
            "only the annotations read are kept"
        );
        let mut read = pod.metadata.labels.clone().unwrap();
        read.retain(|key, _| READ_LABELS.contains(&key.as_str()));
        assert_eq!(read.len(), 3);
        assert_eq!(
            cached.labels.to_map(),
            read,
            "only the labels read are kept"
        );
        assert_eq!(cached.instance_label(), Some("redis-example"));
        {
            // Through the method too, with `ResourceExt` (whose `labels()` reads the metadata's)
            // in scope: the cache's own are found.
            #[allow(unused_imports)]
            use kube::ResourceExt;
            assert_eq!(cached.labels().get(ROLE_LABEL), Some("primary"));
            assert_eq!(cached.annotations().get(TLS_ANNOTATION), Some("true"));
        }
        assert_eq!(
            cached.config_map.as_deref(),
            Some("redis-example-config-0123456789ab")
        );
        let again: CachedPod =
            serde_json::from_value(serde_json::to_value(&cached).unwrap()).unwrap();
        assert_eq!(again, cached, "kept through its own JSON");
        let status = cached.status.expect("status kept");
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(
            status.conditions,
            Some(vec![CachedPodCondition {
                type_: "Ready".into(),
                status: "True".into()
            }])
        );
        assert_eq!(
            status.container_statuses,
            Some(vec![CachedContainerStatus {
                state: Some(CachedContainerState { terminated: None }),
                last_state: Some(CachedContainerState {
                    terminated: Some(ended)
                }),
            }])
        );
        let json = serde_json::to_string(&status).unwrap();
        for dropped in ["hostIP", "redis:7", "all containers ready", "running"] {
            assert!(!json.contains(dropped), "{json}");
        }
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
