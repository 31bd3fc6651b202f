//! The status an instance's objects and its actor's findings call for: phase, conditions and
//! hashes, with the restart record carried over as given (only a restart's write changes it).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{Decision, rollout_complete};
use crate::config::render::{config_hash, short_hash};
use crate::config::validate::Violation;
use crate::crd::{RedisInstance, RedisInstanceStatus, RestartStrategy, RolloutRecord};
use crate::resources::{CachedPod, CachedStatefulSet, config_hash_of};
use crate::status::{ConditionValue, condition, phase, ready_condition, set_condition};

/// The `Progressing` reason a halted rollout is recorded under, so a restarted operator
/// recalls it.
pub const HALTED_REASON: &str = "RolloutHalted";

/// What a person reads in the condition and the Event of a refused spec.
pub fn refusal_message(violations: &[Violation], running_hash: Option<&str>) -> String {
    let list = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    match running_hash {
        Some(hash) => format!(
            "spec.config refused: {list}. Nothing was changed; the pods keep config {}",
            short_hash(hash)
        ),
        None => format!("spec.config refused: {list}. Nothing was created"),
    }
}

/// A config found failing on the pods, as status reports it.
#[derive(Debug, Clone, Copy)]
pub struct FailedConfig<'a> {
    /// The template hash the failed pods carry.
    pub hash: &'a str,
    /// The hash of its whole file.
    pub spec_hash: &'a str,
    /// The condition's reason: `RedisRejectedConfig` or `NeverReady`.
    pub reason: &'static str,
    /// The condition's message.
    pub message: &'a str,
}

/// The spec the actor drives to, as status reads it.
#[derive(Debug, Clone, Copy)]
pub struct Driven<'a> {
    /// Its replicas.
    pub replicas: i32,
    /// The template hash its pods carry.
    pub template_hash: &'a str,
    /// It sets live directives under `configUpdate: Live`.
    pub live: bool,
    /// The hash of its live directives.
    pub live_hash: &'a str,
}

/// Everything a status is derived from: the objects as observed and what the actor found,
/// wrote and told, as plain facts.
#[derive(Debug, Clone)]
pub struct StatusView<'a> {
    /// The instance, with its stored status.
    pub instance: &'a RedisInstance,
    /// Its StatefulSet and pods.
    pub statefulset: Option<&'a CachedStatefulSet>,
    pub pods: &'a [Arc<CachedPod>],
    /// The spec driven to; `None` when none is known to be safe to run.
    pub driven: Option<Driven<'a>>,
    /// The restart in flight, as it is to be written.
    pub rollout: Option<RolloutRecord>,
    /// The replication step's record, written over the stored one (the conditions read it);
    /// `None`: the stored one is kept.
    pub replication: Option<crate::crd::ReplicationStatus>,
    /// A config Redis refused, or whose pods never became ready.
    pub rejection: Option<FailedConfig<'a>>,
    /// A live config Redis refused (the hash of its live directives) and its message;
    /// reported only while the driven spec sets it.
    pub live_refusal: Option<(&'a str, &'a str)>,
    /// The rollout the actor halted (`onFailure: Halt`).
    pub halted: Option<FailedConfig<'a>>,
    /// The ACL file's fingerprint the pods were brought in line with.
    pub acl_applied: Option<&'a str>,
    /// The last spec seen converged, and the newest valid one while the current is refused,
    /// as recorded (credentials left out).
    pub healthy_spec: Option<String>,
    pub valid_spec: Option<String>,
    /// The live hash every pod was last seen running.
    pub live_verified: Option<&'a str>,
    /// The change a pause holds back.
    pub pending: Option<&'a str>,
    /// The StatefulSet's generation after the actor's last write of it.
    pub applied_generation: Option<i64>,
    /// A restart waits for edits to settle, for this long at least since the last edit.
    pub settling: Option<Duration>,
    /// The API server refused the objects of a generation, with its message; reported only
    /// for the instance's current generation.
    pub api_refusal: Option<(Option<i64>, &'a str)>,
    /// The start of the restart whose overdue Event was told.
    pub overdue: Option<Timestamp>,
    /// When status is written.
    pub now: Time,
}

/// What a held decision would do, in words, for `status.pendingChange`: the directives that
/// differ between the file the pods mount (`running`) and the `rendered` one, and the config it
/// goes to.
pub fn pending_change(
    held: &Decision,
    running: Option<&str>,
    rendered: &str,
    template_hash: &str,
    strategy: RestartStrategy,
) -> String {
    let names: Vec<String> = running
        .map(|old| crate::live::changed_directives(old, rendered))
        .into_iter()
        .flatten()
        .collect();
    let changed = match names.is_empty() {
        true => String::new(),
        false => format!(" ({})", names.join(", ")),
    };
    match held {
        Decision::ApplyLive => format!(
            "live apply{changed} of config {}",
            short_hash(&config_hash(rendered))
        ),
        Decision::BeginRestart { reason, .. } => format!(
            "restart ({}, {}){changed} to config {}",
            reason.as_str(),
            strategy.as_str(),
            short_hash(template_hash)
        ),
        other => format!(
            "{}{changed} toward config {}",
            other.name(),
            short_hash(template_hash)
        ),
    }
}

