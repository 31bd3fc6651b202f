//! One step of an instance, in its four phases: observe (the caches and the actor's memory,
//! into one snapshot), decide (one pure call), perform (the write it chose), report.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info};

use super::judge::{Findings, judge};
use super::observe::{Observed, observe};
use super::plan::Plan;
use super::{InstanceState, auth, live, network, perform, replicate, report, status, tls};
use crate::crd::{ConfigUpdate, RolloutRecord};
use crate::decide::ReplicationInputs;
use crate::decide::{
    self, Checks, ChecksView, Course, Deadlines, Decision, Desired, Drive, Facts, HoldAct, Planned,
    PolicyView, Reload, ServedView, Snapshot, StepAct, Unplanned, Waiting, Wakes, next_wake,
    paused,
};
use crate::kube_io;
use crate::stages::{self, Stage};

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
    /// A pod of the restart in flight is unready past its readiness deadline.
    stalled: bool,
    /// When the first unready pod of the restart in flight reaches that deadline.
    pod_deadline: Duration,
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
    /// The differences from the desired config the caches show (see
    /// [`decide::mismatches`]); `None` with no spec to drive.
    pub mismatches: Option<[bool; 3]>,
    /// The restart in flight passed its progress deadline, not told yet.
    pub overdue: Option<RolloutRecord>,
    /// Status is derived and written when it changed (see [`decide::Step::reports_status`]).
    pub status: bool,
    /// The instance runs several unrelated servers, not told yet.
    pub unconverted: bool,
    /// The replication step's status record and Event, written and posted with status.
    pub replication: replicate::Recorded,
}

/// One step. `Ok(None)`: it wrote, take the next step now. `Ok(Some(d))`: wait for the next
/// watch event, or at most `d` (`Duration::MAX`: no timer).
pub(super) async fn step(
    state: &mut InstanceState,
    turn: &mut Option<OwnedSemaphorePermit>,
) -> Result<Option<Duration>, kube_io::Error> {
    state.last_step.decided = "Gone";
    state.last_step.settling = false;
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
        state.replication.stop_prober();
        return Ok(Some(Duration::MAX));
    };
    remember(state, &seen);
    let clocks = Clocks {
        now: Timestamp::now(),
        at: Instant::now(),
    };
    let mut happened = Happened {
        findings: judge(state.judging(), &seen, clocks.at).await,
        ..Happened::default()
    };
    let record = seen
        .instance
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref());
    let plan = state.specs.drive(record.is_some()).map(Plan::of);
    // Replication is observed from the prober's latest round (no pod is dialled here).
    let (observation, observed) = match replicate::observe(state, plan.as_ref(), &seen).await {
        Ok(observation) => (observation, Ok(())),
        Err(error) => (None, Err(error)),
    };
    let views = observation.as_ref().map(|o| o.views(&seen));
    let observed_plan = plan
        .as_ref()
        .zip(observation.as_ref())
        .zip(views.as_deref());
    let parts = observed_plan.map(|((plan, o), views)| o.parts(plan, &seen, views));
    let replication = parts.as_ref().map(replicate::Parts::inputs);
    let run = Run {
        seen: &seen,
        plan: plan.as_ref(),
        replication: replication.as_ref(),
        observation: observation.as_ref(),
        clocks,
        planning,
    };
    let next = match observed {
        Ok(()) => decide_and_perform(state, turn, run, &mut happened).await,
        Err(error) => Err(error),
    };
    if observation.is_some() {
        replicate::ask_prober(state, &seen);
    }
    // Told whatever came of the rest of the step: what it found is found only once.
    let reported = report::report(state, &seen, plan.as_ref(), happened).await;
    let next = next?;
    reported?;
    Ok(next)
}

/// What the decide and perform phases of a step work from.
#[derive(Clone, Copy)]
struct Run<'a> {
    seen: &'a Observed,
    /// The spec to drive to; `None` when none is known to be safe to run.
    plan: Option<&'a Plan>,
    /// A replicated plan's replication, as observed.
    replication: Option<&'a ReplicationInputs<'a, 'a>>,
    /// What the replication was observed from, for performing what is decided of it.
    observation: Option<&'a replicate::Observation>,
    clocks: Clocks,
    /// When planning began, for its stage timing.
    planning: Instant,
}

/// What a step with a spec to drive reads beyond the caches, and the memory it recalls.
struct Reads {
    /// The Secrets of the credentials; `None` with `spec.auth` off.
    secrets: Option<auth::Secrets>,
    recalled: Remembered,
}

