//! Rows for what waits or is held: edits settling after a restart, live edits, a pause, a
//! halted rollout and pods on a failed config.

use super::*;

#[test]
fn a_restart_after_another_waits_while_the_spec_keeps_changing() {
    let mut storm = Case::converged(Recreate).edited();
    storm.settling = true;
    assert_eq!(storm.decide(), Decision::Wait(Waiting::Settle));
    storm.settling = false;
    assert_eq!(
        storm.decide(),
        Decision::BeginRestart {
            reason: RestartReason::ConfigChanged,
            marker: false
        }
    );
}

#[test]
fn a_live_only_edit_is_applied_in_place_and_anything_else_restarts() {
    let from = [("maxmemory", "100mb"), ("databases", "16")];
    let live = live_case(
        &from,
        &[("maxmemory", "200mb"), ("databases", "16"), ("hz", "20")],
    );
    assert_eq!(live.decide(), Decision::ApplyLive);
    let mixed = live_case(&from, &[("maxmemory", "200mb"), ("databases", "8")]);
    assert!(matches!(
        mixed.decide(),
        Decision::BeginRestart {
            reason: RestartReason::ConfigChanged,
            ..
        }
    ));
    let removed = live_case(&from, &[("databases", "16")]);
    assert!(
        matches!(
            removed.decide(),
            Decision::BeginRestart {
                reason: RestartReason::ConfigMapChanged,
                ..
            }
        ),
        "a removed directive goes back to its default only by a restart"
    );
    let mut missing = live_case(&from, &from);
    missing.live_text = None;
    assert!(
        matches!(missing.decide(), Decision::BeginRestart { .. }),
        "the spec's rule: a missing ConfigMap restarts"
    );
    assert_eq!(live_case(&from, &from).decide(), Decision::Idle);
}

#[test]
fn a_refused_or_unfinished_live_edit_waits() {
    let from = [("maxmemory", "100mb")];
    let mut refused = live_case(&from, &[("maxmemory", "200mb")]);
    refused.live_refused = true;
    assert_eq!(refused.decide(), Decision::Wait(Waiting::LiveRefused));
    let mut rolling = live_case(&from, &[("maxmemory", "200mb")]);
    rolling.live_sts = rolling.live_sts.map(|s| with_status(s, false));
    assert_eq!(rolling.decide(), Decision::Wait(Waiting::Rollout));
}

#[test]
fn pause_holds_restarts_and_live_applies_but_not_creation_or_repairs() {
    let mut restart = Case::converged(RollingUpdate).edited();
    restart.paused = true;
    assert!(
        matches!(restart.decide(), Decision::Held(inner) if matches!(*inner, Decision::BeginRestart { .. }))
    );
    let mut live = live_case(&[("maxmemory", "100mb")], &[("maxmemory", "200mb")]);
    live.paused = true;
    assert_eq!(live.decide(), Decision::Held(Box::new(Decision::ApplyLive)));
    let pending = live.with_views(|want, seen, unplanned| {
        verdict(want, seen, &DEADLINES, &Facts::default(), unplanned.status).pending
    });
    let pending = pending.expect("a held live apply is pending");
    assert!(
        pending.starts_with("live apply (maxmemory) of config "),
        "{pending}"
    );
    let mut new = Case::converged(RollingUpdate);
    new.paused = true;
    new.live_sts = None;
    new.live_text = None;
    assert_eq!(new.decide(), Decision::WriteConfigMap);
    new.live_text = Some(new.text.clone());
    assert_eq!(new.decide(), Decision::CreateStatefulSet);
    let mut service = Case::converged(RollingUpdate);
    service.paused = true;
    service.live_svc = None;
    assert_eq!(service.decide(), Decision::ApplyService);
    let mut idle = Case::converged(RollingUpdate);
    idle.paused = true;
    assert_eq!(idle.decide(), Decision::Idle);
}

#[test]
fn a_halted_rollout_replaces_no_further_pods() {
    let mut case = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged)
        .rolled_out(false);
    case.pods = vec![pod("redis-example-0", "old", "rev-a", false, Some(1))];
    assert_eq!(
        case.decide(),
        Decision::ReplacePods(vec!["redis-example-0".into()]),
        "not halted: a crashing pod on the old revision is replaced"
    );
    case.halted = true;
    assert_eq!(case.decide(), Decision::Wait(Waiting::Halted));
}

#[test]
fn pods_on_a_failed_config_are_replaced_at_once_when_rolling_back() {
    let mut case = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::RolledBack)
        .rolled_out(false);
    case.pods = vec![pod("redis-example-0", "bad", "rev-a", false, None)];
    assert_eq!(
        case.decide(),
        Decision::Wait(Waiting::Rollout),
        "unready, but not known to have failed"
    );
    case.failed_hash = Some("bad".into());
    assert_eq!(
        case.decide(),
        Decision::ReplacePods(vec!["redis-example-0".into()])
    );
}

#[test]
fn a_pause_mid_recreate_keeps_the_old_pods_or_brings_the_statefulset_back() {
    let mut case = Case::converged(Recreate)
        .edited()
        .recorded(RestartReason::ConfigChanged);
    case.paused = true;
    assert_eq!(
        case.decide(),
        Decision::Held(Box::new(Decision::DeleteForRecreate))
    );
    case.live_sts = None;
    assert!(
        matches!(case.decide(), Decision::Held(inner) if matches!(*inner, Decision::DeleteOrphanedPods(_))),
        "the orphaned pods keep serving while paused"
    );
    case.pods.clear();
    assert_eq!(
        case.decide(),
        Decision::WriteConfigMap,
        "with its pods gone, the instance gets its StatefulSet back even while paused"
    );
    case.live_text = Some(case.text.clone());
    assert_eq!(case.decide(), Decision::CreateStatefulSet);
}
