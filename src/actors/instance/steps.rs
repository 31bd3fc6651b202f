//! The steps of the restart sequence: each writes to the API at most once, then returns.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tracing::{info, warn};

use super::report::report_refusal;
use super::{InstanceState, Rejection};
use crate::actors::metrics::MetricsMsg;
use crate::config::render::{RenderedConfig, config_hash, render, short_hash};
use crate::crd::RedisInstance;
use crate::kube_io;
use crate::plan::{Stage, Step, crashed_pod, pod_config_hash};
use crate::resources::{config_hash_of, config_map, restarted_at_of, service, statefulset};
pub(super) async fn perform(
    state: &mut InstanceState,
    target: &RedisInstance,
    rendered: &RenderedConfig,
    live_text: Option<&str>,
    live_sts: Option<&StatefulSet>,
    pods: &[Pod],
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
            info!(namespace = %ns, instance = %name, old_hash = %state.last_known_hash.clone().unwrap_or_default(),
                new_hash, "StatefulSet not found or needs recreation, creating new one");
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
            let repeat_delete = state.stage == Stage::AwaitingDeletion;
            let (updated, next_stage) = if *step == Step::RollOut {
                let marker = if old_hash == new_hash {
                    Some(Timestamp::now().to_string())
                } else {
                    marker
                };
                let sts = statefulset(target, new_hash, marker.as_deref());
                let updated = api.apply("StatefulSet", &sts).await?;
                state.applied_generation = target.metadata.generation;
                (Some(updated), Stage::RollingOut)
            } else {
                api.delete_statefulset(name).await?;
                (None, Stage::AwaitingDeletion)
            };
            state.restart_requested = false;
            // Counted once the write succeeded, so a retried write is not a second restart; a
            // StatefulSet deleted again mid-Recreate belongs to the restart already counted.
            if !repeat_delete {
                begin_restart(state, target, &old_hash, new_hash, strategy).await;
            }
            enter_stage(state, next_stage);
            Ok(updated)
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
        Step::AwaitRollout => {
            detect_rejection(state, target, new_hash, pods).await;
            replace_rejected_pods(state, new_hash, pods).await?;
            check_deadline(state, target).await;
            adopt_claims(state, target).await;
            Ok(None)
        }
        Step::AwaitDeletion => {
            if state.stage != Stage::AwaitingDeletion {
                // Found mid-deletion (the operator restarted during a Recreate): keep waiting.
                enter_stage(state, Stage::AwaitingDeletion);
            }
            check_deadline(state, target).await;
            Ok(None)
        }
        Step::Idle => {
            state.last_healthy = Some(Arc::new(target.clone()));
            if state.stage != Stage::Steady {
                finish_restart(state, target, new_hash).await;
            }
            if api.service(name).await?.is_none() {
                info!(namespace = %ns, instance = %name, "Service missing, recreating it");
                api.apply_service(&service(target)).await?;
            }
            adopt_claims(state, target).await;
            Ok(None)
        }
    }
}

/// Claims get the instance as owner as soon as they exist, so deleting an instance that never
/// became ready leaves none behind. Best effort: a failure is retried on the next pass.
async fn adopt_claims(state: &InstanceState, target: &RedisInstance) {
    let key = &state.args.key;
    match state.args.api.adopt_claims(target).await {
        Ok(0) => {}
        Ok(adopted) => {
            info!(namespace = %key.namespace, instance = %key.name, adopted, "adopted data volume claims")
        }
        Err(error) => {
            warn!(namespace = %key.namespace, instance = %key.name, %error, "failed to adopt data volume claims")
        }
    }
}

pub(super) fn enter_stage(state: &mut InstanceState, stage: Stage) {
    let timeout = match stage {
        Stage::AwaitingDeletion => Some(state.args.timings.recreate_timeout),
        Stage::RollingOut => Some(state.args.timings.rollout_timeout),
        Stage::Steady => None,
    };
    state.stage_deadline = timeout.map(|t| Instant::now() + t);
    state.deadline_reported = false;
    state.stage = stage;
}

