//! One row per situation a user or the cluster can cause.

use super::pods::fixtures::{pod, with_status};
use super::*;
use crate::config::render::render;
use crate::resources::fixtures::instance;
use crate::resources::{
    headless_service, mount_config_map, revision_config_map, revision_of, service, statefulset,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const DEADLINES: Deadlines = Deadlines {
    progress: Duration::from_secs(120),
};

/// The desired objects for `maxmemory 100mb` under `strategy`, and what the caches show.
#[derive(Clone)]
struct Case {
    text: String,
    hash: String,
    strategy: RestartStrategy,
    sts: StatefulSet,
    svc: Service,
    headless: Service,
    live_text: Option<String>,
    live_sts: Option<StatefulSet>,
    live_svc: Option<Service>,
    live_headless: Option<Service>,
    pods: Vec<Arc<CachedPod>>,
    record: Option<RolloutRecord>,
    settling: bool,
    now: Timestamp,
    live: bool,
    live_refused: bool,
    paused: bool,
    halted: bool,
    failed_hash: Option<String>,
    revision: String,
    shared: String,
    revisions: Vec<Arc<CachedConfigMap>>,
    primary: Option<String>,
}

use super::pods_fixtures::t;

impl Case {
    /// A converged instance: everything in the caches is what the operator would build.
    fn converged(strategy: RestartStrategy) -> Self {
        let mut ri = instance(&[("maxmemory", "100mb")]);
        ri.spec.restart_strategy = strategy;
        let rendered = render(&ri.spec.config);
        let sts = statefulset(&ri, &rendered.hash, None);
        Case {
            live_text: Some(rendered.text.clone()),
            live_sts: Some(with_status(sts.clone(), true)),
            live_svc: Some(service(&ri)),
            live_headless: Some(headless_service(&ri)),
            headless: headless_service(&ri),
            text: rendered.text.clone(),
            hash: rendered.hash.clone(),
            strategy,
            svc: service(&ri),
            pods: vec![pod("redis-example-0", &rendered.hash, "rev-a", true, None)],
            sts,
            record: None,
            settling: false,
            now: t(0),
            live: false,
            live_refused: false,
            paused: false,
            halted: false,
            failed_hash: None,
            revision: revision_of(&ri, &rendered.hash),
            shared: "redis-example-config".into(),
            revisions: vec![revision_cm(&ri, &rendered.hash, &rendered.text)],
            primary: None,
        }
    }

    /// The desired revision's ConfigMap is written, as a restart's first write does.
    fn with_revision(mut self) -> Self {
        if !self
            .revisions
            .iter()
            .any(|cm| cm.name_any() == self.revision)
        {
            let mut ri = instance(&[]);
            ri.spec.config_update = if self.live {
                crate::crd::ConfigUpdate::Live
            } else {
                crate::crd::ConfigUpdate::Restart
            };
            self.revisions
                .push(revision_cm(&ri, &self.hash, &self.text));
        }
        self
    }

    /// The user changed the config: desired moves on, the caches still show the old one.
    fn edited(mut self) -> Self {
        let ri = instance(&[("maxmemory", "200mb")]);
        let rendered = render(&ri.spec.config);
        self.sts = statefulset(&ri, &rendered.hash, None);
        self.revision = revision_of(&ri, &rendered.hash);
        self.text = rendered.text;
        self.hash = rendered.hash;
        self
    }

    /// A restart towards the desired hash began at t(0).
    fn recorded(mut self, reason: RestartReason) -> Self {
        self.record = Some(RolloutRecord {
            config_hash: self.hash.clone(),
            restarted_at: None,
            strategy: self.strategy,
            reason,
            started_at: Time(t(0)),
        });
        self.with_revision()
    }

    /// The template now carries the desired hash; the controller is replacing pods.
    fn rolled_out(mut self, done: bool) -> Self {
        self.live_sts = Some(with_status(self.sts.clone(), done));
        self.live_text = Some(self.text.clone());
        self
    }

    /// What this case desires.
    fn want(&self) -> Desired<'_> {
        Desired {
            config_text: &self.text,
            hash: &self.hash,
            strategy: self.strategy,
            statefulset: &self.sts,
            service: &self.svc,
            headless: &self.headless,
            live: self.live,
            revision: &self.revision,
            shared: &self.shared,
        }
    }

    /// What it decides; every row also checks that a decision that writes has its act.
    fn decide(&self) -> Decision {
        self.with_act(&Facts::default(), |decision, act| {
            assert_eq!(decision.is_write(), act.is_write(), "{decision:?}: {act:?}");
            decision.clone()
        })
    }

    /// `check` of what it decides and the act that carries it out, given `facts`.
    fn with_act<R>(&self, facts: &Facts, check: impl FnOnce(&Decision, &Act) -> R) -> R {
        let want = self.want();
        let live_sts = self.live_sts.as_ref().map(CachedStatefulSet::from);
        let live_svc = self.live_svc.as_ref().map(CachedService::from);
        let live_headless = self.live_headless.as_ref().map(CachedService::from);
        let seen = Snapshot {
            config_text: self.live_text.as_deref(),
            statefulset: live_sts.as_ref(),
            service: live_svc.as_ref(),
            headless: live_headless.as_ref(),
            pods: &self.pods,
            rollout: self.record.as_ref(),
            settling: self.settling,
            now: self.now,
            live_refused: self.live_refused,
            paused: self.paused,
            halted: self.halted,
            failed_hash: self.failed_hash.as_deref(),
            revisions: &self.revisions,
            primary: self.primary.as_deref(),
        };
        // The one function the actor and `diff` ask.
        let Verdict { decision, act } = verdict(&want, &seen, &DEADLINES, facts);
        check(&decision, &act)
    }
}

