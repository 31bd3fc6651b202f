//! Carries out one decision: the only place the instance actor writes to the API. Each write's
//! result is kept in [`super::Written`], so the next step sees it before the watch brings it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tracing::info;

use super::InstanceState;
use super::observe::Observed;
use super::report;
use super::target::Plan;
use crate::actors::metrics::MetricsMsg;
use crate::config::render::{config_hash, short_hash};
use crate::crd::{RestartReason, RestartStrategy, RolloutRecord};
use crate::decide::{
    Decision, Desired, created_template, mount_for, next_template_names_revision, record_for,
    revision_fix,
};
use crate::kube_io;
use crate::resources::{
    CachedConfigMap, CachedService, CachedStatefulSet, RESTARTED_AT_ANNOTATION, config_hash_of,
    config_map, config_map_of, mount_config_map, restarted_at_of, revision_config_map, statefulset,
    statefulset_drift,
};

pub(super) async fn perform(
    state: &mut InstanceState,
    plan: &Plan,
    want: &Desired<'_>,
    seen: &Observed,
    decision: &Decision,
    now: Timestamp,
) -> Result<(), kube_io::Error> {
    let api = state.args.api.clone();
    let key = state.args.key.clone();
    let name = &key.name;
    let instance = &seen.instance;
    let target = &plan.instance;
    let record = instance.status.as_ref().and_then(|s| s.rollout.clone());
    let live = seen.statefulset.as_deref();
    let live_hash = live.and_then(config_hash_of).unwrap_or("").to_owned();
    match decision {
        Decision::ApplyService
        | Decision::ApplyHeadlessService
        | Decision::DeleteHeadlessNamedService => {
            services(state, seen, decision, &plan.service, &plan.headless).await?;
        }
        Decision::MigrateStatefulSet => {
            let live = live.expect("a migration is decided only with a StatefulSet");
            let deleting = api.delete_statefulset(live).await?;
            state.written.statefulset = Some(Arc::new(deleting.unwrap_or_else(|| gone(live))));
            let headless = plan.headless.name_any();
            info!(statefulset = %name, service = %headless,
                "deleted the StatefulSet, orphaning its pods and claims, to name the new headless Service");
            let note = format!(
                "StatefulSet {name} named Service {name}, which becomes a ClusterIP Service: deleted it keeping its pods and claims, to create it again naming {headless}"
            );
            api.event(
                instance,
                false,
                "ServicesMigrating",
                "MigrateStatefulSet",
                note,
            )
            .await;
        }
        Decision::WriteConfigMap => {
            let old_file_hash = announce_config_map(seen, want);
            // The template written next names the revision's ConfigMap: both precede it and
            // depend on nothing else, so they are written together.
            let file = config_map(target, &plan.rendered);
            let revision = revision_ahead_file(seen, plan, want, record.as_ref());
            let (written, revision) = tokio::join!(
                api.apply("ConfigMap", &file),
                apply_revision(&api, revision),
            );
            config_map_written(state, seen, want, written?, &old_file_hash).await;
            revision_written(state, revision?);
        }
        Decision::WriteRevision => write_revision(state, plan).await?,
        Decision::DeleteRevisions(names) => {
            for cm in seen
                .revisions
                .iter()
                .filter(|cm| names.contains(&cm.name_any()))
            {
                api.delete_config_map(cm).await?;
                if let Some(uid) = cm.uid() {
                    state.written.deleted_revisions.insert(uid);
                }
                info!(config_map = %cm.name_any(), "deleted a revision ConfigMap nothing mounts");
            }
        }
        Decision::CreateStatefulSet => {
            // Pods a deleted StatefulSet left (a migration, a deletion by hand with their
            // pods orphaned) are adopted as they run: no restart the record does not ask for.
            let (hash, marker) = created_template(record.as_ref(), &seen.pods, want);
            let mut desired = statefulset(target, hash, marker);
            mount_config_map(&mut desired, &mount_for(want, &seen.pods, hash));
            let hash = hash.to_owned();
            info!(old_hash = %state.last_known_hash.clone().unwrap_or_default(),
                new_hash = %hash, "StatefulSet not found or needs recreation, creating new one");
            let created = api.apply("StatefulSet", &desired).await?;
            state.statefulset_written = created.metadata.generation;
            state.written.statefulset = Some(Arc::new(CachedStatefulSet::from(&created)));
            // A new instance's creation is told by its status alone: at fleet scale an Event
            // per instance is a request per instance. A StatefulSet created again (a Recreate,
            // or one deleted by hand) is news.
            if record.is_some() || crate::status::has_run(instance) {
                let note = format!(
                    "recreated StatefulSet {name} with config {}",
                    short_hash(&hash)
                );
                api.event(instance, false, "Recreated", "CreateStatefulSet", note)
                    .await;
            }
        }
        Decision::BeginRestart { reason, marker } => {
            // Released when the actor next waits, which is after the template patch.
            api.hold_events();
            let next = record_for(want, live, *reason, *marker, now);
            let file_differs = seen.config_text.as_deref() != Some(want.config_text);
            if next.strategy == RestartStrategy::RollingUpdate && file_differs {
                // The record and the new file do not depend on each other (either may fail
                // and the next step finishes the other), and both must precede the template:
                // written together, an edit reaches the template one round trip sooner.
                let old_file_hash = announce_config_map(seen, want);
                let file = config_map(target, &plan.rendered);
                let revision = revision_ahead_file(seen, plan, want, None);
                let (recorded, written, revision) = tokio::join!(
                    begin_restart(state, seen, plan, next, &live_hash),
                    api.apply("ConfigMap", &file),
                    apply_revision(&api, revision),
                );
                let written = written?;
                config_map_written(state, seen, want, written, &old_file_hash).await;
                revision_written(state, revision?);
                recorded?;
            } else {
                begin_restart(state, seen, plan, next, &live_hash).await?;
            }
            // A restart the spec did not ask for puts back what was changed by hand.
            let hand_edited = edited_by_others(state, instance, live);
            let drift = match reason {
                RestartReason::ConfigMapChanged => Some("ConfigMap"),
                RestartReason::ImageChanged if hand_edited => Some("Image"),
                RestartReason::PodTemplateChanged if hand_edited => Some("PodTemplate"),
                _ => None,
            };
            if let Some(kind) = drift {
                report::drift_repaired(state, instance, kind).await;
            }
        }
        Decision::Retarget { counted } => {
            let old = record.expect("retarget is decided only with a record");
            if *counted {
                let failed = state.target.rejection().map(|r| r.hash.as_str());
                let reason = if failed == Some(old.config_hash.as_str()) {
                    RestartReason::RolledBack
                } else {
                    RestartReason::Superseded
                };
                let mut next = record_for(want, live, reason, false, now);
                if reason == RestartReason::RolledBack {
                    // Back to exactly the template the untouched pods run, marker included, so
                    // the StatefulSet controller leaves them alone.
                    next.restarted_at = seen
                        .pods
                        .iter()
                        .find(|p| crate::decide::pod_config_hash(p) == Some(want.hash))
                        .and_then(|p| p.annotations().get(RESTARTED_AT_ANNOTATION).cloned());
                }
                begin_restart(state, seen, plan, next, &old.config_hash).await?;
            } else {
                let marker = old.restarted_at.is_some();
                let next = RolloutRecord {
                    started_at: old.started_at.clone(),
                    ..record_for(want, live, old.reason, marker, now)
                };
                write_record(state, seen, Some(plan), Some(next), 0).await?;
                let note = format!(
                    "config changed before any pod restarted; the restart continues with config {}",
                    short_hash(want.hash)
                );
                api.event(instance, false, "RestartRetargeted", "Restart", note)
                    .await;
            }
        }
        Decision::RollOut => {
            let record = record.expect("roll out is decided only with a record");
            let mut desired =
                statefulset(target, &record.config_hash, record.restarted_at.as_deref());
            let mount = mount_for(want, &seen.pods, &record.config_hash);
            mount_config_map(&mut desired, &mount);
            // A config edit changes only the template's restart annotations and the ConfigMap
            // it mounts: one small patch of them is cheaper for the API server than applying
            // the whole object.
            let only_annotations =
                live.is_some_and(|sts| statefulset_drift(&desired, sts).is_none());
            keep_service_name(&mut desired, live);
            let applied = if only_annotations {
                api.set_restart_annotations(
                    name,
                    &record.config_hash,
                    record.restarted_at.as_deref(),
                    &mount,
                )
                .await?
            } else {
                CachedStatefulSet::from(&api.apply("StatefulSet", &desired).await?)
            };
            state.statefulset_written = applied.metadata.generation;
            state.written.statefulset = Some(Arc::new(applied));
        }
        Decision::DeleteForRecreate => {
            let live = seen
                .statefulset
                .as_ref()
                .expect("delete is decided only with a StatefulSet");
            let deleting = api.delete_statefulset(live).await?;
            state.written.statefulset = Some(Arc::new(deleting.unwrap_or_else(|| gone(live))));
            info!(statefulset = %name, "deleted the StatefulSet, orphaning its pods and claims");
        }
        Decision::DeleteOrphanedPods(names) => {
            for pod in seen.pods.iter().filter(|p| names.contains(&p.name_any())) {
                delete_pod(state, pod).await?;
                info!(pod = %pod.name_any(), "deleting a pod the deleted StatefulSet left behind");
            }
        }
        Decision::RepairStatefulSet => {
            let hand_edited = edited_by_others(state, instance, live);
            let marker = live.and_then(restarted_at_of);
            let mut repaired = statefulset(target, &live_hash, marker);
            // A repair restarts nothing, so the pods keep the ConfigMap they mount.
            if let Some(mount) = live.and_then(config_map_of) {
                mount_config_map(&mut repaired, mount);
            }
            // The hash and marker come from the cache: the write holds only if the StatefulSet
            // is still the one they were read from, or it could undo a newer restart.
            repaired.metadata.resource_version =
                live.and_then(|sts| sts.metadata.resource_version.clone());
            keep_service_name(&mut repaired, live);
            let applied = api.apply("StatefulSet", &repaired).await?;
            state.statefulset_written = applied.metadata.generation;
            state.written.statefulset = Some(Arc::new(CachedStatefulSet::from(&applied)));
            if hand_edited {
                report::drift_repaired(state, instance, "StatefulSetSpec").await;
            }
        }
        Decision::ReplacePods(names) => {
            for pod in seen.pods.iter().filter(|p| names.contains(&p.name_any())) {
                delete_pod(state, pod).await?;
                info!(pod = %pod.name_any(), "replacing a stuck pod");
                let note = format!(
                    "deleted pod {}: not ready on an older revision, so the StatefulSet controller would never replace it",
                    pod.name_any()
                );
                api.event(instance, true, "PodReplaced", "Restart", note)
                    .await;
            }
        }
        Decision::FinishRestart => {
            let record = record.expect("finish is decided only with a record");
            finish_restart(state, Some(plan), seen, &record, now).await?;
        }
        Decision::ApplyLive => super::live::apply(state, plan, seen).await?,
        Decision::Wait(_) | Decision::Idle | Decision::Held(_) => {}
    }
    Ok(())
}

