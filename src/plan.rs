//! The instance state machine's decisions: from what is observed, the one next step to take.
//!
//! Pure, so every branch of the spec's restart rules is tested without a cluster; the instance
//! actor performs the step and asks again.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::crd::RestartStrategy;
use crate::resources::{CONFIG_HASH_ANNOTATION, config_hash_of};

/// What the actor is in the middle of, between messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Stage {
    /// Nothing in flight.
    #[default]
    Steady,
    /// The template carries a new hash; the StatefulSet controller is replacing pods.
    RollingOut,
    /// Recreate: the StatefulSet was deleted; waiting until it and its pods are gone.
    AwaitingDeletion,
}

/// What the API showed this pass.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// `redis.conf` of the live ConfigMap; `None` when the ConfigMap (or key) is missing.
    pub config_text: Option<&'a str>,
    /// The live StatefulSet, if any.
    pub statefulset: Option<&'a StatefulSet>,
    /// Pods of the instance that still exist (terminating ones included).
    pub pods: usize,
}

/// The desired config and how to roll it out.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    /// Rendered redis.conf.
    pub config_text: &'a str,
    /// Its hash.
    pub hash: &'a str,
    /// The user's chosen strategy.
    pub strategy: RestartStrategy,
    /// The instance's spec changed since the StatefulSet was last applied (image, replicas...).
    pub spec_changed: bool,
    /// A ConfigMap rewrite happened while the StatefulSet existed, so its pods must restart
    /// even when the template hash already matches (the spec's second restart rule).
    pub restart_requested: bool,
}

/// The next thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// ConfigMap missing or its content differs: write it.
    WriteConfigMap,
    /// No StatefulSet: create it with the desired hash.
    CreateStatefulSet,
    /// RollingUpdate restart: put the desired hash (and restart marker) on the template.
    RollOut,
    /// Recreate restart: strip finalizers and delete the StatefulSet.
    DeleteForRecreate,
    /// Recreate: the StatefulSet or some pods still exist.
    AwaitDeletion,
    /// Same config, other spec fields changed: apply the StatefulSet without a restart.
    ApplyStatefulSet,
    /// Waiting for the StatefulSet controller to finish replacing pods.
    AwaitRollout,
    /// Converged.
    Idle,
}

impl Step {
    /// Whether the step writes to the API (and another step should follow at once).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Step::WriteConfigMap
                | Step::CreateStatefulSet
                | Step::RollOut
                | Step::DeleteForRecreate
                | Step::ApplyStatefulSet
        )
    }
}

/// Decides the next step. ConfigMap first, then the StatefulSet, so that every pod started
/// after the template changes reads the new file.
pub fn next_step(desired: &Desired, observed: &Observed, stage: &Stage) -> Step {
    let deleting = observed
        .statefulset
        .is_some_and(|sts| sts.metadata.deletion_timestamp.is_some());
    if deleting {
        // Whatever the stage says (an operator restarted mid-Recreate has none): never delete or
        // count twice, wait until it is gone.
        return Step::AwaitDeletion;
    }
    if *stage == Stage::AwaitingDeletion {
        if observed.statefulset.is_some() {
            // Someone recreated it, or the delete never took: delete again.
            return Step::DeleteForRecreate;
        }
        return if observed.pods > 0 {
            Step::AwaitDeletion
        } else if observed.config_text != Some(desired.config_text) {
            Step::WriteConfigMap
        } else {
            Step::CreateStatefulSet
        };
    }
    if observed.config_text != Some(desired.config_text) {
        return Step::WriteConfigMap;
    }
    let Some(sts) = observed.statefulset else {
        return Step::CreateStatefulSet;
    };
    if needs_restart(desired, sts) {
        return match desired.strategy {
            RestartStrategy::RollingUpdate => Step::RollOut,
            RestartStrategy::Recreate => Step::DeleteForRecreate,
        };
    }
    if desired.spec_changed {
        return Step::ApplyStatefulSet;
    }
    if rollout_complete(sts) {
        Step::Idle
    } else {
        Step::AwaitRollout
    }
}

/// The spec's third rule (template hash differs), or a pending request from the second.
pub fn needs_restart(desired: &Desired, sts: &StatefulSet) -> bool {
    desired.restart_requested || config_hash_of(sts) != Some(desired.hash)
}