impl Reads {
    /// Observes what the caches do not hold: the TLS Secret's material (read when it changed)
    /// and the Secrets of the credentials; and brings the memory the decision reads up to the
    /// plan's spec.
    async fn of(
        state: &mut InstanceState,
        seen: &Observed,
        plan: &Plan,
        at: Instant,
    ) -> Result<Self, kube_io::Error> {
        tls::read_secret(&state.args, &mut state.tls, plan).await;
        let secrets = auth::read(&state.args, &mut state.auth, &plan.instance, seen).await?;
        let recalled = recall(state, seen, plan, at);
        Ok(Reads { secrets, recalled })
    }
}

/// The views a spec to drive is decided on, built from the step's reads.
struct PlannedViews<'a> {
    want: Desired<'a>,
    snapshot: Snapshot<'a>,
    recalled: &'a Remembered,
    checks: ChecksView<'a>,
    /// The TLS memory the checks read (what they read of it is in `checks`).
    served: &'a tls::Served,
}

/// The decide and perform phases: builds the views, makes the step's one decision
/// ([`decide::step`]) and performs it. `Ok(None)`: it wrote, take the next step now;
/// `Ok(Some(d))`: look again after `d` at the latest.
async fn decide_and_perform(
    state: &mut InstanceState,
    turn: &mut Option<OwnedSemaphorePermit>,
    run: Run<'_>,
    happened: &mut Happened,
) -> Result<Option<Duration>, kube_io::Error> {
    let Run {
        seen, plan, clocks, ..
    } = run;
    let current = &seen.instance;
    // The NetworkPolicy from the current spec, even when it is invalid: no pod runs without it.
    let policy = network::desired(current);
    let written = state.written.network_policy.clone();
    let policy_view = PolicyView {
        desired: policy.as_ref(),
        cached: seen.network_policy.as_deref(),
        written: written.as_ref(),
    };
    let reads = match plan {
        Some(plan) => Some(Reads::of(state, seen, plan, clocks.at).await?),
        None => None,
    };
    let served = tls::Served::of(&state.tls);
    let planned = plan.zip(reads.as_ref()).map(|(plan, reads)| PlannedViews {
        want: desired(plan, &reads.recalled),
        snapshot: snapshot(seen, plan, &reads.recalled, clocks.now),
        recalled: &reads.recalled,
        checks: checks_view(state, seen, plan, &reads.recalled, served.view(plan, seen)),
        served: &served,
    });
    let deadlines = Deadlines {
        progress: state.args.timings.progress_deadline,
    };
    let unplanned_services;
    let (decided, deciding) = {
        let memory = state.status_memory();
        let record = current.status.as_ref().and_then(|s| s.rollout.clone());
        let status_view = status::view(&memory, seen, plan, record);
        let facts = planned.as_ref().map(|views| Facts {
            has_run: crate::status::has_run(current),
            written_generation: views.recalled.written_generation,
            rejected_hash: views.recalled.rejected_hash.as_deref(),
            service_migrated: views.recalled.service_migrated,
        });
        let credentials = plan.zip(reads.as_ref()).and_then(|(plan, reads)| {
            let read = reads.secrets.as_ref()?;
            Some(auth::view(read, &state.auth, &plan.instance, seen))
        });
        let course = match (&planned, &facts) {
            (Some(views), Some(facts)) => Course::Planned(Planned {
                auth: credentials.as_ref(),
                want: &views.want,
                seen: &views.snapshot,
                deadlines: &deadlines,
                facts,
                replication: run.replication,
                checks: &views.checks,
                status: &status_view,
            }),
            _ => {
                // Built from the current spec: the Services depend on no directive.
                unplanned_services = (
                    crate::resources::service(current),
                    crate::resources::headless_service(current),
                );
                Course::Unplanned(Unplanned {
                    desired_service: &unplanned_services.0,
                    desired_headless: &unplanned_services.1,
                    record: current.status.as_ref().and_then(|s| s.rollout.as_ref()),
                    statefulset: seen.statefulset.as_deref(),
                    service: seen.service.as_deref(),
                    headless: seen.headless.as_deref(),
                    migrated: state.applied.service_migrated,
                    status: &status_view,
                })
            }
        };
        if plan.is_some() {
            stages::since(Stage::Plan, run.planning);
        }
        let deciding = Instant::now();
        (decide::step(&policy_view, &course), deciding)
    };
    if plan.is_some() {
        stages::since(Stage::Decide, deciding);
    }
    happened.status = decided.reports_status();
    if decided.forget_policy {
        state.written.network_policy = None;
    }
    match (decided.act, plan.zip(planned.as_ref())) {
        (StepAct::Policy(act), _) => {
            network::perform(&state.args.api, &mut state.written, act).await?;
            state.last_step.decided = "NetworkPolicy";
            Ok(None)
        }
        (StepAct::Hold(act), _) => hold(state, seen, &act, clocks.now).await,
        (StepAct::Drive(drive), Some((plan, views))) => {
            let driven = Driven {
                seen,
                plan,
                views,
                observation: run.observation,
                clocks,
            };
            perform_drive(state, turn, driven, *drive, happened).await
        }
        // Not decided: a drive comes only of a plan.
        (StepAct::Drive(_), None) => Ok(Some(Duration::MAX)),
    }
}

