//! Carries out one decision: the only place the instance actor writes to the API. Each write's
//! result is kept in [`super::Written`], so the next step sees it before the watch brings it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tracing::info;

use super::live::{LiveMemory, LiveStep};
use super::memory::{Applied, Schedule, SpecClock};
use super::observe::Observed;
use super::plan::Plan;
use super::status::store_status;
use super::tell::{drift_repaired, tell};
use super::tls::TlsMemory;
use super::{InstanceArgs, Written};
use crate::actors::metrics::MetricsMsg;
use crate::auth::Access;
use crate::crd::{RedisInstance, RedisInstanceStatus, RolloutRecord};
use crate::decide::{
    Act, Drift, FileWrite, Form, Notice, Replacement, Restart, ServiceTold, ServicesAct, Template,
};
use crate::kube_io::{self, InstanceApi};
use crate::resources::{
    CachedConfigMap, CachedService, CachedStatefulSet, config_map, mount_config_map,
    revision_config_map, statefulset,
};

/// What came of performing an act.
#[must_use]
pub(super) enum Performed {
    Wrote,
    /// Nothing written: the write waits for a turn the next step takes first.
    Deferred,
}

impl Performed {
    /// When the actor looks again: `None` at once (it wrote), else as soon as it can.
    pub(super) fn wake(self) -> Option<std::time::Duration> {
        match self {
            Performed::Wrote => None,
            Performed::Deferred => Some(std::time::Duration::ZERO),
        }
    }
}

/// What performing a decision reads and changes of the actor: the groups its writes update
/// (`Written`, `Applied`, the settle clock, the Service's allocation turn, the live memory of
/// `ApplyLive`). Every act's needs together: the perform phase is entered once per step,
/// whichever act it is. The status a restart's record writes comes decided in its act.
pub(super) struct Performer<'a> {
    pub args: &'a InstanceArgs,
    pub written: &'a mut Written,
    pub applied: &'a mut Applied,
    /// The allocation turn a ClusterIP Service's creation takes.
    pub schedule: &'a mut Schedule,
    /// A finished restart starts the settle rule's clock.
    pub clock: &'a mut SpecClock,
    /// The hash on the StatefulSet as last seen, for the log of a creation.
    pub last_known_hash: Option<&'a str>,
    pub live: &'a mut LiveMemory,
    /// How to reach and log in to the pods, for `ApplyLive`.
    pub tls: &'a TlsMemory,
    pub access: &'a Access,
    /// The caches show some difference from the desired config (see
    /// [`crate::decide::mismatches`]), for the metrics of a status written.
    pub mismatched: bool,
}

impl Performer<'_> {
    /// What `ApplyLive` works with.
    fn live_step(&mut self) -> LiveStep<'_> {
        LiveStep {
            args: self.args,
            written: self.written,
            memory: self.live,
            tls: self.tls,
            access: self.access,
        }
    }
}

