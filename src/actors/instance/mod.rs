//! One actor per RedisInstance: holds its last known config hash and walks the restart
//! sequence one step per message, so a change that arrives mid-sequence waits its turn.
//!
//! `steps` performs the step the planner chose; `report` writes status, Events and logs.

mod report;
mod steps;

use report::{log_hash_comparison, refuse, write_status};
use steps::perform;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use kube::ResourceExt;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};
use tracing::{debug, warn};

use super::metrics::{InstanceKey, MetricsMsg};
use crate::config::render::{CONFIG_FILE_KEY, render, short_hash};
use crate::config::validate::validate;
use crate::crd::{RedisInstance, RedisInstanceStatus};
use crate::kube_io::{self, InstanceApi};
use crate::plan::{Desired, Observed, Stage, Step, next_step};
use crate::resources::{config_hash_of, config_map_name};
/// How long the actor waits before checking again, and when it gives up waiting quietly.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Poll period while a rollout or deletion is in flight (events usually wake it sooner).
    pub progress_poll: Duration,
    /// Period of the drift check when nothing is in flight.
    pub resync: Duration,
    /// A Recreate deletion that takes longer is reported (and still awaited).
    pub recreate_timeout: Duration,
    /// A rollout that takes longer is reported (and still awaited).
    pub rollout_timeout: Duration,
    /// Upper bound of the retry backoff after API errors.
    pub max_backoff: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            progress_poll: Duration::from_secs(2),
            resync: Duration::from_secs(60),
            recreate_timeout: Duration::from_secs(120),
            rollout_timeout: Duration::from_secs(300),
            max_backoff: Duration::from_secs(60),
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
    /// The watcher saw the instance added or changed.
    Spec(Arc<RedisInstance>),
    /// A ConfigMap, StatefulSet or Pod of the instance changed.
    OwnedChanged,
    /// Take the next step; self-sent, at most one queued, so bursts of events coalesce.
    Step,
    /// Timer: poll progress, retry after an error, or resync.
    Tick,
}

/// Everything an instance actor is started with.
pub struct InstanceArgs {
    /// Which instance.
    pub key: InstanceKey,
    /// API access in its namespace.
    pub api: InstanceApi,
    /// Where counts go.
    pub metrics: ActorRef<MetricsMsg>,
    /// Where the HTTP side reads from.
    pub snapshots: Snapshots,
    /// Poll periods and timeouts.
    pub timings: Timings,
}

/// The actor's memory between messages.
pub struct InstanceState {
    args: InstanceArgs,
    /// Latest object from the watcher.
    instance: Option<Arc<RedisInstance>>,
    /// Latest object that passed validation; what the pods keep running when an edit is refused.
    last_good: Option<Arc<RedisInstance>>,
    /// Latest spec whose config completed a rollout: where a config Redis rejects rolls back to.
    last_healthy: Option<Arc<RedisInstance>>,
    /// A config that passed validation but made redis-server exit.
    rejected: Option<Rejection>,
    /// Hash on the live StatefulSet's template, as last seen.
    last_known_hash: Option<String>,
    stage: Stage,
    step_queued: bool,
    /// The pending Tick; aborted when another is scheduled, so each actor has one timer.
    timer: Option<JoinHandle<Result<(), MessagingErr<InstanceMsg>>>>,
    /// Generation whose StatefulSet was last applied; `None` after a start, so the first pass
    /// re-applies (a no-op on the server when nothing changed).
    applied_generation: Option<i64>,
    restart_requested: bool,
    restart_began: Option<Instant>,
    stage_deadline: Option<Instant>,
    deadline_reported: bool,
    refused_generation: Option<i64>,
    consecutive_failures: u32,
    last_status: Option<RedisInstanceStatus>,
}

