//! The instance actor's live config: applying a change confined to live directives to every
//! pod, and checking on a timer that the pods still run them.

use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use tracing::{debug, info, warn};

use super::observe::Observed;
use super::plan::Plan;
use super::tell;
use super::tls::TlsMemory;
use super::{InstanceArgs, Written};
use crate::actors::metrics::MetricsMsg;
use crate::auth::Access;
use crate::crd::{ConfigUpdate, RedisInstance};
use crate::decide::live_check::{self, Repair, SetBack};
use crate::decide::{
    APPLIED_LIVE_ANNOTATION, LIVE_DRIFT_ANNOTATION, LiveDriftMark, live_drift, live_marked,
    owed_live_drift,
};
use crate::kube_io::{self, InstanceApi};
use crate::live::pods::{self, PodAddress, PodChange, PodRead};
use crate::resources::{CachedConfigMap, config_map};

/// What the actor remembers of its pods' live config.
#[derive(Debug, Default)]
pub struct LiveMemory {
    /// Live hash Redis refused, with the reason; not tried again until the spec changes.
    pub refused: Option<(String, String)>,
    /// Live hash every pod was last seen running.
    pub verified: Option<String>,
    /// When the pods were last checked.
    pub checked_at: Option<Instant>,
    /// Live hash whose drift repair Redis refused, told once.
    drift_refusal_told: Option<String>,
    /// The last drift mark this actor wrote or told: its repair is told once, or not at all.
    drift_marked: Option<String>,
    /// The drift mark whose repair Redis refused, until a repair goes through.
    drift_mark_refused: Option<String>,
    /// Pods the last check could not read, as counted and told; `None` before the first check.
    unanswered: Option<Vec<String>>,
}

impl LiveMemory {
    /// Remembers nothing: no check made, no refusal, nothing told.
    pub fn is_blank(&self) -> bool {
        self.refused.is_none()
            && self.verified.is_none()
            && self.checked_at.is_none()
            && self.drift_refusal_told.is_none()
            && self.drift_marked.is_none()
            && self.drift_mark_refused.is_none()
            && self.unanswered.is_none()
    }

    /// Recalls a refusal recorded in status, so a restarted operator does not apply it again.
    pub fn recall(&mut self, instance: &RedisInstance, plan: &Plan) {
        let status = instance.status.as_ref();
        let recorded = status.and_then(|s| s.refused_live_config_hash.as_deref());
        if self.refused.is_none() && recorded == Some(plan.live_hash.as_str()) {
            let message = status
                .and_then(|s| {
                    crate::status::find_condition(s, crate::status::condition::CONFIG_VALID)
                })
                .filter(|c| c.reason == "LiveConfigRefused")
                .map_or_else(
                    || "Redis refused this live config".to_owned(),
                    |c| c.message.clone(),
                );
            self.refused = Some((plan.live_hash.clone(), message));
        }
        // A new live config, or the pods found running the refused one (a restart carried
        // it in the file): the refusal is over.
        let verified = self.verified.as_deref();
        if self
            .refused
            .as_ref()
            .is_some_and(|(h, _)| live_drift::refusal_over(h, &plan.live_hash, verified))
        {
            self.refused = None;
        }
    }

    /// Whether Redis refused the plan's live directives.
    pub fn refuses(&self, plan: &Plan) -> bool {
        self.refused
            .as_ref()
            .is_some_and(|(h, _)| *h == plan.live_hash)
    }
}

/// What the live apply and check work with: the actor's arguments, its own writes (the
/// ConfigMap they write), its live memory, and how to reach and log in to the pods.
pub(super) struct LiveStep<'a> {
    pub args: &'a InstanceArgs,
    pub written: &'a mut Written,
    pub memory: &'a mut LiveMemory,
    pub tls: &'a TlsMemory,
    pub access: &'a Access,
}

fn addresses(tls: &TlsMemory, seen: &Observed) -> Vec<PodAddress> {
    seen.pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| PodAddress {
            pod: p.name_any(),
            ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
            tls: tls.for_pod(p),
        })
        .collect()
}

/// The plan's live directives on `pods`, all or nothing (see [`pods::apply`]).
async fn apply_to(
    args: &InstanceArgs,
    access: &Access,
    pods: &[PodAddress],
    plan: &Plan,
) -> Result<Vec<PodChange>, pods::Error> {
    pods::apply(pods, &plan.live, access.login.as_ref(), args.api.limiter()).await
}

