//! The status an instance's caches and its actor's memory call for: phase, conditions, and
//! the restart record and count carried over from the stored status.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::live::LiveMemory;
use super::memory::{Applied, LastStep, Reported};
use super::observe::Observed;
use super::target::{HALTED_REASON, Plan, Target};
use crate::config::render::short_hash;
use crate::config::validate::Violation;
use crate::crd::{ConfigUpdate, RedisInstanceStatus, RolloutRecord};
use crate::decide::rollout_complete;
use crate::resources::config_hash_of;
use crate::status::{ConditionValue, condition, phase, ready_condition, set_condition};

/// What a person reads in the condition and the Event.
pub(super) fn refusal_message(violations: &[Violation], running_hash: Option<&str>) -> String {
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

/// What of the actor's memory a status is derived from, beside the caches: read, never
/// changed, so a status can be derived in the middle of a write that changes other groups.
pub(super) struct StatusMemory<'a> {
    /// The config Redis refused, a halted rollout, the last healthy spec.
    pub target: &'a Target,
    /// A live config refused, and the one the pods were last seen running.
    pub live: &'a LiveMemory,
    /// The ACL file's fingerprint the pods were brought in line with.
    pub acl_applied: Option<&'a str>,
    /// What `spec.paused` holds back, and whether a restart waits to settle.
    pub last_step: &'a LastStep,
    /// The StatefulSet's generation after this actor's last write of it.
    pub applied: &'a Applied,
    /// An overdue restart, and an API refusal of this generation's objects.
    pub reported: &'a Reported,
    /// How long the spec must be unchanged before a following restart (for the message).
    pub settle: Duration,
}

/// The status the caches and the actor's memory call for; the restart record and count are
/// carried over from the stored status (only the perform step changes them).
pub(super) fn derive_status(
    memory: &StatusMemory<'_>,
    seen: &Observed,
    plan: Option<&Plan>,
) -> RedisInstanceStatus {
    let stored = seen.instance.status.as_ref();
    derive_status_with(memory, seen, plan, stored.and_then(|s| s.rollout.clone()))
}

/// [`derive_status`] with `rollout` as the restart in flight (the one about to be written).
pub(super) fn derive_status_with(
    memory: &StatusMemory<'_>,
    seen: &Observed,
    plan: Option<&Plan>,
    rollout: Option<RolloutRecord>,
) -> RedisInstanceStatus {
    let current = &seen.instance;
    let violations = crate::config::violations(current);
    let mut status = current.status.clone().unwrap_or_default();
    status.rollout = rollout;
    if status.replication.is_none() && crate::resources::replicated(current) {
        // From here on the instance is replicated for good (see `resources::unconverted`).
        status.replication = Some(crate::crd::ReplicationStatus::default());
    }
    let generation = current.metadata.generation;
    let now = Time(Timestamp::now());
    let sts = seen.statefulset.as_deref();
    let ready = sts
        .and_then(|s| s.status.as_ref()?.ready_replicas)
        .unwrap_or(0);
    let wanted = plan.map_or(current.spec.replicas, |p| p.instance.spec.replicas);
    let rejection = memory.target.rejection();
    let live_refusal = memory
        .live
        .refused
        .as_ref()
        .filter(|_| plan.is_some_and(|p| memory.live.refuses(p)))
        .map(|(_, message)| message.clone());
    let config_valid = violations.is_empty() && rejection.is_none() && live_refusal.is_none();
    let record = status.rollout.clone();
    status.observed_generation = generation;
    status.acl_hash = match crate::auth::enabled(current) {
        true => memory.acl_applied.map(str::to_owned).or(status.acl_hash),
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
        && seen
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
    status.rejected_config_hash = rejection.map(|r| r.spec_hash.clone());
    if let Some(healthy) = memory.target.healthy_spec() {
        status.healthy_spec = Some(healthy);
    }
    status.valid_spec = memory.target.valid_spec(current);
    let live_mode = plan.is_some_and(|p| p.instance.spec.config_update == ConfigUpdate::Live);
    status.live_config_hash = match live_mode {
        true => memory.live.verified.clone().or(status.live_config_hash),
        false => None,
    };
    status.refused_live_config_hash = memory
        .live
        .refused
        .as_ref()
        .filter(|_| live_refusal.is_some())
        .map(|(hash, _)| hash.clone());
    status.pending_change = memory.last_step.pending.clone();
    if memory.applied.statefulset_generation.is_some() {
        status.stateful_set_generation = memory.applied.statefulset_generation;
    }
    let halted = memory
        .target
        .halted()
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
        ConditionValue::new(condition::CONFIG_VALID, false, r.reason, r.message.clone())
    } else if let Some(message) = live_refusal.filter(|_| violations.is_empty()) {
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
    set_condition(&mut status, validity, generation, &now);
    set_condition(
        &mut status,
        ready_condition(ready, wanted),
        generation,
        &now,
    );
    let api_refusal = memory
        .reported
        .api_refusal
        .as_ref()
        .filter(|(g, _)| *g == generation)
        .map(|(_, message)| message);
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
    let progressing = match (halted, api_refusal, &status.pending_change) {
        (Some(h), _, _) => ConditionValue::new(
            condition::PROGRESSING,
            false,
            HALTED_REASON,
            h.message.clone(),
        ),
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
        (None, None, None) if memory.last_step.settling => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "Settling",
            format!(
                "a restart to config {} waits until the spec has been unchanged for {}s",
                plan.map_or("", |p| short_hash(&p.template_hash)),
                memory.settle.as_secs()
            ),
        ),
        (None, None, None) => progressing(record.as_ref(), sts, memory.reported.overdue),
    };
    set_condition(&mut status, progressing, generation, &now);
    status
}

/// The Progressing condition when nothing holds the rollout: `overdue` is the start of the
/// restart whose overdue Event was told.
fn progressing(
    record: Option<&RolloutRecord>,
    sts: Option<&crate::resources::CachedStatefulSet>,
    overdue: Option<Timestamp>,
) -> ConditionValue {
    let stuck = record.is_some_and(|r| overdue == Some(r.started_at.0));
    match record {
        Some(r) if stuck => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "RolloutStuck",
            format!(
                "restart to config {} is taking longer than expected; check pod readiness and redis logs",
                short_hash(&r.config_hash)
            ),
        ),
        Some(r) => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "Restarting",
            format!(
                "{}: pods are being restarted with config {} ({})",
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
mod tests {
    use super::*;

    #[test]
    fn refusal_message_names_directive_and_running_config() {
        let violations = [Violation {
            directive: "maxmemory".into(),
            reason: "\"lots\" is not a memory size".into(),
        }];
        let message = refusal_message(&violations, Some("0123456789abcdef"));
        assert!(
            message.contains("maxmemory: \"lots\" is not a memory size"),
            "{message}"
        );
        assert!(message.contains("keep config 0123456789ab"), "{message}");
    }
}
