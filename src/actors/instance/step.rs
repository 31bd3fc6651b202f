//! One step of an instance, in its four phases, each entered once: observe (the caches, the
//! pods and the prober, the Secrets and the memory recalled, see [`super::views`]), decide (one
//! pure call), perform (the writes it chose), report.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info};

use super::judge::{Findings, judge};
use super::observe::{Observed, observe};
use super::plan::Plan;
use super::views::{PlannedViews, Reads, Views, Wanted};
use super::{InstanceState, auth, live, network, perform, replicate, report, status, tls};
use crate::crd::RolloutRecord;
use crate::decide::ReplicationInputs;
use crate::decide::{
    self, Checks, Course, Decision, Desired, Drive, HoldAct, Planned, PolicyView, Reload,
    ServedView, StepAct, Unplanned, Waiting, Wakes, next_wake,
};
use crate::kube_io;
use crate::stages::{self, Stage};

/// The clocks one step reads: the wall clock for records and deadlines, the actor's monotonic
/// clock for how long pods have been unready.
#[derive(Clone, Copy)]
pub(super) struct Clocks {
    pub(super) now: Timestamp,
    pub(super) at: Instant,
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
///
/// Its four phases follow each other here, each entered once: observe (the caches, what the
/// pods and the prober show, the Secrets, the memory recalled), decide ([`decide()`], one pure
/// call), perform ([`perform()`], the writes it chose) and report ([`report::report`]). What
/// they hand on is named: the observation and the views built from it, the decision, and
/// what [`Happened`].
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
        state.phases.entered(Phase::Observe);
        state.replication.stop_prober();
        return Ok(Some(Duration::MAX));
    };
    remember(state, &seen);
    let clocks = Clocks {
        now: crate::cluster_clock::now(),
        at: Instant::now(),
    };
    let findings = judge(state.judging(), &seen, clocks.at).await;
    let record = seen
        .instance
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref());
    let plan = state.specs.drive(record.is_some()).map(Plan::of);
    // Replication is observed from the prober's latest round (no pod is dialled here).
    let (observation, observed) =
        match replicate::observe(state.replicating(), plan.as_ref(), &seen).await {
            Ok(observation) => (observation, Ok(())),
            Err(error) => (None, Err(error)),
        };
    let replicas = observation.as_ref().map(|o| o.views(&seen));
    let observed_plan = plan
        .as_ref()
        .zip(observation.as_ref())
        .zip(replicas.as_deref());
    let parts = observed_plan.map(|((plan, o), views)| o.parts(plan, &seen, views));
    let replication = parts.as_ref().map(replicate::Parts::inputs);
    let reads = match (observed, plan.as_ref()) {
        (Ok(()), Some(plan)) => Reads::of(state, &seen, plan, clocks.at).await.map(Some),
        (Ok(()), None) => Ok(None),
        (Err(error), _) => Err(error),
    };
    state.phases.entered(Phase::Observe);
    let run = Run {
        seen: &seen,
        plan: plan.as_ref(),
        replication: replication.as_ref(),
        observation: observation.as_ref(),
        clocks,
        planning,
    };
    let mut happened = Happened {
        findings,
        ..Happened::default()
    };
    let next = match reads {
        Ok(reads) => {
            let wanted = Wanted::of(state, &seen);
            let views = Views::of(state, run, reads.as_ref(), &wanted);
            state.phases.entered(Phase::Decide);
            let decided = decide(state, run, &wanted, reads.as_ref(), &views);
            happened.status = decided.reports_status();
            perform(state, turn, run, views.planned(), decided, &mut happened).await
        }
        Err(error) => Err(error),
    };
    if observation.is_some() {
        replicate::ask_prober(state.replicating(), &seen);
    }
    // Told whatever came of the rest of the step: what it found is found only once.
    let reported = report::report(state.reporter(), &seen, plan.as_ref(), happened).await;
    let next = next?;
    reported?;
    Ok(next)
}

/// The phases of a step, in the order they are entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Observe,
    Decide,
    Perform,
    Report,
}

