//! One step of an instance, in its four phases: observe (the caches and the actor's memory,
//! into one snapshot), decide (one pure call), perform (the write it chose), report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};

use super::observe::{Observed, observe};
use super::status::refusal_message;
use super::target::{self, Outcome, Plan, Rejection};
use super::{InstanceState, auth, live, network, perform, replicate, report, tls};
use crate::crd::{ConfigUpdate, RolloutRecord};
use crate::decide::{
    self, Crash, Deadlines, Decision, Desired, Facts, HoldAct, PolicyView, Snapshot, Unplanned,
    Waiting, Wakes, hold_act, network_step, next_wake, overdue_to_tell, paused, refusal_to_tell,
};
use crate::kube_io;
use crate::resources::CachedPod;
use crate::stages::{self, Stage};

/// What the spec and the pods were found to hold this step, each to be told once.
#[derive(Default)]
pub(super) struct Findings {
    /// The newest spec fails validation, not told yet: what a person reads.
    pub refused: Option<String>,
    /// Redis refused the newest valid config.
    pub rejection: Option<(Rejection, Crash)>,
    /// A restart's pod never became ready.
    pub failure: Option<(Rejection, Outcome)>,
    /// The restart in flight, whose Events are told again unless told already (see
    /// `report::retell`).
    pub resumed: Option<RolloutRecord>,
    /// With it, the failure recalled from status and how its finder told it.
    pub recalled: Option<(Rejection, target::Recalled)>,
}

/// What the actor's memory adds to the caches for this step's decision. Owned: performing the
/// decision changes the memory it came from.
struct Remembered {
    /// The revision ConfigMap the plan's pods mount, and the spec's shared one.
    revision: String,
    shared: String,
    /// The config a rollout halted on, and the one Redis refused.
    halted_hash: Option<String>,
    rejected_hash: Option<String>,
    /// How much longer a following restart waits for edits to settle.
    settle_left: Option<Duration>,
    /// Redis refused the plan's live directives.
    live_refused: bool,
    /// The StatefulSet's generation after the operator's last write of it.
    written_generation: Option<i64>,
    /// The actor deleted the headless `<name>` to create it as ClusterIP.
    service_migrated: bool,
}

/// The clocks one step reads: the wall clock for records and deadlines, the actor's monotonic
/// clock for how long pods have been unready.
#[derive(Clone, Copy)]
struct Clocks {
    now: Timestamp,
    at: Instant,
}

/// What one step found and did that people are told, by the report phase at its end.
#[derive(Default)]
pub(super) struct Happened {
    /// What the spec and the pods were found to hold.
    pub findings: Findings,
    /// The restart in flight passed its progress deadline, not told yet.
    pub overdue: Option<RolloutRecord>,
    /// The step wrote nothing else: status is derived and written when it changed.
    pub status: bool,
    /// The instance runs several unrelated servers, not told yet.
    pub unconverted: bool,
}

/// Where the decide and perform phases left the step.
enum Next {
    /// Done: take the next step now (`None`) or at the latest after the duration.
    Done(Option<Duration>),
    /// A replicated instance's pods wait for the replication step, taken once status is
    /// reported; `Wakes` holds the step's other reasons to look again.
    Replicate { wakes: Wakes, held: bool },
}