/// The revision ConfigMap of `hash` holding `text`, as the cache shows it.
fn revision_cm(ri: &crate::crd::RedisInstance, hash: &str, text: &str) -> Arc<CachedConfigMap> {
    let rendered = crate::config::render::RenderedConfig {
        text: text.to_owned(),
        hash: hash.to_owned(),
    };
    let mut cm = CachedConfigMap::from(&revision_config_map(ri, &rendered, hash));
    cm.metadata.uid = Some(format!("uid-{hash}"));
    Arc::new(cm)
}

fn being_deleted(mut sts: StatefulSet) -> StatefulSet {
    sts.metadata.deletion_timestamp = Some(Time(t(0)));
    sts
}

fn terminating(pod: Arc<CachedPod>) -> Arc<CachedPod> {
    let mut pod = CachedPod::clone(&pod);
    pod.metadata.deletion_timestamp = Some(Time(t(0)));
    Arc::new(pod)
}

use RestartStrategy::{Recreate, RollingUpdate};

#[test]
fn first_creation_writes_config_then_statefulset() {
    let mut case = Case::converged(RollingUpdate);
    case.live_sts = None;
    case.live_text = None;
    assert_eq!(case.decide(), Decision::WriteConfigMap);
    case.live_text = Some(case.text.clone());
    assert_eq!(case.decide(), Decision::CreateStatefulSet);
    case.live_sts = Some(with_status(case.sts.clone(), false));
    assert_eq!(case.decide(), Decision::Wait(Waiting::Rollout));
}

#[test]
fn converged_instance_is_idle() {
    assert_eq!(Case::converged(RollingUpdate).decide(), Decision::Idle);
    assert_eq!(Case::converged(Recreate).decide(), Decision::Idle);
}

#[test]
fn the_service_comes_first() {
    let mut case = Case::converged(RollingUpdate).edited();
    case.live_svc = None;
    assert_eq!(case.decide(), Decision::ApplyService);
    let mut drifted = service(&instance(&[]));
    drifted.spec.as_mut().unwrap().selector = None;
    case.live_svc = Some(drifted);
    assert_eq!(case.decide(), Decision::ApplyService);
}

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
    marked.metadata.annotations.as_mut().unwrap().insert(
        crate::resources::RESTARTED_AT_ANNOTATION.into(),
        "2026-12-05T10:00:00Z".into(),
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

#[test]
fn the_spec_rules_begin_a_restart() {
    // Rule 3: the template hash differs.
    assert_eq!(
        Case::converged(RollingUpdate).edited().decide(),
        Decision::BeginRestart {
            reason: RestartReason::ConfigChanged,
            marker: false
        }
    );
    // Rules 1 and 2: the ConfigMap is missing, or its content differs, behind matching pods.
    let mut missing = Case::converged(Recreate);
    missing.live_text = None;
    let mut changed = Case::converged(Recreate);
    changed.live_text = Some("maxmemory 1mb\n".into());
    for case in [missing, changed] {
        assert_eq!(
            case.decide(),
            Decision::BeginRestart {
                reason: RestartReason::ConfigMapChanged,
                marker: true
            }
        );
    }
}

#[test]
fn hand_drift_of_the_statefulset_is_repaired() {
    let mut scaled = Case::converged(RollingUpdate);
    scaled.live_sts.as_mut().unwrap().spec.replicas = Some(3);
    assert_eq!(scaled.decide(), Decision::RepairStatefulSet);

    let mut image = Case::converged(RollingUpdate);
    let template = &mut image.live_sts.as_mut().unwrap().spec.template;
    template.spec.as_mut().unwrap().containers[0].image = Some("redis:6.2".into());
    assert_eq!(
        image.decide(),
        Decision::BeginRestart {
            reason: RestartReason::ImageChanged,
            marker: true
        }
    );
}

#[test]
fn a_scale_down_that_removes_the_primary_waits_for_its_handover() {
    let mut scaled = Case::converged(RollingUpdate);
    scaled.live_sts.as_mut().unwrap().spec.replicas = Some(3);
    // The spec asks for one pod: ordinals 1 and 2 go.
    // (recorded primary, decision)
    let table = [
        (None, Decision::RepairStatefulSet),
        (Some("redis-example-0"), Decision::RepairStatefulSet),
        (Some("redis-example-1"), Decision::Wait(Waiting::Rollout)),
        (Some("redis-example-2"), Decision::Wait(Waiting::Rollout)),
        (Some("no-ordinal"), Decision::RepairStatefulSet),
    ];
    for (primary, want) in table {
        scaled.primary = primary.map(str::to_owned);
        assert_eq!(scaled.decide(), want, "{primary:?}");
    }
}

#[test]
fn rolling_restart_writes_config_then_template_then_finishes() {
    let case = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged);
    assert_eq!(case.decide(), Decision::WriteConfigMap);
    let mut written = case;
    written.live_text = Some(written.text.clone());
    assert_eq!(written.decide(), Decision::RollOut);
    let rolling = written.rolled_out(false);
    assert_eq!(rolling.decide(), Decision::Wait(Waiting::Rollout));
    assert_eq!(rolling.rolled_out(true).decide(), Decision::FinishRestart);
}