/// The phases each of the last steps entered, in order, for the tests that check each is
/// entered once; in a build that is not a test, it keeps nothing.
#[derive(Default)]
pub(super) struct PhaseTrace {
    #[cfg(test)]
    pub steps: Vec<Vec<Phase>>,
}

impl PhaseTrace {
    /// A step entered `phase`; an observe begins a new step.
    pub(super) fn entered(&mut self, phase: Phase) {
        #[cfg(test)]
        {
            if phase == Phase::Observe {
                self.steps.push(Vec::new());
            }
            if let Some(last) = self.steps.last_mut() {
                last.push(phase);
            }
        }
        #[cfg(not(test))]
        let _ = phase;
    }
}

/// What the decide and perform phases of a step work from.
#[derive(Clone, Copy)]
pub(super) struct Run<'a> {
    pub(super) seen: &'a Observed,
    /// The spec to drive to; `None` when none is known to be safe to run.
    pub(super) plan: Option<&'a Plan>,
    /// A replicated plan's replication, as observed.
    pub(super) replication: Option<&'a ReplicationInputs<'a, 'a>>,
    /// What the replication was observed from, for performing what is decided of it.
    pub(super) observation: Option<&'a replicate::Observation>,
    pub(super) clocks: Clocks,
    /// When planning began, for its stage timing.
    pub(super) planning: Instant,
}

/// The decide phase: puts the memory it reads into plain views and makes the step's one
/// decision ([`decide::step`]). Reads the actor's memory, changes none of it.
fn decide<'a>(
    state: &InstanceState,
    run: Run<'a>,
    wanted: &'a Wanted,
    reads: Option<&'a Reads>,
    views: &'a Views<'a>,
) -> decide::Step<'a> {
    let Run { seen, plan, .. } = run;
    let current = &seen.instance;
    let policy_view = PolicyView {
        desired: wanted.policy.as_ref(),
        cached: seen.network_policy.as_deref(),
        written: wanted.policy_written.as_ref(),
    };
    let memory = state.status_memory();
    let record = current.status.as_ref().and_then(|s| s.rollout.clone());
    let status_view = status::view(&memory, seen, plan, record);
    let credentials = plan.zip(reads).and_then(|(plan, reads)| {
        let read = reads.secrets.as_ref()?;
        Some(auth::view(read, &state.auth, &plan.instance, seen))
    });
    let course = match views {
        Views::Planned(views) => Course::Planned(Planned {
            auth: credentials.as_ref(),
            want: &views.want,
            seen: &views.snapshot,
            deadlines: &wanted.deadlines,
            facts: &views.facts,
            replication: run.replication,
            checks: &views.checks,
            status: &status_view,
        }),
        Views::Unplanned(services) => Course::Unplanned(Unplanned {
            desired_service: &services.0,
            desired_headless: &services.1,
            record: current.status.as_ref().and_then(|s| s.rollout.as_ref()),
            statefulset: seen.statefulset.as_deref(),
            service: seen.service.as_deref(),
            headless: seen.headless.as_deref(),
            migrated: state.applied.service_migrated,
            status: &status_view,
        }),
    };
    if plan.is_some() {
        stages::since(Stage::Plan, run.planning);
    }
    let deciding = Instant::now();
    let decided = decide::step(&policy_view, &course);
    if plan.is_some() {
        stages::since(Stage::Decide, deciding);
    }
    decided
}

/// The perform phase: carries out the step's decision, whichever kind it is. `Ok(None)`: it
/// wrote, take the next step now; `Ok(Some(d))`: look again after `d` at the latest.
async fn perform(
    state: &mut InstanceState,
    turn: &mut Option<OwnedSemaphorePermit>,
    run: Run<'_>,
    planned: Option<&PlannedViews<'_>>,
    decided: decide::Step<'_>,
    happened: &mut Happened,
) -> Result<Option<Duration>, kube_io::Error> {
    state.phases.entered(Phase::Perform);
    let Run {
        seen, plan, clocks, ..
    } = run;
    if decided.forget_policy {
        state.written.network_policy = None;
    }
    match (decided.act, plan.zip(planned)) {
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
        let mut replicating = state.replicating();
        let performed =
            replicate::perform(&mut replicating, turn, seen, observation, decided, recorded);
        match performed.await? {
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
