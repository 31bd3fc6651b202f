//! Hibernation, the actor's side: a step that ends at rest starts the rest delay; when it ends
//! and the memory holds nothing a fresh actor lacks ([`crate::decide::rest`]), the actor tells
//! the supervisor how many of its messages it has handled, and the supervisor stops it if that
//! is every message it sent (see `actors::children`).

use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{ActorRef, MessagingErr};
use tracing::debug;

use super::{InstanceArgs, InstanceMsg, InstanceState};
use crate::actors::supervisor::SupervisorMsg;
use crate::decide::{Rest, RestView, rest, settle_window_left};

/// Where the actor is on its way to hibernation.
#[derive(Default)]
pub(super) enum Resting {
    /// Working, or at rest with something a fresh actor would lack.
    #[default]
    Awake,
    /// At rest: the delay runs.
    Waiting(JoinHandle<Result<(), MessagingErr<InstanceMsg>>>),
    /// The delay ended with a reason to stay; a status seen may have removed it.
    Stayed,
    /// Offered to hibernate; the supervisor stops the actor, or sends it more messages.
    Offered,
}

impl Resting {
    /// Back to work: a step is queued.
    pub(super) fn wake(&mut self) {
        if let Resting::Waiting(timer) = std::mem::take(self) {
            timer.abort();
        }
    }
}

/// Starts (or starts again) the rest delay, if this actor may hibernate at all (`args` has
/// the delay and the supervisor to offer to).
pub(super) fn wait(myself: &ActorRef<InstanceMsg>, rest: &mut Resting, args: &InstanceArgs) {
    rest.wake();
    if let (Some(after), Some(_)) = (args.timings.hibernate_after, &args.supervisor) {
        wait_for(myself, rest, after);
    }
}

fn wait_for(myself: &ActorRef<InstanceMsg>, rest: &mut Resting, after: Duration) {
    *rest = Resting::Waiting(myself.send_after(after, || InstanceMsg::Rest));
}

/// A message from the supervisor was handled: counted in `count`. An offer made before is
/// void (the supervisor ignores it), and a status seen may have caught up with the actor's
/// own write: unless a step is queued, the delay starts again.
pub(super) fn handled(
    myself: &ActorRef<InstanceMsg>,
    count: &mut u64,
    rest: &mut Resting,
    args: &InstanceArgs,
) {
    *count = count.wrapping_add(1);
    if matches!(rest, Resting::Offered | Resting::Stayed) {
        wait(myself, rest, args);
    }
}

/// The rest delay ended. Takes the whole state: whether to hibernate is decided from
/// everything a fresh actor would lack (see [`view`]).
pub(super) fn delay_ended(myself: &ActorRef<InstanceMsg>, state: &mut InstanceState) {
    if !matches!(state.rest, Resting::Waiting(_)) {
        // A step was queued since: it starts the delay again if it ends at rest.
        return;
    }
    state.rest = Resting::Awake;
    match rest(&view(state)) {
        Rest::Stay(reason) => {
            debug!(reason, "at rest, but not hibernating");
            state.rest = Resting::Stayed;
        }
        Rest::After(left) => wait_for(myself, &mut state.rest, left),
        Rest::Hibernate => {
            let Some(supervisor) = &state.args.supervisor else {
                return;
            };
            let offer = SupervisorMsg::AtRest {
                key: state.args.key.clone(),
                actor: myself.get_id(),
                handled: state.handled,
            };
            debug!(handled = state.handled, "at rest; offering to hibernate");
            if supervisor.send_message(offer).is_ok() {
                state.rest = Resting::Offered;
            }
        }
    }
}

/// What of this actor's memory a fresh actor would lack: the whole memory is read, as a
/// group left out would be one a hibernating actor could lose.
fn view(state: &InstanceState) -> RestView {
    let current = super::observe::cached_instance(state);
    let status = current.as_ref().and_then(|i| i.status.as_ref());
    let healthy_recorded = status.and_then(|s| s.healthy_spec.clone());
    let acl_recorded = status.and_then(|s| s.acl_hash.as_deref());
    let replicated = current.as_deref().is_some_and(crate::resources::replicated);
    RestView {
        not_idle: state.last_step.decided != "Idle"
            || state.last_step.pending.is_some()
            || state.last_step.settling,
        other_spec: !current
            .as_deref()
            .is_some_and(|c| state.specs.settled_on(c))
            || healthy_recorded != state.specs.healthy_spec(),
        busy: state.schedule.step_queued
            || state.schedule.timer.is_some()
            || state.schedule.kept_turn.is_some()
            || state.schedule.allocation.is_some()
            || state.schedule.awaits_allocation
            || state.schedule.consecutive_failures > 0,
        restarting: status.is_none_or(|s| s.rollout.is_some()),
        unseen_writes: state.written.holds_any()
            || state.replication.holds_unseen_services()
            || state.applied.statefulset_generation.is_some_and(|written| {
                status.and_then(|s| s.stateful_set_generation) != Some(written)
            })
            || state.auth.unseen_writes(acl_recorded),
        failure: state.specs.remembers_failure()
            || state.live.refused.is_some()
            || state.reported.api_refusal.is_some(),
        told: state.auth.told()
            || state.reported.unconverted
            || state.reported.mismatches.iter().any(|m| *m),
        asked: state.auth.asked()
            || !state.tls.is_blank()
            || !state.live.is_blank()
            || replicated
            || !state.replication.is_blank(),
        migrating: state.applied.service_migrated,
        settle_window: settle_window_left(
            state.args.timings.settle,
            state.clock.restart_finished_at.map(|at| at.elapsed()),
        ),
    }
}
