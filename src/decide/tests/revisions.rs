//! Rows for the revision ConfigMaps: written before the template that names them, kept while
//! anything names them, collected at rest, and never a reason to restart an upgraded instance.

use super::*;

/// `pod`, mounting the ConfigMap `name`.
fn mounting(pod: Arc<CachedPod>, name: &str) -> Arc<CachedPod> {
    let mut pod = CachedPod::clone(&pod);
    pod.config_map = Some(name.to_owned());
    Arc::new(pod)
}

/// A converged instance set up before revisions: its template and pods mount `<name>-config`.
fn from_before_revisions() -> Case {
    let mut case = Case::converged(RollingUpdate);
    let mut sts = case.sts.clone();
    mount_config_map(&mut sts, "redis-example-config");
    case.live_sts = Some(with_status(sts, true));
    case.pods = vec![mounting(case.pods[0].clone(), "redis-example-config")];
    case.revisions.clear();
    case
}

#[test]
fn a_new_instance_gets_its_revision_before_its_statefulset() {
    let mut case = Case::converged(RollingUpdate);
    case.live_sts = None;
    case.pods.clear();
    case.revisions.clear();
    case.live_text = None;
    assert_eq!(case.decide(), Decision::WriteConfigMap);
    case.live_text = Some(case.text.clone());
    assert_eq!(case.decide(), Decision::WriteRevision);
    let case = case.with_revision();
    assert_eq!(case.decide(), Decision::CreateStatefulSet);
}

#[test]
fn a_restart_writes_the_new_revision_before_the_template_and_collects_the_old_at_rest() {
    let old = Case::converged(RollingUpdate).revisions[0].name_any();
    let mut case = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged);
    case.live_text = Some(case.text.clone());
    case.revisions.retain(|cm| cm.name_any() == old);
    assert_eq!(
        case.decide(),
        Decision::WriteRevision,
        "no template names a ConfigMap that is not there"
    );
    let case = case.with_revision();
    assert_eq!(case.decide(), Decision::RollOut);
    let mut rolling = case.rolled_out(false);
    // The pod of the old revision still mounts the old ConfigMap.
    rolling.pods = vec![mounting(rolling.pods[0].clone(), &old)];
    assert_eq!(rolling.decide(), Decision::Wait(Waiting::Rollout));
    let mut done = rolling.rolled_out(true);
    assert_eq!(done.decide(), Decision::FinishRestart);
    done.record = None;
    assert_eq!(done.decide(), Decision::Idle, "kept while a pod mounts it");
    done.pods = vec![mounting(
        pod("redis-example-0", &done.hash, "rev-a", true, None),
        &done.revision,
    )];
    assert_eq!(done.decide(), Decision::DeleteRevisions(vec![old]));
}

#[test]
fn nothing_is_collected_while_a_restart_is_in_flight_or_held() {
    let mut case = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged)
        .rolled_out(false);
    case.pods.clear();
    assert_eq!(case.decide(), Decision::Wait(Waiting::Rollout));
    let mut paused = Case::converged(RollingUpdate).edited();
    paused.paused = true;
    paused.pods.clear();
    assert!(matches!(paused.decide(), Decision::Held(_)));
}

#[test]
fn a_rollback_recreates_the_earlier_revision_if_it_is_gone() {
    // The record points back at the converged config; its revision ConfigMap was deleted.
    let mut case = Case::converged(RollingUpdate).recorded(RestartReason::RolledBack);
    case.live_sts = Some(with_status(
        statefulset(&instance(&[("maxmemory", "200mb")]), "bad", None),
        false,
    ));
    case.pods = vec![pod("redis-example-0", "bad", "rev-b", false, None)];
    case.revisions.clear();
    assert_eq!(case.decide(), Decision::WriteRevision);
    let case = case.with_revision();
    assert_eq!(case.decide(), Decision::RollOut);
}

#[test]
fn an_instance_from_before_revisions_is_left_alone_until_its_next_restart() {
    let case = from_before_revisions();
    assert_eq!(case.decide(), Decision::Idle, "no restart for the upgrade");
    let mut scaled = from_before_revisions();
    let mut sts = scaled.live_sts.clone().unwrap();
    sts.spec.replicas = Some(3);
    scaled.live_sts = Some(sts);
    assert_eq!(
        scaled.decide(),
        Decision::RepairStatefulSet,
        "a repair keeps the shared mount and needs no revision"
    );
    // Its next restart: the new template mounts the new revision, written first.
    let edited = from_before_revisions()
        .edited()
        .recorded(RestartReason::ConfigChanged);
    let mut edited = Case {
        revisions: Vec::new(),
        ..edited
    };
    edited.live_text = Some(edited.text.clone());
    assert_eq!(edited.decide(), Decision::WriteRevision);
}

#[test]
fn a_rollback_to_pods_on_the_shared_config_map_keeps_them_as_they_run() {
    let mut case = from_before_revisions().recorded(RestartReason::RolledBack);
    case.revisions.clear();
    case.live_sts = Some(with_status(
        statefulset(&instance(&[("maxmemory", "200mb")]), "bad", None),
        false,
    ));
    case.pods = vec![
        mounting(
            pod("redis-example-0", &case.hash, "rev-a", true, None),
            "redis-example-config",
        ),
        pod("redis-example-1", "bad", "rev-b", false, None),
    ];
    assert_eq!(
        case.decide(),
        Decision::RollOut,
        "back to the template the untouched pods run, shared mount included"
    );
    let want_mount = mount_for(&case.want(), &case.pods, &case.hash);
    assert_eq!(want_mount, "redis-example-config");
}

#[test]
fn another_mounted_config_map_is_put_right_by_a_restart() {
    let mut case = Case::converged(RollingUpdate);
    let mut sts = case.sts.clone();
    mount_config_map(&mut sts, "redis-example-config-0123456789ab-live");
    case.live_sts = Some(with_status(sts, true));
    assert_eq!(
        case.decide(),
        Decision::BeginRestart {
            reason: RestartReason::PodTemplateChanged,
            marker: true
        }
    );
}

#[test]
fn a_revision_config_map_someone_changed_is_put_back_without_a_restart() {
    let mut case = Case::converged(RollingUpdate);
    let mut replaced = CachedConfigMap::clone(&case.revisions[0]);
    replaced.config_text = Some("maxmemory 1mb\n".into());
    case.revisions = vec![Arc::new(replaced)];
    assert_eq!(
        case.decide(),
        Decision::DeleteRevisions(vec![case.revision.clone()]),
        "an immutable one goes, to be written again"
    );
    case.revisions.clear();
    assert_eq!(case.decide(), Decision::WriteRevision);
}

#[test]
fn under_live_the_revision_follows_a_live_change_once_it_is_applied() {
    let from = [("maxmemory", "100mb"), ("databases", "16")];
    let mut case = live_case(&from, &[("maxmemory", "200mb"), ("databases", "16")]);
    assert_eq!(case.decide(), Decision::ApplyLive);
    // Applied: the shared ConfigMap holds the new live value, the revision not yet.
    case.live_text = Some(case.text.clone());
    assert_eq!(case.revisions[0].immutable, None);
    assert_eq!(case.decide(), Decision::WriteRevision);
    let mut updated = CachedConfigMap::clone(&case.revisions[0]);
    updated.config_text = Some(case.text.clone());
    case.revisions = vec![Arc::new(updated)];
    assert_eq!(case.decide(), Decision::Idle);
}
