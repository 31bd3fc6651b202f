//! What the instance drives its pods to, and what a failing config leads to: which spec is
//! safe to run (the newest valid one, the last healthy one, or none: hold), when to look for a
//! failure, and whether a never-ready rollout rolls back or halts.
//!
//! Pure: the instance actor remembers the specs and when it saw each pod unready, and asks
//! these rules what they mean, and what a failure recorded in status says to an actor that
//! did not find it.

use super::{Crash, HALTED_REASON};
use crate::config::render::short_hash;
use crate::crd::{OnFailure, RedisInstanceStatus};
use crate::status::{condition, find_condition};

/// The spec the pods are driven to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveTo {
    /// The newest spec that passed validation.
    Valid,
    /// The last spec whose config completed a rollout: a rollback, or the stand-in for a refused
    /// spec at rest.
    Healthy,
    /// None is known to be safe: touch nothing.
    Hold,
}

/// What the actor knows of the specs, for [`drive_to`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Specs<'a> {
    /// The whole-file hash of the newest valid spec, if one is known.
    pub valid: Option<&'a str>,
    /// The whole-file hash of a config the pods failed on (refused, or never ready and rolled
    /// back).
    pub rejected: Option<&'a str>,
    /// A healthy spec is known (seen converging, or recorded in status).
    pub healthy: bool,
    /// A restart is recorded in status.
    pub rollout_recorded: bool,
}

/// Which spec to drive the pods to. A rejected config rolls back to the healthy spec. A refused
/// spec seen first by this actor (no valid one known) leaves the healthy one, but only at rest:
/// a restart in flight was driving to a spec no longer known, so everything holds.
pub fn drive_to(specs: &Specs) -> DriveTo {
    let healthy_or_hold = if specs.healthy {
        DriveTo::Healthy
    } else {
        DriveTo::Hold
    };
    match specs.valid {
        None if specs.rollout_recorded => DriveTo::Hold,
        None => healthy_or_hold,
        Some(valid) if specs.rejected == Some(valid) => healthy_or_hold,
        Some(_) => DriveTo::Valid,
    }
}

/// Whether to look for a failure of the valid config `hash` on the pods: not once one is known
/// (refused, never ready, or halted), and not for the config that last converged, which ran.
pub fn watch_for_failure(known_failure: bool, healthy_hash: Option<&str>, hash: &str) -> bool {
    !known_failure && healthy_hash != Some(hash)
}

/// What a failure found leads to, told once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The pods go back to the last config that ran.
    RolledBack,
    /// No further pods are replaced (`onFailure: Halt`, or nothing to roll back to).
    Halted,
}

impl Outcome {
    /// What the operator did, as logs and the failed-rollout metric name it.
    pub fn action(self) -> &'static str {
        match self {
            Outcome::RolledBack => "RolledBack",
            Outcome::Halted => "Halted",
        }
    }
}

impl From<Outcome> for Recalled {
    /// A failure with `outcome`, as status records it: told under the same reason.
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::RolledBack => Recalled::RolledBack,
            Outcome::Halted => Recalled::Halted,
        }
    }
}

/// Redis refused config `hash` in a pod (`crash`): the status and Event message. Such a config
/// always rolls back to `healthy`, the last one that ran, when there is one.
pub fn refusal(hash: &str, crash: &Crash, healthy: Option<&str>) -> String {
    let outcome = match healthy {
        Some(old) => format!(
            "rolling back to config {}, the last one that ran",
            short_hash(old)
        ),
        None => "no earlier config ran, so there is nothing to roll back to".to_owned(),
    };
    // `crashed_pod` returns only crashes whose message holds Redis's report.
    let said = crash.config_error().map_or_else(
        || "see the pod's log for Redis's reason".to_owned(),
        |e| format!("Redis said: {}: {}", e.line, e.reason),
    );
    format!(
        "redis-server refused config {} in pod {} (exit code {}); {said}; {outcome}. \
         Fix spec.config",
        short_hash(hash),
        crash.pod,
        crash.exit_code,
    )
}

/// Pod `pod` on config `hash` is still unready `deadline_secs` after it was seen: the rollout
/// halts under `onFailure: Halt`, and rolls back otherwise, unless no config ran before
/// (`healthy`), so there is nothing to go back to. Returns the outcome and its message.
pub fn never_ready_outcome(
    on_failure: OnFailure,
    healthy: Option<&str>,
    pod: &str,
    hash: &str,
    deadline_secs: u64,
) -> (Outcome, String) {
    let failed = format!(
        "pod {pod} is still not ready {deadline_secs}s after it was seen on config {}",
        short_hash(hash)
    );
    match (on_failure, healthy) {
        (OnFailure::Halt, _) => (
            Outcome::Halted,
            format!(
                "{failed}; rollout halted (onFailure: Halt): no further pods are replaced until spec.config changes"
            ),
        ),
        (OnFailure::Rollback, Some(old)) => (
            Outcome::RolledBack,
            format!(
                "{failed}; rolling back to config {}, the last one that ran. Fix spec.config",
                short_hash(old)
            ),
        ),
        (OnFailure::Rollback, None) => (
            Outcome::Halted,
            format!(
                "{failed}; rollout halted: no earlier config ran since the operator started, so there is nothing to roll back to. Fix spec.config"
            ),
        ),
    }
}

