//! The instance's decisions: from what is desired, what the caches show and the restart in
//! flight, the one next thing to do.
//!
//! Pure, so every situation a user can cause is a row in the tests below. The instance actor
//! performs the decision, and the next watch event brings the next one. A restart is recorded
//! in status before its first write, and edits that arrive while its pods are being replaced
//! wait for it to finish, so a burst of edits costs at most one more restart.

mod act;
mod auth;
mod checks;
mod failed_step;
mod failure;
pub mod live_check;
pub mod live_drift;
mod live_drift_mark;
mod network;
mod notice;
mod pods;
pub mod probes;
pub mod replication;
pub mod replication_act;
mod rest;
mod revisions;
pub mod routing;
mod specs;
mod status;
mod step;
mod tls;
mod wake;
mod write_mark;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::crd::{RestartReason, RestartStrategy, RolloutRecord};
use crate::live::live_only_change;
use crate::resources::{
    CachedConfigMap, CachedPod, CachedService, CachedStatefulSet, StatefulSetDrift, config_hash_of,
    config_map_of, restarted_at_of, service_drifted, statefulset_drift,
};

pub use act::{
    Act, Drift, Facts, FileWrite, Form, Replacement, Restart, ServiceTold, ServicesAct, Template,
    act, drift, drift_restarted, finished, services_act,
};
pub use auth::{
    AclWrite, AuthPlan, AuthReads, AuthStep, AuthView, CREATED_ELSEWHERE, Owned, Synced, UsersSync,
    auth_reads, auth_step, synced,
};
pub use checks::{Checks, ChecksView, checks};
pub use failed_step::{AfterFailure, StepFailure, after_failure};
pub use failure::{
    DriveTo, Outcome, REJECTION_REASONS, Recalled, RecordedFailure, Specs, drive_to,
    never_ready_outcome, recorded_halt, recorded_rejection, refusal, watch_for_failure,
};
pub use live_drift_mark::{LIVE_DRIFT_ANNOTATION, LiveDriftMark, owed_live_drift};
pub use network::{PolicyAct, PolicyStep, PolicyView, PolicyWrite, network_step};
pub use notice::{
    Notice, failure_retold, invalid_config, live_config_refused, record_fact, redis_rejected,
    replication_not_enabled, restart_overdue, restart_resumed, rollout_failed,
};
/// Pods and StatefulSets as the caches hold them, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) use pods::fixtures as pods_fixtures;
pub use pods::{
    CLOCK_SLACK, Crash, crashed_on, crashed_pod, is_ready, never_ready, pod_config_hash,
    rollout_complete, stuck_pods, unready_on,
};
pub use rest::{Rest, RestView, rest};
pub use revisions::{created_template, mount_for, next_template_names_revision, revision_fix};
pub use specs::{PodFindings, Rejection, SpecMemory, hashes_of};
pub use status::{
    Driven, FailedConfig, HALTED_REASON, StatusView, mismatches, pending_change, recorded_status,
    refusal_message, status,
};
pub use step::{
    Course, Drive, HoldAct, PAUSED_ANNOTATION, Planned, Replication, ReplicationInputs, Step,
    StepAct, Unplanned, Verdict, Wakes, hold_act, next_wake, overdue_to_tell, paused,
    refusal_to_tell, step, verdict,
};
pub use tls::{
    PodReload, Reload, Reloaded, SecretRead, SecretView, ServedView, client_problem, pod_reload,
    reload, reloaded, secret_missing_problem, secret_read, secret_read_due, tell_problem,
};
pub use wake::{pod_deadline_wake, progress_wake, settle_left, settle_window_left};
pub use write_mark::{
    APPLIED_LIVE_ANNOTATION, REPAIRED_ANNOTATION, RETELL_WITHIN, live_marked, owed_live_apply,
    owed_repairs,
};

/// What the instance should look like now.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    /// Rendered redis.conf.
    pub config_text: &'a str,
    /// Its hash.
    pub hash: &'a str,
    /// The user's chosen strategy for the next restart.
    pub strategy: RestartStrategy,
    /// The StatefulSet the operator builds for this spec (hash annotation included).
    pub statefulset: &'a StatefulSet,
    /// The Service clients write through (`<name>`).
    pub service: &'a Service,
    /// The headless Service that names the pods, the StatefulSet's `serviceName`.
    pub headless: &'a Service,
    /// `configUpdate: Live`: a change confined to live directives is applied in place.
    pub live: bool,
    /// The ConfigMap of this hash's revision, which its pods mount.
    pub revision: &'a str,
    /// The spec's `<name>-config`, which pods started before revisions existed mount.
    pub shared: &'a str,
}

