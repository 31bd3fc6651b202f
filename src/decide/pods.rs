//! What the StatefulSet's status and its pods say about a rollout.

use std::sync::Arc;

use kube::ResourceExt;

use crate::resources::{
    CONFIG_HASH_ANNOTATION, CachedPod, CachedStatefulSet, READY_CONDITION, REVISION_LABEL,
};

/// The controller has seen the latest template, every pod runs it, and all are ready.
pub fn rollout_complete(sts: &CachedStatefulSet) -> bool {
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
pub fn generation_seen(sts: &CachedStatefulSet) -> bool {
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
    /// The run's termination message: with `terminationMessagePolicy: FallbackToLogsOnError`,
    /// the end of what redis-server printed.
    pub message: Option<String>,
}

impl Crash {
    /// What Redis said when it refused its config file, if that is why it exited.
    pub fn config_error(&self) -> Option<ConfigError> {
        self.message.as_deref().and_then(config_error)
    }
}

/// The header redis-server prints before it exits on a config file it cannot load, as in
/// `*** FATAL CONFIG FILE ERROR (Redis 7.2.4) ***`.
const CONFIG_ERROR_HEADER: &str = "*** FATAL CONFIG FILE ERROR";
/// The start of the line that quotes the offending directive: `>>> 'maxmemory 10x'`.
const QUOTED_LINE_PREFIX: &str = ">>> ";
/// Longest quoted directive and reason kept: an Event's note holds at most 1 KiB.
const QUOTED_LINE_MAX: usize = 200;
const REASON_MAX: usize = 400;

/// Redis's account of a config file line it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The line as Redis quotes it, `>>> 'appendonly maybe'` (cut after `QUOTED_LINE_MAX`
    /// bytes).
    pub line: String,
    /// Why, as Redis put it: `argument must be 'yes' or 'no'` (cut after `REASON_MAX` bytes).
    pub reason: String,
}

/// Reads a termination message: a config file error when it holds Redis's fatal config error
/// header followed by the `>>>` line and the reason; anything else (no message, a signal, an
/// out-of-memory kill, some other exit) is not.
pub fn config_error(message: &str) -> Option<ConfigError> {
    // The last report: a message may hold the end of earlier output too.
    let (_, report) = message.rsplit_once(CONFIG_ERROR_HEADER)?;
    let mut lines = report
        .lines()
        .skip(1)
        .map(str::trim)
        .skip_while(|l| !l.starts_with(QUOTED_LINE_PREFIX));
    let line = lines.next()?;
    let reason = lines.find(|l| !l.is_empty())?;
    Some(ConfigError {
        line: crate::text::cut(line, QUOTED_LINE_MAX),
        reason: crate::text::cut(reason, REASON_MAX),
    })
}

/// The config hash a pod was started with (copied from the template annotation).
pub fn pod_config_hash(pod: &CachedPod) -> Option<&str> {
    pod.annotations.get(CONFIG_HASH_ANNOTATION)
}

/// Whether the pod passes its readiness probe.
pub fn is_ready(pod: &CachedPod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == READY_CONDITION && c.status == "True")
        })
}

/// The pod's failed runs its status still shows: the one that just ended (`state`), else the
/// one before the current run (`lastState`), per container.
fn crashes_of(pod: &CachedPod) -> impl Iterator<Item = Crash> + '_ {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    statuses.iter().flat_map(move |c| {
        let now = c.state.as_ref().and_then(|s| s.terminated.as_ref());
        let before = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        [now, before]
            .into_iter()
            .flatten()
            .filter(|t| t.exit_code != 0)
            .map(|t| Crash {
                pod: pod.name_any(),
                exit_code: t.exit_code,
                message: t.message.clone(),
            })
    })
}

fn crash_of(pod: &CachedPod) -> Option<Crash> {
    crashes_of(pod).next()
}

/// The first pod running config `hash` whose Redis exited because it refused that config file
/// (a directive this build refuses, say) even though it passed validation. Other crashes (a
/// signal, an out-of-memory kill, an exit without Redis's config error report) are no verdict
/// on the config: the kubelet restarts the container and the rollout waits.
pub fn crashed_pod(pods: &[Arc<CachedPod>], hash: &str) -> Option<Crash> {
    pods.iter()
        .filter(|p| pod_config_hash(p) == Some(hash))
        .flat_map(|pod| crashes_of(pod))
        .find(|crash| crash.config_error().is_some())
}

