//! One actor per RedisInstance: holds its last known config hash and walks the restart
//! sequence one step per message, so a change that arrives mid-sequence waits its turn.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, info, warn};

use super::metrics::{InstanceKey, MetricsMsg};
use crate::config::render::{CONFIG_FILE_KEY, RenderedConfig, config_hash, render, short_hash};
use crate::config::validate::{Violation, validate};
use crate::crd::{RedisInstance, RedisInstanceStatus};
use crate::kube_io::{self, InstanceApi};
use crate::plan::{Desired, Observed, Stage, Step, next_step};
use crate::resources::{
    config_hash_of, config_map, config_map_name, restarted_at_of, service, statefulset,
};
use crate::status::{ConditionValue, condition, phase, ready_condition, set_condition};

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
    /// Hash on the live StatefulSet's template, as last seen.
    last_known_hash: Option<String>,
    stage: Stage,
    step_queued: bool,
    timer: Option<JoinHandle<()>>,
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
                after_step(&myself, state, outcome);
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
    let handle = myself.send_after(after, || InstanceMsg::Tick);
    state.timer = Some(ractor::concurrency::spawn(async move {
        let _ = handle.await;
    }));
}

fn after_step(
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
            schedule_tick(myself, state, backoff);
        }
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
    let Some(target) = state.last_good.clone() else {
        write_status(state, &current, None, &violations).await?;
        return Ok(Step::Idle);
    };
    let rendered = render(&target.spec.config);
    let name = target.name_any();
    let api = state.args.api.clone();
    let live_cm = api.config_map(&config_map_name(&target)).await?;
    let live_text = live_cm
        .as_ref()
        .and_then(|cm| cm.data.as_ref()?.get(CONFIG_FILE_KEY).cloned());
    let live_sts = api.statefulset(&name).await?;
    let pods = if state.stage == Stage::AwaitingDeletion {
        api.pods(&target).await?.len()
    } else {
        0
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
        pods,
    };
    let step = next_step(&desired, &observed, &state.stage);
    debug!(namespace = %state.args.key.namespace, instance = %name, ?step, stage = ?state.stage, "next step");
    let sts_after = perform(
        state,
        &target,
        &rendered,
        live_text.as_deref(),
        live_sts.as_ref(),
        &step,
    )
    .await?;
    if !step.is_write() {
        write_status(
            state,
            &current,
            sts_after.as_ref().or(live_sts.as_ref()),
            &violations,
        )
        .await?;
    }
    Ok(step)
}

/// "Config hash comparison" at info when it matters (a mismatch, or the first look after a
/// start); at debug on quiet resyncs so the log stays readable.
fn log_hash_comparison(state: &InstanceState, live: Option<&str>, desired: &str) {
    let key = &state.args.key;
    let matches = live == Some(desired);
    if !matches || state.last_known_hash.is_none() {
        info!(namespace = %key.namespace, instance = %key.name, current_hash = live.unwrap_or(""),
            desired_hash = desired, matches, "Config hash comparison");
    } else {
        debug!(namespace = %key.namespace, instance = %key.name, current_hash = live.unwrap_or(""),
            desired_hash = desired, matches, "Config hash comparison");
    }
}