/// A config redis-server itself refused.
struct Rejection {
    hash: String,
    message: String,
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
        Ok(InstanceState {
            args,
            instance: None,
            last_good: None,
            last_healthy: None,
            rejected: None,
            last_known_hash: None,
            stage: Stage::Steady,
            step_queued: false,
            timer: None,
            applied_generation: None,
            restart_requested: false,
            restart_began: None,
            stage_deadline: None,
            deadline_reported: false,
            refused_generation: None,
            consecutive_failures: 0,
            last_status: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            InstanceMsg::Spec(instance) => {
                state.instance = Some(instance);
                queue_step(&myself, state);
            }
            InstanceMsg::OwnedChanged | InstanceMsg::Tick => queue_step(&myself, state),
            InstanceMsg::Step => {
                state.step_queued = false;
                let outcome = take_step(state).await;
                after_step(&myself, state, outcome).await;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }
}

fn queue_step(myself: &ActorRef<InstanceMsg>, state: &mut InstanceState) {
    if !state.step_queued {
        state.step_queued = true;
        // Sending to ourselves fails only while stopping, when no step is wanted.
        let _ = myself.send_message(InstanceMsg::Step);
    }
}

fn schedule_tick(myself: &ActorRef<InstanceMsg>, state: &mut InstanceState, after: Duration) {
    if let Some(timer) = state.timer.take() {
        timer.abort();
    }
    state.timer = Some(myself.send_after(after, || InstanceMsg::Tick));
}

/// Consecutive failed steps after which a person is told with a Warning Event; fewer are
/// routine (a conflict, an apiserver restart) and only logged.
const FAILURES_BEFORE_EVENT: u32 = 3;

async fn after_step(
    myself: &ActorRef<InstanceMsg>,
    state: &mut InstanceState,
    outcome: Result<Step, kube_io::Error>,
) {
    let timings = state.args.timings;
    match outcome {
        Ok(step) => {
            state.consecutive_failures = 0;
            if step.is_write() {
                queue_step(myself, state);
            } else if state.stage != Stage::Steady {
                schedule_tick(myself, state, timings.progress_poll);
            } else {
                schedule_tick(myself, state, timings.resync);
            }
        }
        Err(error) => {
            state.consecutive_failures += 1;
            let backoff = backoff(state.consecutive_failures, timings.max_backoff);
            let key = &state.args.key;
            warn!(namespace = %key.namespace, instance = %key.name, %error, reason = error.reason(),
                retry_in_secs = backoff.as_secs(), "reconcile step failed");
            let _ = state.args.metrics.send_message(MetricsMsg::ReconcileError {
                key: key.clone(),
                reason: error.reason(),
            });
            if state.consecutive_failures == FAILURES_BEFORE_EVENT
                && let Some(instance) = state.instance.clone()
            {
                let note = format!(
                    "{error}; failed {FAILURES_BEFORE_EVENT} times in a row, retrying with backoff"
                );
                state
                    .args
                    .api
                    .event(&instance, true, error.reason(), "Reconcile", note)
                    .await;
            }
            schedule_tick(myself, state, backoff);
        }
    }
}

/// A rejection survives operator restarts through `status.rejectedConfigHash`: without it, a
/// restarted operator would roll the config Redis refused out again. A new config clears it.
fn recall_rejection(state: &mut InstanceState, current: &RedisInstance, desired_hash: &str) {
    let recorded = current
        .status
        .as_ref()
        .and_then(|s| s.rejected_config_hash.as_deref());
    if state.rejected.is_none() && recorded == Some(desired_hash) {
        let message = current
            .status
            .as_ref()
            .and_then(|s| crate::status::find_condition(s, crate::status::condition::CONFIG_VALID))
            .filter(|c| c.reason == "RedisRejectedConfig")
            .map(|c| c.message.clone())
            .unwrap_or_else(|| {
                format!(
                    "redis-server refused config {}; fix spec.config",
                    short_hash(desired_hash)
                )
            });
        state.rejected = Some(Rejection {
            hash: desired_hash.to_owned(),
            message,
        });
    }
    if state
        .rejected
        .as_ref()
        .is_some_and(|r| r.hash != desired_hash)
    {
        state.rejected = None;
    }
}

/// 1s, 2s, 4s ... capped.
fn backoff(failures: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(16)).min(max)
}

/// One pass: observe, decide, act once, report.
async fn take_step(state: &mut InstanceState) -> Result<Step, kube_io::Error> {
    let Some(cached) = state.instance.clone() else {
        return Ok(Step::Idle);
    };
    // Act on the newest spec, not the one this message was queued for: edits still waiting in
    // the mailbox coalesce into this step, so quick successive edits end in one restart.
    let Some(latest) = state.args.api.instance(&cached.name_any()).await? else {
        // Deleted; the supervisor stops this actor when the watch reports it.
        return Ok(Step::Idle);
    };
    let current = Arc::new(latest);
    state.instance = Some(current.clone());
    if current.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes everything the instance owns.
        return Ok(Step::Idle);
    }
    let violations = validate(&current.spec.config);
    if violations.is_empty() {
        state.last_good = Some(current.clone());
        state.refused_generation = None;
    } else {
        refuse(state, &current, &violations).await;
    }
    // A refused edit changes nothing: keep driving the last good spec (which also lets a
    // Recreate already under way finish with the config it started with).
    let Some(mut target) = state.last_good.clone() else {
        // Nothing valid seen since this actor started (e.g. the operator restarted while the
        // spec was invalid): touch nothing, but report the pods that do run.
        let live_sts = state.args.api.statefulset(&current.name_any()).await?;
        state.last_known_hash = live_sts
            .as_ref()
            .and_then(config_hash_of)
            .map(str::to_owned);
        write_status(state, &current, live_sts.as_ref(), &violations, None).await?;
        return Ok(Step::Idle);
    };
    let mut rendered = render(&target.spec.config);
    recall_rejection(state, &current, &rendered.hash);
    let name = target.name_any();
    let api = state.args.api.clone();
    let live_sts = api.statefulset(&name).await?;
    let rejection = state
        .rejected
        .as_ref()
        .filter(|r| r.hash == rendered.hash)
        .map(|r| r.message.clone());
    if rejection.is_some() {
        // Redis refused this config: drive the last one that ran instead.
        let Some(healthy) = state.last_healthy.clone() else {
            // No config known to run since this actor started: leave the pods as they are.
            let live = live_sts
                .as_ref()
                .and_then(config_hash_of)
                .map(str::to_owned);
            log_hash_comparison(state, live.as_deref(), &rendered.hash);
            state.last_known_hash = live;
            write_status(
                state,
                &current,
                live_sts.as_ref(),
                &violations,
                rejection.as_deref(),
            )
            .await?;
            return Ok(Step::Idle);
        };
        target = healthy;
        rendered = render(&target.spec.config);
    }
    let live_cm = api.config_map(&config_map_name(&target)).await?;
    let live_text = live_cm
        .as_ref()
        .and_then(|cm| cm.data.as_ref()?.get(CONFIG_FILE_KEY).cloned());
    let pods = if state.stage == Stage::Steady {
        Vec::new()
    } else {
        api.pods(&target).await?
    };
    let live_hash = live_sts
        .as_ref()
        .and_then(config_hash_of)
        .map(str::to_owned);
    if live_sts.is_some() {
        log_hash_comparison(state, live_hash.as_deref(), &rendered.hash);
    }
    state.last_known_hash = live_hash.clone();
    let desired = Desired {
        config_text: &rendered.text,
        hash: &rendered.hash,
        strategy: target.spec.restart_strategy,
        spec_changed: state.applied_generation != target.metadata.generation,
        restart_requested: state.restart_requested,
    };
    let observed = Observed {
        config_text: live_text.as_deref(),
        statefulset: live_sts.as_ref(),
        pods: pods.len(),
    };
    let step = next_step(&desired, &observed, &state.stage);
    debug!(namespace = %state.args.key.namespace, instance = %name, ?step, stage = ?state.stage, "next step");
    let sts_after = perform(
        state,
        &target,
        &rendered,
        live_text.as_deref(),
        live_sts.as_ref(),
        &pods,
        &step,
    )
    .await?;
    if !step.is_write() {
        write_status(
            state,
            &current,
            sts_after.as_ref().or(live_sts.as_ref()),
            &violations,
            rejection.as_deref(),
        )
        .await?;
    }
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, max), Duration::from_secs(1));
        assert_eq!(backoff(2, max), Duration::from_secs(2));
        assert_eq!(backoff(4, max), Duration::from_secs(8));
        assert_eq!(backoff(30, max), max);
    }
}