#[test]
fn an_operator_restarted_after_recording_resumes_without_a_new_restart() {
    // Crash between the status write and the template write: the record alone says what to do.
    let mut case = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged);
    case.live_text = Some(case.text.clone());
    assert_eq!(case.decide(), Decision::RollOut);
}

#[test]
fn edits_during_a_healthy_rollout_wait_for_it() {
    let mut case = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged)
        .rolled_out(false);
    // The user edits again: the record keeps its target until the rollout is done.
    let newer = render(&instance(&[("maxmemory", "300mb")]).spec.config);
    case.hash = newer.hash;
    case.text = newer.text;
    case.now = t(30);
    assert_eq!(case.decide(), Decision::Wait(Waiting::Rollout));
}

#[test]
fn edits_replace_a_failing_target_at_once() {
    let base = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged)
        .rolled_out(false);
    let newer = render(&instance(&[("maxmemory", "300mb")]).spec.config);

    let mut late = base;
    late.hash = newer.hash.clone();
    late.now = t(121);
    assert_eq!(late.decide(), Decision::Retarget { counted: true });

    let mut crashed = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged)
        .rolled_out(false);
    crashed.pods = vec![pod(
        "redis-example-0",
        &crashed.hash,
        "rev-b",
        false,
        Some(1),
    )];
    crashed.hash = newer.hash;
    assert_eq!(crashed.decide(), Decision::Retarget { counted: true });
}

#[test]
fn edits_before_the_template_changes_just_move_the_target() {
    let mut case = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged);
    let newer = render(&instance(&[("maxmemory", "300mb")]).spec.config);
    case.hash = newer.hash;
    assert_eq!(case.decide(), Decision::Retarget { counted: false });
}

#[test]
fn recreate_deletes_waits_then_creates_with_the_newest_config() {
    let mut case = Case::converged(Recreate)
        .edited()
        .recorded(RestartReason::ConfigChanged);
    assert_eq!(case.decide(), Decision::DeleteForRecreate);
    case.live_sts = case.live_sts.map(being_deleted);
    assert_eq!(case.decide(), Decision::Wait(Waiting::Deletion));
    case.live_sts = None;
    assert_eq!(
        case.decide(),
        Decision::DeleteOrphanedPods(vec!["redis-example-0".into()]),
        "the orphaned pods go before a new StatefulSet comes"
    );
    case.pods = case.pods.into_iter().map(terminating).collect();
    assert_eq!(case.decide(), Decision::Wait(Waiting::Deletion));
    case.pods.clear();
    assert_eq!(case.decide(), Decision::WriteConfigMap);
    case.live_text = Some(case.text.clone());
    assert_eq!(case.decide(), Decision::CreateStatefulSet);
    let created = case.rolled_out(false);
    assert_eq!(created.decide(), Decision::Wait(Waiting::Rollout));
    assert_eq!(created.rolled_out(true).decide(), Decision::FinishRestart);
}

#[test]
fn a_statefulset_deleted_by_someone_else_is_awaited_then_created() {
    let mut case = Case::converged(Recreate);
    case.live_sts = case.live_sts.map(being_deleted);
    assert_eq!(case.decide(), Decision::Wait(Waiting::Deletion));
    case.live_sts = None;
    assert_eq!(case.decide(), Decision::CreateStatefulSet);
}

