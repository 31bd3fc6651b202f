//! The report phase, entered once at the end of a step: what it found, told as Events, the
//! differences it saw counted, and status written when the step wrote nothing else.

use k8s_openapi::jiff::Timestamp;
use tracing::warn;

use super::judge::Findings;
use super::memory::Reported;
use super::observe::Observed;
use super::plan::Plan;
use super::status::{derive_status, store_status};
use super::step::Happened;
use super::tell::{report_refusal, tell, warning};
use super::{InstanceArgs, InstanceState};
use crate::actors::metrics::{MISMATCH_KINDS, MetricsMsg};
use crate::config::render::short_hash;
use crate::crd::{RedisInstance, RolloutRecord};
use crate::decide::{Outcome, Recalled, Rejection};
use crate::decide::{REPAIRED_ANNOTATION, owed_live_apply, owed_repairs};
use crate::kube_io;

/// Counts each kind of difference from the desired config (see [`crate::decide::mismatches`])
/// when it first appears.
fn count_mismatches(args: &InstanceArgs, reported: &mut Reported, now: [bool; 3]) {
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

/// The report phase: counts the differences the step saw, tells what it found, an overdue
/// restart, writes status (with the replication step's record) when the step wrote nothing
/// else and posts the replication step's Event after it, and tells an unconverted instance.
pub(super) async fn report(
    state: &mut InstanceState,
    seen: &Observed,
    plan: Option<&Plan>,
    happened: Happened,
) -> Result<(), kube_io::Error> {
    let current = &seen.instance;
    if let Some(mismatches) = happened.mismatches {
        count_mismatches(&state.args, &mut state.reported, mismatches);
    }
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