/// What the caches show of the instance.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// `redis.conf` of the ConfigMap; `None` when the ConfigMap (or key) is missing.
    pub config_text: Option<&'a str>,
    /// The StatefulSet, if any.
    pub statefulset: Option<&'a CachedStatefulSet>,
    /// The Service `<name>`, if any.
    pub service: Option<&'a CachedService>,
    /// The headless Service, if any.
    pub headless: Option<&'a CachedService>,
    /// Pods of the instance, terminating ones included.
    pub pods: &'a [Arc<CachedPod>],
    /// The restart in flight, from status.
    pub rollout: Option<&'a RolloutRecord>,
    /// A restart just finished and the spec is still changing: a following restart waits
    /// until edits settle, so a storm of edits costs at most two restarts.
    pub settling: bool,
    /// The clock, for deadlines.
    pub now: Timestamp,
    /// Redis refused the desired live directives; they wait for a new spec.
    pub live_refused: bool,
    /// `spec.paused` (or its annotation): restarts and live applies are held.
    pub paused: bool,
    /// The restart in flight failed its deadline under `onFailure: Halt`: replace no more pods.
    pub halted: bool,
    /// A config the pods failed on (refused or never ready): its unready pods are replaced at
    /// once when rolling back, instead of waiting for another deadline.
    pub failed_hash: Option<&'a str>,
    /// A pod of the restart in flight has been seen unready past its readiness deadline (by
    /// the operator's clock; a Redis still loading its data is not counted).
    pub stalled: bool,
    /// Every revision ConfigMap of the instance.
    pub revisions: &'a [Arc<CachedConfigMap>],
    /// A replicated instance's primary pod, as status records it.
    pub primary: Option<&'a str>,
}

/// The next thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The Service `<name>` is missing or differs: apply it.
    ApplyService,
    /// The headless Service is missing or differs: apply it.
    ApplyHeadlessService,
    /// `<name>` is still the headless Service of earlier versions, and the StatefulSet no
    /// longer names it: delete it (`clusterIP` cannot change), so it comes back as ClusterIP.
    DeleteHeadlessNamedService,
    /// The StatefulSet names the headless Service of earlier versions (`serviceName` cannot
    /// change): delete it, orphaning its pods and claims, so it is created again naming the
    /// new one and adopts them as they run.
    MigrateStatefulSet,
    /// The ConfigMap is missing or its content differs: write it.
    WriteConfigMap,
    /// No StatefulSet: create it (the first time, or the second half of a Recreate).
    CreateStatefulSet,
    /// The pods must restart: record the restart in status (and count it) before acting.
    BeginRestart {
        /// Why.
        reason: RestartReason,
        /// The config hash stays the same, so the template needs a restart marker.
        marker: bool,
    },
    /// A newer config replaces the recorded target.
    Retarget {
        /// The pods already restarted for the old target, so this is a restart of its own.
        counted: bool,
    },
    /// RollingUpdate: apply the template with the recorded hash and marker.
    RollOut,
    /// Recreate: delete the StatefulSet, orphaning its pods and claims (the claims hold the
    /// data, whatever the retention policy).
    DeleteForRecreate,
    /// Recreate, once the StatefulSet is gone: delete its orphaned pods, so no pod of the old
    /// config outlives it and the new StatefulSet adopts none.
    DeleteOrphanedPods(Vec<String>),
    /// Fields outside the pod template differ (replicas, labels): apply without a restart.
    RepairStatefulSet,
    /// Pods the StatefulSet controller will not replace by itself: delete them.
    ReplacePods(Vec<String>),
    /// Every pod runs the recorded target and is ready: close the record.
    FinishRestart,
    /// Only live directives differ: `CONFIG SET` them on every pod, then write the ConfigMap.
    ApplyLive,
    /// The desired revision's ConfigMap is missing (or, under `Live`, behind a live change):
    /// write it, before any template names it.
    WriteRevision,
    /// Revision ConfigMaps nothing names at rest (or an immutable one someone replaced with
    /// other content): delete them, each only as it was seen.
    DeleteRevisions(Vec<String>),
    /// What would be done, held back by `spec.paused`.
    Held(Box<Decision>),
    /// Nothing to do until the caches change.
    Wait(Waiting),
    /// Converged.
    Idle,
}