#[test]
fn a_recreate_waits_for_a_statefulset_someone_else_holds_with_a_finalizer() {
    // Deleted with propagation Orphan, held by a foreign finalizer: its pods keep serving on the
    // old config and nothing is deleted or created until the StatefulSet is gone.
    let mut case = Case::converged(Recreate)
        .edited()
        .recorded(RestartReason::ConfigChanged);
    let mut held = being_deleted(case.live_sts.clone().unwrap());
    held.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    case.live_sts = Some(held);
    case.now = t(3600);
    assert_eq!(case.decide(), Decision::Wait(Waiting::Deletion));
}

#[test]
fn a_recreate_interrupted_after_its_delete_deletes_only_pods_not_yet_terminating() {
    // The operator crashed after deleting the StatefulSet; a new one finds three orphans, one
    // of them already terminating.
    let mut case = Case::converged(Recreate)
        .edited()
        .recorded(RestartReason::ConfigChanged);
    case.live_sts = None;
    case.pods = vec![
        pod("redis-example-0", "old", "rev-a", true, None),
        terminating(pod("redis-example-1", "old", "rev-a", true, None)),
        pod("redis-example-2", "old", "rev-a", false, None),
    ];
    assert_eq!(
        case.decide(),
        Decision::DeleteOrphanedPods(vec!["redis-example-0".into(), "redis-example-2".into()])
    );
}

#[test]
fn a_changed_retention_policy_is_applied_without_a_restart() {
    let mut case = Case::converged(Recreate);
    let mut ri = instance(&[("maxmemory", "100mb")]);
    ri.spec.restart_strategy = Recreate;
    ri.spec.storage.retention_policy = Some(crate::crd::RetentionPolicy {
        when_deleted: crate::crd::Retention::Delete,
        when_scaled: crate::crd::Retention::Retain,
    });
    case.sts = statefulset(&ri, &case.hash, None);
    assert_eq!(case.decide(), Decision::RepairStatefulSet);
}

#[test]
fn a_marker_restart_is_applied_only_when_the_marker_is_on_the_template() {
    let mut case = Case::converged(RollingUpdate).recorded(RestartReason::ConfigMapChanged);
    case.record.as_mut().unwrap().restarted_at = Some("then".into());
    assert_eq!(case.decide(), Decision::RollOut);
    let marked = statefulset(
        &instance(&[("maxmemory", "100mb")]),
        &case.hash,
        Some("then"),
    );
    case.live_sts = Some(with_status(marked, true));
    assert_eq!(case.decide(), Decision::FinishRestart);
}

#[test]
fn stuck_pods_on_an_older_revision_are_replaced_after_the_deadline() {
    let mut case = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ImageChanged)
        .rolled_out(false);
    case.pods = vec![pod("redis-example-0", "old", "rev-a", false, None)];
    case.now = t(60);
    assert_eq!(case.decide(), Decision::Wait(Waiting::Rollout));
    case.now = t(121);
    assert_eq!(
        case.decide(),
        Decision::ReplacePods(vec!["redis-example-0".into()])
    );
}

#[test]
fn record_for_marks_only_when_the_hash_stays() {
    let case = Case::converged(RollingUpdate);
    let want = case.want();
    let same = record_for(
        &want,
        case.live_sts.as_ref().map(CachedStatefulSet::from).as_ref(),
        RestartReason::ConfigMapChanged,
        false,
        t(5),
    );
    assert!(same.restarted_at.is_some());
    let gone = record_for(&want, None, RestartReason::ConfigChanged, false, t(5));
    assert_eq!(gone.restarted_at, None);
    assert_eq!(gone.started_at, Time(t(5)));
}

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

/// Under `configUpdate: Live`, the instance converged on `from` while the spec asks for `to`.
fn live_case(from: &[(&str, &str)], to: &[(&str, &str)]) -> Case {
    use crate::crd::ConfigUpdate;
    let build = |config: &[(&str, &str)]| {
        let mut ri = instance(config);
        ri.spec.config_update = ConfigUpdate::Live;
        let rendered = render(&ri.spec.config);
        let hash = crate::live::template_hash(&ri, &rendered);
        let revision = revision_cm(&ri, &hash, &rendered.text);
        (statefulset(&ri, &hash, None), rendered.text, hash, revision)
    };
    let (old_sts, old_text, old_hash, old_revision) = build(from);
    let (sts, text, hash, revision) = build(to);
    let mut case = Case::converged(RollingUpdate);
    case.live = true;
    case.live_sts = Some(with_status(old_sts, true));
    case.live_text = Some(old_text);
    case.pods = vec![pod("redis-example-0", &old_hash, "rev-a", true, None)];
    case.sts = sts;
    case.text = text;
    case.hash = hash;
    case.revision = revision.name_any();
    case.revisions = vec![old_revision];
    case
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

mod act;
mod revisions;
mod step;
