//! What carrying out a decision writes, in which form, and which Events tell it.
//!
//! Chosen here, purely, so that the instance actor's `perform` only executes: every reason,
//! note and form of write below is a row in the tests. The objects and records an act needs
//! are carried in it, taken from the snapshot the decision was made from.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::notice::{Notice, record_fact};
use super::{
    Decision, Desired, Snapshot, StatusView, created_template, mount_for,
    next_template_names_revision, pod_config_hash, record_for, recorded_status, revision_fix,
};
use crate::config::render::{config_hash, short_hash};
use crate::crd::{RedisInstanceStatus, RestartReason, RestartStrategy, RolloutRecord};
use crate::resources::{
    CachedConfigMap, CachedPod, CachedService, CachedStatefulSet, RESTARTED_AT_ANNOTATION,
    config_hash_of, config_map_of, other_shape, restarted_at_of, service_drifted,
    statefulset_drift,
};

/// Something the operator owns was changed by someone else, and the write puts it back: counted
/// by kind, logged and told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// What differed: `Service`, `StatefulSetSpec`, `Image`, `PodTemplate`, `ConfigMap`.
    pub kind: &'static str,
    /// The `DriftRepaired` Event.
    pub event: Notice,
    /// The mark the repair's write leaves on the object (see
    /// [`super::REPAIRED_ANNOTATION`]); `None` for a repair a restart tells.
    pub mark: Option<String>,
}

/// The drift of `kind` on instance `name`, repaired.
pub fn drift(name: &str, kind: &'static str) -> Drift {
    let note = format!("{kind} of {name} differed from what the operator builds; restored it");
    Drift {
        kind,
        event: Notice::normal("DriftRepaired", "Repair", note),
        mark: None,
    }
}

/// What the act depends on beyond the caches: the instance's status and the actor's memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// The instance ran before (its status records a config): a StatefulSet created now is
    /// created again, which is news.
    pub has_run: bool,
    /// The StatefulSet's generation after the operator's last write of it (this actor's, else
    /// the one status recorded, so a restarted operator tells a hand edit the same way).
    pub written_generation: Option<i64>,
    /// A config the pods failed on (Redis refused it, or it never served), not a halt: a
    /// restart away from it is a rollback.
    pub rejected_hash: Option<&'a str>,
    /// The actor deleted the headless `<name>`: the Service created next ends that migration.
    pub service_migrated: bool,
}

/// A write of the ConfigMap `<name>-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// The hash of the file it replaces (empty when missing), for the log.
    pub old_hash: String,
    /// The ConfigMap was missing.
    pub missing: bool,
    /// The desired revision's ConfigMap goes with it (the next template names it and the caches
    /// do not show it as desired): written beside a write that precedes that template anyway,
    /// it costs no round trip of its own.
    pub revision_ahead: bool,
    /// `ConfigUpdated`, when a running instance's file changed or was restored; a new
    /// instance's first write is part of creating it.
    pub event: Option<Notice>,
}

/// The pod template a StatefulSet write carries, beyond what the spec builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template<'a> {
    /// Config hash annotation.
    pub hash: &'a str,
    /// Restart marker.
    pub marker: Option<&'a str>,
    /// `serviceName` cannot change: until the StatefulSet is migrated, a write keeps the one
    /// it has.
    pub service_name: Option<String>,
}

/// How a template write is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Only the restart annotations and the mounted ConfigMap differ: one small merge patch of
    /// them is cheaper for the API server than applying the whole object.
    Patch,
    /// Server-side apply of the whole object.
    Apply,
}

/// A restart recorded and counted in status before its first write, then told.
#[derive(Debug, Clone, PartialEq)]
pub struct Restart {
    /// The record.
    pub record: RolloutRecord,
    /// The status that records and counts it.
    pub status: RedisInstanceStatus,
    /// The config it restarts from, for the log.
    pub old_hash: String,
    /// `RestartStarted`.
    pub event: Notice,
}

/// A pod deleted so that it is replaced, and the Event telling it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replacement<'a> {
    /// The pod, as seen.
    pub pod: &'a Arc<CachedPod>,
    /// `PodReplaced`.
    pub event: Notice,
}

/// How the creation of `<name>` is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceTold {
    /// It ends the migration from the headless `<name>`: `ServicesMigrated`.
    Migrated(Notice),
    /// Someone changed or deleted it.
    Repaired(Drift),
    /// Created for the first time, or reshaped by the spec: only logged.
    Created,
}