async fn perform(
    state: &mut InstanceState,
    target: &RedisInstance,
    rendered: &RenderedConfig,
    live_text: Option<&str>,
    live_sts: Option<&StatefulSet>,
    step: &Step,
) -> Result<Option<StatefulSet>, kube_io::Error> {
    let api = state.args.api.clone();
    let key = state.args.key.clone();
    let (ns, name) = (&key.namespace, &key.name);
    let old_hash = live_sts.and_then(config_hash_of).unwrap_or("").to_owned();
    let new_hash = rendered.hash.as_str();
    let marker = live_sts.and_then(restarted_at_of).map(str::to_owned);
    match step {
        Step::WriteConfigMap => {
            let old_file_hash = live_text.map(config_hash).unwrap_or_default();
            info!(namespace = %ns, instance = %name, old_hash = %old_file_hash, new_hash,
                missing = live_text.is_none(), "ConfigMap configuration changed, updating");
            api.apply_service(&service(target)).await?;
            api.apply("ConfigMap", &config_map(target, rendered))
                .await?;
            // The spec's first two rules: pods started from another file must restart too.
            if live_sts.is_some() && state.stage != Stage::AwaitingDeletion {
                state.restart_requested = true;
            }
            Ok(None)
        }
        Step::CreateStatefulSet => {
            info!(namespace = %ns, instance = %name, new_hash, "StatefulSet not found or needs recreation, creating new one");
            api.apply_service(&service(target)).await?;
            let created = api
                .apply("StatefulSet", &statefulset(target, new_hash, None))
                .await?;
            let recreated = state.stage == Stage::AwaitingDeletion;
            state.applied_generation = target.metadata.generation;
            state.restart_requested = false;
            enter_stage(state, Stage::RollingOut);
            let note = if recreated {
                format!(
                    "recreated StatefulSet {name} with config {}",
                    short_hash(new_hash)
                )
            } else {
                format!(
                    "created StatefulSet {name} with config {}",
                    short_hash(new_hash)
                )
            };
            api.event(
                target,
                false,
                if recreated { "Recreated" } else { "Created" },
                "CreateStatefulSet",
                note,
            )
            .await;
            Ok(Some(created))
        }
        Step::RollOut | Step::DeleteForRecreate => {
            let strategy = target.spec.restart_strategy.as_str();
            info!(namespace = %ns, instance = %name, old_hash = %old_hash, new_hash, strategy,
                "ConfigMap was updated or StatefulSet needs restart");
            begin_restart(state, target, &old_hash, new_hash, strategy).await;
            if *step == Step::RollOut {
                let marker = if old_hash == new_hash {
                    Some(Timestamp::now().to_string())
                } else {
                    marker
                };
                let updated = api
                    .apply(
                        "StatefulSet",
                        &statefulset(target, new_hash, marker.as_deref()),
                    )
                    .await?;
                state.applied_generation = target.metadata.generation;
                state.restart_requested = false;
                enter_stage(state, Stage::RollingOut);
                Ok(Some(updated))
            } else {
                api.delete_statefulset(name).await?;
                state.restart_requested = false;
                enter_stage(state, Stage::AwaitingDeletion);
                Ok(None)
            }
        }
        Step::ApplyStatefulSet => {
            let applied = api
                .apply(
                    "StatefulSet",
                    &statefulset(target, new_hash, marker.as_deref()),
                )
                .await?;
            state.applied_generation = target.metadata.generation;
            if !crate::plan::rollout_complete(&applied) {
                enter_stage(state, Stage::RollingOut);
            }
            Ok(Some(applied))
        }
        Step::AwaitDeletion | Step::AwaitRollout => {
            check_deadline(state, target).await;
            Ok(None)
        }
        Step::Idle => {
            if state.stage != Stage::Steady {
                finish_restart(state, target, new_hash).await;
            }
            let adopted = api.adopt_claims(target).await?;
            if adopted > 0 {
                info!(namespace = %ns, instance = %name, adopted, "adopted data volume claims");
            }
            Ok(None)
        }
    }
}

fn enter_stage(state: &mut InstanceState, stage: Stage) {
    let timeout = match stage {
        Stage::AwaitingDeletion => Some(state.args.timings.recreate_timeout),
        Stage::RollingOut => Some(state.args.timings.rollout_timeout),
        Stage::Steady => None,
    };
    state.stage_deadline = timeout.map(|t| Instant::now() + t);
    state.deadline_reported = false;
    state.stage = stage;
}

async fn begin_restart(
    state: &mut InstanceState,
    target: &RedisInstance,
    old_hash: &str,
    new_hash: &str,
    strategy: &'static str,
) {
    let key = state.args.key.clone();
    let _ = state.args.metrics.send_message(MetricsMsg::Restarted {
        key: key.clone(),
        strategy,
    });
    if old_hash != new_hash {
        let _ = state
            .args
            .metrics
            .send_message(MetricsMsg::HashMismatch(key));
    }
    state.restart_began = Some(Instant::now());
    let status = state
        .last_status
        .get_or_insert_with(|| target.status.clone().unwrap_or_default());
    status.restarts += 1;
    status.last_restart_time = Some(Time(Timestamp::now()));
    let how = if strategy == "Recreate" {
        "deleting the StatefulSet and its pods, then recreating it"
    } else {
        "replacing pods one at a time"
    };
    let note = format!(
        "config {} -> {}: {how}",
        short_hash(old_hash),
        short_hash(new_hash)
    );
    state
        .args
        .api
        .event(target, false, "RestartStarted", "Restart", note)
        .await;
}

