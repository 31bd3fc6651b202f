//! What the actor tells people: status and conditions, Events, and the spec's log lines.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, info, warn};

use super::observe::Observed;
use super::target::{HALTED_REASON, Outcome, Plan, Rejection};
use super::{InstanceSnapshot, InstanceState};
use crate::actors::metrics::{MISMATCH_KINDS, MetricsMsg};
use crate::config::render::short_hash;
use crate::config::validate::Violation;
use crate::crd::{ConfigUpdate, RedisInstance, RedisInstanceStatus, RolloutRecord};
use crate::decide::{Crash, Decision, Desired, rollout_complete};
use crate::events::{Occurrence, Told};
use crate::kube_io;
use crate::resources::config_hash_of;
use crate::status::{ConditionValue, condition, phase, ready_condition, set_condition};

/// "Config hash comparison" at info when a restart is decided, at debug otherwise, so an idle
/// fleet logs nothing.
pub(super) fn log_hash_comparison(seen: &Observed, want: &Desired, decision: &Decision) {
    let Some(live) = seen.statefulset.as_deref().and_then(config_hash_of) else {
        return;
    };
    let matches = live == want.hash;
    if matches!(
        decision,
        Decision::BeginRestart { .. } | Decision::Retarget { .. }
    ) {
        info!(
            old_hash = live,
            new_hash = want.hash,
            matches,
            "Config hash comparison"
        );
    } else {
        debug!(
            old_hash = live,
            new_hash = want.hash,
            matches,
            "Config hash comparison"
        );
    }
}

/// Counts each kind of difference from the desired config when it first appears, while a
/// StatefulSet runs (a new instance's missing ConfigMap is a creation, not a mismatch).
pub(super) fn note_mismatches(state: &mut InstanceState, seen: &Observed, want: &Desired) {
    let running = seen.statefulset.as_deref();
    let live_hash = running.and_then(config_hash_of);
    let now = [
        running.is_some() && seen.config_text.is_none(),
        running.is_some()
            && seen
                .config_text
                .as_deref()
                .is_some_and(|t| t != want.config_text),
        live_hash.is_some_and(|h| h != want.hash),
    ];
    for ((kind, is), was) in MISMATCH_KINDS.into_iter().zip(now).zip(state.mismatches) {
        if is && !was {
            let key = state.args.key.clone();
            let _ = state
                .args
                .metrics
                .send_message(MetricsMsg::HashMismatch { key, kind });
        }
    }
    state.mismatches = now;
}

/// The instance as the cache holds it, for Events about failed steps.
pub(super) fn cached_instance(state: &InstanceState) -> Option<Arc<RedisInstance>> {
    let key = &state.args.key;
    state
        .args
        .stores
        .instances
        .get(&ObjectRef::new(&key.name).within(&key.namespace))
}

/// Redis itself refused a config: told once, as a Warning Event.
pub(super) async fn rejected(
    state: &InstanceState,
    instance: &RedisInstance,
    rejection: &Rejection,
    crash: &Crash,
) {
    warn!(pod = %crash.pod, exit_code = crash.exit_code,
        hash = %rejection.hash, "Redis rejected the config");
    let _ = state.args.metrics.send_message(MetricsMsg::RolloutFailed {
        key: state.args.key.clone(),
        action: "RolledBack",
    });
    report_refusal(
        state,
        instance,
        "RedisRejectedConfig",
        "Restart",
        rejection.message.clone(),
        failure_fact(instance, rejection),
    )
    .await;
}

/// A restart's pod never became ready: told once, as a Warning Event, and counted.
pub(super) async fn rollout_failed(
    state: &InstanceState,
    instance: &RedisInstance,
    failure: &Rejection,
    outcome: Outcome,
) {
    let action = match outcome {
        Outcome::RolledBack => "RolledBack",
        Outcome::Halted => "Halted",
    };
    warn!(hash = %failure.hash, action, detail = %failure.message, "rollout failed");
    let _ = state.args.metrics.send_message(MetricsMsg::RolloutFailed {
        key: state.args.key.clone(),
        action,
    });
    let reason = match outcome {
        Outcome::RolledBack => "RolloutRolledBack",
        Outcome::Halted => "RolloutHalted",
    };
    let fact = failure_fact(instance, failure);
    state.args.api.tell(
        instance,
        warning(reason, "Restart", failure.message.clone(), fact),
    );
}