/// What a `Wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The StatefulSet or its pods to be gone.
    Deletion,
    /// The StatefulSet controller to finish replacing pods.
    Rollout,
    /// Edits to settle before a restart that follows another.
    Settle,
    /// A spec whose live change Redis refused to be fixed.
    LiveRefused,
    /// A halted rollout (`onFailure: Halt`) to be fixed.
    Halted,
}

impl Decision {
    /// Fixed name, for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::ApplyService => "ApplyService",
            Decision::ApplyHeadlessService => "ApplyHeadlessService",
            Decision::DeleteHeadlessNamedService => "DeleteHeadlessNamedService",
            Decision::MigrateStatefulSet => "MigrateStatefulSet",
            Decision::WriteConfigMap => "WriteConfigMap",
            Decision::CreateStatefulSet => "CreateStatefulSet",
            Decision::BeginRestart { .. } => "BeginRestart",
            Decision::Retarget { .. } => "Retarget",
            Decision::RollOut => "RollOut",
            Decision::DeleteForRecreate => "DeleteForRecreate",
            Decision::DeleteOrphanedPods(_) => "DeleteOrphanedPods",
            Decision::RepairStatefulSet => "RepairStatefulSet",
            Decision::ReplacePods(_) => "ReplacePods",
            Decision::FinishRestart => "FinishRestart",
            Decision::ApplyLive => "ApplyLive",
            Decision::WriteRevision => "WriteRevision",
            Decision::DeleteRevisions(_) => "DeleteRevisions",
            Decision::Held(_) => "Held",
            Decision::Wait(_) => "Wait",
            Decision::Idle => "Idle",
        }
    }

    /// Whether performing it writes to the API.
    pub fn is_write(&self) -> bool {
        !matches!(self, Decision::Wait(_) | Decision::Idle | Decision::Held(_))
    }
}

/// How long a restart may take before it counts as failing.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From the recorded start to all pods ready.
    pub progress: Duration,
}

/// Decides the next step. The Service first (cheap, never restarts anything), then the
/// ConfigMaps before the StatefulSet, so every pod started after a template change reads the
/// new file.
pub fn decide(want: &Desired, seen: &Snapshot, deadlines: &Deadlines) -> Decision {
    let next = next_step(want, seen, deadlines);
    if seen.paused && changes_pods(&next, seen) {
        return Decision::Held(Box::new(next));
    }
    match revisions::before(next, want, seen) {
        // The primary's pod is among those a scale-down removes: it hands over first.
        Decision::RepairStatefulSet if primary_leaves(seen.primary, want) => {
            Decision::Wait(Waiting::Rollout)
        }
        next => next,
    }
}

/// Whether the ordinal of `primary` is at or past the desired replicas, so a scale-down to them
/// would remove the primary's pod.
fn primary_leaves(primary: Option<&str>, want: &Desired) -> bool {
    let replicas = want.statefulset.spec.replicas.unwrap_or(1);
    primary
        .and_then(|p| p.rsplit_once('-')?.1.parse::<i32>().ok())
        .is_some_and(|ordinal| ordinal >= replicas)
}

/// What `spec.paused` holds: anything that restarts a pod or changes its running config.
/// Creating a new instance and repairs that restart nothing go on.
fn changes_pods(decision: &Decision, seen: &Snapshot) -> bool {
    match decision {
        // Once a Recreate has removed the StatefulSet, writing the file and creating it again
        // go on: a pause must not leave the instance without pods.
        Decision::WriteConfigMap => seen.statefulset.is_some(),
        Decision::BeginRestart { .. }
        | Decision::Retarget { .. }
        | Decision::RollOut
        | Decision::DeleteForRecreate
        | Decision::MigrateStatefulSet
        | Decision::DeleteOrphanedPods(_)
        | Decision::ReplacePods(_)
        | Decision::ApplyLive => true,
        _ => false,
    }
}

