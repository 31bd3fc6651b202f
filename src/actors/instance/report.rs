//! What the actor tells people: status and conditions, Events, and the spec's log lines.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tracing::{debug, info, warn};

use super::judge::Findings;
use super::memory::Reported;
use super::observe::Observed;
use super::observe::Written;
use super::status::derive_status;
use super::step::Happened;
use super::target::{Outcome, Plan, Recalled, Rejection};
use super::{InstanceArgs, InstanceSnapshot, InstanceState};
use crate::actors::metrics::{MISMATCH_KINDS, MetricsMsg};
use crate::config::render::short_hash;
use crate::crd::{RedisInstance, RedisInstanceStatus, RolloutRecord};
use crate::decide::{Decision, Desired, REPAIRED_ANNOTATION, owed_live_apply, owed_repairs};
use crate::events::{Occurrence, Told};
use crate::kube_io;
use crate::resources::config_hash_of;

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
pub(super) fn note_mismatches(
    args: &InstanceArgs,
    reported: &mut Reported,
    seen: &Observed,
    want: &Desired,
) {
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
    for ((kind, is), was) in MISMATCH_KINDS.into_iter().zip(now).zip(reported.mismatches) {
        if is && !was {
            let key = args.key.clone();
            let _ = args
                .metrics
                .send_message(MetricsMsg::HashMismatch { key, kind });
        }
    }
    reported.mismatches = now;
}

/// The instance as the cache holds it, for Events about failed steps.
pub(super) fn cached_instance(state: &InstanceState) -> Option<Arc<RedisInstance>> {
    let key = &state.args.key;
    state.args.stores.instances.get(&key.namespace, &key.name)
}

/// Redis itself refused a config: told once, as a Warning Event.
async fn rejected(args: &InstanceArgs, instance: &RedisInstance, rejection: &Rejection) {
    let _ = args.metrics.send_message(MetricsMsg::RolloutFailed {
        key: args.key.clone(),
        action: "RolledBack",
    });
    report_refusal(
        args,
        instance,
        "RedisRejectedConfig",
        "Restart",
        rejection.message.clone(),
        failure_fact(instance, rejection),
    )
    .await;
}

/// A restart's pod never became ready: told once, as a Warning Event, and counted.
async fn rollout_failed(
    args: &InstanceArgs,
    instance: &RedisInstance,
    failure: &Rejection,
    outcome: Outcome,
) {
    let action = match outcome {
        Outcome::RolledBack => "RolledBack",
        Outcome::Halted => "Halted",
    };
    let _ = args.metrics.send_message(MetricsMsg::RolloutFailed {
        key: args.key.clone(),
        action,
    });
    let reason = match outcome {
        Outcome::RolledBack => "RolloutRolledBack",
        Outcome::Halted => "RolloutHalted",
    };
    let fact = failure_fact(instance, failure);
    args.api.tell(
        instance,
        warning(reason, "Restart", failure.message.clone(), fact),
    );
}

/// The restart in flight passed its progress deadline: told once per restart (see
/// [`crate::decide::overdue_to_tell`]).
async fn overdue(
    args: &InstanceArgs,
    reported: &mut Reported,
    instance: &RedisInstance,
    record: &RolloutRecord,
) {
    reported.overdue = Some(record.started_at.0);
    let note = format!(
        "restart to config {} not finished {}s after it began at {}; check the pods' readiness and redis logs",
        short_hash(&record.config_hash),
        args.timings.progress_deadline.as_secs(),
        record.started_at.0
    );
    warn!(detail = %note, "restart overdue");
    let fact = crate::decide::record_fact(record);
    args.api
        .tell(instance, warning("RolloutStuck", "Restart", note, fact));
}

/// Something the operator owns was changed by hand and has been put back: counted, logged,
/// and told with `event` (the drift's own, or the one its repair's mark names).
pub(super) async fn drift_repaired(
    args: &InstanceArgs,
    instance: &RedisInstance,
    drift: &crate::decide::Drift,
    event: &crate::decide::Notice,
) {
    let key = &args.key;
    let kind = drift.kind;
    let _ = args.metrics.send_message(MetricsMsg::DriftRepaired {
        key: key.clone(),
        kind,
    });
    info!(kind, "drift repaired");
    tell(args, instance, event).await;
}

/// The repairs and the live change marked on the instance's objects lately, told unless this
/// actor told them: an operator taking over tells what the one before it did, and may not have
/// told.
fn retell_marked(args: &InstanceArgs, seen: &Observed) {
    let objects = [
        seen.service.as_deref().map(|s| &s.metadata),
        seen.headless.as_deref().map(|s| &s.metadata),
        seen.statefulset.as_deref().map(|s| &s.metadata),
    ];
    let marks = objects.into_iter().flatten().filter_map(|meta| {
        let mark = meta.annotations.as_ref()?.get(REPAIRED_ANNOTATION)?;
        Some((meta.name.as_deref()?, mark.as_str()))
    });
    let now = Timestamp::now();
    let mut owed = owed_repairs(&args.key.name, marks, now);
    owed.extend(owed_live_apply(seen.live_mark.as_deref(), now));
    for event in owed {
        args.api.tell_unless_told(&seen.instance, event.told());
    }
}

/// Posts `event` on the instance.
pub(super) async fn tell(
    args: &InstanceArgs,
    instance: &RedisInstance,
    event: &crate::decide::Notice,
) {
    args.api.tell(instance, event.told());
}