/// A failure recorded in status, by the Warning its finder told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recalled {
    /// Never ready, rolled back.
    RolledBack,
    /// Never ready, halted.
    Halted,
    /// Refused by Redis.
    Rejected,
}

impl Recalled {
    /// The reason of the Warning that told it.
    pub fn event_reason(self) -> &'static str {
        match self {
            Recalled::RolledBack => "RolloutRolledBack",
            Recalled::Halted => HALTED_REASON,
            Recalled::Rejected => "RedisRejectedConfig",
        }
    }
}

/// Condition reasons a rejection is recorded under, so a restarted operator recalls it.
pub const REJECTION_REASONS: [&str; 2] = ["RedisRejectedConfig", "NeverReady"];

/// A failure as status records it, read back by an actor that did not find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFailure {
    /// The condition's reason: `RedisRejectedConfig` or `NeverReady`.
    pub reason: &'static str,
    /// The condition's message.
    pub message: String,
    /// How its finder told it.
    pub told: Recalled,
}

/// The rejection status records of the config whose whole file hashes to `spec_hash`:
/// `rejectedConfigHash` names it; `ConfigValid` gives its reason and message while it still
/// tells one of [`REJECTION_REASONS`], else it reads as refused by Redis (`hash`, the
/// template hash, names it in the message).
pub fn recorded_rejection(
    status: Option<&RedisInstanceStatus>,
    hash: &str,
    spec_hash: &str,
) -> Option<RecordedFailure> {
    let status = status.filter(|s| s.rejected_config_hash.as_deref() == Some(spec_hash))?;
    let told = find_condition(status, condition::CONFIG_VALID).and_then(|c| {
        let reason = REJECTION_REASONS.into_iter().find(|r| *r == c.reason)?;
        Some((reason, c.message.clone()))
    });
    let (reason, message) = told.unwrap_or_else(|| {
        let message = format!(
            "redis-server refused config {}; fix spec.config",
            short_hash(hash)
        );
        (REJECTION_REASONS[0], message)
    });
    let told = match reason {
        "NeverReady" => Recalled::RolledBack,
        _ => Recalled::Rejected,
    };
    Some(RecordedFailure {
        reason,
        message,
        told,
    })
}

