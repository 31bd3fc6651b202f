//! One actor per RedisInstance: holds its last known config hash and, on each watch event,
//! takes one step of its restart sequence: observe (from the watch caches) -> decide (pure) ->
//! perform (the only API calls) -> report (status only when it changed).
//!
//! A write is followed at once by the next step; a wait ends with the next watch event. The
//! timers are the retry after an error and the deadlines and checks of what is under way, all
//! jittered, and the rest delay after which an actor at rest hibernates (see [`rest`]).

mod auth;
mod judge;
mod live;
mod memory;
pub(crate) mod network;
mod observe;
mod perform;
mod plan;
mod replicate;
mod report;
mod rest;
mod status;
mod step;
mod tell;
mod tls;
mod views;

pub use crate::decide::PAUSED_ANNOTATION;
pub use observe::{Stores, Versions, Written};
#[cfg(test)]
pub use step::Phase;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use k8s_openapi::jiff::Timestamp;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{Instrument, debug, warn};

use super::metrics::{InstanceKey, MetricsMsg};
use crate::decide::{SpecMemory, StepFailure};
use crate::kube_io::{self, InstanceApi};
use crate::stages::{self, Stage};
use memory::{Applied, LastStep, Reported, Schedule, SpecClock};
use observe::observe;

/// Deadlines and retry bounds of the instance actors.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// A restart whose pods are not all ready this long after it began is failing: a newer
    /// config may replace it, pods stuck on an older revision are replaced, an Event is posted.
    pub progress_deadline: Duration,
    /// Upper bound of the retry backoff after API errors.
    pub max_backoff: Duration,
    /// After a restart, a following one waits until the spec has been unchanged this long.
    pub settle: Duration,
    /// How often a `configUpdate: Live` instance's pods are checked for live drift.
    pub live_check: Duration,
    /// How long an endpoint change takes to reach every node's service proxy; a switchover
    /// target is routed to this long before `FAILOVER`.
    pub route_settle: Duration,
    /// How long an actor stays at rest before it hibernates (stops, to be started again by
    /// the next event for its instance); `None`: never.
    pub hibernate_after: Option<Duration>,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            progress_deadline: Duration::from_secs(300),
            max_backoff: Duration::from_secs(30),
            settle: Duration::from_secs(5),
            live_check: Duration::from_secs(60),
            route_settle: Duration::from_millis(1200),
            hibernate_after: Some(Duration::from_secs(300)),
        }
    }
}

/// What `/instances` shows of an instance.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceSnapshot {
    /// Hash on the live StatefulSet's pod template.
    pub config_hash: Option<String>,
    /// Phase as reported in status.
    pub phase: &'static str,
    /// Ready pods.
    pub ready_replicas: i32,
    /// Desired pods.
    pub replicas: i32,
}

/// Shared, lock-free view of every instance for the HTTP side.
pub type Snapshots = Arc<DashMap<InstanceKey, InstanceSnapshot>>;

/// Messages an instance actor handles.
#[derive(Debug)]
pub enum InstanceMsg {
    /// The instance or one of its objects changed in the caches.
    Changed,
    /// Take the next step; at most one queued, so bursts of events coalesce into one step.
    Step,
    /// Timer: retry after an error, or look again at a restart's deadline.
    Tick,
    /// A status-only update reached the cache. It starts no step, but the copies this actor
    /// holds of the instance (its own status write, the specs it remembers) give way to the
    /// cache's, so two copies are not kept.
    StatusSeen,
    /// Like [`InstanceMsg::Changed`], for a watch event the supervisor routed: timed from the
    /// event to the step's first write (see [`crate::stages`]).
    Routed(Arrival),
    /// Timer: the actor has been at rest for [`Timings::hibernate_after`].
    Rest,
    /// A round of the replication prober: every pod's `INFO replication`, taken outside the
    /// step (see `replicate::prober`).
    Probed(Vec<crate::decide::probes::PodProbe>),
    /// A test's stand-in for a bug: the handler fails, as a panic or an error would make it.
    #[cfg(test)]
    Fail,
    /// A test asks for the phases each step so far entered, in order.
    #[cfg(test)]
    Phases(ractor::RpcReplyPort<Vec<Vec<Phase>>>),
}