/// The controller has seen the latest template, every pod runs it, and all are ready.
pub fn rollout_complete(sts: &StatefulSet) -> bool {
    let Some(status) = &sts.status else {
        return false;
    };
    let wanted = sts.spec.replicas.unwrap_or(1);
    let generation_seen = match (status.observed_generation, sts.metadata.generation) {
        (Some(observed), Some(generation)) => observed >= generation,
        _ => false,
    };
    let revisions_match = match (&status.update_revision, &status.current_revision) {
        (Some(update), Some(current)) => update == current,
        // With no pods there may be no revisions to compare.
        _ => wanted == 0,
    };
    generation_seen
        && revisions_match
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.ready_replicas.unwrap_or(0) >= wanted
        && status.replicas <= wanted
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

/// The first pod running config `hash` whose Redis exited non-zero: Redis rejected that config
/// (a directive this build refuses, say) even though it passed validation.
pub fn crashed_pod(pods: &[Pod], hash: &str) -> Option<Crash> {
    pods.iter()
        .filter(|p| pod_config_hash(p) == Some(hash))
        .find_map(|pod| {
            let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
            statuses.iter().find_map(|c| {
                let now = c.state.as_ref().and_then(|s| s.terminated.as_ref());
                let before = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
                now.or(before).filter(|t| t.exit_code != 0).map(|t| Crash {
                    pod: pod.name_any(),
                    exit_code: t.exit_code,
                })
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };

    use crate::resources::fixtures::instance;
    use crate::resources::statefulset;

    const TEXT: &str = "maxmemory 100mb\n";

    fn desired(strategy: RestartStrategy) -> Desired<'static> {
        Desired {
            config_text: TEXT,
            hash: "new",
            strategy,
            spec_changed: false,
            restart_requested: false,
        }
    }

    fn live(hash: &str, rolled_out: bool) -> StatefulSet {
        let mut sts = statefulset(&instance(&[]), hash, None);
        sts.metadata.generation = Some(2);
        sts.status = Some(StatefulSetStatus {
            observed_generation: Some(2),
            replicas: 1,
            ready_replicas: Some(1),
            updated_replicas: Some(if rolled_out { 1 } else { 0 }),
            current_revision: Some("rev-a".into()),
            update_revision: Some(if rolled_out { "rev-a" } else { "rev-b" }.into()),
            ..StatefulSetStatus::default()
        });
        sts
    }

    fn observed<'a>(text: Option<&'a str>, sts: Option<&'a StatefulSet>) -> Observed<'a> {
        Observed {
            config_text: text,
            statefulset: sts,
            pods: usize::from(sts.is_some()),
        }
    }

    #[test]
    fn missing_config_map_is_written_first() {
        let sts = live("new", true);
        let step = next_step(
            &desired(RestartStrategy::RollingUpdate),
            &observed(None, Some(&sts)),
            &Stage::Steady,
        );
        assert_eq!(step, Step::WriteConfigMap);
    }

    #[test]
    fn changed_config_map_content_is_rewritten() {
        let step = next_step(
            &desired(RestartStrategy::RollingUpdate),
            &observed(Some("maxmemory 50mb\n"), None),
            &Stage::Steady,
        );
        assert_eq!(step, Step::WriteConfigMap);
    }

    #[test]
    fn missing_statefulset_is_created() {
        let step = next_step(
            &desired(RestartStrategy::Recreate),
            &observed(Some(TEXT), None),
            &Stage::Steady,
        );
        assert_eq!(step, Step::CreateStatefulSet);
    }

    #[test]
    fn hash_mismatch_restarts_by_strategy() {
        let sts = live("old", true);
        let rolling = next_step(
            &desired(RestartStrategy::RollingUpdate),
            &observed(Some(TEXT), Some(&sts)),
            &Stage::Steady,
        );
        let recreate = next_step(
            &desired(RestartStrategy::Recreate),
            &observed(Some(TEXT), Some(&sts)),
            &Stage::Steady,
        );
        assert_eq!(rolling, Step::RollOut);
        assert_eq!(recreate, Step::DeleteForRecreate);
    }

    #[test]
    fn requested_restart_with_matching_hash_still_restarts() {
        let sts = live("new", true);
        let mut want = desired(RestartStrategy::RollingUpdate);
        want.restart_requested = true;
        let step = next_step(&want, &observed(Some(TEXT), Some(&sts)), &Stage::Steady);
        assert_eq!(step, Step::RollOut);
    }

    #[test]
    fn recreate_waits_for_statefulset_and_pods_to_go() {
        let sts = live("old", true);
        let want = desired(RestartStrategy::Recreate);
        let mut deleting = sts.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let still_there = next_step(
            &want,
            &observed(Some(TEXT), Some(&deleting)),
            &Stage::AwaitingDeletion,
        );
        let pods_left = Observed {
            config_text: Some(TEXT),
            statefulset: None,
            pods: 1,
        };
        let gone = Observed {
            pods: 0,
            ..pods_left
        };
        assert_eq!(still_there, Step::AwaitDeletion);
        assert_eq!(
            next_step(&want, &pods_left, &Stage::AwaitingDeletion),
            Step::AwaitDeletion
        );
        assert_eq!(
            next_step(&want, &gone, &Stage::AwaitingDeletion),
            Step::CreateStatefulSet
        );
    }

    #[test]
    fn a_statefulset_being_deleted_is_awaited_in_any_stage() {
        let mut sts = live("old", true);
        sts.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let want = desired(RestartStrategy::Recreate);
        let obs = observed(Some(TEXT), Some(&sts));
        assert_eq!(next_step(&want, &obs, &Stage::Steady), Step::AwaitDeletion);
        assert_eq!(
            next_step(&want, &obs, &Stage::AwaitingDeletion),
            Step::AwaitDeletion
        );
    }

    #[test]
    fn a_statefulset_recreated_by_someone_else_mid_recreate_is_deleted_again() {
        let sts = live("old", true);
        let want = desired(RestartStrategy::Recreate);
        let step = next_step(
            &want,
            &observed(Some(TEXT), Some(&sts)),
            &Stage::AwaitingDeletion,
        );
        assert_eq!(step, Step::DeleteForRecreate);
    }

    #[test]
    fn converged_rollout_is_idle_and_unfinished_one_is_awaited() {
        let want = desired(RestartStrategy::RollingUpdate);
        let done = live("new", true);
        let rolling = live("new", false);
        assert_eq!(
            next_step(&want, &observed(Some(TEXT), Some(&done)), &Stage::Steady),
            Step::Idle
        );
        assert_eq!(
            next_step(
                &want,
                &observed(Some(TEXT), Some(&rolling)),
                &Stage::RollingOut
            ),
            Step::AwaitRollout
        );
    }

    #[test]
    fn spec_change_without_config_change_applies_without_restart() {
        let sts = live("new", true);
        let mut want = desired(RestartStrategy::Recreate);
        want.spec_changed = true;
        let step = next_step(&want, &observed(Some(TEXT), Some(&sts)), &Stage::Steady);
        assert_eq!(step, Step::ApplyStatefulSet);
    }

    #[test]
    fn rollout_is_incomplete_until_the_controller_observes_the_generation() {
        let mut sts = live("new", true);
        sts.metadata.generation = Some(3);
        assert!(!rollout_complete(&sts));
    }

    fn pod(name: &str, hash: &str, last_exit: Option<i32>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.annotations =
            Some([(CONFIG_HASH_ANNOTATION.to_owned(), hash.to_owned())].into());
        pod.status = Some(PodStatus {
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
        pod
    }

    #[test]
    fn a_crash_counts_only_for_pods_running_the_given_config() {
        let pods = [
            pod("r-0", "old", Some(1)),
            pod("r-1", "new", None),
            pod("r-2", "new", Some(1)),
        ];
        assert_eq!(
            crashed_pod(&pods, "new"),
            Some(Crash {
                pod: "r-2".into(),
                exit_code: 1
            })
        );
        assert_eq!(crashed_pod(&pods[..2], "new"), None);
    }

    #[test]
    fn a_clean_exit_is_not_a_crash() {
        assert_eq!(crashed_pod(&[pod("r-0", "new", Some(0))], "new"), None);
    }
}