/// A pod started on config `hash` has exited with an error, whatever the reason: a restart to
/// that config is not going well, so a newer config need not wait for it.
pub fn crashed_on(pods: &[Arc<CachedPod>], hash: &str) -> bool {
    pods.iter()
        .filter(|p| pod_config_hash(p) == Some(hash))
        .any(|pod| crash_of(pod).is_some())
}

/// Pods the StatefulSet controller will never replace by itself: on an older revision, not
/// ready, and either crashing or past the deadline. The controller waits for every pod to be
/// ready before it moves on, so such a pod blocks every later fix.
///
/// Pods on `failed_hash`, a config being rolled back from, are stuck as soon as they are
/// unready: waiting for them is what failed.
pub fn stuck_pods(
    sts: &CachedStatefulSet,
    pods: &[Arc<CachedPod>],
    past_deadline: bool,
    failed_hash: Option<&str>,
) -> Vec<String> {
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
        .filter(|p| p.labels.get(REVISION_LABEL).is_some_and(|r| r != update))
        .filter(|p| {
            let failed = failed_hash.is_some_and(|h| pod_config_hash(p) == Some(h));
            !is_ready(p) && (past_deadline || failed || crash_of(p).is_some())
        })
        .map(|p| p.name_any())
        .collect()
}

/// How far a pod's creation time may fall before a restart's start and still be the restart's.
/// Both are the API server's clock (the operator reads it from the server's responses, see
/// [`crate::cluster_clock`]) to within a second or two; the rest is room for the servers of a
/// control plane whose clocks differ. A pod this much older than the restart is from before it.
pub const CLOCK_SLACK: std::time::Duration = std::time::Duration::from_secs(120);

/// The first pod on config `hash`, created for the restart that began at `since`, that has been
/// unready for longer than `deadline` (by `unready_for`, measured on the operator's own
/// monotonic clock, so a skewed wall clock on either side changes nothing): the config does
/// not serve.
pub fn never_ready(
    pods: &[Arc<CachedPod>],
    hash: &str,
    since: k8s_openapi::jiff::Timestamp,
    deadline: std::time::Duration,
    unready_for: impl Fn(&CachedPod) -> Option<std::time::Duration>,
) -> Option<String> {
    unready_on(pods, hash, since)
        .find(|p| unready_for(p).is_some_and(|d| d > deadline))
        .map(|p| p.name_any())
}