/// The desired revision's ConfigMap, when the next template write names it and the caches do
/// not show it as desired: written beside a write that precedes that template anyway, it
/// costs no round trip of its own.
fn revision_ahead_file(
    seen: &Observed,
    plan: &Plan,
    want: &Desired<'_>,
    record: Option<&RolloutRecord>,
) -> Option<k8s_openapi::api::core::v1::ConfigMap> {
    let names = next_template_names_revision(want, seen.statefulset.as_deref(), record, &seen.pods);
    (names && revision_fix(want, &seen.revisions) == Some(Decision::WriteRevision))
        .then(|| revision_config_map(&plan.instance, &plan.rendered, &plan.template_hash))
}

async fn apply_revision(
    api: &kube_io::InstanceApi,
    revision: Option<k8s_openapi::api::core::v1::ConfigMap>,
) -> Result<Option<k8s_openapi::api::core::v1::ConfigMap>, kube_io::Error> {
    match revision {
        Some(cm) => Ok(Some(api.apply("ConfigMap", &cm).await?)),
        None => Ok(None),
    }
}

/// Keeps a written revision ConfigMap for the next step.
fn revision_written(
    state: &mut InstanceState,
    written: Option<k8s_openapi::api::core::v1::ConfigMap>,
) {
    if let Some(cm) = written {
        state.written.revision = Some(Arc::new(CachedConfigMap::from(&cm)));
    }
}