/// One step. `Ok(None)`: it wrote, take the next step now. `Ok(Some(d))`: wait for the next
/// watch event, or at most `d` (`Duration::MAX`: no timer).
pub(super) async fn step(
    state: &mut InstanceState,
    turn: &mut Option<OwnedSemaphorePermit>,
) -> Result<Option<Duration>, kube_io::Error> {
    state.decided = "Gone";
    state.settling = false;
    let observing = Instant::now();
    let key = &state.args.key;
    let seen = observe(
        &state.args.stores,
        &mut state.written,
        &key.namespace,
        &key.name,
    );
    stages::since(Stage::Observe, observing);
    let planning = Instant::now();
    // Deleted: the supervisor stops this actor when the watch reports it. Being deleted: the
    // garbage collector removes everything the instance owns.
    let Some(seen) = seen.filter(|s| s.instance.metadata.deletion_timestamp.is_none()) else {
        return Ok(Some(Duration::MAX));
    };
    // The NetworkPolicy first, from the current spec even when it is invalid: no pod runs
    // without it, and a write of it ends the step.
    let policy = network::desired(&seen.instance);
    let written = state.written.network_policy.clone();
    let policy_view = PolicyView {
        desired: policy.as_ref(),
        cached: seen.network_policy.as_deref(),
        written: written.as_ref(),
    };
    if network::perform(state, network_step(&policy_view)).await? {
        state.decided = "NetworkPolicy";
        return Ok(None);
    }
    remember(state, &seen);
    let clocks = Clocks {
        now: Timestamp::now(),
        at: Instant::now(),
    };
    let mut happened = Happened {
        findings: judge(state, &seen, clocks.at).await,
        ..Happened::default()
    };
    let record = seen
        .instance
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref());
    let plan = state.target.plan(record.is_some());
    let next = match &plan {
        None => hold(state, &seen, clocks.now, &mut happened).await,
        Some(plan) => {
            let run = Run {
                seen: &seen,
                plan,
                clocks,
                planning,
            };
            drive(state, turn, run, &mut happened).await
        }
    };
    // Told whatever came of the rest of the step: what it found is found only once.
    let reported = report::report(state, &seen, plan.as_ref(), happened).await;
    let next = next?;
    reported?;
    match (next, &plan) {
        (Next::Done(wake), _) => Ok(wake),
        (Next::Replicate { mut wakes, held }, Some(plan)) => {
            match replicate::step(state, plan, &seen, held).await? {
                None => {
                    state.decided = "Replicate";
                    Ok(None)
                }
                Some(wake) => {
                    wakes.replication = wake;
                    Ok(Some(next_wake(&wakes)))
                }
            }
        }
        (Next::Replicate { wakes, .. }, None) => Ok(Some(next_wake(&wakes))),
    }
}

/// What the decide and perform phases of a step with a spec to drive to work from.
#[derive(Clone, Copy)]
struct Run<'a> {
    seen: &'a Observed,
    plan: &'a Plan,
    clocks: Clocks,
    /// When planning began, for its stage timing.
    planning: Instant,
}

/// Decides the step of a spec known to be safe to run and performs it.
async fn drive(
    state: &mut InstanceState,
    turn: &mut Option<OwnedSemaphorePermit>,
    run: Run<'_>,
    happened: &mut Happened,
) -> Result<Next, kube_io::Error> {
    let Run {
        seen, plan, clocks, ..
    } = run;
    // Observe what the caches do not hold: the TLS Secret's material (read when it changed)
    // and the Secrets of the credentials.
    tls::read_secret(state, plan).await;
    let secrets = auth::read(state, &plan.instance, seen).await?;
    let recalled = recall(state, seen, plan);
    let want = desired(plan, &recalled);
    let snapshot = snapshot(seen, plan, &recalled, clocks.now);
    let deadlines = Deadlines {
        progress: state.args.timings.progress_deadline,
    };
    stages::since(Stage::Plan, run.planning);
    let deciding = Instant::now();
    let facts = Facts {
        has_run: crate::status::has_run(&seen.instance),
        written_generation: recalled.written_generation,
        rejected_hash: recalled.rejected_hash.as_deref(),
        service_migrated: recalled.service_migrated,
    };
    let credentials = secrets
        .as_ref()
        .map(|read| auth::view(read, state, &plan.instance, seen));
    let decided = decide::step(credentials.as_ref(), &want, &snapshot, &deadlines, &facts);
    stages::since(Stage::Decide, deciding);
    // Before anything talks to Redis or creates pods: the ACL Secret the pods mount, and the
    // login the live and replication steps use.
    let performing = decided.auth.is_write().then(Instant::now);
    let auth_wake = auth::perform(state, &plan.instance, decided.auth).await?;
    if let Some(performing) = performing {
        stages::since(Stage::Perform, performing);
    }
    let verdict = decided.verdict;
    let decision = &verdict.decision;
    state.decided = decision.name();
    state.settling = *decision == Decision::Wait(Waiting::Settle);
    state.pending = match decision {
        Decision::Held(held) => Some(report::pending_change(held, seen, plan)),
        _ => None,
    };
    report::note_mismatches(state, seen, &want);
    report::log_hash_comparison(seen, &want, decision);
    debug!(?decision, "next step");
    if verdict.act.is_write() {
        let performing = Instant::now();
        let performed = perform::perform(state, plan, seen, &verdict.act, clocks.now).await?;
        stages::since(Stage::Perform, performing);
        return Ok(Next::Done(performed.wake()));
    }
    let waited = Waited {
        decision,
        record: snapshot.rollout,
        deadlines,
        settle_left: recalled.settle_left,
        auth_wake,
        clocks,
    };
    Ok(at_rest(state, turn, run, waited, happened).await)
}

