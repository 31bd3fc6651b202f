//! Performs the replication step decided: its Redis command, labels, status record and Event.

use std::time::{Duration, Instant};

use kube::ResourceExt;
use tracing::{info, warn};

use super::super::InstanceState;
use super::super::observe::Observed;
use super::super::report;
use super::super::target::Plan;
use super::observe::Reach;
use super::routing::move_primary_label;
use crate::actors::metrics::MetricsMsg;
use crate::decide::replication::{ReplicaPod, ReplicationStep};
use crate::decide::replication_act::{COMMAND_RETRY, Election, ReplicationAct};
use crate::decide::routing::primary_label_moves;
use crate::kube_io;
use crate::replication::{self, Role};
use crate::resources::ROLE_LABEL;

/// What the replication phase observed and decided, for performing.
pub(super) struct Done<'a> {
    pub plan: &'a Plan,
    pub seen: &'a Observed,
    pub reach: &'a Reach<'a>,
    pub views: &'a [ReplicaPod<'a>],
    /// `FAILOVER`'s own timeout.
    pub switchover_timeout: Duration,
}

/// Carries out `step` as `act` says. `Ok(None)`: it wrote; `Ok(Some(d))`: look again in `d`.
pub(super) async fn perform(
    state: &mut InstanceState,
    done: &Done<'_>,
    step: ReplicationStep,
    act: ReplicationAct,
) -> Result<Option<Duration>, kube_io::Error> {
    let access = state.access.clone();
    let gate = state.args.api.limiter().clone();
    let reach = done.reach;
    let redis_failed = |error: replication::Error| {
        warn!(%error, "replication command failed; trying again");
        Ok(Some(COMMAND_RETRY))
    };
    let (from, to) = act.switchover.clone().unwrap_or_default();
    match step {
        ReplicationStep::Elect { pod, .. } => {
            record(state, done, &act).await?;
            match act.election {
                Some(Election::Failover) => warn!(primary = %pod, "primary lost, failing over"),
                Some(Election::Conversion) => warn!(primary = %pod, "converting to replication"),
                Some(Election::First) | None => info!(primary = %pod, "primary elected"),
            }
        }
        ReplicationStep::Promote { pod } => {
            info!(%pod, "REPLICAOF NO ONE: promoting the recorded primary");
            if let Err(e) = replication::promote(&reach.address(&pod), &access, &gate).await {
                return redis_failed(e);
            }
        }
        ReplicationStep::Follow { pod, primary_ip } => {
            info!(%pod, primary = %primary_ip, "REPLICAOF: following the primary");
            let address = reach.address(&pod);
            if let Err(e) = replication::follow(&address, &primary_ip, &access, &gate).await {
                return redis_failed(e);
            }
        }
        ReplicationStep::Label { pod: name, role } => {
            match role {
                Some(Role::Primary) => info!(pod = %name, "labelled primary"),
                Some(Role::Replica) => info!(pod = %name, "labelled replica"),
                None => info!(pod = %name, "role label removed"),
            }
            if let Some(p) = reach.pod(&name) {
                let value = role.map(Role::as_str);
                state.args.api.label_pod(p, ROLE_LABEL, value).await?;
            }
            // The pod's watch event brings the next step, once the cache shows the label.
        }
        ReplicationStep::BeginSwitchover { from, to } => {
            record(state, done, &act).await?;
            info!(%from, %to, "switchover recorded");
        }
        ReplicationStep::Switchover { from, to_ip } => {
            info!(%from, %to, "FAILOVER TO the replica");
            let sent_at = Instant::now();
            let timeout = done.switchover_timeout;
            let primary = reach.address(&from);
            let sent = replication::failover_to(&primary, &to_ip, timeout, &access, &gate).await;
            if let Err(e) = sent {
                return redis_failed(e);
            }
            state.replication.switchover_sent = Some(to.clone());
            // Awaited here rather than probed on a timer: the primary label moves the moment
            // the handover is over, and `FAILOVER`'s own timeout bounds the wait.
            let bound = timeout + Duration::from_secs(1);
            let target = reach.address(&to);
            match replication::await_handover(&primary, &target, &access, sent_at, bound).await {
                Ok(took) => {
                    let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
                    info!(%from, %to, took_ms, "FAILOVER over");
                }
                Err(error) => warn!(%error, "FAILOVER sent; its end not seen"),
            }
        }
        ReplicationStep::FinishSwitchover { .. } => {
            let moves = primary_label_moves(done.views, &from, &to);
            move_primary_label(&state.args.api, reach, &moves).await?;
            record(state, done, &act).await?;
            info!(%from, %to, "switchover done");
        }
        ReplicationStep::AbortSwitchover { message } => {
            record(state, done, &act).await?;
            warn!(%message, "switchover abandoned");
        }
        ReplicationStep::ReplacePod { pod: name } => {
            if let Some(p) = reach.pod(&name) {
                info!(pod = %name, "replacing the pod for the restart");
                state.args.api.delete_pod(p).await?;
                state.written.deleted_pods.extend(p.uid());
            }
        }
        ReplicationStep::Wait(_) | ReplicationStep::Idle => record(state, done, &act).await?,
    }
    if let Some(notice) = &act.notice {
        state.args.api.tell(&done.seen.instance, notice.told());
    }
    Ok(act.next_step())
}

/// Counts the role change, writes the replication status, forgets a finished `FAILOVER`.
async fn record(
    state: &mut InstanceState,
    done: &Done<'_>,
    act: &ReplicationAct,
) -> Result<(), kube_io::Error> {
    if let Some(kind) = act.role_change {
        let key = state.args.key.clone();
        let _ = state
            .args
            .metrics
            .send_message(MetricsMsg::RoleChanged { key, kind });
    }
    if let Some(replication) = &act.status {
        let mut status =
            super::super::status::derive_status(&state.status_memory(), done.seen, Some(done.plan));
        status.replication = Some(replication.clone());
        let mismatched = state.reported.mismatched();
        report::store_status(
            &state.args,
            &mut state.written,
            mismatched,
            done.seen,
            status,
        )
        .await?;
    }
    if act.forget_sent {
        state.replication.switchover_sent = None;
    }
    Ok(())
}