async fn finish_restart(state: &mut InstanceState, target: &RedisInstance, hash: &str) {
    let key = state.args.key.clone();
    let strategy = target.spec.restart_strategy.as_str();
    if let Some(began) = state.restart_began.take() {
        let took = began.elapsed();
        let _ = state
            .args
            .metrics
            .send_message(MetricsMsg::RestartCompleted {
                key: key.clone(),
                strategy,
                took,
            });
        info!(namespace = %key.namespace, instance = %key.name, hash, strategy,
            took_secs = took.as_secs_f64(), "restart complete");
        let note = format!("all replicas run config {} and are ready", short_hash(hash));
        state
            .args
            .api
            .event(target, false, "RestartCompleted", "Restart", note)
            .await;
    }
    enter_stage(state, Stage::Steady);
}

async fn check_deadline(state: &mut InstanceState, target: &RedisInstance) {
    let overdue = state.stage_deadline.is_some_and(|d| Instant::now() > d);
    if !overdue || state.deadline_reported {
        return;
    }
    state.deadline_reported = true;
    let key = &state.args.key;
    let (reason, note) = if state.stage == Stage::AwaitingDeletion {
        (
            "RecreateTimeout",
            format!(
                "StatefulSet {} or its pods still exist {}s after deletion; still waiting (check finalizers on its pods)",
                key.name,
                state.args.timings.recreate_timeout.as_secs()
            ),
        )
    } else {
        (
            "RolloutStuck",
            format!(
                "rollout not finished after {}s; check the pods' readiness and redis logs",
                state.args.timings.rollout_timeout.as_secs()
            ),
        )
    };
    warn!(namespace = %key.namespace, instance = %key.name, reason, "{note}");
    state
        .args
        .api
        .event(target, true, reason, "Restart", note)
        .await;
}

async fn refuse(state: &mut InstanceState, current: &RedisInstance, violations: &[Violation]) {
    if state.refused_generation == current.metadata.generation {
        return;
    }
    state.refused_generation = current.metadata.generation;
    let key = state.args.key.clone();
    let message = refusal_message(violations, state.last_known_hash.as_deref());
    warn!(namespace = %key.namespace, instance = %key.name, generation = current.metadata.generation,
        violations = %message, "config refused");
    let _ = state
        .args
        .metrics
        .send_message(MetricsMsg::InvalidConfig(key));
    state
        .args
        .api
        .event(current, true, "InvalidConfig", "Validate", message)
        .await;
}

/// What a person reads in the condition and the Event.
fn refusal_message(violations: &[Violation], running_hash: Option<&str>) -> String {
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

async fn write_status(
    state: &mut InstanceState,
    current: &RedisInstance,
    sts: Option<&StatefulSet>,
    violations: &[Violation],
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
    let config_valid = violations.is_empty();
    // Creating pods for the first time is Pending, not Restarting.
    let restarting = state.restart_began.is_some() || state.stage == Stage::AwaitingDeletion;
    status.observed_generation = generation;
    status.ready_replicas = ready;
    status.config_hash = sts.and_then(config_hash_of).map(str::to_owned);
    status.short_hash = status
        .config_hash
        .as_deref()
        .map(|h| short_hash(h).to_owned());
    let current_phase = phase(config_valid, restarting, ready, wanted);
    status.phase = Some(current_phase);
    let validity = if config_valid {
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
    let unchanged =
        current.status.as_ref() == Some(&status) || state.last_status.as_ref() == Some(&status);
    if !unchanged {
        state.args.api.write_status(current, &status).await?;
    }
    state.last_status = Some(status);
    Ok(())
}

fn progressing(state: &InstanceState) -> ConditionValue {
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
    fn backoff_doubles_and_caps() {
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, max), Duration::from_secs(1));
        assert_eq!(backoff(2, max), Duration::from_secs(2));
        assert_eq!(backoff(4, max), Duration::from_secs(8));
        assert_eq!(backoff(30, max), max);
    }

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