/// The actor's memory of what the caches showed: the hash the pods run, and when the spec
/// last changed (for the settle rule).
fn remember(state: &mut InstanceState, seen: &Observed) {
    state.last_known_hash = seen
        .statefulset
        .as_deref()
        .and_then(crate::resources::config_hash_of)
        .map(str::to_owned);
    let generation = seen.instance.metadata.generation;
    if generation != state.generation {
        if state.generation.is_some() {
            state.spec_changed_at = Some(Instant::now());
        }
        state.generation = generation;
    }
}

/// Validates the newest spec and looks for a valid config failing on the pods; what is found
/// for the first time is logged as it is found, and returned, to be told by the report.
async fn judge(state: &mut InstanceState, seen: &Observed, clock: Instant) -> Findings {
    let current = &seen.instance;
    let violations = state.target.accept(current);
    let told = state.refused_generation;
    let generation = current.metadata.generation;
    let refused = (!violations.is_empty()
        && refusal_to_tell(current.status.as_ref(), generation, told))
    .then(|| refusal_message(&violations, state.last_known_hash.as_deref()));
    if let Some(message) = &refused {
        warn!(generation, violations = %message, "config refused");
    }
    let record = current.status.as_ref().and_then(|s| s.rollout.as_ref());
    state.target.note_unready(&seen.pods, record, clock);
    for pod in loading(state, &seen.pods, record, clock).await {
        state.target.note_loading(&pod, clock);
    }
    state.target.detect_rejection(&seen.pods, record, clock);
    let rejection = state.target.take_fresh_rejection();
    if let Some((rejection, crash)) = &rejection {
        warn!(pod = %crash.pod, exit_code = crash.exit_code,
            hash = %rejection.hash, "Redis rejected the config");
    }
    let failure = state.target.take_fresh_failure();
    if let Some((failure, outcome)) = &failure {
        let action = match outcome {
            Outcome::RolledBack => "RolledBack",
            Outcome::Halted => "Halted",
        };
        warn!(hash = %failure.hash, action, detail = %failure.message, "rollout failed");
    }
    let recalled = state.target.recalled().filter(|_| record.is_some());
    Findings {
        refused,
        rejection,
        failure,
        resumed: record.cloned(),
        recalled: recalled.map(|(failure, reason)| (failure.clone(), reason)),
    }
}