/// `ApplyLive`: every pod takes the live directives (or none does), then the ConfigMap is
/// written, so a pod that restarts later starts from the same config.
pub(super) async fn apply(
    live: &mut LiveStep<'_>,
    plan: &Plan,
    seen: &Observed,
) -> Result<(), kube_io::Error> {
    let pods = addresses(live.tls, seen);
    let instance = &seen.instance;
    let key = live.args.key.clone();
    match apply_to(live.args, live.access, &pods, plan).await {
        Ok(changes) => {
            // The ConfigMap carries the change's mark, and its Event the name the mark gives
            // it, so an operator taking over tells it if this one is stopped before it does.
            let told = live_drift::applied(&changes, pods.len(), plan.rendered.short_hash());
            let (mark, event) = live_marked(&plan.rendered.hash, crate::cluster_clock::now(), told);
            let mut desired = config_map(&plan.instance, &plan.rendered);
            let seen_config_map = seen.config_map.as_deref().map(|cm| &cm.metadata);
            crate::kube_io::over_seen(&mut desired.metadata, seen_config_map);
            desired
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(APPLIED_LIVE_ANNOTATION.to_owned(), mark);
            let written = live.args.api.apply("ConfigMap", &desired).await?;
            live.written.config_map = Some(Arc::new(CachedConfigMap::from(&written)));
            live.memory.verified = Some(plan.live_hash.clone());
            live.memory.checked_at = Some(Instant::now());
            let (names, _) = live_drift::described(&changes);
            let directives: Vec<_> = names.into_iter().collect();
            info!(directives = ?directives, pods = pods.len(), live_hash = %plan.live_hash,
                "applied config change live, no restart");
            let _ = live.args.metrics.send_message(MetricsMsg::LiveChange {
                key,
                outcome: "Applied",
            });
            tell::tell(live.args, instance, &event).await;
            Ok(())
        }
        Err(error) if error.is_refusal() => {
            warn!(%error, live_hash = %plan.live_hash, "Redis refused the live config change");
            let event = crate::decide::live_config_refused(&plan.live_hash, &error.to_string());
            live.memory.refused = Some((plan.live_hash.clone(), event.note.clone()));
            let _ = live.args.metrics.send_message(MetricsMsg::LiveChange {
                key,
                outcome: "Refused",
            });
            tell::report_refusal(live.args, instance, &event).await;
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Whether the plan's spec has live directives, checked on a timer (see
/// [`crate::decide::checks`]).
pub(super) fn has_live(plan: &Plan) -> bool {
    plan.instance.spec.config_update == ConfigUpdate::Live && !plan.live.is_empty()
}

/// Reads every pod's live directives and sets back any that drifted (a hand-run
/// `CONFIG SET`, a pod restarted from an older file). A repair is marked on `<name>-config`
/// before its `CONFIG SET` (see [`LiveDriftMark`]); a mark left by an operator before this one
/// is told when this read shows its repair landed.
pub(super) async fn check(live: &mut LiveStep<'_>, plan: &Plan, seen: &Observed) {
    let api = &live.args.api;
    let _check = api.limiter().pod_check().await;
    live.memory.checked_at = Some(Instant::now());
    let pods = addresses(live.tls, seen);
    let login = live.access.login.as_ref();
    let read = pods::read_each(&pods, &plan.live, login).await;
    let unread = read.as_ref().err().map_or(&[][..], Vec::as_slice);
    tell_unanswered(live.args, live.memory, seen, unread).await;
    let read = match read {
        Ok(read) => read,
        Err(unread) => {
            for error in unread {
                warn!(%error, "live config check skipped: a pod did not answer");
            }
            return;
        }
    };
    let found = read.pods();
    retell_drift_mark(api, live.memory, plan, seen, &found);
    let refused_mark = live.memory.drift_mark_refused.as_deref();
    let has_config_map = seen.config_map.is_some();
    let repair = live_check::repair(
        &found,
        &plan.live_hash,
        refused_mark,
        has_config_map,
        crate::cluster_clock::now(),
    );
    match (&repair, seen.config_map.as_deref()) {
        (Repair::NoConfigMap, _) => {
            warn!("live config drift left alone: no ConfigMap to mark it on yet");
            return;
        }
        (Repair::MarkThenSet(mark), Some(config_map)) => {
            match mark_drift(api, live.written, live.memory, config_map, mark).await {
                Ok(()) => {}
                Err(error @ kube_io::Error::NotLeader(_)) => {
                    warn!(%error, "live config drift left alone: this operator may no longer lead");
                    return;
                }
                Err(error) => {
                    warn!(%error, "live config drift left alone: its mark could not be written");
                    return;
                }
            }
        }
        _ => {}
    }
    set_back(live, plan, seen, read, &repair).await;
}

/// Sets the drift `read` found back as `repair` says, and does what
/// [`live_check::after_set_back`] makes of the outcome.
async fn set_back(
    live: &mut LiveStep<'_>,
    plan: &Plan,
    seen: &Observed,
    read: pods::Read,
    repair: &Repair,
) {
    let result = read.set(live.args.api.limiter()).await;
    let error_text = result.as_ref().err().map(ToString::to_string);
    let set_back = match &result {
        Ok(changes) => SetBack::Done(changes),
        Err(error) if error.is_refusal() => {
            SetBack::Refused(error_text.as_deref().unwrap_or_default())
        }
        Err(_) => SetBack::NotSet,
    };
    let refusal_told = live.memory.drift_refusal_told.as_deref() == Some(plan.live_hash.as_str());
    let after = live_check::after_set_back(set_back, repair, &plan.live_hash, refusal_told);
    match (&result, &after.repaired) {
        (Ok(_), None) => debug!("live config verified on every pod"),
        (Ok(_), Some(drift)) => {
            info!(pods = ?drift.pods, directives = ?drift.directives, "live config drift repaired");
        }
        (Err(error @ pods::Error::NotLeader(_)), _) => {
            warn!(%error, "live config drift left alone: this operator may no longer lead");
        }
        (Err(error), _) if error.is_refusal() => {
            warn!(%error, "live config drift could not be repaired");
        }
        (Err(error), _) => warn!(%error, "live config check skipped: a pod did not answer"),
    }
    if after.verified {
        live.memory.verified = Some(plan.live_hash.clone());
        live.memory.drift_mark_refused = None;
    }
    if let Some(mark) = after.refused_mark {
        live.memory.drift_mark_refused = Some(mark);
    }
    if let Some(drift) = &after.repaired {
        let _ = live.args.metrics.send_message(MetricsMsg::DriftRepaired {
            key: live.args.key.clone(),
            kind: "LiveConfig",
        });
        tell::tell(live.args, &seen.instance, &drift.event).await;
    }
    if let Some(event) = &after.not_repaired {
        live.memory.drift_refusal_told = Some(plan.live_hash.clone());
        tell::tell(live.args, &seen.instance, event).await;
    }
}

/// Counts and tells the pods a check could not read (`unread`: why each could not), as
/// [`live_drift::unanswered`] decides.
async fn tell_unanswered(
    args: &InstanceArgs,
    memory: &mut LiveMemory,
    seen: &Observed,
    unread: &[pods::Error],
) {
    let now: Vec<(String, String)> = unread
        .iter()
        .filter_map(|error| Some((error.unanswered_pod()?.to_owned(), error.to_string())))
        .collect();
    let told = live_drift::unanswered(memory.unanswered.as_deref(), &now);
    memory.unanswered = Some(now.into_iter().map(|(pod, _)| pod).collect());
    if let Some(pods) = told.count {
        let key = args.key.clone();
        let _ = args
            .metrics
            .send_message(MetricsMsg::PodsUnreachable { key, pods });
    }
    if let Some(event) = &told.event {
        tell::tell(args, &seen.instance, event).await;
    }
}

/// Tells the repair marked on `<name>-config` by an operator before this one, when `found`
/// shows it landed (see [`owed_live_drift`]).
fn retell_drift_mark(
    api: &InstanceApi,
    memory: &mut LiveMemory,
    plan: &Plan,
    seen: &Observed,
    found: &[PodRead],
) {
    let Some(mark) = seen
        .config_map
        .as_deref()
        .and_then(|cm| cm.metadata.annotations.as_ref()?.get(LIVE_DRIFT_ANNOTATION))
    else {
        return;
    };
    if memory.drift_marked.as_ref() == Some(mark) {
        return;
    }
    let owed = owed_live_drift(
        Some(mark),
        &plan.live_hash,
        found,
        crate::cluster_clock::now(),
    );
    if let Some(event) = owed {
        info!(%mark, "telling a live drift repair marked before this operator");
        memory.drift_marked = Some(mark.clone());
        api.tell_unless_told(&seen.instance, event.told());
    }
}

/// Writes `mark` on `<name>-config` before the `CONFIG SET` it names.
async fn mark_drift(
    api: &InstanceApi,
    written: &mut Written,
    memory: &mut LiveMemory,
    config_map: &CachedConfigMap,
    mark: &LiveDriftMark,
) -> Result<(), kube_io::Error> {
    let text = mark.text();
    let annotated = api
        .annotate_config_map(config_map, LIVE_DRIFT_ANNOTATION, &text)
        .await?;
    written.config_map = Some(Arc::new(annotated));
    memory.drift_marked = Some(text);
    Ok(())
}
