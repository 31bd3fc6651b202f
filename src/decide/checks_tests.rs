use std::sync::Arc;

use super::*;
use crate::decide::pods_fixtures::{pod, record, t};
use crate::resources::{CachedPod, TLS_ANNOTATION};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

const DEADLINES: Deadlines = Deadlines {
    progress: Duration::from_secs(300),
};

/// Live directives checked every 60 s, last `ago` (`None`: never).
fn live(ago: Option<u64>) -> ChecksView<'static> {
    ChecksView {
        has_live: true,
        live_every: s(60),
        live_checked_ago: ago.map(s),
        ..ChecksView::NONE
    }
}

/// The live check runs only once everything runs the spec, when it is due; its next look is a
/// full interval after it ran.
#[test]
fn the_live_check_runs_when_due_and_only_at_rest() {
    let rows = [
        // decision, last checked, checks now, next look
        (Decision::Idle, None, true, s(60)),
        (Decision::Idle, Some(60), true, s(60)),
        (Decision::Idle, Some(10), false, s(50)),
        (Decision::Wait(Waiting::Rollout), None, false, Duration::MAX),
        (Decision::Wait(Waiting::Settle), None, false, Duration::MAX),
        (
            Decision::Held(Box::new(Decision::RollOut)),
            None,
            false,
            Duration::MAX,
        ),
    ];
    for (row, (decision, ago, check, next)) in rows.into_iter().enumerate() {
        let got = checks(&decision, None, t(0), &DEADLINES, &live(ago));
        assert_eq!((got.check_live, got.wakes.live), (check, next), "row {row}");
        assert_eq!(got.converged, decision == Decision::Idle, "row {row}");
    }
    let none = checks(&Decision::Idle, None, t(0), &DEADLINES, &ChecksView::NONE);
    assert!(!none.check_live && none.converged);
    assert_eq!(
        none.wakes,
        Wakes::default(),
        "nothing to check, nothing timed"
    );
}

/// A restart past its progress deadline is told once, never while a pause holds it; until
/// the deadline the step wakes for it, and for the first unready pod's readiness deadline.
#[test]
fn an_overdue_restart_is_told_once_and_not_while_held() {
    let rollout = record("h");
    let waiting = Decision::Wait(Waiting::Rollout);
    let held = Decision::Held(Box::new(Decision::RollOut));
    let view = ChecksView {
        pod_deadline: s(7),
        ..ChecksView::NONE
    };
    let early = checks(&waiting, Some(&rollout), t(100), &DEADLINES, &view);
    assert_eq!(early.overdue, None);
    assert_eq!(early.wakes.progress, s(201), "a second past the deadline");
    assert_eq!(early.wakes.pod_deadline, s(7));

    let late = checks(&waiting, Some(&rollout), t(400), &DEADLINES, &view);
    assert_eq!(late.overdue, Some(&rollout));
    assert_eq!(late.wakes.progress, Duration::MAX, "found: no timer needed");

    let told = ChecksView {
        told_overdue: Some(t(0)),
        ..view
    };
    let again = checks(&waiting, Some(&rollout), t(400), &DEADLINES, &told);
    assert_eq!(again.overdue, None, "told already");

    let paused = checks(&held, Some(&rollout), t(400), &DEADLINES, &view);
    assert_eq!(paused.overdue, None, "a held restart is not stuck");
    assert_eq!(paused.wakes.progress, Duration::MAX);

    let none = checks(&waiting, None, t(400), &DEADLINES, &view);
    assert_eq!(
        (none.overdue, none.wakes.pod_deadline),
        (None, Duration::MAX),
        "no restart in flight"
    );
}

/// The settle wait is the step's only wake while it waits for edits to settle.
#[test]
fn the_settle_wait_wakes_only_a_step_waiting_for_it() {
    let view = ChecksView {
        settle_left: Some(s(3)),
        ..ChecksView::NONE
    };
    let settling = checks(
        &Decision::Wait(Waiting::Settle),
        None,
        t(0),
        &DEADLINES,
        &view,
    );
    assert_eq!(settling.wakes.settle, Some(s(3)));
    let idle = checks(&Decision::Idle, None, t(0), &DEADLINES, &view);
    assert_eq!(idle.wakes.settle, None);
}

fn served_pod() -> Arc<CachedPod> {
    let mut pod = Arc::unwrap_or_clone(pod("redis-0", "h", "r", true, None));
    pod.annotations.insert(TLS_ANNOTATION, "true");
    if let Some(status) = pod.status.as_mut() {
        status.pod_ip = Some("10.0.0.1".into());
    }
    Arc::new(pod)
}

/// The certificate check follows [`reload`] whatever the verdict; a check's wake is set once
/// the pods were dialled.
#[test]
fn the_certificate_check_is_decided_with_the_rest() {
    let pods = [served_pod()];
    let view = ChecksView {
        served: ServedView {
            enabled: true,
            read_ago: Some(s(1)),
            wanted: Some("new"),
            verified: Some(("old", s(1))),
            pods: &pods,
        },
        ..ChecksView::NONE
    };
    for decision in [Decision::Idle, Decision::Wait(Waiting::Rollout)] {
        let got = checks(&decision, None, t(0), &DEADLINES, &view);
        assert_eq!(
            got.reload,
            Reload::Check(vec![("redis-0".into(), "10.0.0.1".into())])
        );
        assert_eq!(got.wakes.tls, Duration::MAX);
    }
    let off = checks(&Decision::Idle, None, t(0), &DEADLINES, &ChecksView::NONE);
    assert_eq!(off.reload, Reload::Wait(Duration::MAX));
}

#[test]
fn an_unconverted_instance_is_told_once_unless_it_is_being_converted() {
    // (ran as unrelated servers, the spec replicates, told already, told now)
    let rows = [
        (true, false, false, true),
        (true, false, true, false),
        (true, true, false, false),
        (false, false, false, false),
        (false, true, false, false),
    ];
    for (ran_unconverted, replicated, told_unconverted, tell) in rows {
        let view = ChecksView {
            ran_unconverted,
            replicated,
            told_unconverted,
            ..ChecksView::NONE
        };
        let checks = checks(&Decision::Idle, None, t(0), &DEADLINES, &view);
        assert_eq!(
            checks.tell_unconverted, tell,
            "{ran_unconverted} {replicated} {told_unconverted}"
        );
    }
}