/// A write of the two Services.
#[derive(Debug, Clone, PartialEq)]
pub enum ServicesAct<'a> {
    /// Apply the headless Service; a repair is told, a creation only logged.
    Headless(Option<Drift>),
    /// Apply `<name>`; `allocates`: none is live, so the API server allocates it a cluster
    /// IP, which it does one creation at a time (the write waits for an allocation turn).
    Service { told: ServiceTold, allocates: bool },
    /// Delete the headless `<name>` as seen, to create it as ClusterIP.
    DeleteHeadlessNamed(&'a CachedService),
}

/// A decision with everything needed to carry it out.
#[derive(Debug, Clone, PartialEq)]
pub enum Act<'a> {
    /// See [`ServicesAct`].
    Services(ServicesAct<'a>),
    /// Delete the StatefulSet as seen, orphaning its pods and claims, to create it again
    /// naming the headless Service.
    MigrateStatefulSet {
        /// The StatefulSet.
        live: &'a CachedStatefulSet,
        /// `ServicesMigrating`.
        event: Notice,
    },
    /// Write the ConfigMap.
    WriteConfigMap(FileWrite),
    /// Write the desired revision's ConfigMap.
    WriteRevision,
    /// Delete these revision ConfigMaps, each only as seen.
    DeleteRevisions(Vec<&'a Arc<CachedConfigMap>>),
    /// Create the StatefulSet.
    CreateStatefulSet {
        /// Its template.
        template: Template<'a>,
        /// The ConfigMap its config volume mounts.
        mount: String,
        /// `Recreated`, when the instance ran before: a new instance is told by its status alone
        /// (at fleet scale an Event per instance is a request per instance).
        event: Option<Notice>,
    },
    /// Record and begin a restart, with the new file beside the record when it goes first.
    BeginRestart {
        /// The restart.
        restart: Box<Restart>,
        /// Under RollingUpdate, the new file: the record and the file do not depend on each
        /// other and both precede the template, so they are written together.
        file: Option<FileWrite>,
        /// A restart the spec did not ask for puts back what was changed by hand.
        drift: Option<Drift>,
    },
    /// A newer config replaces the failing target: a restart of its own.
    Retarget(Box<Restart>),
    /// A newer config replaces the target before any pod restarted for it: the record moves,
    /// counted once.
    MoveRecord {
        /// The moved record.
        record: RolloutRecord,
        /// The status that records it, counting no new restart.
        status: Box<RedisInstanceStatus>,
        /// `RestartRetargeted`.
        event: Notice,
    },
    /// Write the template of the recorded restart.
    RollOut {
        /// The template.
        template: Template<'a>,
        /// The ConfigMap its config volume mounts.
        mount: String,
        /// Patch or apply.
        form: Form,
        /// The uid and resourceVersion of the StatefulSet as seen: the write holds only on that
        /// object as it was, not on one created again under its name since (a late write of an
        /// actor whose instance was deleted and created again) nor on one written since (a
        /// deposed leader's write delayed past a takeover). The StatefulSet controller's status
        /// writes move the version too: the write then meets a conflict and is decided again.
        uid: Option<String>,
        resource_version: Option<String>,
    },
    /// Delete the StatefulSet as seen, orphaning its pods and claims.
    DeleteForRecreate(&'a CachedStatefulSet),
    /// Delete the pods a deleted StatefulSet left.
    DeleteOrphanedPods(Vec<&'a Arc<CachedPod>>),
    /// Apply the StatefulSet with the template it has.
    RepairStatefulSet {
        /// The template the StatefulSet has: a repair restarts nothing.
        template: Template<'a>,
        /// The ConfigMap the pods mount, kept: a repair restarts nothing.
        mount: Option<String>,
        /// The hash and marker come from the cache: the write holds only if the StatefulSet is
        /// still the one they were read from, or it could undo a newer restart.
        resource_version: Option<String>,
        /// Told when someone else edited it.
        drift: Option<Drift>,
    },
    /// Delete pods the StatefulSet controller will not replace.
    ReplacePods(Vec<Replacement<'a>>),
    /// Close the record.
    FinishRestart {
        /// The record.
        record: &'a RolloutRecord,
        /// The status without it.
        status: Box<RedisInstanceStatus>,
        /// `RestartCompleted`.
        event: Notice,
    },
    /// `CONFIG SET` the live directives on every pod, then write the ConfigMap.
    ApplyLive,
    /// No write.
    Nothing,
}

impl Act<'_> {
    /// Whether carrying it out writes.
    pub fn is_write(&self) -> bool {
        !matches!(self, Act::Nothing)
    }

    /// Whether carrying it out talks to the pods' Redis (each pod may take seconds), so that
    /// the step gives back its permit first.
    pub fn dials_pods(&self) -> bool {
        matches!(self, Act::ApplyLive)
    }
}

/// What carrying out `decision`, made from `want` and `seen`, takes. A decision that writes
/// always has its act: the records and objects it needs are those it was decided from, and a
/// restart record's status is what `status` calls for with it.
pub fn act<'a>(
    decision: &Decision,
    want: &Desired<'a>,
    seen: &Snapshot<'a>,
    facts: &Facts<'_>,
    status: &StatusView<'_>,
) -> Act<'a> {
    let name = super::revisions::instance_name(want);
    let live = seen.statefulset;
    let live_hash = live.and_then(config_hash_of).unwrap_or("");
    match (decision, seen.rollout, live) {
        (
            Decision::ApplyService
            | Decision::ApplyHeadlessService
            | Decision::DeleteHeadlessNamedService,
            _,
            _,
        ) => {
            let services = services_act(
                decision,
                want.service,
                want.headless,
                (seen.service, seen.headless),
                live.is_some(),
                facts.service_migrated,
                seen.now,
            );
            services.map_or(Act::Nothing, Act::Services)
        }
        (Decision::MigrateStatefulSet, _, Some(live)) => {
            let headless = want.headless.name_any();
            let note = format!(
                "StatefulSet {name} named Service {name}, which becomes a ClusterIP Service: deleted it keeping its pods and claims, to create it again naming {headless}"
            );
            Act::MigrateStatefulSet {
                live,
                event: Notice::normal("ServicesMigrating", "MigrateStatefulSet", note),
            }
        }
        (Decision::WriteConfigMap, record, _) => {
            Act::WriteConfigMap(file_write(want, seen, record))
        }
        (Decision::WriteRevision, _, _) => Act::WriteRevision,
        (Decision::DeleteRevisions(names), _, _) => Act::DeleteRevisions(
            seen.revisions
                .iter()
                .filter(|cm| names.contains(&cm.name_any()))
                .collect(),
        ),
        (Decision::CreateStatefulSet, record, _) => {
            // Pods a deleted StatefulSet left (a migration, a deletion by hand with their pods
            // orphaned) are adopted as they run: no restart the record does not ask for.
            let (hash, marker) = created_template(record, seen.pods, want);
            let event = (record.is_some() || facts.has_run).then(|| {
                let note = format!(
                    "recreated StatefulSet {name} with config {}",
                    short_hash(hash)
                );
                Notice::normal("Recreated", "CreateStatefulSet", note)
            });
            Act::CreateStatefulSet {
                template: Template {
                    hash,
                    marker,
                    service_name: None,
                },
                mount: mount_for(want, seen.pods, hash),
                event,
            }
        }
        (Decision::BeginRestart { reason, marker }, _, _) => {
            let record = record_for(want, live, *reason, *marker, seen.now);
            let file_differs = seen.config_text != Some(want.config_text);
            let file =
                (record.strategy == RestartStrategy::RollingUpdate && file_differs).then(|| {
                    let mut file = file_write(want, seen, None);
                    file.event = file.event.map(|e| e.of_fact(record_fact(&record)));
                    file
                });
            let drift = drift_restarted(*reason, edited_by_others(facts, live))
                .map(|kind| drift(name, kind));
            Act::BeginRestart {
                restart: restart(record, live_hash, status),
                file,
                drift,
            }
        }
        (Decision::Retarget { counted: true }, Some(old), _) => {
            let reason = retarget_reason(old, facts);
            let mut next = record_for(want, live, reason, false, seen.now);
            if reason == RestartReason::RolledBack {
                // Back to exactly the template the untouched pods run, marker included, so the
                // StatefulSet controller leaves them alone.
                next.restarted_at = seen
                    .pods
                    .iter()
                    .find(|p| pod_config_hash(p) == Some(want.hash))
                    .and_then(|p| {
                        p.annotations
                            .get(RESTARTED_AT_ANNOTATION)
                            .map(str::to_owned)
                    });
            }
            Act::Retarget(restart(next, &old.config_hash, status))
        }
        (Decision::Retarget { counted: false }, Some(old), _) => {
            let marker = old.restarted_at.is_some();
            let record = RolloutRecord {
                started_at: old.started_at.clone(),
                ..record_for(want, live, old.reason, marker, seen.now)
            };
            let note = format!(
                "config changed before any pod restarted; the restart continues with config {}",
                short_hash(want.hash)
            );
            let fact = format!("{} onto {}", record_fact(&record), record.config_hash);
            let event = Notice::normal("RestartRetargeted", "Restart", note).of_fact(fact);
            let status = Box::new(recorded_status(status, Some(record.clone()), false));
            Act::MoveRecord {
                record,
                status,
                event,
            }
        }
        (Decision::RollOut, Some(record), _) => {
            let form = match live.and_then(|sts| statefulset_drift(want.statefulset, sts)) {
                None if live.is_some() => Form::Patch,
                _ => Form::Apply,
            };
            let template = Template {
                hash: &record.config_hash,
                marker: record.restarted_at.as_deref(),
                service_name: live.and_then(|sts| sts.spec.service_name()),
            };
            let mount = mount_for(want, seen.pods, &record.config_hash);
            Act::RollOut {
                template,
                mount,
                form,
                uid: live.and_then(|sts| sts.metadata.uid.clone()),
                resource_version: live.and_then(|sts| sts.metadata.resource_version.clone()),
            }
        }
        (Decision::DeleteForRecreate, _, Some(live)) => Act::DeleteForRecreate(live),
        (Decision::DeleteOrphanedPods(names), _, _) => Act::DeleteOrphanedPods(
            seen.pods
                .iter()
                .filter(|p| names.contains(&p.name_any()))
                .collect(),
        ),
        (Decision::RepairStatefulSet, _, Some(sts)) => Act::RepairStatefulSet {
            template: Template {
                hash: live_hash,
                marker: restarted_at_of(sts),
                service_name: sts.spec.service_name(),
            },
            mount: config_map_of(sts).map(str::to_owned),
            resource_version: sts.metadata.resource_version.clone(),
            drift: edited_by_others(facts, live).then(|| {
                drift(name, "StatefulSetSpec").marked(name, &want.statefulset.name_any(), seen.now)
            }),
        },
        (Decision::ReplacePods(names), _, _) => Act::ReplacePods(
            seen.pods
                .iter()
                .filter(|p| names.contains(&p.name_any()))
                .map(|pod| Replacement {
                    pod,
                    event: replaced(&pod.name_any()),
                })
                .collect(),
        ),
        (Decision::FinishRestart, Some(record), _) => Act::FinishRestart {
            record,
            status: Box::new(recorded_status(status, None, false)),
            event: finished(record),
        },
        (Decision::ApplyLive, _, _) => Act::ApplyLive,
        // Waits, and combinations `decide` never makes (the tests check every row).
        _ => Act::Nothing,
    }
}

/// What a write of the Services takes: `decision` is one of [`super::service_step`]'s, made
/// from the desired `service` and `headless` and the live ones. Also decided for an instance
/// whose spec holds nothing safe to run, so it needs no [`Desired`].
pub fn services_act<'a>(
    decision: &Decision,
    service: &Service,
    headless: &Service,
    (live, live_headless): (Option<&'a CachedService>, Option<&CachedService>),
    statefulset_exists: bool,
    migrated: bool,
    now: Timestamp,
) -> Option<ServicesAct<'a>> {
    let name = service.name_any();
    let repaired =
        |object: &Service| drift(&name, "Service").marked(&name, &object.name_any(), now);
    match decision {
        Decision::ApplyHeadlessService => Some(ServicesAct::Headless(
            live_headless.map(|_| repaired(headless)),
        )),
        Decision::ApplyService => {
            // The live `<name>` in the other shape is what the operator built before the
            // instance became replicated (or stopped being so): the spec changed it, nobody else.
            let reshaped = live.is_some_and(|live| !service_drifted(&other_shape(service), live));
            let told = if migrated && live.is_none() {
                let note = format!(
                    "Service {name} is now a ClusterIP Service; pods are named by {}",
                    headless.name_any()
                );
                ServiceTold::Migrated(Notice::normal("ServicesMigrated", "ApplyService", note))
            } else if (live.is_some() || statefulset_exists) && !reshaped {
                ServiceTold::Repaired(repaired(service))
            } else {
                ServiceTold::Created
            };
            Some(ServicesAct::Service {
                told,
                allocates: live.is_none(),
            })
        }
        Decision::DeleteHeadlessNamedService => live.map(ServicesAct::DeleteHeadlessNamed),
        _ => None,
    }
}

