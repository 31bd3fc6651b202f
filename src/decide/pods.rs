//! What the StatefulSet's status and its pods say about a rollout.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::resources::CONFIG_HASH_ANNOTATION;

/// Label the StatefulSet controller puts on each pod: the revision it was created from.
const REVISION_LABEL: &str = "controller-revision-hash";

/// The controller has seen the latest template, every pod runs it, and all are ready.
pub fn rollout_complete(sts: &StatefulSet) -> bool {
    let Some(status) = &sts.status else {
        return false;
    };
    let wanted = sts.spec.replicas.unwrap_or(1);
    let revisions_match = match (&status.update_revision, &status.current_revision) {
        (Some(update), Some(current)) => update == current,
        // With no pods there may be no revisions to compare.
        _ => wanted == 0,
    };
    generation_seen(sts)
        && revisions_match
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.ready_replicas.unwrap_or(0) >= wanted
        && status.replicas <= wanted
}

/// The controller's status describes the newest spec (not the one before the last write).
pub fn generation_seen(sts: &StatefulSet) -> bool {
    match (
        sts.status.as_ref().and_then(|s| s.observed_generation),
        sts.metadata.generation,
    ) {
        (Some(observed), Some(generation)) => observed >= generation,
        _ => false,
    }
}

/// A pod whose redis-server exited with an error while running a given config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crash {
    /// The pod.
    pub pod: String,
    /// redis-server's exit code.
    pub exit_code: i32,
}

/// The config hash a pod was started with (copied from the template annotation).
pub fn pod_config_hash(pod: &Pod) -> Option<&str> {
    pod.annotations()
        .get(CONFIG_HASH_ANNOTATION)
        .map(String::as_str)
}

/// Whether the pod passes its readiness probe.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn crash_of(pod: &Pod) -> Option<Crash> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|c| {
        let now = c.state.as_ref().and_then(|s| s.terminated.as_ref());
        let before = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        now.or(before).filter(|t| t.exit_code != 0).map(|t| Crash {
            pod: pod.name_any(),
            exit_code: t.exit_code,
        })
    })
}

/// The first pod running config `hash` whose Redis exited non-zero: Redis rejected that config
/// (a directive this build refuses, say) even though it passed validation.
pub fn crashed_pod(pods: &[Arc<Pod>], hash: &str) -> Option<Crash> {
    pods.iter()
        .filter(|p| pod_config_hash(p) == Some(hash))
        .find_map(|pod| crash_of(pod))
}

/// Pods the StatefulSet controller will never replace by itself: on an older revision, not
/// ready, and either crashing or past the deadline. The controller waits for every pod to be
/// ready before it moves on, so such a pod blocks every later fix.
pub fn stuck_pods(sts: &StatefulSet, pods: &[Arc<Pod>], past_deadline: bool) -> Vec<String> {
    let Some(update) = sts
        .status
        .as_ref()
        .and_then(|s| s.update_revision.as_deref())
    else {
        return Vec::new();
    };
    if !generation_seen(sts) {
        return Vec::new();
    }
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.labels().get(REVISION_LABEL).is_some_and(|r| r != update))
        .filter(|p| !is_ready(p) && (past_deadline || crash_of(p).is_some()))
        .map(|p| p.name_any())
        .collect()
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Pods and StatefulSets as the caches would hold them.
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
    };

    pub fn pod(
        name: &str,
        hash: &str,
        revision: &str,
        ready: bool,
        last_exit: Option<i32>,
    ) -> Arc<Pod> {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.annotations =
            Some([(CONFIG_HASH_ANNOTATION.to_owned(), hash.to_owned())].into());
        pod.metadata.labels = Some([(REVISION_LABEL.to_owned(), revision.to_owned())].into());
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "redis".into(),
                restart_count: i32::from(last_exit.is_some()),
                last_state: last_exit.map(|code| ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        Arc::new(pod)
    }

    /// `sts` as the controller reports it: `done` when every pod runs the newest revision.
    pub fn with_status(mut sts: StatefulSet, done: bool) -> StatefulSet {
        sts.metadata.generation = Some(2);
        sts.status = Some(StatefulSetStatus {
            observed_generation: Some(2),
            replicas: 1,
            ready_replicas: Some(i32::from(done)),
            updated_replicas: Some(i32::from(done)),
            current_revision: Some("rev-a".into()),
            update_revision: Some(if done { "rev-a" } else { "rev-b" }.into()),
            ..StatefulSetStatus::default()
        });
        sts
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::resources::fixtures::instance;
    use crate::resources::statefulset;

    #[test]
    fn a_crash_counts_only_for_pods_running_the_given_config() {
        let pods = [
            pod("r-0", "old", "rev-a", true, Some(1)),
            pod("r-1", "new", "rev-b", true, None),
            pod("r-2", "new", "rev-b", false, Some(1)),
        ];
        assert_eq!(
            crashed_pod(&pods, "new"),
            Some(Crash {
                pod: "r-2".into(),
                exit_code: 1
            })
        );
        assert_eq!(crashed_pod(&pods[..2], "new"), None);
        assert_eq!(
            crashed_pod(&[pod("r-0", "new", "rev-b", true, Some(0))], "new"),
            None
        );
    }

    #[test]
    fn only_unready_pods_on_an_older_revision_are_stuck() {
        let sts = with_status(statefulset(&instance(&[]), "new", None), false);
        let pods = [
            pod("r-0", "old", "rev-a", false, None),
            pod("r-1", "old", "rev-a", true, None),
            pod("r-2", "new", "rev-b", false, None),
            pod("r-3", "old", "rev-a", false, Some(1)),
        ];
        assert_eq!(stuck_pods(&sts, &pods, true), ["r-0", "r-3"]);
        assert_eq!(
            stuck_pods(&sts, &pods, false),
            ["r-3"],
            "a crash needs no deadline"
        );
    }

    #[test]
    fn rollout_is_incomplete_until_the_controller_observes_the_generation() {
        let mut sts = with_status(statefulset(&instance(&[]), "new", None), true);
        assert!(rollout_complete(&sts));
        sts.metadata.generation = Some(3);
        assert!(!rollout_complete(&sts));
        assert!(stuck_pods(&sts, &[pod("r-0", "old", "rev-0", false, Some(1))], true).is_empty());
    }
}