/// What performing a drive works from.
#[derive(Clone, Copy)]
struct Driven<'a> {
    seen: &'a Observed,
    plan: &'a Plan,
    views: &'a PlannedViews<'a>,
    observation: Option<&'a replicate::Observation>,
    clocks: Clocks,
}

/// Performs the drive decided for a spec known to be safe to run: the verdict's write, or at
/// rest the checks of live config and TLS and the replication decided.
async fn perform_drive(
    state: &mut InstanceState,
    turn: &mut Option<OwnedSemaphorePermit>,
    driven: Driven<'_>,
    decided: Drive<'_>,
    happened: &mut Happened,
) -> Result<Option<Duration>, kube_io::Error> {
    let Driven {
        seen,
        plan,
        views,
        observation,
        clocks,
    } = driven;
    let want = &views.want;
    // Before anything talks to Redis or creates pods: the ACL Secret the pods mount, and the
    // login the live and replication steps use.
    let performing = decided.auth.is_write().then(Instant::now);
    let auth_wake = auth::perform(state.credentials(), &plan.instance, decided.auth).await?;
    if let Some(performing) = performing {
        stages::since(Stage::Perform, performing);
    }
    let verdict = decided.verdict;
    let decision = &verdict.decision;
    state.last_step.decided = decision.name();
    state.last_step.settling = *decision == Decision::Wait(Waiting::Settle);
    state.last_step.pending = verdict.pending.clone();
    let mismatches = decide::mismatches(
        seen.statefulset.as_deref(),
        seen.config_text.as_deref(),
        want.config_text,
        want.hash,
    );
    happened.mismatches = Some(mismatches);
    log_hash_comparison(seen, want, decision);
    debug!(?decision, "next step");
    // Checks are decided exactly when the verdict writes nothing.
    let Some(checks) = decided.checks else {
        if verdict.act.dials_pods() {
            // Other instances' steps need not wait for a silent pod.
            turn.take();
        }
        let performing = Instant::now();
        let mut performer = state.performer(mismatches.contains(&true));
        let performed =
            perform::perform(&mut performer, plan, seen, &verdict.act, clocks.now).await?;
        stages::since(Stage::Perform, performing);
        return Ok(performed.wake());
    };
    let served = (views.served, &views.checks.served);
    let mut wakes = perform_checks(state, turn, seen, plan, checks, served, happened).await;
    wakes.auth = auth_wake;
    if let (Some(replication), Some(observation)) = (decided.replication, observation) {
        let decided = replicate::Decided::from(replication);
        let recorded = &mut happened.replication;
        match replicate::perform(state, turn, seen, observation, decided, recorded).await? {
            None => {
                state.last_step.decided = "Replicate";
                return Ok(None);
            }
            Some(wake) => wakes.replication = wake,
        }
    }
    Ok(Some(next_wake(&wakes)))
}