/// `WriteRevision`: the desired revision's ConfigMap, created or (under `Live`) brought up to
/// the live directives the pods were last given.
async fn write_revision(state: &mut InstanceState, plan: &Plan) -> Result<(), kube_io::Error> {
    let desired = revision_config_map(&plan.instance, &plan.rendered, &plan.template_hash);
    let written = state.args.api.apply("ConfigMap", &desired).await?;
    info!(config_map = %desired.name_any(), hash = %plan.template_hash, "wrote the revision ConfigMap");
    revision_written(state, Some(written));
    Ok(())
}

/// `serviceName` cannot change: until the StatefulSet is migrated, a write keeps the one it has.
fn keep_service_name(
    desired: &mut k8s_openapi::api::apps::v1::StatefulSet,
    live: Option<&CachedStatefulSet>,
) {
    if let Some(name) = live.and_then(|sts| sts.spec.service_name()) {
        desired.spec.service_name = Some(name);
    }
}

/// Carries out a decision about the two Services.
pub(super) async fn services(
    state: &mut InstanceState,
    seen: &Observed,
    decision: &Decision,
    service: &Service,
    headless: &Service,
) -> Result<(), kube_io::Error> {
    match decision {
        Decision::ApplyService => apply_service(state, seen, service).await,
        Decision::ApplyHeadlessService => {
            let applied = state.args.api.apply("Service", headless).await?;
            state.written.headless = Some(Arc::new(CachedService::from(&applied)));
            if seen.headless.is_some() {
                report::drift_repaired(state, &seen.instance, "Service").await;
            } else {
                info!(service = %headless.name_any(), "headless Service missing, creating it");
            }
            Ok(())
        }
        Decision::DeleteHeadlessNamedService => {
            let live = seen
                .service
                .as_deref()
                .expect("deleting is decided only with a Service");
            state.args.api.delete_service(live).await?;
            let mut deleting = live.clone();
            deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
            deleting.metadata.resource_version = Some(u64::MAX.to_string());
            state.written.service = Some(Arc::new(deleting));
            state.service_migrated = true;
            info!(service = %service.name_any(), "deleted the headless Service to create it as ClusterIP");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Writes the Service; one missing or different after the instance was first set up was changed
/// by someone, and is told as drift.
async fn apply_service(
    state: &mut InstanceState,
    seen: &Observed,
    service: &Service,
) -> Result<(), kube_io::Error> {
    let existed = seen.service.is_some() || seen.statefulset.is_some();
    // A creation makes the API server allocate a cluster IP, which it does one at a time.
    let _allocating = match &seen.service {
        None => Some(state.args.api.limiter().allocation().await),
        Some(_) => None,
    };
    let applied = state.args.api.apply("Service", service).await?;
    state.written.service = Some(Arc::new(CachedService::from(&applied)));
    if std::mem::take(&mut state.service_migrated) && seen.service.is_none() {
        let name = service.name_any();
        info!(service = %name, "created the Service as ClusterIP");
        let note = format!(
            "Service {name} is now a ClusterIP Service; pods are named by {}",
            crate::resources::headless_service_name(&seen.instance)
        );
        state
            .args
            .api
            .event(
                &seen.instance,
                false,
                "ServicesMigrated",
                "ApplyService",
                note,
            )
            .await;
    } else if existed && !reshaped(seen, service) {
        report::drift_repaired(state, &seen.instance, "Service").await;
    } else {
        info!("Service missing, creating it");
    }
    Ok(())
}

/// The live `<name>` is what the operator built before the instance became replicated (or
/// stopped being so): the spec changed it, nobody else.
fn reshaped(seen: &Observed, service: &Service) -> bool {
    seen.service.as_deref().is_some_and(|live| {
        !crate::resources::service_drifted(&crate::resources::other_shape(service), live)
    })
}

/// Whether someone else changed the StatefulSet since the operator last wrote it: its
/// generation moved past the one recorded after that write (kept in status, so a restarted
/// operator tells a hand edit from a spec change the same way).
fn edited_by_others(
    state: &InstanceState,
    instance: &crate::crd::RedisInstance,
    live: Option<&CachedStatefulSet>,
) -> bool {
    let ours = state.statefulset_written.or_else(|| {
        instance
            .status
            .as_ref()
            .and_then(|s| s.stateful_set_generation)
    });
    live.and_then(|sts| sts.metadata.generation)
        .zip(ours)
        .is_some_and(|(now, ours)| now > ours)
}

/// The API said the StatefulSet is already gone: a copy marked as deleting stands in for it
/// until the watch delivers the deletion (a version no cache can pass keeps it in front).
fn gone(live: &CachedStatefulSet) -> CachedStatefulSet {
    let mut copy = live.clone();
    copy.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    copy.metadata.resource_version = Some(u64::MAX.to_string());
    copy
}

/// Deletes a pod, and counts it as terminating until the cache shows its deletion.
async fn delete_pod(
    state: &mut InstanceState,
    pod: &crate::resources::CachedPod,
) -> Result<(), kube_io::Error> {
    state.args.api.delete_pod(pod).await?;
    state
        .written
        .deleted_pods
        .insert(pod.uid().unwrap_or_default());
    Ok(())
}

/// The spec's log line for a ConfigMap write; returns the old file's hash.
fn announce_config_map(seen: &Observed, want: &Desired<'_>) -> String {
    let old_file_hash = seen
        .config_text
        .as_deref()
        .map(config_hash)
        .unwrap_or_default();
    info!(old_hash = %old_file_hash, new_hash = want.hash,
        missing = seen.config_text.is_none(), "ConfigMap configuration changed, updating");
    old_file_hash
}

/// Keeps the written ConfigMap for the next step and tells people when a running instance's
/// file changed (or was restored); a new instance's first write is part of creating it.
async fn config_map_written(
    state: &mut InstanceState,
    seen: &Observed,
    want: &Desired<'_>,
    written: k8s_openapi::api::core::v1::ConfigMap,
    old_file_hash: &str,
) {
    state.written.config_map = Some(Arc::new(CachedConfigMap::from(&written)));
    if seen.config_text.is_none() && seen.statefulset.is_none() {
        return;
    }
    let note = match &seen.config_text {
        Some(_) => format!(
            "redis.conf changed from config {} to {}",
            short_hash(old_file_hash),
            short_hash(want.hash)
        ),
        None => format!(
            "the ConfigMap was missing; wrote config {}",
            short_hash(want.hash)
        ),
    };
    state
        .args
        .api
        .event(
            &seen.instance,
            false,
            "ConfigUpdated",
            "WriteConfigMap",
            note,
        )
        .await;
}

/// Records and counts a restart in status before its first write, then tells people.
async fn begin_restart(
    state: &mut InstanceState,
    seen: &Observed,
    plan: &Plan,
    record: RolloutRecord,
    old_hash: &str,
) -> Result<(), kube_io::Error> {
    let key = state.args.key.clone();
    let strategy = record.strategy.as_str();
    let (new_hash, reason) = (record.config_hash.clone(), record.reason);
    write_record(state, seen, Some(plan), Some(record), 1).await?;
    // Told once the record holds: a write refused for a conflict is taken again, and the
    // restart it begins must be told once.
    info!(old_hash = %old_hash, new_hash = %new_hash, strategy,
        reason = reason.as_str(), "ConfigMap was updated or StatefulSet needs restart");
    let _ = state.args.metrics.send_message(MetricsMsg::Restarted {
        key,
        strategy,
        reason: reason.as_str(),
    });
    let how = if strategy == "Recreate" {
        "deleting the StatefulSet and its pods (keeping the data claims), then recreating it"
    } else {
        "replacing pods one at a time"
    };
    let note = format!(
        "{}: config {} -> {}: {how}",
        reason.as_str(),
        short_hash(old_hash),
        short_hash(&new_hash)
    );
    state
        .args
        .api
        .event(&seen.instance, false, "RestartStarted", "Restart", note)
        .await;
    Ok(())
}

/// Every pod runs the recorded restart's config and is ready: the record is closed, and the
/// restart told and timed. Needs no plan, so that a restart recorded before the operator
/// stopped is closed even when no spec is known to be safe to run (a rollback's target
/// lives only in the memory of the operator that decided it).
pub(super) async fn finish_restart(
    state: &mut InstanceState,
    plan: Option<&Plan>,
    seen: &Observed,
    record: &RolloutRecord,
    now: Timestamp,
) -> Result<(), kube_io::Error> {
    write_record(state, seen, plan, None, 0).await?;
    state.restart_finished_at = Some(std::time::Instant::now());
    let took = now.duration_since(record.started_at.0).unsigned_abs();
    let _ = state
        .args
        .metrics
        .send_message(MetricsMsg::RestartCompleted {
            key: state.args.key.clone(),
            strategy: record.strategy.as_str(),
            took,
        });
    info!(hash = %record.config_hash,
        strategy = record.strategy.as_str(), took_secs = took.as_secs_f64(), "restart complete");
    let note = format!(
        "all replicas run config {} and are ready",
        short_hash(&record.config_hash)
    );
    state
        .args
        .api
        .event(&seen.instance, false, "RestartCompleted", "Restart", note)
        .await;
    Ok(())
}

/// Writes the status with `record` as the restart in flight and `added` more restarts counted.
async fn write_record(
    state: &mut InstanceState,
    seen: &Observed,
    plan: Option<&Plan>,
    record: Option<RolloutRecord>,
    added: i64,
) -> Result<(), kube_io::Error> {
    let started = record.as_ref().map(|r| r.started_at.clone());
    let mut status = report::derive_status_with(state, seen, plan, record);
    if added > 0 {
        status.restarts += added;
        status.last_restart_time = started;
    }
    report::store_status(state, seen, status).await
}
