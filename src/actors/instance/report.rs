//! What the actor tells people: status and conditions, Warning Events, hash-comparison logs.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tracing::{debug, info, warn};

use super::{InstanceSnapshot, InstanceState};
use crate::actors::metrics::MetricsMsg;
use crate::config::render::short_hash;
use crate::config::validate::Violation;
use crate::crd::RedisInstance;
use crate::kube_io;
use crate::plan::Stage;
use crate::resources::config_hash_of;
use crate::status::{ConditionValue, condition, phase, ready_condition, set_condition};

/// "Config hash comparison" at info when it matters (a mismatch, or the first look after a
/// start); at debug on quiet resyncs so the log stays readable.
pub(super) fn log_hash_comparison(state: &InstanceState, live: Option<&str>, desired: &str) {
    let key = &state.args.key;
    let matches = live == Some(desired);
    if !matches || state.last_known_hash.is_none() {
        info!(namespace = %key.namespace, instance = %key.name, old_hash = live.unwrap_or(""),
            new_hash = desired, matches, "Config hash comparison");
    } else {
        debug!(namespace = %key.namespace, instance = %key.name, old_hash = live.unwrap_or(""),
            new_hash = desired, matches, "Config hash comparison");
    }
}

pub(super) async fn refuse(
    state: &mut InstanceState,
    current: &RedisInstance,
    violations: &[Violation],
) {
    if state.refused_generation == current.metadata.generation {
        return;
    }
    state.refused_generation = current.metadata.generation;
    let key = state.args.key.clone();
    let message = refusal_message(violations, state.last_known_hash.as_deref());
    warn!(namespace = %key.namespace, instance = %key.name, generation = current.metadata.generation,
        violations = %message, "config refused");
    report_refusal(state, current, "InvalidConfig", "Validate", message).await;
}

/// A refused config, by validation or by Redis itself: counted, and told as a Warning Event.
pub(super) async fn report_refusal(
    state: &InstanceState,
    instance: &RedisInstance,
    reason: &str,
    action: &str,
    message: String,
) {
    let key = state.args.key.clone();
    let _ = state
        .args
        .metrics
        .send_message(MetricsMsg::InvalidConfig(key));
    state
        .args
        .api
        .event(instance, true, reason, action, message)
        .await;
}

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

pub(super) async fn write_status(
    state: &mut InstanceState,
    current: &RedisInstance,
    sts: Option<&StatefulSet>,
    violations: &[Violation],
    rejection: Option<&str>,
) -> Result<(), kube_io::Error> {
    let mut status = state
        .last_status
        .clone()
        .or_else(|| current.status.clone())
        .unwrap_or_default();
    let generation = current.metadata.generation;
    let now = Time(Timestamp::now());
    let ready = sts
        .and_then(|s| s.status.as_ref()?.ready_replicas)
        .unwrap_or(0);
    let wanted = state
        .last_good
        .as_ref()
        .map_or(current.spec.replicas, |g| g.spec.replicas);
    let config_valid = violations.is_empty() && rejection.is_none();
    // Creating pods for the first time is Pending, not Restarting.
    let restarting = state.restart_began.is_some() || state.stage == Stage::AwaitingDeletion;
    status.observed_generation = generation;
    status.ready_replicas = ready;
    status.config_hash = sts.and_then(config_hash_of).map(str::to_owned);
    status.short_hash = status
        .config_hash
        .as_deref()
        .map(|h| short_hash(h).to_owned());
    status.rejected_config_hash = state.rejected.as_ref().map(|r| r.hash.clone());
    let current_phase = phase(config_valid, restarting, ready, wanted);
    status.phase = Some(current_phase);
    let validity = if let Some(message) = rejection.filter(|_| violations.is_empty()) {
        ConditionValue::new(
            condition::CONFIG_VALID,
            false,
            "RedisRejectedConfig",
            message,
        )
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
            refusal_message(violations, status.config_hash.as_deref()),
        )
    };
    set_condition(&mut status, validity, generation, &now);
    set_condition(
        &mut status,
        ready_condition(ready, wanted),
        generation,
        &now,
    );
    set_condition(&mut status, progressing(state), generation, &now);

    let key = state.args.key.clone();
    state.args.snapshots.insert(
        key.clone(),
        InstanceSnapshot {
            config_hash: status.config_hash.clone(),
            phase: current_phase.as_str(),
            ready_replicas: ready,
            replicas: wanted,
        },
    );
    let _ = state
        .args
        .metrics
        .send_message(MetricsMsg::ReadyReplicas(key, i64::from(ready)));
    // `current` was read from the API this pass, so this compares with what the server holds.
    if current.status.as_ref() != Some(&status) {
        state.args.api.write_status(current, &status).await?;
    }
    state.last_status = Some(status);
    Ok(())
}

pub(super) fn progressing(state: &InstanceState) -> ConditionValue {
    let overdue = state.deadline_reported;
    match (&state.stage, overdue) {
        (Stage::Steady, _) => ConditionValue::new(
            condition::PROGRESSING,
            false,
            "Converged",
            "all replicas run the desired config",
        ),
        (Stage::RollingOut, false) => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "RollingOut",
            "pods are being replaced with the new config",
        ),
        (Stage::RollingOut, true) => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "RolloutStuck",
            "the rollout is taking longer than expected; check pod readiness and redis logs",
        ),
        (Stage::AwaitingDeletion, false) => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "Recreating",
            "waiting for the old StatefulSet and its pods to be deleted",
        ),
        (Stage::AwaitingDeletion, true) => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "RecreateTimeout",
            "the old StatefulSet or its pods are still terminating; check their finalizers",
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