pub(super) async fn begin_restart(
    state: &mut InstanceState,
    target: &RedisInstance,
    old_hash: &str,
    new_hash: &str,
    strategy: &'static str,
) {
    let key = state.args.key.clone();
    if old_hash != new_hash {
        let _ = state
            .args
            .metrics
            .send_message(MetricsMsg::HashMismatch(key.clone()));
    }
    if state.restart_began.is_some() && state.stage == Stage::RollingOut {
        // An edit during a rollout: the StatefulSet controller moves straight on to the newest
        // template, so this is the same restart with a new target, not a second one.
        let note = format!(
            "config changed during the restart; continuing with config {}",
            short_hash(new_hash)
        );
        state
            .args
            .api
            .event(target, false, "RestartRetargeted", "Restart", note)
            .await;
        return;
    }
    let _ = state.args.metrics.send_message(MetricsMsg::Restarted {
        key: key.clone(),
        strategy,
    });
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

pub(super) async fn finish_restart(state: &mut InstanceState, target: &RedisInstance, hash: &str) {
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

pub(super) async fn check_deadline(state: &mut InstanceState, target: &RedisInstance) {
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
    warn!(namespace = %key.namespace, instance = %key.name, reason, detail = %note, "restart sequence overdue");
    state
        .args
        .api
        .event(target, true, reason, "Restart", note)
        .await;
}

/// A pod on the new config whose redis-server exited with an error means Redis refused the
/// config; remember it, so the next step rolls back to the last config that ran.
pub(super) async fn detect_rejection(
    state: &mut InstanceState,
    target: &RedisInstance,
    hash: &str,
    pods: &[Pod],
) {
    let already = state.rejected.as_ref().is_some_and(|r| r.hash == hash);
    let rolling_back = state
        .last_healthy
        .as_ref()
        .is_some_and(|h| render(&h.spec.config).hash == hash);
    if already || rolling_back {
        return;
    }
    let Some(crash) = crashed_pod(pods, hash) else {
        return;
    };
    let key = state.args.key.clone();
    let fallback = state
        .last_healthy
        .as_ref()
        .map(|h| render(&h.spec.config).hash);
    let outcome = match &fallback {
        Some(old) => format!(
            "rolling back to config {}, the last one that ran",
            short_hash(old)
        ),
        None => "no earlier config ran, so there is nothing to roll back to".to_owned(),
    };
    let message = format!(
        "redis-server exited with code {} in pod {} under config {}; {outcome}. \
         See the pod's log for Redis's reason, then fix spec.config",
        crash.exit_code,
        crash.pod,
        short_hash(hash)
    );
    warn!(namespace = %key.namespace, instance = %key.name, pod = %crash.pod, exit_code = crash.exit_code,
        hash, "Redis rejected the config");
    report_refusal(
        state,
        target,
        "RedisRejectedConfig",
        "Restart",
        message.clone(),
    )
    .await;
    state.rejected = Some(Rejection {
        hash: hash.to_owned(),
        message,
    });
}

/// After a rollback the StatefulSet controller waits forever for a pod that never becomes ready;
/// Kubernetes leaves deleting such pods to whoever reverted the template.
pub(super) async fn replace_rejected_pods(
    state: &InstanceState,
    hash: &str,
    pods: &[Pod],
) -> Result<(), kube_io::Error> {
    let Some(rejected) = state.rejected.as_ref().filter(|r| r.hash != hash) else {
        return Ok(());
    };
    for pod in pods
        .iter()
        .filter(|p| pod_config_hash(p) == Some(rejected.hash.as_str()))
    {
        if pod.metadata.deletion_timestamp.is_none() {
            info!(namespace = %state.args.key.namespace, instance = %state.args.key.name, pod = %pod.name_any(),
                "replacing a pod that runs the rejected config");
            state.args.api.delete_pod(&pod.name_any()).await?;
        }
    }
    Ok(())
}