/// When the watch delivered the event behind a message, and when the supervisor passed it on.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The watch delivered the event.
    pub received: Instant,
    /// The supervisor sent it to the actor.
    pub routed: Instant,
}

impl From<Instant> for Arrival {
    /// An event received at `received`, passed on now.
    fn from(received: Instant) -> Self {
        Self {
            received,
            routed: Instant::now(),
        }
    }
}

/// Everything an instance actor is started with.
pub struct InstanceArgs {
    /// Which instance.
    pub key: InstanceKey,
    /// Writes in its namespace.
    pub api: InstanceApi,
    /// Reads; shared by every actor (an `Arc`, as each actor holds its arguments inline).
    pub stores: Arc<Stores>,
    /// Where counts go.
    pub metrics: ActorRef<MetricsMsg>,
    /// Where the HTTP side reads from.
    pub snapshots: Snapshots,
    /// Deadlines and backoff.
    pub timings: Timings,
    /// Where an actor at rest offers to hibernate; `None`: it never does.
    pub supervisor: Option<ActorRef<crate::actors::supervisor::SupervisorMsg>>,
}

/// The actor's memory between messages; what must survive a crash is in the status instead.
pub struct InstanceState {
    args: InstanceArgs,
    /// The actor's turns, permits, timer and failure count.
    schedule: Schedule,
    written: Written,
    /// What this actor's writes left that the caches do not tell.
    applied: Applied,
    specs: SpecMemory,
    /// Hash on the live StatefulSet's template, as last seen.
    last_known_hash: Option<String>,
    /// When the spec last changed and a restart last finished, for the settle rule.
    clock: SpecClock,
    /// What the last step decided.
    last_step: LastStep,
    /// What was told, so it is told once.
    reported: Reported,
    /// The pods' live config, as last applied and checked.
    live: live::LiveMemory,
    /// Replication memory of a replicated instance, its role Services included.
    replication: replicate::ReplicationMemory,
    /// Credentials memory: Secrets read, the ACL applied.
    auth: auth::AuthMemory,
    /// How to log in to the pods' Redis, as the last credentials step found.
    access: crate::auth::Access,
    /// The `spec.tls` Secret's material and the pods' reload.
    tls: tls::TlsMemory,
    /// Messages handled that the supervisor sent (not the actor's own steps and timers).
    handled: u64,
    /// On the way to hibernation.
    rest: rest::Resting,
    /// The phases the last steps entered (kept by tests only).
    phases: step::PhaseTrace,
}

