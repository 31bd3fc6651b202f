//! What a step whose verdict writes nothing checks and tells: the live directives on their
//! timer, the certificate the pods serve, a restart past its deadline, an unconverted
//! instance; and when each reason wants the next look.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::tls::{Reload, ServedView, reload};
use super::{Deadlines, Decision, Waiting, Wakes, live_drift, overdue_to_tell, progress_wake};
use crate::crd::RolloutRecord;

/// What the checks read beyond the verdict: the actor's memory of its last checks, put into
/// plain values by the observe phase.
#[derive(Debug, Clone, Copy)]
pub struct ChecksView<'a> {
    /// The spec sets live directives under `configUpdate: Live`: they are checked on a timer.
    pub has_live: bool,
    /// How often they are checked.
    pub live_every: Duration,
    /// How long ago they last were; `None`: never.
    pub live_checked_ago: Option<Duration>,
    /// What the certificate reload reads.
    pub served: ServedView<'a>,
    /// The start of the overdue restart told last.
    pub told_overdue: Option<Timestamp>,
    /// The instance ran as several unrelated servers (as an earlier version ran them), and
    /// its user has not agreed to convert it (see [`crate::resources::unconverted`]).
    pub ran_unconverted: bool,
    /// The spec to drive replicates: it is being converted.
    pub replicated: bool,
    /// This actor told the instance runs unrelated servers.
    pub told_unconverted: bool,
    /// When the first unready pod of the restart in flight reaches its readiness deadline, by
    /// the actor's clock.
    pub pod_deadline: Duration,
    /// Left of the wait for edits to settle.
    pub settle_left: Option<Duration>,
}

impl ChecksView<'static> {
    /// Nothing to check: no live directives, no TLS, nothing told or timed (for `diff`, which
    /// performs nothing).
    pub const NONE: Self = Self {
        has_live: false,
        live_every: Duration::MAX,
        live_checked_ago: None,
        served: ServedView {
            enabled: false,
            read_ago: None,
            wanted: None,
            verified: None,
            pods: &[],
        },
        told_overdue: None,
        ran_unconverted: false,
        replicated: false,
        told_unconverted: false,
        pod_deadline: Duration::MAX,
        settle_left: None,
    };
}

/// The checks a step that writes nothing performs, in order, and when it looks again.
#[derive(Debug, Clone, PartialEq)]
pub struct Checks<'a> {
    /// Every object and pod runs the plan's spec: remember it as the last healthy one.
    pub converged: bool,
    /// Read every pod's live directives and set back any that drifted; then look again after
    /// [`Wakes::live`].
    pub check_live: bool,
    /// Whether to dial pods for the certificate they serve.
    pub reload: Reload,
    /// The restart in flight passed its progress deadline: tell it.
    pub overdue: Option<&'a RolloutRecord>,
    /// Tell that the instance runs unrelated servers.
    pub tell_unconverted: bool,
    /// When to look again for each reason these checks know; the live check's and the reload's
    /// are those after they ran, the credentials' and replication's are left unset.
    pub wakes: Wakes,
}

/// Decides the checks of a step whose verdict, `decision`, writes nothing; `record` is the
/// restart in flight.
pub fn checks<'a>(
    decision: &Decision,
    record: Option<&'a RolloutRecord>,
    now: Timestamp,
    deadlines: &Deadlines,
    view: &ChecksView<'_>,
) -> Checks<'a> {
    let held = matches!(decision, Decision::Held(_));
    let idle = matches!(decision, Decision::Idle);
    // Checked only once everything runs the spec: a restart under way changes the pods anyway.
    let live_in = match idle {
        true => live_drift::next_check_in(view.has_live, view.live_every, view.live_checked_ago),
        false => Duration::MAX,
    };
    let check_live = live_in == Duration::ZERO;
    let reload = reload(&view.served);
    let settling = *decision == Decision::Wait(Waiting::Settle);
    Checks {
        converged: idle,
        check_live,
        overdue: overdue_to_tell(record, held, now, deadlines, view.told_overdue),
        tell_unconverted: view.ran_unconverted && !view.replicated && !view.told_unconverted,
        wakes: Wakes {
            settle: view.settle_left.filter(|_| settling),
            progress: progress_wake(record, held, now, deadlines.progress),
            pod_deadline: record.map_or(Duration::MAX, |_| view.pod_deadline),
            live: if check_live { view.live_every } else { live_in },
            tls: match &reload {
                Reload::Wait(wake) => *wake,
                // Set once the pods were dialled, from what they served.
                Reload::Check(_) => Duration::MAX,
            },
            ..Wakes::default()
        },
        reload,
    }
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
