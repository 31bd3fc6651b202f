//! The report phase, entered once at the end of a step: what it found, told as Events, the
//! differences it saw counted, and status written when the step wrote nothing else.

use tracing::warn;

use super::InstanceArgs;
use super::judge::Findings;
use super::memory::Reported;
use super::observe::Observed;
use super::observe::Written;
use super::plan::Plan;
use super::replicate::ReplicationMemory;
use super::status::{StatusMemory, StatusReads, derive_status, store_status};
use super::step::Happened;
use super::step::PhaseTrace;
use super::tell::{report_refusal, tell};
use crate::actors::metrics::{MISMATCH_KINDS, MetricsMsg};
use crate::crd::{RedisInstance, RolloutRecord};
use crate::decide::{self, Outcome, Recalled, Rejection};
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

/// Redis itself refused a config: counted, and told once.
async fn rejected(args: &InstanceArgs, instance: &RedisInstance, rejection: &Rejection) {
    let _ = args.metrics.send_message(MetricsMsg::RolloutFailed {
        key: args.key.clone(),
        action: Outcome::RolledBack.action(),
    });
    let event = decide::redis_rejected(rejection, generation(instance));
    report_refusal(args, instance, &event).await;
}

/// A restart's pod never became ready: counted, and told once.
async fn rollout_failed(
    args: &InstanceArgs,
    instance: &RedisInstance,
    failure: &Rejection,
    outcome: Outcome,
) {
    let _ = args.metrics.send_message(MetricsMsg::RolloutFailed {
        key: args.key.clone(),
        action: outcome.action(),
    });
    let event = decide::rollout_failed(failure, outcome, generation(instance));
    tell(args, instance, &event).await;
}

fn generation(instance: &RedisInstance) -> i64 {
    instance.metadata.generation.unwrap_or_default()
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
    let event = decide::restart_overdue(record, args.timings.progress_deadline);
    warn!(detail = %event.note, "restart overdue");
    tell(args, instance, &event).await;
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
    let now = crate::cluster_clock::now();
    let mut owed = owed_repairs(&args.key.name, marks, now);
    owed.extend(owed_live_apply(seen.live_mark.as_deref(), now));
    for event in owed {
        args.api.tell_unless_told(&seen.instance, event.told());
    }
}

/// What the report phase reads and changes of the actor's memory.
pub(super) struct Reporter<'a> {
    pub args: &'a InstanceArgs,
    /// What was told, so it is told once.
    pub reported: &'a mut Reported,
    /// The status write, for the step's read of its own writes.
    pub written: &'a mut Written,
    /// Forgets a `FAILOVER` sent once status records the switchover's end.
    pub replication: &'a mut ReplicationMemory,
    pub phases: &'a mut PhaseTrace,
    /// The rest of what a status is derived from, read only.
    pub reads: StatusReads<'a>,
}

impl Reporter<'_> {
    /// What the status is derived from, with what was told as it stands.
    fn status_memory(&self) -> StatusMemory<'_> {
        StatusMemory {
            reads: self.reads,
            reported: self.reported,
        }
    }

    /// Writes the status derived from `seen` and the memory when it differs from the stored
    /// one, and updates the HTTP view: for what is recorded outside a step (an API refusal).
    pub(super) async fn write_status(&mut self, seen: &Observed) -> Result<(), kube_io::Error> {
        let status = derive_status(&self.status_memory(), seen, None, None);
        let mismatched = self.reported.mismatched();
        store_status(self.args, self.written, mismatched, seen, status).await
    }
}

/// The report phase: counts the differences the step saw, tells what it found, an overdue
/// restart, writes status (with the replication step's record) when the step wrote nothing
/// else and posts the replication step's Event after it, and tells an unconverted instance.
pub(super) async fn report(
    state: Reporter<'_>,
    seen: &Observed,
    plan: Option<&Plan>,
    happened: Happened,
) -> Result<(), kube_io::Error> {
    state.phases.entered(super::step::Phase::Report);
    let current = &seen.instance;
    if let Some(mismatches) = happened.mismatches {
        count_mismatches(state.args, state.reported, mismatches);
    }
    let Findings {
        refused,
        rejection,
        failure,
        resumed,
        recalled,
    } = happened.findings;
    if let Some(message) = refused {
        refuse(state.args, state.reported, current, message).await;
    }
    if let Some((rejection, _)) = rejection {
        rejected(state.args, current, &rejection).await;
    }
    if let Some((failure, outcome)) = failure {
        rollout_failed(state.args, current, &failure, outcome).await;
    }
    if let Some(record) = &resumed {
        retell(state.args, current, record, recalled.as_ref());
    }
    if let Some(record) = &happened.overdue {
        overdue(state.args, state.reported, current, record).await;
    }
    retell_marked(state.args, seen);
    if happened.status {
        let reporting = std::time::Instant::now();
        let replication = happened.replication;
        let status = derive_status(&state.status_memory(), seen, plan, replication.status);
        let mismatched = state.reported.mismatched();
        store_status(state.args, state.written, mismatched, seen, status).await?;
        if let Some(notice) = &replication.notice {
            tell(state.args, current, notice).await;
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
        unconverted(state.args, current).await;
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
    let event = decide::invalid_config(generation(current), message);
    report_refusal(args, current, &event).await;
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
        let event = decide::failure_retold(failure, *recalled, generation(instance));
        api.tell_unless_told(instance, event.told());
    }
}

/// Tells once that an instance which ran as several unrelated servers stays so until the user
/// agrees to turn it into one primary and its replicas.
pub(super) async fn unconverted(args: &InstanceArgs, instance: &RedisInstance) {
    let event = decide::replication_not_enabled(instance.spec.replicas);
    warn!("{}", event.note);
    tell(args, instance, &event).await;
}
