//! Builds the status the operator reports: phase and conditions a person can act on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{Phase, RedisInstanceStatus};

/// Condition types the operator maintains.
pub mod condition {
    /// All replicas run and answer commands.
    pub const READY: &str = "Ready";
    /// `spec.config` passed validation.
    pub const CONFIG_VALID: &str = "ConfigValid";
    /// A create or restart is in flight.
    pub const PROGRESSING: &str = "Progressing";
}

/// One condition's desired value; turned into a `Condition` by [`set_condition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionValue {
    /// Condition type, one of [`condition`].
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase, fixed string.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl ConditionValue {
    /// A condition value.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Sets a condition, keeping `lastTransitionTime` when its status did not flip, so the time
/// says when it last changed rather than when the operator last looked.
pub fn set_condition(
    status: &mut RedisInstanceStatus,
    value: ConditionValue,
    generation: Option<i64>,
    now: &Time,
) {
    let new_status = if value.status { "True" } else { "False" };
    let previous = status
        .conditions
        .iter()
        .position(|c| c.type_ == value.type_);
    let last_transition_time = match previous.map(|i| &status.conditions[i]) {
        Some(old) if old.status == new_status => old.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: value.type_.to_owned(),
        status: new_status.to_owned(),
        reason: value.reason.to_owned(),
        message: value.message,
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => status.conditions[i] = condition,
        None => status.conditions.push(condition),
    }
}

/// Whether the instance already ran under some operator version: its status records the config
/// its pods run.
pub fn has_run(instance: &crate::crd::RedisInstance) -> bool {
    instance
        .status
        .as_ref()
        .is_some_and(|s| s.config_hash.is_some())
}

/// The condition of a type, if set.
pub fn find_condition<'a>(status: &'a RedisInstanceStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// Phase from readiness and whether a restart is in flight.
pub fn phase(config_valid: bool, restarting: bool, ready: i32, wanted: i32) -> Phase {
    if !config_valid {
        Phase::Invalid
    } else if restarting {
        Phase::Restarting
    } else if ready >= wanted {
        Phase::Running
    } else if ready == 0 {
        Phase::Pending
    } else {
        Phase::Degraded
    }
}

/// The Ready condition for `ready` of `wanted` replicas.
pub fn ready_condition(ready: i32, wanted: i32) -> ConditionValue {
    if ready >= wanted {
        ConditionValue::new(
            condition::READY,
            true,
            "AllReplicasReady",
            format!("{ready}/{wanted} replicas ready"),
        )
    } else {
        ConditionValue::new(
            condition::READY,
            false,
            "ReplicasNotReady",
            format!("{ready}/{wanted} replicas ready; see the pods' events and redis logs"),
        )
    }
}

/// Statuses as a restarted operator finds them, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// `status` with its condition `type_` false for `reason`, set at its observed generation.
    pub fn failing(
        mut status: RedisInstanceStatus,
        type_: &'static str,
        reason: &'static str,
        message: &str,
    ) -> RedisInstanceStatus {
        let generation = status.observed_generation;
        let at = Time(crate::decide::pods_fixtures::t(0));
        set_condition(
            &mut status,
            ConditionValue::new(type_, false, reason, message),
            generation,
            &at,
        );
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut status = RedisInstanceStatus::default();
        set_condition(&mut status, ready_condition(0, 1), Some(1), &time(100));
        set_condition(&mut status, ready_condition(0, 1), Some(1), &time(200));
        assert_eq!(
            find_condition(&status, "Ready")
                .unwrap()
                .last_transition_time,
            time(100)
        );
        set_condition(&mut status, ready_condition(1, 1), Some(1), &time(300));
        let ready = find_condition(&status, "Ready").unwrap();
        assert_eq!(ready.last_transition_time, time(300));
        assert_eq!(ready.status, "True");
        assert_eq!(status.conditions.len(), 1);
    }

    #[test]
    fn phase_prefers_invalid_then_restarting() {
        assert_eq!(phase(false, true, 1, 1), Phase::Invalid);
        assert_eq!(phase(true, true, 1, 1), Phase::Restarting);
        assert_eq!(phase(true, false, 1, 1), Phase::Running);
        assert_eq!(phase(true, false, 0, 1), Phase::Pending);
        assert_eq!(phase(true, false, 1, 3), Phase::Degraded);
    }
}