/// The decision's spec log line, "Config hash comparison": at info when a restart is decided,
/// at debug otherwise, so an idle fleet logs nothing.
fn log_hash_comparison(seen: &Observed, want: &Desired, decision: &Decision) {
    let Some(live) = seen
        .statefulset
        .as_deref()
        .and_then(crate::resources::config_hash_of)
    else {
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

/// The actor's memory of what the caches showed: the hash the pods run, and when the spec
/// last changed (for the settle rule).
fn remember(state: &mut InstanceState, seen: &Observed) {
    state.last_known_hash = seen
        .statefulset
        .as_deref()
        .and_then(crate::resources::config_hash_of)
        .map(str::to_owned);
    state.clock.saw(seen.instance.metadata.generation);
}

/// Nothing known to be safe to run: performs what [`decide::hold_act`] named, or reports what
/// runs.
async fn hold(
    state: &mut InstanceState,
    seen: &Observed,
    act: &HoldAct<'_>,
    now: Timestamp,
) -> Result<Option<Duration>, kube_io::Error> {
    match act {
        HoldAct::FinishRestart {
            record,
            status,
            event,
        } => {
            state.last_step.decided = "FinishRestart";
            let mut performer = state.performer(state.reported.mismatched());
            perform::finish_restart(&mut performer, seen, record, status, event, now).await?;
            Ok(None)
        }
        HoldAct::Services {
            decided,
            act,
            desired: (service, headless),
        } => {
            state.last_step.decided = decided;
            let mut performer = state.performer(state.reported.mismatched());
            let performed = perform::services(&mut performer, seen, act, service, headless).await?;
            Ok(performed.wake())
        }
        HoldAct::Hold => {
            state.last_step.decided = "Hold";
            debug!(decision = "Hold", "next step");
            Ok(Some(Duration::MAX))
        }
    }
}

/// Brings the memory the decision reads up to the current spec and takes what it needs; `at`
/// is the actor's clock, for how long pods have been unready.
fn recall(state: &mut InstanceState, seen: &Observed, plan: &Plan, at: Instant) -> Remembered {
    let current = &seen.instance;
    let record = current.status.as_ref().and_then(|s| s.rollout.as_ref());
    state.live.recall(current, plan);
    state
        .specs
        .forget_halt(record.map(|r| r.config_hash.as_str()));
    Remembered {
        revision: crate::resources::revision_of(&plan.instance, &plan.template_hash),
        shared: crate::resources::config_map_name(&plan.instance),
        halted_hash: state.specs.halted().map(|h| h.hash.clone()),
        rejected_hash: state.specs.rejection().map(|r| r.hash.clone()),
        settle_left: state.clock.settle_left(state.args.timings.settle),
        live_refused: state.live.refuses(plan),
        stalled: !state.specs.at_deadline(&seen.pods, record, at).is_empty(),
        pod_deadline: record.map_or(Duration::MAX, |r| {
            let deadline = plan.instance.spec.rollout.progress_deadline_seconds;
            let deadline = Duration::from_secs(deadline.max(0).unsigned_abs().into());
            crate::decide::pod_deadline_wake(&seen.pods, r, deadline, |p| {
                state.specs.unready_for(p, at)
            })
        }),
        written_generation: state
            .applied
            .statefulset_generation
            .or_else(|| current.status.as_ref()?.stateful_set_generation),
        service_migrated: state.applied.service_migrated,
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
        stalled: recalled.stalled,
        revisions: &seen.revisions,
        primary: replicated
            .then(|| status?.replication.as_ref()?.primary.as_deref())
            .flatten(),
    }
}

/// What the checks at rest read of the memory (see [`crate::decide::checks`]).
fn checks_view<'a>(
    state: &InstanceState,
    seen: &Observed,
    plan: &Plan,
    recalled: &Remembered,
    served: ServedView<'a>,
) -> ChecksView<'a> {
    ChecksView {
        has_live: live::has_live(plan),
        live_every: state.args.timings.live_check,
        live_checked_ago: state.live.checked_at.map(|at| at.elapsed()),
        served,
        told_overdue: state.reported.overdue,
        ran_unconverted: crate::resources::unconverted(&seen.instance),
        replicated: crate::resources::replicated(&plan.instance),
        told_unconverted: state.reported.unconverted,
        pod_deadline: recalled.pod_deadline,
        settle_left: recalled.settle_left,
    }
}

/// Performs the checks decided for a step whose verdict writes nothing, and notes what the
/// report tells; returns when to look again for each reason but the credentials and
/// replication.
async fn perform_checks(
    state: &mut InstanceState,
    turn: &mut Option<OwnedSemaphorePermit>,
    seen: &Observed,
    plan: &Plan,
    checks: Checks<'_>,
    served: (&tls::Served, &ServedView<'_>),
    happened: &mut Happened,
) -> Wakes {
    happened.overdue = checks.overdue.cloned();
    happened.unconverted = checks.tell_unconverted;
    let mut wakes = checks.wakes;
    if checks.converged {
        state.specs.converged(&plan.instance);
    }
    if checks.check_live {
        // Dialling pods may take seconds: other instances' steps need not wait for it.
        turn.take();
        live::check(&mut state.live_step(), plan, seen).await;
    }
    if let Reload::Check(pods) = &checks.reload {
        let (args, access) = (&state.args, &state.access);
        wakes.tls = tls::reload_pods(args, &mut state.tls, access, turn, plan, served, pods).await;
    }
    wakes
}