/// The `ConfigMap` write and its Notice; `record` is the restart whose template follows it.
fn file_write(want: &Desired, seen: &Snapshot, record: Option<&RolloutRecord>) -> FileWrite {
    let old_hash = seen.config_text.map(config_hash).unwrap_or_default();
    let names = next_template_names_revision(want, seen.statefulset, record, seen.pods);
    let revision_ahead =
        names && revision_fix(want, seen.revisions) == Some(Decision::WriteRevision);
    let event = (seen.config_text.is_some() || seen.statefulset.is_some()).then(|| {
        let note = match seen.config_text {
            Some(_) => format!(
                "redis.conf changed from config {} to {}",
                short_hash(&old_hash),
                short_hash(want.hash)
            ),
            None => format!(
                "the ConfigMap was missing; wrote config {}",
                short_hash(want.hash)
            ),
        };
        Notice::normal("ConfigUpdated", "WriteConfigMap", note)
    });
    FileWrite {
        missing: seen.config_text.is_none(),
        old_hash,
        revision_ahead,
        event,
    }
}

/// A restart to `record` from config `old_hash`, recorded and counted in the status `status`
/// calls for, and told.
fn restart(record: RolloutRecord, old_hash: &str, status: &StatusView<'_>) -> Box<Restart> {
    let how = match record.strategy {
        RestartStrategy::Recreate => {
            "deleting the StatefulSet and its pods (keeping the data claims), then recreating it"
        }
        RestartStrategy::RollingUpdate => "replacing pods one at a time",
    };
    let note = format!(
        "{}: config {} -> {}: {how}",
        record.reason.as_str(),
        short_hash(old_hash),
        short_hash(&record.config_hash)
    );
    let event = Notice::normal("RestartStarted", "Restart", note).of_fact(record_fact(&record));
    Box::new(Restart {
        status: recorded_status(status, Some(record.clone()), true),
        record,
        old_hash: old_hash.to_owned(),
        event,
    })
}

