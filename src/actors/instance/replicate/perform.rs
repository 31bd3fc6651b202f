//! Performs the replication step decided: its Redis command or labels; the status record and
//! Event it hands to the step's report.

use std::time::{Duration, Instant};

use kube::ResourceExt;
use tracing::{info, warn};

use super::Replicating;
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
    pub reach: &'a Reach<'a>,
    pub views: &'a [ReplicaPod<'a>],
    /// `FAILOVER`'s own timeout.
    pub switchover_timeout: Duration,
}

/// What a replication step leaves for the step's report: the status record to write with the
/// rest of status, and what follows once it is written.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The replication status to write; `None`: status keeps the one the cache holds.
    pub status: Option<crate::crd::ReplicationStatus>,
    /// The Event to post once the status is written.
    pub notice: Option<crate::decide::Notice>,
    /// Forget the `FAILOVER` this process sent, once the record of its end is written.
    pub forget_sent: bool,
}

/// Carries out `step` as `act` says; its status record and Event go into `recorded`, for the
/// report. A command to Redis is sent without the step's permit (`turn`): a silent pod, or a
/// `FAILOVER` awaited up to its own timeout, holds up no other instance's step.
/// `Ok(None)`: it wrote; `Ok(Some(d))`: look again in `d`.
pub(super) async fn perform(
    state: &mut Replicating<'_>,
    turn: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    done: &Done<'_>,
    step: ReplicationStep,
    act: ReplicationAct,
    recorded: &mut Recorded,
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
            record(state, &act, recorded);
            match act.election {
                Some(Election::Failover) => warn!(primary = %pod, "primary lost, failing over"),
                Some(Election::Conversion) => warn!(primary = %pod, "converting to replication"),
                Some(Election::First) | None => info!(primary = %pod, "primary elected"),
            }
        }
        ReplicationStep::Promote { pod } => {
            turn.take();
            info!(%pod, "REPLICAOF NO ONE: promoting the recorded primary");
            if let Err(e) = replication::promote(&reach.address(&pod), &access, &gate).await {
                return redis_failed(e);
            }
        }
        ReplicationStep::Follow { pod, primary_ip } => {
            turn.take();
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
            record(state, &act, recorded);
            info!(%from, %to, "switchover recorded");
        }
        ReplicationStep::Switchover { from, to_ip } => {
            turn.take();
            info!(%from, %to, "FAILOVER TO the replica");
            let sent_at = Instant::now();
            let timeout = done.switchover_timeout;
            let primary = reach.address(&from);
            let sent = replication::failover_to(&primary, &to_ip, timeout, &access, &gate).await;
            if let Err(e) = sent {
                return redis_failed(e);
            }
            state.memory.switchover_sent = Some(to.clone());
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
            record(state, &act, recorded);
            info!(%from, %to, "switchover done");
        }
        ReplicationStep::AbortSwitchover { message } => {
            record(state, &act, recorded);
            warn!(%message, "switchover abandoned");
        }
        ReplicationStep::ReplacePod { pod: name } => {
            if let Some(p) = reach.pod(&name) {
                info!(pod = %name, "replacing the pod for the restart");
                state.args.api.delete_pod(p).await?;
                state.written.deleted_pods.extend(p.uid());
            }
        }
        ReplicationStep::Wait(_) | ReplicationStep::Idle => record(state, &act, recorded),
    }
    Ok(act.next_step())
}

/// Counts the role change; hands the replication status, its Event and the forgetting of a
/// finished `FAILOVER` to the report, which writes status once for the whole step.
fn record(state: &Replicating<'_>, act: &ReplicationAct, recorded: &mut Recorded) {
    if let Some(kind) = act.role_change {
        let key = state.args.key.clone();
        let _ = state
            .args
            .metrics
            .send_message(MetricsMsg::RoleChanged { key, kind });
    }
    *recorded = Recorded {
        status: act.status.clone(),
        notice: act.notice.clone(),
        forget_sent: act.forget_sent,
    };
}