/// The halt status records on config `hash`: the restart to it still recorded, and
/// `Progressing` with reason `RolloutHalted`, whose message it keeps.
pub fn recorded_halt(status: Option<&RedisInstanceStatus>, hash: &str) -> Option<RecordedFailure> {
    let status = status.filter(|s| s.rollout.as_ref().is_some_and(|r| r.config_hash == hash))?;
    let halted =
        find_condition(status, condition::PROGRESSING).filter(|c| c.reason == HALTED_REASON)?;
    Some(RecordedFailure {
        reason: "NeverReady",
        message: halted.message.clone(),
        told: Recalled::Halted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pods_go_to_the_valid_spec_the_healthy_one_or_nowhere() {
        let specs = |valid, rejected, healthy, rollout_recorded| Specs {
            valid,
            rejected,
            healthy,
            rollout_recorded,
        };
        // (valid, rejected, healthy known, restart recorded, target)
        let table = [
            (Some("a"), None, false, false, DriveTo::Valid),
            (Some("a"), None, true, true, DriveTo::Valid),
            (Some("a"), Some("b"), true, false, DriveTo::Valid),
            (Some("a"), Some("a"), true, false, DriveTo::Healthy),
            (Some("a"), Some("a"), true, true, DriveTo::Healthy),
            (Some("a"), Some("a"), false, false, DriveTo::Hold),
            (None, None, true, false, DriveTo::Healthy),
            (None, None, true, true, DriveTo::Hold),
            (None, None, false, false, DriveTo::Hold),
            (None, Some("a"), true, false, DriveTo::Healthy),
        ];
        for (valid, rejected, healthy, recorded, want) in table {
            let got = drive_to(&specs(valid, rejected, healthy, recorded));
            assert_eq!(
                got, want,
                "valid {valid:?}, rejected {rejected:?}, healthy {healthy}, recorded {recorded}"
            );
        }
    }

    #[test]
    fn a_failure_is_looked_for_once_and_never_on_the_config_that_ran() {
        // (a failure known, the healthy config's hash, watched)
        let table = [
            (false, None, true),
            (false, Some("old"), true),
            (false, Some("new"), false),
            (true, None, false),
            (true, Some("old"), false),
        ];
        for (known, healthy, want) in table {
            assert_eq!(
                watch_for_failure(known, healthy, "new"),
                want,
                "{known} {healthy:?}"
            );
        }
    }

    #[test]
    fn a_never_ready_rollout_rolls_back_only_when_asked_and_something_ran() {
        let failed = "pod r-0 is still not ready 30s after it was seen on config new";
        // (onFailure, healthy config, outcome, message after the failure)
        let table = [
            (
                OnFailure::Rollback,
                Some("old"),
                Outcome::RolledBack,
                "; rolling back to config old, the last one that ran. Fix spec.config",
            ),
            (
                OnFailure::Rollback,
                None,
                Outcome::Halted,
                "; rollout halted: no earlier config ran since the operator started, so there is nothing to roll back to. Fix spec.config",
            ),
            (
                OnFailure::Halt,
                Some("old"),
                Outcome::Halted,
                "; rollout halted (onFailure: Halt): no further pods are replaced until spec.config changes",
            ),
            (
                OnFailure::Halt,
                None,
                Outcome::Halted,
                "; rollout halted (onFailure: Halt): no further pods are replaced until spec.config changes",
            ),
        ];
        for (on_failure, healthy, outcome, rest) in table {
            let got = never_ready_outcome(on_failure, healthy, "r-0", "new", 30);
            assert_eq!(
                got,
                (outcome, format!("{failed}{rest}")),
                "{on_failure:?} {healthy:?}"
            );
        }
    }

    #[test]
    fn a_refusal_says_what_redis_said_and_where_the_pods_go() {
        let said = super::super::pods_fixtures::config_error_output("foo bar", "Bad directive");
        let crash = |message: Option<&str>| Crash {
            pod: "r-1".into(),
            exit_code: 1,
            message: message.map(str::to_owned),
        };
        // (Redis's output, healthy config, message)
        let table = [
            (
                Some(said.as_str()),
                Some("old"),
                "redis-server refused config new in pod r-1 (exit code 1); Redis said: >>> 'foo bar': Bad directive; rolling back to config old, the last one that ran. Fix spec.config",
            ),
            (
                None,
                None,
                "redis-server refused config new in pod r-1 (exit code 1); see the pod's log for Redis's reason; no earlier config ran, so there is nothing to roll back to. Fix spec.config",
            ),
        ];
        for (output, healthy, want) in table {
            assert_eq!(refusal("new", &crash(output), healthy), want);
        }
    }

    /// A status with condition `type_` at `reason`, `rejectedConfigHash` and a restart to
    /// `rollout`, as a stopped operator left it.
    fn left(
        type_: &'static str,
        reason: &'static str,
        rejected: Option<&str>,
        rollout: Option<&str>,
    ) -> RedisInstanceStatus {
        let mut status = RedisInstanceStatus {
            rejected_config_hash: rejected.map(str::to_owned),
            rollout: rollout.map(crate::decide::pods_fixtures::record),
            ..RedisInstanceStatus::default()
        };
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            crate::decide::pods_fixtures::t(0),
        );
        let value = crate::status::ConditionValue::new(type_, false, reason, "as told");
        crate::status::set_condition(&mut status, value, Some(1), &now);
        status
    }

    #[test]
    fn a_failure_recorded_in_status_reads_back_as_its_finder_told_it() {
        let told = |reason, message: &str, told| {
            Some(RecordedFailure {
                reason,
                message: message.to_owned(),
                told,
            })
        };
        let valid = condition::CONFIG_VALID;
        // (row, status left, recorded rejection of (h, s))
        let rows = [
            ("nothing recorded", None, None),
            (
                "refused by Redis",
                Some(left(valid, "RedisRejectedConfig", Some("s"), None)),
                told("RedisRejectedConfig", "as told", Recalled::Rejected),
            ),
            (
                "never ready, rolled back",
                Some(left(valid, "NeverReady", Some("s"), None)),
                told("NeverReady", "as told", Recalled::RolledBack),
            ),
            (
                "another config's",
                Some(left(valid, "NeverReady", Some("other"), None)),
                None,
            ),
            (
                "its condition since replaced",
                Some(left(valid, "Valid", Some("s"), None)),
                told(
                    "RedisRejectedConfig",
                    "redis-server refused config h; fix spec.config",
                    Recalled::Rejected,
                ),
            ),
        ];
        for (row, status, want) in rows {
            assert_eq!(recorded_rejection(status.as_ref(), "h", "s"), want, "{row}");
        }
        let progressing = condition::PROGRESSING;
        let halted = left(progressing, HALTED_REASON, None, Some("h"));
        assert_eq!(
            recorded_halt(Some(&halted), "h"),
            told("NeverReady", "as told", Recalled::Halted)
        );
        assert_eq!(
            recorded_halt(Some(&halted), "other"),
            None,
            "a halt of another config is over"
        );
        let restarting = left(progressing, "Restarting", None, Some("h"));
        assert_eq!(recorded_halt(Some(&restarting), "h"), None);
        let finished = left(progressing, HALTED_REASON, None, None);
        assert_eq!(
            recorded_halt(Some(&finished), "h"),
            None,
            "no restart recorded"
        );
    }
}