/// What a held decision would do, in words, for `status.pendingChange`.
pub(super) fn pending_change(held: &Decision, seen: &Observed, plan: &Plan) -> String {
    let directives = |old: Option<&str>| {
        let names: Vec<String> = match old {
            Some(old) => crate::live::changed_directives(old, &plan.rendered.text)
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        }
    };
    let changed = directives(seen.config_text.as_deref());
    match held {
        Decision::ApplyLive => format!(
            "live apply{changed} of config {}",
            plan.rendered.short_hash()
        ),
        Decision::BeginRestart { reason, .. } => format!(
            "restart ({}, {}){changed} to config {}",
            reason.as_str(),
            plan.instance.spec.restart_strategy.as_str(),
            short_hash(&plan.template_hash)
        ),
        other => format!(
            "{}{changed} toward config {}",
            other.name(),
            short_hash(&plan.template_hash)
        ),
    }
}

/// The restart in flight passed its progress deadline: told once per restart.
pub(super) async fn overdue(
    state: &mut InstanceState,
    instance: &RedisInstance,
    record: &RolloutRecord,
) {
    if state.overdue_reported == Some(record.started_at.0) {
        return;
    }
    state.overdue_reported = Some(record.started_at.0);
    let note = format!(
        "restart to config {} not finished {}s after it began at {}; check the pods' readiness and redis logs",
        short_hash(&record.config_hash),
        state.args.timings.progress_deadline.as_secs(),
        record.started_at.0
    );
    warn!(detail = %note, "restart overdue");
    let fact = crate::decide::record_fact(record);
    state
        .args
        .api
        .tell(instance, warning("RolloutStuck", "Restart", note, fact));
}

/// Something the operator owns was changed by hand and has been put back.
pub(super) async fn drift_repaired(
    state: &InstanceState,
    instance: &RedisInstance,
    drift: &crate::decide::Drift,
) {
    let key = &state.args.key;
    let kind = drift.kind;
    let _ = state.args.metrics.send_message(MetricsMsg::DriftRepaired {
        key: key.clone(),
        kind,
    });
    info!(kind, "drift repaired");
    tell(state, instance, &drift.event).await;
}

/// Posts `event` on the instance.
pub(super) async fn tell(
    state: &InstanceState,
    instance: &RedisInstance,
    event: &crate::decide::Notice,
) {
    state.args.api.tell(instance, event.told());
}

pub(super) async fn refuse(
    state: &mut InstanceState,
    current: &RedisInstance,
    violations: &[Violation],
) {
    let told = current.status.as_ref().is_some_and(|s| {
        s.observed_generation == current.metadata.generation
            && crate::status::find_condition(s, condition::CONFIG_VALID)
                .is_some_and(|c| c.reason == "InvalidConfig")
    });
    if told || state.refused_generation == current.metadata.generation {
        // Already reported, by this actor or (per the stored status) before a restart.
        return;
    }
    state.refused_generation = current.metadata.generation;
    let message = refusal_message(violations, state.last_known_hash.as_deref());
    warn!(generation = current.metadata.generation,
        violations = %message, "config refused");
    let fact = format!(
        "refused generation {}",
        current.metadata.generation.unwrap_or_default()
    );
    report_refusal(state, current, "InvalidConfig", "Validate", message, fact).await;
}

/// A refused config, by validation or by Redis itself: counted, and told as a Warning Event.
/// `fact` names what was refused, so the Event is told once whoever tells it.
pub(super) async fn report_refusal(
    state: &InstanceState,
    instance: &RedisInstance,
    reason: &str,
    action: &str,
    message: String,
    fact: String,
) {
    let key = state.args.key.clone();
    let _ = state
        .args
        .metrics
        .send_message(MetricsMsg::InvalidConfig(key));
    state
        .args
        .api
        .tell(instance, warning(reason, action, message, fact));
}

/// A Warning telling the recorded fact `fact`.
fn warning(reason: &str, action: &str, note: String, fact: String) -> Told {
    Told {
        warning: true,
        reason: reason.to_owned(),
        action: action.to_owned(),
        note,
        occurrence: Occurrence::Fact(fact),
    }
}

/// What identifies a config the pods failed on: status records it (`rejectedConfigHash`, the
/// condition's reason) for as long as the spec that holds it, so a restarted operator names
/// the same failure the same way.
fn failure_fact(instance: &RedisInstance, failure: &Rejection) -> String {
    format!(
        "{} {} generation {}",
        failure.reason,
        failure.spec_hash,
        instance.metadata.generation.unwrap_or_default()
    )
}