/// The report phase, entered once at the end of a step: tells what it found, an overdue
/// restart, writes status (with the replication step's record) when the step wrote nothing
/// else and posts the replication step's Event after it, and tells an unconverted instance.
pub(super) async fn report(
    state: &mut InstanceState,
    seen: &Observed,
    plan: Option<&Plan>,
    happened: Happened,
) -> Result<(), kube_io::Error> {
    let current = &seen.instance;
    let Findings {
        refused,
        rejection,
        failure,
        resumed,
        recalled,
    } = happened.findings;
    if let Some(message) = refused {
        refuse(&state.args, &mut state.reported, current, message).await;
    }
    if let Some((rejection, _)) = rejection {
        rejected(&state.args, current, &rejection).await;
    }
    if let Some((failure, outcome)) = failure {
        rollout_failed(&state.args, current, &failure, outcome).await;
    }
    if let Some(record) = &resumed {
        retell(&state.args, current, record, recalled.as_ref());
    }
    if let Some(record) = &happened.overdue {
        overdue(&state.args, &mut state.reported, current, record).await;
    }
    retell_marked(&state.args, seen);
    if happened.status {
        let reporting = std::time::Instant::now();
        let replication = happened.replication;
        let mut status = derive_status(&state.status_memory(), seen, plan);
        if let Some(record) = replication.status {
            status.replication = Some(record);
        }
        let mismatched = state.reported.mismatched();
        store_status(&state.args, &mut state.written, mismatched, seen, status).await?;
        if let Some(notice) = &replication.notice {
            tell(&state.args, current, notice).await;
        }
        if replication.forget_sent {
            state.replication.forget_switchover();
        }
        // The stage times the report of a step with a spec to drive to, as it always has; a
        // step that holds everything reports too, untimed.
        if plan.is_some() {
            crate::stages::since(crate::stages::Stage::Report, reporting);
        }
    }
    if happened.unconverted {
        state.reported.unconverted = true;
        unconverted(&state.args, current).await;
    }
    Ok(())
}

/// A spec that fails validation: told once per generation, as a Warning Event.
async fn refuse(
    args: &InstanceArgs,
    reported: &mut Reported,
    current: &RedisInstance,
    message: String,
) {
    reported.refused_generation = current.metadata.generation;
    let fact = format!(
        "refused generation {}",
        current.metadata.generation.unwrap_or_default()
    );
    report_refusal(args, current, "InvalidConfig", "Validate", message, fact).await;
}

/// A refused config, by validation or by Redis itself: counted, and told as a Warning Event.
/// `fact` names what was refused, so the Event is told once whoever tells it.
pub(super) async fn report_refusal(
    args: &InstanceArgs,
    instance: &RedisInstance,
    reason: &str,
    action: &str,
    message: String,
    fact: String,
) {
    let key = args.key.clone();
    let _ = args.metrics.send_message(MetricsMsg::InvalidConfig(key));
    args.api
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
fn retell(
    args: &InstanceArgs,
    instance: &RedisInstance,
    record: &RolloutRecord,
    recalled: Option<&(Rejection, Recalled)>,
) {
    let api = &args.api;
    api.tell_unless_told(instance, crate::decide::restart_resumed(record).told());
    if let Some((failure, recalled)) = recalled {
        let reason = recalled.event_reason();
        let fact = failure_fact(instance, failure);
        api.tell_unless_told(
            instance,
            warning(reason, "Restart", failure.message.clone(), fact),
        );
    }
}

/// Tells once that an instance which ran as several unrelated servers stays so until the user
/// agrees to turn it into one primary and its replicas.
pub(super) async fn unconverted(args: &InstanceArgs, instance: &RedisInstance) {
    let note = format!(
        "{} pods run as unrelated servers, each with its own data; annotate the instance with {}=true to make pod 0 the primary and the others its replicas (their own data is replaced by the primary's)",
        instance.spec.replicas,
        crate::resources::CONVERT_ANNOTATION
    );
    warn!("{note}");
    args.api
        .event(instance, true, "ReplicationNotEnabled", "Replicate", note)
        .await;
}

/// Writes the derived status when it differs from the stored one, and updates the HTTP view.
pub(super) async fn write_status(
    state: &mut InstanceState,
    seen: &Observed,
    plan: Option<&Plan>,
) -> Result<(), kube_io::Error> {
    let status = derive_status(&state.status_memory(), seen, plan);
    let mismatched = state.reported.mismatched();
    store_status(&state.args, &mut state.written, mismatched, seen, status).await
}

/// Publishes `status`: to the API only when it changed, so an idle instance writes nothing.
pub(super) async fn store_status(
    args: &InstanceArgs,
    written: &mut Written,
    mismatched: bool,
    seen: &Observed,
    status: RedisInstanceStatus,
) -> Result<(), kube_io::Error> {
    let key = args.key.clone();
    args.snapshots.insert(
        key.clone(),
        InstanceSnapshot {
            config_hash: status.config_hash.clone(),
            phase: status.phase.map_or("Pending", |p| p.as_str()),
            ready_replicas: status.ready_replicas,
            replicas: seen.instance.spec.replicas,
        },
    );
    let strategy = seen.instance.spec.restart_strategy.as_str();
    let _ = args.metrics.send_message(MetricsMsg::Observed {
        key,
        ready: status.ready_replicas,
        desired: seen.instance.spec.replicas,
        config_invalid: status.phase == Some(crate::crd::Phase::Invalid),
        mismatched,
        restarting: status.rollout.is_some(),
        strategy,
    });
    if seen.instance.status.as_ref() != Some(&status) {
        let stored = args.api.write_status(&seen.instance, &status).await?;
        written.instance = Some(Arc::new(stored));
    }
    Ok(())
}