/// The perform phase: carries out `act`, the one write the step decided.
pub(super) async fn perform(
    performer: &mut Performer<'_>,
    plan: &Plan,
    seen: &Observed,
    act: &Act<'_>,
    now: Timestamp,
) -> Result<Performed, kube_io::Error> {
    let args = performer.args;
    let api = args.api.clone();
    let name = &args.key.name;
    let instance = &seen.instance;
    let target = &plan.instance;
    match act {
        Act::Services(services_act) => {
            return services(performer, seen, services_act, &plan.service, &plan.headless).await;
        }
        Act::MigrateStatefulSet { live, event } => {
            let deleting = api.delete_statefulset(live).await?;
            performer.written.statefulset = Some(Arc::new(deleting.unwrap_or_else(|| gone(live))));
            info!(statefulset = %name, service = %plan.headless.name_any(),
                "deleted the StatefulSet, orphaning its pods and claims, to name the new headless Service");
            tell(args, instance, event).await;
        }
        Act::WriteConfigMap(file) => {
            announce_config_map(file, plan);
            // The template written next names the revision's ConfigMap: both precede it and
            // depend on nothing else, so they are written together.
            let desired = config_map_over_seen(plan, seen);
            let (written, revision) = tokio::join!(
                api.apply("ConfigMap", &desired),
                apply_revision(&api, plan, seen, file.revision_ahead),
            );
            config_map_written(args, performer.written, seen, file, written?).await;
            revision_written(performer.written, revision?);
        }
        Act::WriteRevision => write_revision(&args.api, performer.written, plan, seen).await?,
        Act::DeleteRevisions(revisions) => {
            for cm in revisions {
                api.delete_config_map(cm).await?;
                if let Some(uid) = cm.uid() {
                    performer.written.deleted_revisions.insert(uid);
                }
                info!(config_map = %cm.name_any(), "deleted a revision ConfigMap nothing mounts");
            }
        }
        Act::CreateStatefulSet {
            template,
            mount,
            event,
        } => {
            let desired = template_statefulset(target, template, Some(mount));
            info!(old_hash = %performer.last_known_hash.unwrap_or_default(),
                new_hash = %template.hash, "StatefulSet not found or needs recreation, creating new one");
            let created = api.apply("StatefulSet", &desired).await?;
            performer.applied.statefulset_generation = created.metadata.generation;
            performer.written.statefulset = Some(Arc::new(CachedStatefulSet::from(&created)));
            if let Some(event) = event {
                tell(args, instance, event).await;
            }
        }
        Act::BeginRestart {
            restart,
            file,
            drift,
        } => {
            // Released when the actor next waits, which is after the template patch.
            api.hold_events();
            if let Some(file) = file {
                announce_config_map(file, plan);
                let desired = config_map_over_seen(plan, seen);
                let (recorded, written, revision) = tokio::join!(
                    begin_restart(performer, seen, restart),
                    api.apply("ConfigMap", &desired),
                    apply_revision(&api, plan, seen, file.revision_ahead),
                );
                config_map_written(args, performer.written, seen, file, written?).await;
                revision_written(performer.written, revision?);
                recorded?;
            } else {
                begin_restart(performer, seen, restart).await?;
            }
            if let Some(drift) = drift {
                drift_repaired(args, instance, drift).await;
            }
        }
        Act::Retarget(restart) => begin_restart(performer, seen, restart).await?,
        Act::MoveRecord { status, event, .. } => {
            write_record(performer, seen, status).await?;
            tell(args, instance, event).await;
        }
        Act::RollOut {
            template,
            mount,
            form,
            uid,
            resource_version,
        } => {
            let applied = match form {
                Form::Patch => {
                    let annotations = (template.hash, template.marker);
                    let seen = (uid.as_deref(), resource_version.as_deref());
                    api.set_restart_annotations(name, annotations, mount, seen)
                        .await?
                }
                Form::Apply => {
                    let mut desired = template_statefulset(target, template, Some(mount));
                    desired.metadata.uid = uid.clone();
                    desired.metadata.resource_version = resource_version.clone();
                    CachedStatefulSet::from(&api.apply("StatefulSet", &desired).await?)
                }
            };
            performer.applied.statefulset_generation = applied.metadata.generation;
            performer.written.statefulset = Some(Arc::new(applied));
        }
        Act::DeleteForRecreate(live) => {
            let deleting = api.delete_statefulset(live).await?;
            performer.written.statefulset = Some(Arc::new(deleting.unwrap_or_else(|| gone(live))));
            info!(statefulset = %name, "deleted the StatefulSet, orphaning its pods and claims");
        }
        Act::DeleteOrphanedPods(pods) => {
            for pod in pods {
                delete_pod(&args.api, performer.written, pod).await?;
                info!(pod = %pod.name_any(), "deleting a pod the deleted StatefulSet left behind");
            }
        }
        Act::RepairStatefulSet {
            template,
            mount,
            resource_version,
            drift,
        } => {
            let mut repaired = template_statefulset(target, template, mount.as_deref());
            repaired.metadata.resource_version = resource_version.clone();
            leave_mark(&mut repaired.metadata, drift.as_ref());
            let applied = api.apply("StatefulSet", &repaired).await?;
            performer.applied.statefulset_generation = applied.metadata.generation;
            performer.written.statefulset = Some(Arc::new(CachedStatefulSet::from(&applied)));
            if let Some(drift) = drift {
                drift_repaired(args, instance, drift).await;
            }
        }
        Act::ReplacePods(replacements) => {
            for Replacement { pod, event } in replacements {
                delete_pod(&args.api, performer.written, pod).await?;
                info!(pod = %pod.name_any(), "replacing a stuck pod");
                tell(args, instance, event).await;
            }
        }
        Act::FinishRestart {
            record,
            status,
            event,
        } => finish_restart(performer, seen, record, status, event, now).await?,
        Act::ApplyLive => super::live::apply(&mut performer.live_step(), plan, seen).await?,
        Act::Nothing => {}
    }
    Ok(Performed::Wrote)
}

