//! The status an instance's caches and its actor's memory call for, as
//! [`crate::decide::status`] derives it from the memory put into plain facts, and its write.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::auth::AuthMemory;
use super::live::LiveMemory;
use super::memory::{Applied, LastStep, Reported};
use super::observe::{Observed, Written};
use super::plan::Plan;
use super::{InstanceArgs, InstanceSnapshot};
use crate::actors::metrics::MetricsMsg;
use crate::crd::{ConfigUpdate, RedisInstanceStatus, ReplicationStatus, RolloutRecord};
use crate::decide::{Driven, FailedConfig, Rejection, SpecMemory, StatusView};
use crate::kube_io;

/// What a status is derived from of the actor's memory but what was told: read, never
/// changed, so a status can be derived in the middle of a write that changes other groups.
#[derive(Clone, Copy)]
pub(super) struct StatusReads<'a> {
    /// The config Redis refused, a halted rollout, the last healthy spec.
    pub specs: &'a SpecMemory,
    /// A live config refused, and the one the pods were last seen running.
    pub live: &'a LiveMemory,
    /// The ACL file's fingerprint the pods were brought in line with.
    pub acl_applied: Option<&'a str>,
    /// What `spec.paused` holds back, and whether a restart waits to settle.
    pub last_step: &'a LastStep,
    /// The StatefulSet's generation after this actor's last write of it.
    pub applied: &'a Applied,
    /// How long the spec must be unchanged before a following restart (for the message).
    pub settle: Duration,
}

impl<'a> StatusReads<'a> {
    pub(super) fn of(
        specs: &'a SpecMemory,
        live: &'a LiveMemory,
        auth: &'a AuthMemory,
        last_step: &'a LastStep,
        applied: &'a Applied,
        settle: Duration,
    ) -> Self {
        StatusReads {
            specs,
            live,
            acl_applied: auth.applied.as_deref(),
            last_step,
            applied,
            settle,
        }
    }
}

/// All of the actor's memory a status is derived from, beside the caches.
pub(super) struct StatusMemory<'a> {
    pub reads: StatusReads<'a>,
    /// An overdue restart, and an API refusal of this generation's objects.
    pub reported: &'a Reported,
}

/// The status the caches and the actor's memory call for, with the replication step's
/// `replication` record when it made one; the restart record and count are carried over from
/// the stored status (only the perform step changes them).
pub(super) fn derive_status(
    memory: &StatusMemory<'_>,
    seen: &Observed,
    plan: Option<&Plan>,
    replication: Option<ReplicationStatus>,
) -> RedisInstanceStatus {
    let stored = seen.instance.status.as_ref();
    let rollout = stored.and_then(|s| s.rollout.clone());
    let view = StatusView {
        replication,
        ..view(memory, seen, plan, rollout)
    };
    crate::decide::status(&view)
}

/// The memory put into plain facts for [`crate::decide::status`], with `rollout` as the
/// restart in flight.
pub(super) fn view<'a>(
    memory: &StatusMemory<'a>,
    seen: &'a Observed,
    plan: Option<&'a Plan>,
    rollout: Option<RolloutRecord>,
) -> StatusView<'a> {
    let current = &seen.instance;
    StatusView {
        instance: current,
        statefulset: seen.statefulset.as_deref(),
        pods: &seen.pods,
        driven: plan.map(|p| Driven {
            replicas: p.instance.spec.replicas,
            template_hash: &p.template_hash,
            live: p.instance.spec.config_update == ConfigUpdate::Live,
            live_hash: &p.live_hash,
        }),
        rollout,
        replication: None,
        rejection: memory.reads.specs.rejection().map(failed),
        live_refusal: memory
            .reads
            .live
            .refused
            .as_ref()
            .map(|(hash, message)| (hash.as_str(), message.as_str())),
        halted: memory.reads.specs.halted().map(failed),
        acl_applied: memory.reads.acl_applied,
        healthy_spec: memory.reads.specs.healthy_spec(),
        valid_spec: memory.reads.specs.valid_spec(current),
        live_verified: memory.reads.live.verified.as_deref(),
        pending: memory.reads.last_step.pending.as_deref(),
        applied_generation: memory.reads.applied.statefulset_generation,
        settling: memory
            .reads
            .last_step
            .settling
            .then_some(memory.reads.settle),
        api_refusal: memory
            .reported
            .api_refusal
            .as_ref()
            .map(|(g, message)| (*g, message.as_str())),
        overdue: memory.reported.overdue,
        now: Time(crate::cluster_clock::now()),
    }
}

/// A failed config as status reports it.
fn failed(r: &Rejection) -> FailedConfig<'_> {
    FailedConfig {
        hash: &r.hash,
        spec_hash: &r.spec_hash,
        reason: r.reason,
        message: &r.message,
    }
}

/// Publishes `status`: to the API only when it changed, so an idle instance writes nothing.
pub(super) async fn store_status(
    args: &InstanceArgs,
    written: &mut Written,
    mismatched: bool,
    seen: &Observed,
    status: RedisInstanceStatus,
) -> Result<(), kube_io::Error> {
    let key = args.key.clone();
    args.snapshots.insert(
        key.clone(),
        InstanceSnapshot {
            config_hash: status.config_hash.clone(),
            phase: status.phase.map_or("Pending", |p| p.as_str()),
            ready_replicas: status.ready_replicas,
            replicas: seen.instance.spec.replicas,
        },
    );
    let strategy = seen.instance.spec.restart_strategy.as_str();
    let _ = args.metrics.send_message(MetricsMsg::Observed {
        key,
        ready: status.ready_replicas,
        desired: seen.instance.spec.replicas,
        config_invalid: status.phase == Some(crate::crd::Phase::Invalid),
        mismatched,
        restarting: status.rollout.is_some(),
        strategy,
    });
    if seen.instance.status.as_ref() != Some(&status) {
        let stored = args.api.write_status(&seen.instance, &status).await?;
        written.instance = Some(Arc::new(stored));
    }
    Ok(())
}