/// Pods on config `hash`, not ready and not being deleted, created for the restart that began
/// at `since` (within [`CLOCK_SLACK`]).
pub fn unready_on<'a>(
    pods: &'a [Arc<CachedPod>],
    hash: &'a str,
    since: k8s_openapi::jiff::Timestamp,
) -> impl Iterator<Item = &'a Arc<CachedPod>> + 'a {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(move |p| pod_config_hash(p) == Some(hash) && !is_ready(p))
        .filter(move |p| {
            p.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|created| {
                    created.0.as_second() + CLOCK_SLACK.as_secs() as i64 >= since.as_second()
                })
        })
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Pods and StatefulSets as the caches would hold them.
    use super::*;
    use crate::resources::{
        CachedContainerState, CachedContainerStatus, CachedPodCondition, CachedPodStatus, Labels,
    };
    use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
    use k8s_openapi::api::core::v1::ContainerStateTerminated;

    /// `secs` after a fixed instant, by the API server's clock.
    pub fn t(secs: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// A rolling restart onto `hash`, recorded as begun at [`t`]`(0)`.
    pub fn record(hash: &str) -> crate::crd::RolloutRecord {
        crate::crd::RolloutRecord {
            config_hash: hash.to_owned(),
            restarted_at: None,
            strategy: crate::crd::RestartStrategy::RollingUpdate,
            reason: crate::crd::RestartReason::ConfigChanged,
            started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(0)),
        }
    }

    /// What redis-server prints when it refuses `line` of its config file for `reason`.
    pub fn config_error_output(line: &str, reason: &str) -> String {
        format!(
            "\n*** FATAL CONFIG FILE ERROR (Redis 7.2.4) ***\n\
             Reading the configuration file, at line 3\n>>> '{line}'\n{reason}\n"
        )
    }

    pub fn pod(
        name: &str,
        hash: &str,
        revision: &str,
        ready: bool,
        last_exit: Option<i32>,
    ) -> Arc<CachedPod> {
        // A crash in these fixtures is Redis refusing its config file; `crashed` makes others.
        let refused = config_error_output("maxmemory 10x", "argument must be a memory value");
        let message = last_exit
            .filter(|code| *code != 0)
            .map(|_| refused.as_str());
        crashed(name, hash, revision, ready, last_exit, message)
    }

    /// Like [`pod`], with `message` as the last run's termination message.
    pub fn crashed(
        name: &str,
        hash: &str,
        revision: &str,
        ready: bool,
        last_exit: Option<i32>,
        message: Option<&str>,
    ) -> Arc<CachedPod> {
        let mut pod = CachedPod::default();
        pod.metadata.name = Some(name.into());
        pod.annotations =
            Labels::from(&[(CONFIG_HASH_ANNOTATION.to_owned(), hash.to_owned())].into());
        pod.labels = Labels::from(&[(REVISION_LABEL.to_owned(), revision.to_owned())].into());
        pod.status = Some(CachedPodStatus {
            conditions: Some(vec![CachedPodCondition {
                type_: READY_CONDITION.into(),
                status: if ready { "True" } else { "False" }.into(),
            }]),
            container_statuses: Some(vec![CachedContainerStatus {
                last_state: last_exit.map(|code| CachedContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        message: message.map(str::to_owned),
                        ..ContainerStateTerminated::default()
                    }),
                }),
                ..CachedContainerStatus::default()
            }]),
            ..CachedPodStatus::default()
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
    fn redis_config_file_errors_are_told_from_other_exits() {
        let bad_directive =
            config_error_output("foo bar", "Bad directive or wrong number of arguments");
        let yes_no = config_error_output("appendonly maybe", "argument must be 'yes' or 'no'");
        let long_value = "x".repeat(300);
        let long_line = config_error_output(
            &format!("maxmemory {long_value}"),
            "argument must be a memory value",
        );
        let long_reason = format!("{}...", "y".repeat(REASON_MAX));
        let cut_line = format!("'maxmemory {}...", &long_value[..QUOTED_LINE_MAX - 15]);
        // (case, termination message, what Redis said: the quoted line and the reason)
        type Said<'a> = Option<(&'a str, &'a str)>;
        let table: [(&str, String, Said); 12] = [
            (
                "an unknown directive",
                bad_directive.clone(),
                Some((
                    ">>> 'foo bar'",
                    "Bad directive or wrong number of arguments",
                )),
            ),
            (
                "a bad argument",
                yes_no.clone(),
                Some((">>> 'appendonly maybe'", "argument must be 'yes' or 'no'")),
            ),
            (
                "earlier output before the report",
                format!("some earlier line\n{yes_no}"),
                Some((">>> 'appendonly maybe'", "argument must be 'yes' or 'no'")),
            ),
            (
                "CRLF and padding are trimmed",
                yes_no.replace('\n', "  \r\n"),
                Some((">>> 'appendonly maybe'", "argument must be 'yes' or 'no'")),
            ),
            (
                "a long quoted line is cut",
                long_line,
                Some((
                    &format!(">>> {cut_line}"),
                    "argument must be a memory value",
                )),
            ),
            (
                "a long reason is cut",
                config_error_output("foo bar", &"y".repeat(500)),
                Some((">>> 'foo bar'", &long_reason)),
            ),
            ("no message", String::new(), None),
            (
                "the header alone",
                "*** FATAL CONFIG FILE ERROR (Redis 7.2.4) ***\n".into(),
                None,
            ),
            (
                "no reason after the quoted line",
                "*** FATAL CONFIG FILE ERROR (Redis 7.2.4) ***\n>>> 'foo bar'\n".into(),
                None,
            ),
            (
                "the quoted line without the header",
                ">>> 'foo bar'\nBad directive or wrong number of arguments\n".into(),
                None,
            ),
            (
                "the log of a Redis that ran, then was killed",
                "1:M 01 Jan 2026 00:00:00.000 * Ready to accept connections tcp\n".into(),
                None,
            ),
            (
                "a Redis crash report",
                "=== REDIS BUG REPORT START: Cut & paste starting from here ===\n\
                 1:M 01 Jan 2026 # Redis 7.2.4 crashed by signal: 11\n"
                    .into(),
                None,
            ),
        ];
        for (case, message, want) in table {
            let got = config_error(&message);
            let got = got.as_ref().map(|e| (e.line.as_str(), e.reason.as_str()));
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn only_a_config_file_error_under_the_given_config_is_a_rejection() {
        let refused = config_error_output("foo bar", "Bad directive or wrong number of arguments");
        let refused = Some(refused.as_str());
        let ran = Some("1:M * Ready to accept connections tcp\n");
        // The run that just ended, rather than the one before the current run.
        let ended_now = |pod: Arc<CachedPod>| {
            let mut pod = (*pod).clone();
            let status = pod.status.as_mut().unwrap();
            let container = &mut status.container_statuses.as_mut().unwrap()[0];
            container.state = container.last_state.take();
            Arc::new(pod)
        };
        // (case, pods, the rejection found: pod and exit code)
        type Row = (
            &'static str,
            Vec<Arc<CachedPod>>,
            Option<(&'static str, i32)>,
        );
        let table: Vec<Row> = vec![
            (
                "Redis refused the new config",
                vec![
                    crashed("r-0", "old", "rev-a", true, None, None),
                    crashed("r-1", "new", "rev-b", false, Some(1), refused),
                ],
                Some(("r-1", 1)),
            ),
            (
                "the refusal shows in the state of the run that just ended",
                vec![ended_now(crashed(
                    "r-0",
                    "new",
                    "rev-b",
                    false,
                    Some(1),
                    refused,
                ))],
                Some(("r-0", 1)),
            ),
            (
                "Redis refused another config",
                vec![crashed("r-0", "old", "rev-a", false, Some(1), refused)],
                None,
            ),
            (
                "an exit without a message (policy File)",
                vec![crashed("r-0", "new", "rev-b", false, Some(1), None)],
                None,
            ),
            (
                "killed by SIGKILL after it ran",
                vec![crashed("r-0", "new", "rev-b", false, Some(137), ran)],
                None,
            ),
            (
                "an out-of-memory kill",
                vec![crashed("r-0", "new", "rev-b", false, Some(137), Some(""))],
                None,
            ),
            (
                "a clean exit",
                vec![crashed("r-0", "new", "rev-b", true, Some(0), refused)],
                None,
            ),
            (
                "a one-off crash on one pod, a refusal on another",
                vec![
                    crashed("r-0", "new", "rev-b", true, Some(139), ran),
                    crashed("r-1", "new", "rev-b", false, Some(1), refused),
                ],
                Some(("r-1", 1)),
            ),
            ("no pods", vec![], None),
        ];
        for (case, pods, want) in table {
            let got = crashed_pod(&pods, "new");
            assert_eq!(
                got.as_ref().map(|c| (c.pod.as_str(), c.exit_code)),
                want,
                "{case}"
            );
            if let Some(crash) = got {
                assert_eq!(crash.message.as_deref(), refused, "{case}");
                assert!(crash.config_error().is_some(), "{case}");
            }
        }
    }

    #[test]
    fn only_unready_pods_on_an_older_revision_are_stuck() {
        let sts = with_status(statefulset(&instance(&[]), "new", None), false);
        let sts = CachedStatefulSet::from(&sts);
        let pods = [
            pod("r-0", "old", "rev-a", false, None),
            pod("r-1", "old", "rev-a", true, None),
            pod("r-2", "new", "rev-b", false, None),
            // Any crash, config error or not: the controller will not replace it.
            crashed("r-3", "old", "rev-a", false, Some(137), None),
        ];
        assert_eq!(stuck_pods(&sts, &pods, true, None), ["r-0", "r-3"]);
        assert_eq!(
            stuck_pods(&sts, &pods, false, None),
            ["r-3"],
            "a crash needs no deadline"
        );
    }

    #[test]
    fn rollout_is_incomplete_until_the_controller_observes_the_generation() {
        let sts = with_status(statefulset(&instance(&[]), "new", None), true);
        let mut sts = CachedStatefulSet::from(&sts);
        assert!(rollout_complete(&sts));
        sts.metadata.generation = Some(3);
        assert!(!rollout_complete(&sts));
        assert!(
            stuck_pods(
                &sts,
                &[pod("r-0", "old", "rev-0", false, Some(1))],
                true,
                None
            )
            .is_empty()
        );
    }
}