/// The StatefulSet the spec builds, carrying `template` and mounting `mount` (by default the
/// revision of the template's hash).
fn template_statefulset(
    target: &RedisInstance,
    template: &Template<'_>,
    mount: Option<&str>,
) -> k8s_openapi::api::apps::v1::StatefulSet {
    let mut desired = statefulset(target, template.hash, template.marker);
    if let Some(mount) = mount {
        mount_config_map(&mut desired, mount);
    }
    if let Some(service_name) = &template.service_name {
        desired.spec.service_name = Some(service_name.clone());
    }
    desired
}

/// `<name>-config` as the plan renders it, to be written over the one seen only.
fn config_map_over_seen(plan: &Plan, seen: &Observed) -> ConfigMap {
    let mut desired = config_map(&plan.instance, &plan.rendered);
    let seen = seen.config_map.as_deref().map(|cm| &cm.metadata);
    kube_io::over_seen(&mut desired.metadata, seen);
    desired
}

/// The desired revision's ConfigMap, written beside another write when `ahead`.
async fn apply_revision(
    api: &kube_io::InstanceApi,
    plan: &Plan,
    seen: &Observed,
    ahead: bool,
) -> Result<Option<ConfigMap>, kube_io::Error> {
    if !ahead {
        return Ok(None);
    }
    let cm = revision_over_seen(plan, seen);
    Ok(Some(api.apply("ConfigMap", &cm).await?))
}

/// The desired revision's ConfigMap, to be written over the one of its name seen only.
fn revision_over_seen(plan: &Plan, seen: &Observed) -> ConfigMap {
    let mut desired = revision_config_map(&plan.instance, &plan.rendered, &plan.template_hash);
    let name = desired.metadata.name.as_deref();
    let seen = seen
        .revisions
        .iter()
        .find(|cm| cm.metadata.name.as_deref() == name)
        .map(|cm| &cm.metadata);
    kube_io::over_seen(&mut desired.metadata, seen);
    desired
}

/// Keeps a written revision ConfigMap for the next step.
fn revision_written(memory: &mut Written, written: Option<ConfigMap>) {
    if let Some(cm) = written {
        memory.revision = Some(Arc::new(CachedConfigMap::from(&cm)));
    }
}

/// `WriteRevision`: the desired revision's ConfigMap, created or (under `Live`) brought up to
/// the live directives the pods were last given.
async fn write_revision(
    api: &InstanceApi,
    memory: &mut Written,
    plan: &Plan,
    seen: &Observed,
) -> Result<(), kube_io::Error> {
    let desired = revision_over_seen(plan, seen);
    let written = api.apply("ConfigMap", &desired).await?;
    info!(config_map = %desired.name_any(), hash = %plan.template_hash, "wrote the revision ConfigMap");
    revision_written(memory, Some(written));
    Ok(())
}

/// Carries out a write of the two Services.
pub(super) async fn services(
    performer: &mut Performer<'_>,
    seen: &Observed,
    act: &ServicesAct<'_>,
    service: &Service,
    headless: &Service,
) -> Result<Performed, kube_io::Error> {
    let args = performer.args;
    match act {
        ServicesAct::Service { told, allocates } => {
            // Held until the Service is created: the next creation waits for this one's IP.
            let _allocating = if *allocates {
                let limiter = args.api.limiter();
                let turn = performer.schedule.allocation.take();
                match turn.or_else(|| limiter.try_allocation()) {
                    Some(turn) => Some(turn),
                    None => {
                        performer.schedule.awaits_allocation = true;
                        return Ok(Performed::Deferred);
                    }
                }
            } else {
                None
            };
            let mut service = service.clone();
            let seen_service = seen.service.as_deref().map(|s| &s.metadata);
            kube_io::over_seen(&mut service.metadata, seen_service);
            if let ServiceTold::Repaired(drift) = told {
                leave_mark(&mut service.metadata, Some(drift));
            }
            let applied = args.api.apply("Service", &service).await?;
            performer.written.service = Some(Arc::new(CachedService::from(&applied)));
            performer.applied.service_migrated = false;
            match told {
                ServiceTold::Migrated(event) => {
                    info!(service = %service.name_any(), "created the Service as ClusterIP");
                    tell(args, &seen.instance, event).await;
                }
                ServiceTold::Repaired(drift) => drift_repaired(args, &seen.instance, drift).await,
                ServiceTold::Created => info!("Service missing, creating it"),
            }
        }
        ServicesAct::Headless(drift) => {
            let mut headless = headless.clone();
            let seen_headless = seen.headless.as_deref().map(|s| &s.metadata);
            kube_io::over_seen(&mut headless.metadata, seen_headless);
            leave_mark(&mut headless.metadata, drift.as_ref());
            let applied = args.api.apply("Service", &headless).await?;
            performer.written.headless = Some(Arc::new(CachedService::from(&applied)));
            match drift {
                Some(drift) => drift_repaired(args, &seen.instance, drift).await,
                None => {
                    info!(service = %headless.name_any(), "headless Service missing, creating it");
                }
            }
        }
        ServicesAct::DeleteHeadlessNamed(live) => {
            args.api.delete_service(live).await?;
            let mut deleting = (*live).clone();
            deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
            deleting.metadata.resource_version = Some(u64::MAX.to_string());
            performer.written.service = Some(Arc::new(deleting));
            performer.applied.service_migrated = true;
            info!(service = %service.name_any(), "deleted the headless Service to create it as ClusterIP");
        }
    }
    Ok(Performed::Wrote)
}