impl<'a> StatusView<'a> {
    /// What the objects alone show, with nothing found, written or told: all `diff` knows,
    /// having no actor's memory.
    pub fn of_objects(
        instance: &'a RedisInstance,
        statefulset: Option<&'a CachedStatefulSet>,
        pods: &'a [Arc<CachedPod>],
        now: Time,
    ) -> Self {
        StatusView {
            instance,
            statefulset,
            pods,
            driven: None,
            rollout: instance.status.as_ref().and_then(|s| s.rollout.clone()),
            replication: None,
            rejection: None,
            live_refusal: None,
            halted: None,
            acl_applied: None,
            healthy_spec: None,
            valid_spec: None,
            live_verified: None,
            pending: None,
            applied_generation: None,
            settling: None,
            api_refusal: None,
            overdue: None,
            now,
        }
    }
}

/// The status a restart's record write stores: what `view` calls for with `record` as the
/// restart in flight (`None`: the restart is over), one more restart counted when `counted`.
/// An act that writes a record neither holds a change nor waits to settle, whatever the step
/// before it did.
pub fn recorded_status(
    view: &StatusView<'_>,
    record: Option<RolloutRecord>,
    counted: bool,
) -> RedisInstanceStatus {
    let started = record.as_ref().map(|r| r.started_at.clone());
    let view = StatusView {
        rollout: record,
        pending: None,
        settling: None,
        ..view.clone()
    };
    let mut status = status(&view);
    if counted {
        status.restarts += 1;
        status.last_restart_time = started;
    }
    status
}

/// Which of the three differences from the desired config the caches show, in the order of
/// the metrics' kinds: no `<name>-config`, a `<name>-config` whose file differs, a template
/// whose hash differs. Only while a StatefulSet runs: a new instance's missing ConfigMap is a
/// creation, not a mismatch.
pub fn mismatches(
    statefulset: Option<&CachedStatefulSet>,
    config_text: Option<&str>,
    want_text: &str,
    want_hash: &str,
) -> [bool; 3] {
    let running = statefulset.is_some();
    [
        running && config_text.is_none(),
        running && config_text.is_some_and(|t| t != want_text),
        statefulset
            .and_then(config_hash_of)
            .is_some_and(|h| h != want_hash),
    ]
}