/// The drift a restart for `reason` repairs, if any: a changed ConfigMap always is one; an image
/// or pod template differs by someone else's hand only when the StatefulSet was edited since
/// the operator wrote it (otherwise the spec changed it).
pub fn drift_restarted(reason: RestartReason, hand_edited: bool) -> Option<&'static str> {
    match reason {
        RestartReason::ConfigMapChanged => Some("ConfigMap"),
        RestartReason::ImageChanged if hand_edited => Some("Image"),
        RestartReason::PodTemplateChanged if hand_edited => Some("PodTemplate"),
        _ => None,
    }
}

/// Whether someone else changed the StatefulSet since the operator last wrote it: its
/// generation moved past the one recorded after that write.
fn edited_by_others(facts: &Facts, live: Option<&CachedStatefulSet>) -> bool {
    live.and_then(|sts| sts.metadata.generation)
        .zip(facts.written_generation)
        .is_some_and(|(now, ours)| now > ours)
}

/// Why a failing restart to `old` gives way: back from a config the pods failed on, a
/// rollback; otherwise the newer config supersedes it.
fn retarget_reason(old: &RolloutRecord, facts: &Facts) -> RestartReason {
    if facts.rejected_hash == Some(old.config_hash.as_str()) {
        RestartReason::RolledBack
    } else {
        RestartReason::Superseded
    }
}

/// `PodReplaced`, for pod `pod`.
fn replaced(pod: &str) -> Notice {
    let note = format!(
        "deleted pod {pod}: not ready on an older revision, so the StatefulSet controller would never replace it"
    );
    Notice {
        warning: true,
        reason: "PodReplaced",
        action: "Restart",
        note,
        fact: None,
    }
}

/// `RestartCompleted`, for the restart `record`.
pub fn finished(record: &RolloutRecord) -> Notice {
    let note = format!(
        "all replicas run config {} and are ready",
        short_hash(&record.config_hash)
    );
    Notice::normal("RestartCompleted", "Restart", note).of_fact(record_fact(record))
}