fn next_step(want: &Desired, seen: &Snapshot, deadlines: &Deadlines) -> Decision {
    let step = service_step(
        want.service,
        want.headless,
        seen.service,
        seen.headless,
        seen.statefulset,
    );
    if let Some(step) = step {
        return step;
    }
    match seen.rollout {
        None => at_rest(want, seen),
        Some(record) => in_flight(want, seen, record, deadlines),
    }
}

/// What the two Services need, if anything: the headless one first, since the StatefulSet is
/// created naming it; `<name>`, when it is the headless Service of earlier versions, is
/// deleted only once the StatefulSet no longer names it, and then created as ClusterIP.
pub fn service_step(
    service: &Service,
    headless: &Service,
    live: Option<&CachedService>,
    live_headless: Option<&CachedService>,
    statefulset: Option<&CachedStatefulSet>,
) -> Option<Decision> {
    if live_headless.is_none_or(|svc| service_drifted(headless, svc)) {
        return Some(Decision::ApplyHeadlessService);
    }
    let Some(live) = live else {
        return Some(Decision::ApplyService);
    };
    if live.metadata.deletion_timestamp.is_some() {
        return Some(Decision::Wait(Waiting::Deletion));
    }
    if live.headless() {
        let named = statefulset.is_some_and(|sts| sts.spec.service_name() == live.metadata.name);
        return (!named).then_some(Decision::DeleteHeadlessNamedService);
    }
    service_drifted(service, live).then_some(Decision::ApplyService)
}

/// The StatefulSet names another Service than the desired one.
fn names_another_service(want: &Desired, sts: &CachedStatefulSet) -> bool {
    sts.spec.service_name() != want.statefulset.spec.service_name
}

fn deleting(sts: &CachedStatefulSet) -> bool {
    sts.metadata.deletion_timestamp.is_some()
}

/// No restart in flight: compare the spec's three rules, then drift.
fn at_rest(want: &Desired, seen: &Snapshot) -> Decision {
    let Some(sts) = seen.statefulset else {
        return if seen.config_text != Some(want.config_text) {
            Decision::WriteConfigMap
        } else {
            Decision::CreateStatefulSet
        };
    };
    if deleting(sts) {
        // Deleted by someone else: create it again once it is gone.
        return Decision::Wait(Waiting::Deletion);
    }
    let restart = |reason, marker| {
        if seen.settling {
            Decision::Wait(Waiting::Settle)
        } else {
            Decision::BeginRestart { reason, marker }
        }
    };
    if config_hash_of(sts) != Some(want.hash) {
        return restart(RestartReason::ConfigChanged, false);
    }
    // The shared ConfigMap is what pods started before revisions mount: they move at the next
    // restart. Another one (a `configUpdate` switch, a hand edit) is put right by a restart.
    if config_map_of(sts).is_some_and(|mount| mount != want.shared && mount != want.revision) {
        return restart(RestartReason::PodTemplateChanged, true);
    }
    let drift = statefulset_drift(want.statefulset, sts);
    if seen.config_text != Some(want.config_text) {
        let live_only = seen
            .config_text
            .is_some_and(|old| want.live && live_only_change(old, want.config_text).is_some());
        if !live_only {
            return restart(RestartReason::ConfigMapChanged, true);
        }
        // A repair or a template restart goes first, so a refused or pending live change
        // holds up nothing else; a restart carries the live change in its new file.
        return match drift {
            Some(StatefulSetDrift::Spec) => Decision::RepairStatefulSet,
            Some(StatefulSetDrift::Image) => restart(RestartReason::ImageChanged, true),
            Some(StatefulSetDrift::PodTemplate) => restart(RestartReason::PodTemplateChanged, true),
            None if seen.live_refused => Decision::Wait(Waiting::LiveRefused),
            None if !rollout_complete(sts) => Decision::Wait(Waiting::Rollout),
            None => Decision::ApplyLive,
        };
    }
    match drift {
        Some(StatefulSetDrift::Image) => restart(RestartReason::ImageChanged, true),
        Some(StatefulSetDrift::PodTemplate) => restart(RestartReason::PodTemplateChanged, true),
        Some(StatefulSetDrift::Spec) => Decision::RepairStatefulSet,
        // Last, when nothing else is in motion: the pods it adopts run what they should.
        None if rollout_complete(sts) && names_another_service(want, sts) => {
            Decision::MigrateStatefulSet
        }
        None if rollout_complete(sts) => Decision::Idle,
        None => Decision::Wait(Waiting::Rollout),
    }
}