/// The state split into the borrows each phase takes, so that a phase's signature shows the
/// groups it reads and changes.
impl InstanceState {
    /// What a status is derived from.
    fn status_memory(&self) -> status::StatusMemory<'_> {
        status::StatusMemory {
            reads: status::StatusReads::of(
                &self.specs,
                &self.live,
                &self.auth,
                &self.last_step,
                &self.applied,
                self.args.timings.settle,
            ),
            reported: &self.reported,
        }
    }

    /// What the report phase reads and changes.
    fn reporter(&mut self) -> report::Reporter<'_> {
        let Self {
            specs,
            live,
            auth,
            last_step,
            applied,
            args,
            reported,
            written,
            replication,
            phases,
            ..
        } = self;
        let settle = args.timings.settle;
        report::Reporter {
            reads: status::StatusReads::of(specs, live, auth, last_step, applied, settle),
            args,
            reported,
            written,
            replication,
            phases,
        }
    }

    /// What the replication phase of a step reads and changes.
    fn replicating(&mut self) -> replicate::Replicating<'_> {
        replicate::Replicating {
            args: &self.args,
            memory: &mut self.replication,
            written: &mut self.written,
            tls: &self.tls,
            access: &self.access,
        }
    }

    /// What the judging of a step reads and changes.
    fn judging(&mut self) -> judge::Judging<'_> {
        judge::Judging {
            specs: &mut self.specs,
            refused_generation: self.reported.refused_generation,
            running_hash: self.last_known_hash.as_deref(),
            tls: &self.tls,
            access: &self.access,
        }
    }

    /// What performing a credentials decision changes.
    fn credentials(&mut self) -> auth::Credentials<'_> {
        auth::Credentials {
            args: &self.args,
            memory: &mut self.auth,
            access: &mut self.access,
            tls: &self.tls,
        }
    }

    /// What performing a decision reads and changes; `mismatched`: the caches show some
    /// difference from the desired config.
    fn performer(&mut self, mismatched: bool) -> perform::Performer<'_> {
        perform::Performer {
            args: &self.args,
            written: &mut self.written,
            applied: &mut self.applied,
            schedule: &mut self.schedule,
            clock: &mut self.clock,
            last_known_hash: self.last_known_hash.as_deref(),
            live: &mut self.live,
            tls: &self.tls,
            access: &self.access,
            mismatched,
        }
    }

    /// What the live check at rest works with.
    fn live_step(&mut self) -> live::LiveStep<'_> {
        live::LiveStep {
            args: &self.args,
            written: &mut self.written,
            memory: &mut self.live,
            tls: &self.tls,
            access: &self.access,
        }
    }
}

/// See the module docs.
pub struct RedisInstanceActor;