/// Leaves a repair's mark on the object it puts back (see [`crate::decide::REPAIRED_ANNOTATION`]):
/// an operator taking over tells the repair from it.
fn leave_mark(
    metadata: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    drift: Option<&Drift>,
) {
    if let Some(mark) = drift.and_then(|d| d.mark.clone()) {
        metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(crate::decide::REPAIRED_ANNOTATION.to_owned(), mark);
    }
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
    api: &InstanceApi,
    written: &mut Written,
    pod: &crate::resources::CachedPod,
) -> Result<(), kube_io::Error> {
    api.delete_pod(pod).await?;
    written.deleted_pods.insert(pod.uid().unwrap_or_default());
    Ok(())
}

/// The log line for a ConfigMap write.
fn announce_config_map(file: &FileWrite, plan: &Plan) {
    info!(old_hash = %file.old_hash, new_hash = %plan.template_hash,
        missing = file.missing, "ConfigMap configuration changed, updating");
}

/// Keeps the written ConfigMap for the next step, and tells its Event.
async fn config_map_written(
    args: &InstanceArgs,
    memory: &mut Written,
    seen: &Observed,
    file: &FileWrite,
    written: ConfigMap,
) {
    memory.config_map = Some(Arc::new(CachedConfigMap::from(&written)));
    if let Some(event) = &file.event {
        tell(args, &seen.instance, event).await;
    }
}

/// Records and counts a restart in status before its first write, then tells people.
async fn begin_restart(
    performer: &mut Performer<'_>,
    seen: &Observed,
    restart: &Restart,
) -> Result<(), kube_io::Error> {
    let args = performer.args;
    let key = args.key.clone();
    let record = &restart.record;
    let strategy = record.strategy.as_str();
    write_record(performer, seen, &restart.status).await?;
    // Told once the record holds: a write refused for a conflict is taken again, and the
    // restart it begins must be told once.
    info!(old_hash = %restart.old_hash, new_hash = %record.config_hash, strategy,
        reason = record.reason.as_str(), "ConfigMap was updated or StatefulSet needs restart");
    let _ = args.metrics.send_message(MetricsMsg::Restarted {
        key,
        strategy,
        reason: record.reason.as_str(),
    });
    tell(args, &seen.instance, &restart.event).await;
    Ok(())
}

/// Every pod runs the recorded restart's config and is ready: the record is closed (`status`
/// holds none), and the restart told (`event`) and timed. Needs no plan, so that a restart
/// recorded before the operator stopped is closed even when no spec is known to be safe to run.
pub(super) async fn finish_restart(
    performer: &mut Performer<'_>,
    seen: &Observed,
    record: &RolloutRecord,
    status: &RedisInstanceStatus,
    event: &Notice,
    now: Timestamp,
) -> Result<(), kube_io::Error> {
    write_record(performer, seen, status).await?;
    performer.clock.restart_finished_at = Some(std::time::Instant::now());
    let took = now.duration_since(record.started_at.0).unsigned_abs();
    let args = performer.args;
    let _ = args.metrics.send_message(MetricsMsg::RestartCompleted {
        key: args.key.clone(),
        strategy: record.strategy.as_str(),
        took,
    });
    info!(hash = %record.config_hash,
        strategy = record.strategy.as_str(), took_secs = took.as_secs_f64(), "restart complete");
    tell(args, &seen.instance, event).await;
    Ok(())
}

/// Writes `status`, the one a restart's record act decided.
async fn write_record(
    performer: &mut Performer<'_>,
    seen: &Observed,
    status: &RedisInstanceStatus,
) -> Result<(), kube_io::Error> {
    let (args, mismatched) = (performer.args, performer.mismatched);
    store_status(args, performer.written, mismatched, seen, status.clone()).await
}
