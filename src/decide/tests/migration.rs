//! Rows for an earlier version's objects: `<name>` headless and named by the StatefulSet,
//! migrated keeping the pods, whatever step an operator restart interrupts.

use super::*;

/// The objects of a version before `<name>` became the ClusterIP Service: the StatefulSet named
/// the headless Service `<name>`, and there was no `<name>-headless`.
fn from_an_earlier_version(mut case: Case) -> Case {
    let mut old_sts = case.live_sts.take().unwrap();
    old_sts.spec.service_name = Some("redis-example".into());
    case.live_sts = Some(old_sts);
    let mut old_svc = case.headless.clone();
    old_svc.metadata.name = Some("redis-example".into());
    case.live_svc = Some(old_svc);
    case
}

#[test]
fn an_earlier_versions_objects_are_migrated_keeping_the_pods() {
    let mut case = from_an_earlier_version(Case::converged(RollingUpdate));
    case.live_headless = None;
    assert_eq!(
        case.decide(),
        Decision::ApplyHeadlessService,
        "additive, first"
    );
    case.live_headless = Some(case.headless.clone());
    assert_eq!(
        case.decide(),
        Decision::MigrateStatefulSet,
        "the StatefulSet still names the headless `<name>`: that stays until it is migrated"
    );
    case.live_sts = Some(being_deleted(case.live_sts.take().unwrap()));
    assert_eq!(case.decide(), Decision::Wait(Waiting::Deletion));
    case.live_sts = None;
    assert_eq!(
        case.decide(),
        Decision::DeleteHeadlessNamedService,
        "no StatefulSet names it any more"
    );
    case.live_svc = None;
    assert_eq!(case.decide(), Decision::ApplyService);
    case.live_svc = Some(case.svc.clone());
    assert_eq!(
        case.decide(),
        Decision::CreateStatefulSet,
        "adopting the pods as they run"
    );
    case.live_sts = Some(with_status(case.sts.clone(), true));
    assert_eq!(case.decide(), Decision::Idle);
}

#[test]
fn an_operator_restarted_mid_migration_goes_on_from_what_it_sees() {
    // The StatefulSet was created again before `<name>` was replaced.
    let mut case = from_an_earlier_version(Case::converged(RollingUpdate));
    case.live_sts = Some(with_status(case.sts.clone(), true));
    assert_eq!(case.decide(), Decision::DeleteHeadlessNamedService);
    // `<name>` is being deleted.
    let mut deleting = case.live_svc.take().unwrap();
    deleting.metadata.deletion_timestamp = Some(Time(t(0)));
    case.live_svc = Some(deleting);
    assert_eq!(case.decide(), Decision::Wait(Waiting::Deletion));
}

#[test]
fn a_migration_waits_for_a_rollout_and_a_pause() {
    let mut rolling = from_an_earlier_version(Case::converged(RollingUpdate));
    let mut sts = rolling.live_sts.take().unwrap();
    sts.status.as_mut().unwrap().ready_replicas = Some(0);
    rolling.live_sts = Some(sts);
    assert_eq!(rolling.decide(), Decision::Wait(Waiting::Rollout));
    let edited = from_an_earlier_version(Case::converged(RollingUpdate).edited());
    assert!(
        matches!(edited.decide(), Decision::BeginRestart { .. }),
        "a restart goes first, with the StatefulSet as it is"
    );
    let mut paused = from_an_earlier_version(Case::converged(RollingUpdate));
    paused.paused = true;
    assert_eq!(
        paused.decide(),
        Decision::Held(Box::new(Decision::MigrateStatefulSet))
    );
}

#[test]
fn pods_left_by_a_deleted_statefulset_give_the_template_to_adopt_them_with() {
    let mut marked = CachedPod::clone(&pod("redis-example-0", "h1", "rev-a", true, None));
    marked.annotations.insert(
        crate::resources::RESTARTED_AT_ANNOTATION,
        "2026-12-05T10:00:00Z",
    );
    let pods = vec![
        terminating(pod("redis-example-0", "h0", "rev-a", true, None)),
        Arc::new(marked),
    ];
    assert_eq!(
        adopted_template(&pods),
        Some(("h1", Some("2026-12-05T10:00:00Z")))
    );
    assert_eq!(adopted_template(&pods[..1]), None, "terminating pods go");
}