/// The config hash and restart marker the pods left by a deleted StatefulSet run (pod 0's
/// first): a StatefulSet created again with them adopts the pods without restarting any.
pub fn adopted_template(pods: &[Arc<CachedPod>]) -> Option<(&str, Option<&str>)> {
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .find_map(|pod| {
            let marker = pod
                .annotations
                .get(crate::resources::RESTARTED_AT_ANNOTATION);
            Some((pod_config_hash(pod)?, marker))
        })
}

/// The template carries the record's hash and marker: the StatefulSet controller has the
/// restart in hand.
pub fn applied(record: &RolloutRecord, sts: &CachedStatefulSet) -> bool {
    !deleting(sts)
        && config_hash_of(sts) == Some(record.config_hash.as_str())
        && (record.restarted_at.is_none() || restarted_at_of(sts) == record.restarted_at.as_deref())
}

/// Past the progress deadline, counted from the recorded start.
pub fn overdue(record: &RolloutRecord, now: Timestamp, deadline: Duration) -> bool {
    let started = record.started_at.0;
    now.duration_since(started).unsigned_abs() > deadline && now > started
}

fn in_flight(
    want: &Desired,
    seen: &Snapshot,
    record: &RolloutRecord,
    deadlines: &Deadlines,
) -> Decision {
    let newer = want.hash != record.config_hash;
    if let Some(sts) = seen.statefulset.filter(|sts| applied(record, sts)) {
        if rollout_complete(sts) {
            return Decision::FinishRestart;
        }
        let late = overdue(record, seen.now, deadlines.progress);
        // Any crash or a pod unready past its deadline: the fix of a config that cannot start
        // need not wait for the rollout's own deadline, nor for the config to be judged (it
        // is judged only while the spec holds it).
        let failing = late
            || seen.failed_hash == Some(record.config_hash.as_str())
            || seen.stalled
            || crashed_on(seen.pods, &record.config_hash);
        if newer && failing {
            // Waiting for a rollout that cannot finish would block the fix forever.
            return Decision::Retarget { counted: true };
        }
        if seen.halted {
            return Decision::Wait(Waiting::Halted);
        }
        let stuck = stuck_pods(sts, seen.pods, late, seen.failed_hash);
        if !stuck.is_empty() {
            return Decision::ReplacePods(stuck);
        }
        // A newer config waits here, and goes into one restart after this one.
        return Decision::Wait(Waiting::Rollout);
    }
    // No pod has started on the target yet, so the target may still move to the newest config.
    if newer {
        return Decision::Retarget { counted: false };
    }
    let config_differs = seen.config_text != Some(want.config_text);
    match (record.strategy, seen.statefulset) {
        (_, Some(sts)) if deleting(sts) => Decision::Wait(Waiting::Deletion),
        (RestartStrategy::Recreate, Some(_)) => Decision::DeleteForRecreate,
        (RestartStrategy::Recreate, None) if !seen.pods.is_empty() => {
            // The StatefulSet was deleted with its pods orphaned: they go before a new one
            // comes, so no pod of the old config outlives the restart.
            let left: Vec<String> = seen
                .pods
                .iter()
                .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                .map(|pod| pod.name_any())
                .collect();
            if left.is_empty() {
                Decision::Wait(Waiting::Deletion)
            } else {
                Decision::DeleteOrphanedPods(left)
            }
        }
        _ if config_differs => Decision::WriteConfigMap,
        (_, None) => Decision::CreateStatefulSet,
        (RestartStrategy::RollingUpdate, Some(_)) => Decision::RollOut,
    }
}

/// The record a restart starts with, or moves to when retargeted: the marker is needed only
/// when the template hash alone would not change.
pub fn record_for(
    want: &Desired,
    live: Option<&CachedStatefulSet>,
    reason: RestartReason,
    marker: bool,
    now: Timestamp,
) -> RolloutRecord {
    let same_hash = live.and_then(config_hash_of) == Some(want.hash);
    RolloutRecord {
        config_hash: want.hash.to_owned(),
        restarted_at: (marker || same_hash).then(|| now.to_string()),
        strategy: want.strategy,
        reason,
        started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
    }
}

#[cfg(test)]
mod tests;