/// Nothing known to be safe to run: touch nothing but what [`hold_act`] names, and report
/// what runs.
async fn hold(
    state: &mut InstanceState,
    seen: &Observed,
    now: Timestamp,
    happened: &mut Happened,
) -> Result<Next, kube_io::Error> {
    let current = &seen.instance;
    let service = crate::resources::service(current);
    let headless = crate::resources::headless_service(current);
    let view = Unplanned {
        record: current.status.as_ref().and_then(|s| s.rollout.as_ref()),
        statefulset: seen.statefulset.as_deref(),
        service: seen.service.as_deref(),
        headless: seen.headless.as_deref(),
        migrated: state.service_migrated,
    };
    match hold_act(&service, &headless, &view) {
        HoldAct::FinishRestart { record, event } => {
            state.decided = "FinishRestart";
            perform::finish_restart(state, None, seen, record, &event, now).await?;
            Ok(Next::Done(None))
        }
        HoldAct::Services { decided, act } => {
            state.decided = decided;
            let performed = perform::services(state, seen, &act, &service, &headless, now).await?;
            Ok(Next::Done(performed.wake()))
        }
        HoldAct::Hold => {
            state.decided = "Hold";
            debug!(decision = "Hold", "next step");
            happened.status = true;
            Ok(Next::Done(Some(Duration::MAX)))
        }
    }
}

/// Brings the memory the decision reads up to the current spec and takes what it needs.
fn recall(state: &mut InstanceState, seen: &Observed, plan: &Plan) -> Remembered {
    let current = &seen.instance;
    let record = current.status.as_ref().and_then(|s| s.rollout.as_ref());
    state.live.recall(current, plan);
    state
        .target
        .forget_halt(record.map(|r| r.config_hash.as_str()));
    Remembered {
        revision: crate::resources::revision_of(&plan.instance, &plan.template_hash),
        shared: crate::resources::config_map_name(&plan.instance),
        halted_hash: state.target.halted().map(|h| h.hash.clone()),
        rejected_hash: state.target.rejection().map(|r| r.hash.clone()),
        settle_left: settle_left(state),
        live_refused: state.live.refuses(plan),
        written_generation: state
            .statefulset_written
            .or_else(|| current.status.as_ref()?.stateful_set_generation),
        service_migrated: state.service_migrated,
    }
}

/// What the plan's spec builds.
fn desired<'a>(plan: &'a Plan, recalled: &'a Remembered) -> Desired<'a> {
    Desired {
        config_text: &plan.rendered.text,
        hash: &plan.template_hash,
        strategy: plan.instance.spec.restart_strategy,
        statefulset: &plan.statefulset,
        service: &plan.service,
        headless: &plan.headless,
        live: plan.instance.spec.config_update == ConfigUpdate::Live,
        revision: &recalled.revision,
        shared: &recalled.shared,
    }
}

/// The caches and the recalled memory, as the decision reads them.
fn snapshot<'a>(
    seen: &'a Observed,
    plan: &Plan,
    recalled: &'a Remembered,
    now: Timestamp,
) -> Snapshot<'a> {
    let current = &seen.instance;
    let status = current.status.as_ref();
    let replicated = crate::resources::replicated(&plan.instance);
    let halted_hash = recalled.halted_hash.as_deref();
    Snapshot {
        config_text: seen.config_text.as_deref(),
        statefulset: seen.statefulset.as_deref(),
        service: seen.service.as_deref(),
        headless: seen.headless.as_deref(),
        pods: &seen.pods,
        rollout: status.and_then(|s| s.rollout.as_ref()),
        settling: recalled.settle_left.is_some(),
        now,
        live_refused: recalled.live_refused,
        paused: paused(current),
        halted: halted_hash == Some(plan.template_hash.as_str()),
        failed_hash: recalled.rejected_hash.as_deref().or(halted_hash),
        revisions: &seen.revisions,
        primary: replicated
            .then(|| status?.replication.as_ref()?.primary.as_deref())
            .flatten(),
    }
}