/// The status `view` calls for.
pub fn status(view: &StatusView<'_>) -> RedisInstanceStatus {
    let current = view.instance;
    let violations = crate::config::violations(current);
    let mut status = current.status.clone().unwrap_or_default();
    status.rollout = view.rollout.clone();
    if let Some(record) = &view.replication {
        status.replication = Some(record.clone());
    }
    if status.replication.is_none() && crate::resources::replicated(current) {
        // From here on the instance is replicated for good (see `resources::unconverted`).
        status.replication = Some(crate::crd::ReplicationStatus::default());
    }
    let generation = current.metadata.generation;
    let sts = view.statefulset;
    let ready = sts
        .and_then(|s| s.status.as_ref()?.ready_replicas)
        .unwrap_or(0);
    let wanted = view.driven.map_or(current.spec.replicas, |d| d.replicas);
    let rejection = view.rejection;
    let live_refusal = view
        .live_refusal
        .filter(|(hash, _)| view.driven.is_some_and(|d| d.live_hash == *hash));
    let config_valid = violations.is_empty() && rejection.is_none() && live_refusal.is_none();
    let record = status.rollout.clone();
    status.observed_generation = generation;
    status.acl_hash = match crate::auth::enabled(current) {
        true => view.acl_applied.map(str::to_owned).or(status.acl_hash),
        false => None,
    };
    // A StatefulSet deleted with its pods orphaned and no restart recorded (a migration to the
    // new headless Service, or by hand) still has every pod running: status says so until a
    // new one has adopted them and reported, or an unconverted instance that briefly seemed
    // never to have run would be converted without consent.
    let unreported = sts.is_none_or(|s| {
        s.status
            .as_ref()
            .and_then(|st| st.observed_generation)
            .is_none()
    });
    let orphaned = unreported
        && record.is_none()
        && view
            .pods
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_none());
    let ready = if orphaned {
        status.ready_replicas
    } else {
        status.config_hash = sts.and_then(config_hash_of).map(str::to_owned);
        ready
    };
    status.ready_replicas = ready;
    status.short_hash = status
        .config_hash
        .as_deref()
        .map(|h| short_hash(h).to_owned());
    status.rejected_config_hash = rejection.map(|r| r.spec_hash.to_owned());
    if let Some(healthy) = &view.healthy_spec {
        status.healthy_spec = Some(healthy.clone());
    }
    status.valid_spec = view.valid_spec.clone();
    status.live_config_hash = match view.driven.is_some_and(|d| d.live) {
        true => view
            .live_verified
            .map(str::to_owned)
            .or(status.live_config_hash),
        false => None,
    };
    status.refused_live_config_hash = live_refusal.map(|(hash, _)| hash.to_owned());
    status.pending_change = view.pending.map(str::to_owned);
    if view.applied_generation.is_some() {
        status.stateful_set_generation = view.applied_generation;
    }
    let halted = view
        .halted
        .filter(|h| record.as_ref().is_some_and(|r| r.config_hash == h.hash));
    let current_phase = if status.pending_change.is_some() {
        crate::crd::Phase::Paused
    } else if halted.is_some() {
        crate::crd::Phase::Halted
    } else {
        phase(config_valid, record.is_some(), ready, wanted)
    };
    status.phase = Some(current_phase);
    let validity = if let Some(r) = rejection.filter(|_| violations.is_empty()) {
        ConditionValue::new(condition::CONFIG_VALID, false, r.reason, r.message)
    } else if let Some((_, message)) = live_refusal.filter(|_| violations.is_empty()) {
        ConditionValue::new(condition::CONFIG_VALID, false, "LiveConfigRefused", message)
    } else if config_valid {
        ConditionValue::new(
            condition::CONFIG_VALID,
            true,
            "Valid",
            "spec.config passed validation",
        )
    } else {
        ConditionValue::new(
            condition::CONFIG_VALID,
            false,
            "InvalidConfig",
            refusal_message(&violations, status.config_hash.as_deref()),
        )
    };
    let now = &view.now;
    set_condition(&mut status, validity, generation, now);
    set_condition(&mut status, ready_condition(ready, wanted), generation, now);
    // A change that waits (a pause, the settle rule) is still in progress: reporting it as
    // converged would let `kubectl wait` and CI gates pass while the pods run the old config.
    let switchover_failed = status
        .replication
        .as_ref()
        .and_then(|r| r.switchover_failed.as_ref())
        .filter(|f| {
            record
                .as_ref()
                .is_some_and(|r| r.config_hash == f.config_hash)
        });
    let api_refusal = view
        .api_refusal
        .filter(|(refused, _)| *refused == generation)
        .map(|(_, message)| message);
    let progressing = match (halted, api_refusal, &status.pending_change) {
        (Some(h), _, _) => {
            ConditionValue::new(condition::PROGRESSING, false, HALTED_REASON, h.message)
        }
        _ if switchover_failed.is_some() => ConditionValue::new(
            condition::PROGRESSING,
            false,
            "SwitchoverFailed",
            switchover_failed
                .map(|f| f.message.clone())
                .unwrap_or_default(),
        ),
        (None, Some(message), _) => {
            ConditionValue::new(condition::PROGRESSING, false, "ApiRefused", message)
        }
        (None, None, Some(pending)) => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "Paused",
            format!("spec.paused holds: {pending}"),
        ),
        (None, None, None) if view.settling.is_some() => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "Settling",
            format!(
                "a restart to config {} waits until the spec has been unchanged for {}s",
                view.driven.map_or("", |d| short_hash(d.template_hash)),
                view.settling.unwrap_or_default().as_secs()
            ),
        ),
        (None, None, None) => {
            let record = record.as_ref();
            // A newer config waits for the restart in flight to finish (or to be replaced, if
            // it fails): the condition names it, so it is not taken for the one rolling out.
            let waiting = view
                .driven
                .map(|d| d.template_hash)
                .filter(|hash| record.is_some_and(|r| r.config_hash != *hash));
            progressing(record, sts, view.overdue, waiting)
        }
    };
    set_condition(&mut status, progressing, generation, now);
    status
}

/// The Progressing condition when nothing holds the rollout: `overdue` is the start of the
/// restart whose overdue Event was told, `waiting` the config of a newer spec waiting behind
/// the restart in flight.
fn progressing(
    record: Option<&RolloutRecord>,
    sts: Option<&CachedStatefulSet>,
    overdue: Option<Timestamp>,
    waiting: Option<&str>,
) -> ConditionValue {
    let stuck = record.is_some_and(|r| overdue == Some(r.started_at.0));
    let then = waiting.map_or_else(String::new, |hash| {
        format!("; config {} waits for it", short_hash(hash))
    });
    match record {
        Some(r) if stuck => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "RolloutStuck",
            format!(
                "restart to config {} is taking longer than expected; check pod readiness and redis logs{then}",
                short_hash(&r.config_hash)
            ),
        ),
        Some(r) => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "Restarting",
            format!(
                "{}: pods are being restarted with config {} ({}){then}",
                r.reason.as_str(),
                short_hash(&r.config_hash),
                r.strategy.as_str()
            ),
        ),
        None if sts.is_some_and(|s| !rollout_complete(s)) => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "RollingOut",
            "the StatefulSet controller is starting pods",
        ),
        None => ConditionValue::new(
            condition::PROGRESSING,
            false,
            "Converged",
            "all replicas run the desired config",
        ),
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