/// The Events a restart in flight was told with, told again by an actor that did not tell
/// them itself (a new leader, a respawned actor): an operator stopped between a write and its
/// Event then leaves none untold, and their names make a second telling a no-op.
pub(super) fn retell(state: &InstanceState, instance: &RedisInstance, record: &RolloutRecord) {
    let api = &state.args.api;
    api.tell_unless_told(instance, crate::decide::restart_resumed(record).told());
    if let Some((failure, recalled)) = state.target.recalled() {
        let reason = recalled.event_reason();
        let fact = failure_fact(instance, failure);
        api.tell_unless_told(
            instance,
            warning(reason, "Restart", failure.message.clone(), fact),
        );
    }
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

/// The status the caches and the actor's memory call for; the restart record and count are
/// carried over from the stored status (only the perform step changes them).
pub(super) fn derive_status(
    state: &InstanceState,
    seen: &Observed,
    plan: Option<&Plan>,
) -> RedisInstanceStatus {
    let stored = seen.instance.status.as_ref();
    derive_status_with(state, seen, plan, stored.and_then(|s| s.rollout.clone()))
}

/// [`derive_status`] with `rollout` as the restart in flight (the one about to be written).
pub(super) fn derive_status_with(
    state: &InstanceState,
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
    let rejection = state.target.rejection();
    let live_refusal = state
        .live
        .refused
        .as_ref()
        .filter(|_| plan.is_some_and(|p| state.live.refuses(p)))
        .map(|(_, message)| message.clone());
    let config_valid = violations.is_empty() && rejection.is_none() && live_refusal.is_none();
    let record = status.rollout.clone();
    status.observed_generation = generation;
    status.acl_hash = match crate::auth::enabled(current) {
        true => state.auth.applied.clone().or(status.acl_hash),
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
    if let Some(healthy) = state.target.healthy_spec() {
        status.healthy_spec = Some(healthy);
    }
    let live_mode = plan.is_some_and(|p| p.instance.spec.config_update == ConfigUpdate::Live);
    status.live_config_hash = match live_mode {
        true => state.live.verified.clone().or(status.live_config_hash),
        false => None,
    };
    status.refused_live_config_hash = state
        .live
        .refused
        .as_ref()
        .filter(|_| live_refusal.is_some())
        .map(|(hash, _)| hash.clone());
    status.pending_change = state.pending.clone();
    if state.statefulset_written.is_some() {
        status.stateful_set_generation = state.statefulset_written;
    }
    let halted = state
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
    let api_refusal = state
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
        (None, None, None) if state.settling => ConditionValue::new(
            condition::PROGRESSING,
            true,
            "Settling",
            format!(
                "a restart to config {} waits until the spec has been unchanged for {}s",
                plan.map_or("", |p| short_hash(&p.template_hash)),
                state.args.timings.settle.as_secs()
            ),
        ),
        (None, None, None) => progressing(record.as_ref(), sts, state),
    };
    set_condition(&mut status, progressing, generation, &now);
    status
}

/// Writes the derived status when it differs from the stored one, and updates the HTTP view.
/// Tells once that an instance which ran as several unrelated servers stays so until the user
/// agrees to turn it into one primary and its replicas.
pub(super) async fn unconverted(state: &InstanceState, instance: &RedisInstance) {
    let note = format!(
        "{} pods run as unrelated servers, each with its own data; annotate the instance with {}=true to make pod 0 the primary and the others its replicas (their own data is replaced by the primary's)",
        instance.spec.replicas,
        crate::resources::CONVERT_ANNOTATION
    );
    warn!("{note}");
    state
        .args
        .api
        .event(instance, true, "ReplicationNotEnabled", "Replicate", note)
        .await;
}

pub(super) async fn write_status(
    state: &mut InstanceState,
    seen: &Observed,
    plan: Option<&Plan>,
) -> Result<(), kube_io::Error> {
    let status = derive_status(state, seen, plan);
    store_status(state, seen, status).await
}

/// Publishes `status`: to the API only when it changed, so an idle instance writes nothing.
pub(super) async fn store_status(
    state: &mut InstanceState,
    seen: &Observed,
    status: RedisInstanceStatus,
) -> Result<(), kube_io::Error> {
    let key = state.args.key.clone();
    state.args.snapshots.insert(
        key.clone(),
        InstanceSnapshot {
            config_hash: status.config_hash.clone(),
            phase: status.phase.map_or("Pending", |p| p.as_str()),
            ready_replicas: status.ready_replicas,
            replicas: seen.instance.spec.replicas,
        },
    );
    let strategy = seen.instance.spec.restart_strategy.as_str();
    let _ = state.args.metrics.send_message(MetricsMsg::Observed {
        key,
        ready: status.ready_replicas,
        desired: seen.instance.spec.replicas,
        config_invalid: status.phase == Some(crate::crd::Phase::Invalid),
        mismatched: state.mismatches.iter().any(|m| *m),
        restarting: status.rollout.is_some(),
        strategy,
    });
    if seen.instance.status.as_ref() != Some(&status) {
        let stored = state.args.api.write_status(&seen.instance, &status).await?;
        state.written.instance = Some(Arc::new(stored));
    }
    Ok(())
}

fn progressing(
    record: Option<&RolloutRecord>,
    sts: Option<&crate::resources::CachedStatefulSet>,
    state: &InstanceState,
) -> ConditionValue {
    let stuck = record.is_some_and(|r| state.overdue_reported == Some(r.started_at.0));
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