/// What a step that wrote nothing hands from its decision to the rest.
struct Waited<'a> {
    /// What was decided: a wait, a hold, or idle.
    decision: &'a Decision,
    /// The restart in flight, from status.
    record: Option<&'a RolloutRecord>,
    deadlines: Deadlines,
    /// How much longer a following restart waits for edits to settle.
    settle_left: Option<Duration>,
    /// When the credentials step wants to look again.
    auth_wake: Duration,
    clocks: Clocks,
}

/// A step whose decision writes nothing: checks live config at rest, reloads TLS, notes what
/// the report tells, and says when to look again (after the replication step, if any).
async fn at_rest(
    state: &mut InstanceState,
    turn: &mut Option<OwnedSemaphorePermit>,
    run: Run<'_>,
    waited: Waited<'_>,
    happened: &mut Happened,
) -> Next {
    let Run { seen, plan, .. } = run;
    let current = &seen.instance;
    let Clocks { now, at: clock } = waited.clocks;
    let held = matches!(waited.decision, Decision::Held(_));
    let record = waited.record;
    let told = state.overdue_reported;
    happened.overdue = overdue_to_tell(record, held, now, &waited.deadlines, told).cloned();
    let mut wakes = Wakes {
        auth: waited.auth_wake,
        ..Wakes::default()
    };
    if matches!(waited.decision, Decision::Idle) {
        state.target.converged(plan);
        wakes.live = live::at_rest(state, turn, plan, seen).await;
    }
    wakes.tls = tls::reload_pods(state, plan, seen).await;
    happened.status = true;
    let replicated = crate::resources::replicated(&plan.instance);
    happened.unconverted =
        !replicated && !state.unconverted_reported && crate::resources::unconverted(current);
    if *waited.decision == Decision::Wait(Waiting::Settle) {
        wakes.settle = waited.settle_left;
    }
    // Wake at the deadline if the rollout has not finished by then; events usually come first.
    let progress = waited.deadlines.progress;
    wakes.progress = crate::decide::progress_wake(record, held, now, progress);
    wakes.pod_deadline = record.map_or(Duration::MAX, |r| {
        let deadline = Duration::from_secs(
            plan.instance
                .spec
                .rollout
                .progress_deadline_seconds
                .max(0)
                .unsigned_abs()
                .into(),
        );
        crate::decide::pod_deadline_wake(&seen.pods, r, deadline, |p| {
            state.target.unready_for(p, clock)
        })
    });
    match replicated {
        true => Next::Replicate { wakes, held },
        false => Next::Done(Some(next_wake(&wakes))),
    }
}

/// The pods at their readiness deadline whose Redis is still loading its data (asked all at
/// once, 1 s each at most; a pod that does not answer is not loading).
async fn loading(
    state: &InstanceState,
    pods: &[Arc<CachedPod>],
    record: Option<&RolloutRecord>,
    now: Instant,
) -> Vec<Arc<CachedPod>> {
    let due = state.target.at_deadline(pods, record, now);
    let asked = futures::future::join_all(due.iter().map(|pod| async {
        let address = crate::live::pods::PodAddress {
            pod: pod.name_any(),
            ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            tls: state.tls.for_pod(pod),
        };
        let login = state.access.login.as_ref();
        crate::live::pods::loading(&address, login).await
    }))
    .await;
    due.into_iter()
        .zip(asked)
        .filter(|(pod, answer)| {
            let loading = matches!(answer, Ok(true));
            if loading {
                tracing::info!(pod = %pod.name_any(), "pod still loading its data: not counted as never ready");
            }
            loading
        })
        .map(|(pod, _)| pod.clone())
        .collect()
}

/// How much longer a restart that follows another must wait for edits to settle (see
/// [`crate::decide::settle_left`]), by this actor's clock.
fn settle_left(state: &InstanceState) -> Option<Duration> {
    crate::decide::settle_left(
        state.args.timings.settle,
        state.spec_changed_at.map(|at| at.elapsed()),
        state.restart_finished_at.map(|at| at.elapsed()),
    )
}