impl Actor for RedisInstanceActor {
    type Msg = InstanceMsg;
    type State = InstanceState;
    type Arguments = InstanceArgs;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: InstanceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let _ = args.metrics.send_message(MetricsMsg::ActorStarted);
        Ok(InstanceState {
            args,
            schedule: Schedule::default(),
            written: Written::default(),
            applied: Applied::default(),
            specs: SpecMemory::default(),
            last_known_hash: None,
            clock: SpecClock::default(),
            last_step: LastStep::default(),
            reported: Reported::default(),
            live: live::LiveMemory::default(),
            replication: replicate::ReplicationMemory::default(),
            auth: auth::AuthMemory::default(),
            access: crate::auth::Access::default(),
            tls: tls::TlsMemory::default(),
            handled: 0,
            rest: rest::Resting::default(),
            phases: step::PhaseTrace::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        #[cfg(test)]
        if matches!(msg, InstanceMsg::Fail) {
            return Err("failed as the test asked".into());
        }
        // Every line logged while handling this instance carries its namespace and name from
        // this span. Made per message rather than kept: a span lives in the subscriber with
        // its fields (about 1 KB each at 10,000 instances), which idle actors would hold for
        // nothing. At error level so that it is enabled whatever --log-level filters out.
        let key = &state.args.key;
        let span =
            tracing::error_span!("instance", namespace = %key.namespace, instance = %key.name);
        // Boxed while it runs: ractor keeps the handler's future inline in the actor's
        // message loop, which every idle actor holds at its largest size.
        Box::pin(handle(myself, msg, state).instrument(span)).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.schedule.timer.take() {
            timer.abort();
        }
        state.replication.stop_prober();
        state.rest.wake();
        state.args.api.release_events();
        // A step that was under way when the instance was deleted may have put back its
        // snapshot and series after the supervisor dropped them: drop them again, after it.
        let key = &state.args.key;
        if observe::cached_instance(state).is_none() {
            state.args.snapshots.remove(key);
            let _ = state
                .args
                .metrics
                .send_message(MetricsMsg::Forget(key.clone()));
        }
        let _ = state.args.metrics.send_message(MetricsMsg::ActorStopped);
        Ok(())
    }
}

/// One message, inside the instance's span.
async fn handle(myself: ActorRef<InstanceMsg>, msg: InstanceMsg, state: &mut InstanceState) {
    match msg {
        #[cfg(test)]
        InstanceMsg::Fail => {}
        #[cfg(test)]
        InstanceMsg::Phases(reply) => {
            let _ = reply.send(state.phases.steps.clone());
        }
        InstanceMsg::Tick => queue_step(&myself, state),
        InstanceMsg::Rest => rest::delay_ended(&myself, state),
        InstanceMsg::Probed(round) => {
            // An unchanged round starts no step: it would write nothing.
            if replicate::probed(state, round) {
                queue_step(&myself, state);
            }
        }
        InstanceMsg::Changed => {
            queue_step(&myself, state);
            rest::handled(&myself, &mut state.handled, &mut state.rest, &state.args);
        }
        InstanceMsg::Routed(arrival) => {
            stages::since(Stage::Deliver, arrival.routed);
            let since = state.schedule.event_since.get_or_insert(arrival.received);
            *since = (*since).min(arrival.received);
            queue_step(&myself, state);
            rest::handled(&myself, &mut state.handled, &mut state.rest, &state.args);
        }
        InstanceMsg::StatusSeen => {
            rest::handled(&myself, &mut state.handled, &mut state.rest, &state.args);
            let key = &state.args.key;
            if let Some(current) = observe::seen_status(
                &state.args.stores,
                &mut state.written,
                &key.namespace,
                &key.name,
            ) {
                state.specs.follow(&current);
            }
        }
        InstanceMsg::Step => {
            // Taken before reading the caches, so the step decides on what they hold when it
            // runs, and an instance waiting its turn holds no desired objects in memory.
            if let Some(queued) = state.schedule.queued_at.take() {
                stages::since(Stage::Queue, queued);
            }
            if std::mem::take(&mut state.schedule.awaits_allocation) {
                state.schedule.allocation = Some(state.args.api.limiter().allocation().await);
            }
            let mut turn = match state.schedule.kept_turn.take() {
                Some(turn) => Some(turn),
                None => {
                    let waited = Instant::now();
                    let turn = state.args.api.step_turn().await;
                    stages::since(Stage::Permit, waited);
                    state.schedule.chained = 0;
                    Some(turn)
                }
            };
            state.schedule.step_queued = false;
            let event = state.schedule.event_since.take();
            let began = Instant::now();
            // Boxed: the step's future is large and needed only while a step runs, not kept
            // in every idle actor's task.
            let outcome = Box::pin(step::step(state, &mut turn)).await;
            // An allocation turn is taken for this step's Service creation only: a step that
            // did not create it (the cache showed the Service by then, or an earlier act came
            // first) must not keep it, or every turn ends up held and creations wait forever.
            state.schedule.allocation = None;
            if let (Some(event), Ok(None)) = (event, &outcome) {
                stages::since(Stage::EventToWrite, event);
            }
            // A step that wrote is followed at once by the next (an edit's template patch
            // follows its restart record): that one keeps the turn rather than queue again
            // behind every waiting instance, a few steps in a row at most.
            if matches!(outcome, Ok(None)) && state.schedule.chained < CHAINED_STEPS {
                state.schedule.chained += 1;
                state.schedule.kept_turn = turn;
            }
            let _ = state.args.metrics.send_message(MetricsMsg::StepTook {
                decision: state.last_step.decided,
                took: began.elapsed(),
            });
            replicate::sync_prober(&myself, &mut state.replication);
            Box::pin(after_step(&myself, state, outcome)).await;
        }
    }
}

/// Steps that follow a writing step in a row on one turn before the instance queues again.
const CHAINED_STEPS: u32 = 4;

fn queue_step(myself: &ActorRef<InstanceMsg>, state: &mut InstanceState) {
    state.rest.wake();
    if !state.schedule.step_queued {
        state.schedule.step_queued = true;
        state.schedule.queued_at = Some(Instant::now());
        // Sending to ourselves fails only while stopping, when no step is wanted.
        let _ = myself.send_message(InstanceMsg::Step);
    }
}

/// Spreads timers of many instances that started together, so they do not fire in one burst.
pub(super) fn jittered(base: Duration) -> Duration {
    let nanos = Timestamp::now().subsec_nanosecond().unsigned_abs();
    base + base.mul_f64(f64::from(nanos % 1000) / 5000.0)
}

fn schedule_tick(
    myself: &ActorRef<InstanceMsg>,
    state: &mut InstanceState,
    after: Option<Duration>,
) {
    if let Some(timer) = state.schedule.timer.take() {
        timer.abort();
    }
    state.schedule.timer =
        after.map(|after| myself.send_after(jittered(after), || InstanceMsg::Tick));
}

async fn after_step(
    myself: &ActorRef<InstanceMsg>,
    state: &mut InstanceState,
    outcome: Result<Option<Duration>, kube_io::Error>,
) {
    if !matches!(outcome, Ok(None)) {
        state.args.api.release_events();
    }
    match outcome {
        Ok(None) => {
            state.schedule.consecutive_failures = 0;
            state.reported.api_refusal = None;
            queue_step(myself, state);
        }
        Ok(Some(wake_in)) => {
            state.schedule.consecutive_failures = 0;
            let wake = (wake_in < Duration::MAX).then_some(wake_in);
            schedule_tick(myself, state, wake);
            if wake.is_none() && !state.schedule.step_queued {
                rest::wait(myself, &mut state.rest, &state.args);
            }
        }
        Err(error) => failed(myself, state, &error).await,
    }
}

/// A step that failed: reads the error into a [`StepFailure`], asks
/// [`crate::decide::after_failure`] what follows, and does it.
async fn failed(myself: &ActorRef<InstanceMsg>, state: &mut InstanceState, error: &kube_io::Error) {
    let failure = if error.is_namespace_terminating() {
        StepFailure::NamespaceTerminating
    } else if error.is_conflict() {
        StepFailure::Conflict
    } else if error.is_invalid() {
        StepFailure::Refused
    } else {
        StepFailure::Other
    };
    let instance = observe::cached_instance(state);
    let generation = instance.as_ref().and_then(|i| i.metadata.generation);
    let refusal_told = state
        .reported
        .api_refusal
        .as_ref()
        .is_some_and(|(g, _)| *g == generation);
    let after = crate::decide::after_failure(
        failure,
        error.reason(),
        &error.to_string(),
        state.schedule.consecutive_failures,
        state.args.timings.max_backoff,
        refusal_told,
    );
    match failure {
        StepFailure::NamespaceTerminating => {
            debug!("namespace is being deleted; waiting for the instance to go");
        }
        StepFailure::Conflict => {
            debug!(%error, "the object changed since it was read; looking again")
        }
        StepFailure::Refused if after.refusal.is_some() => {
            warn!(%error, reason = error.reason(), "the API server refused a write; not retried until the spec changes");
        }
        StepFailure::Refused => {}
        StepFailure::Other => {
            let retry_in_secs = after.retry_in.unwrap_or_default().as_secs();
            warn!(%error, reason = error.reason(), retry_in_secs, "reconcile step failed");
        }
    }
    state.schedule.consecutive_failures = after.failures;
    if after.counted {
        let _ = state.args.metrics.send_message(MetricsMsg::ReconcileError {
            key: state.args.key.clone(),
            category: error.reason(),
        });
    }
    if let Some(instance) = &instance {
        if let Some(event) = &after.event {
            tell::tell(&state.args, instance, event).await;
        }
        if let Some(refusal) = after.refusal {
            state.reported.api_refusal = Some((generation, refusal));
            record_refusal(state).await;
        }
    }
    schedule_tick(myself, state, after.retry_in);
}

/// Keeps an API refusal on the status until the spec changes.
async fn record_refusal(state: &mut InstanceState) {
    if let Some(seen) = observe(
        &state.args.stores,
        &mut state.written,
        &state.args.key.namespace,
        &state.args.key.name,
    ) && let Err(error) = state.reporter().write_status(&seen).await
    {
        debug!(%error, "could not record the refusal in status; the next step will");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_adds_at_most_a_fifth() {
        let base = Duration::from_secs(10);
        let j = jittered(base);
        assert!(j >= base && j <= base + Duration::from_secs(2), "{j:?}");
    }
}
