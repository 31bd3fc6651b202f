//! One row per situation a user or the cluster can cause.

use super::pods::fixtures::{crashed as exited_with, pod, with_status};
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

/// No NetworkPolicy asked for, cached or written.
const NO_POLICY: PolicyView<'static> = PolicyView {
    desired: None,
    cached: None,
    written: None,
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
    stalled: bool,
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
            stalled: false,
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
        self.with_views(|want, seen, unplanned| {
            // The one function `diff` asks, and the actor's one entry around it.
            let Verdict {
                decision,
                act,
                pending,
            } = verdict(want, seen, &DEADLINES, facts, unplanned.status);
            assert_eq!(
                pending.is_some(),
                matches!(decision, Decision::Held(_)),
                "a pending change is told exactly for a held decision: {decision:?} {pending:?}"
            );
            let planned = Planned {
                auth: None,
                want,
                seen,
                deadlines: &DEADLINES,
                facts,
                replication: None,
                checks: &crate::decide::ChecksView::NONE,
                status: unplanned.status,
            };
            let decided = step(&NO_POLICY, &Course::Planned(planned));
            assert_eq!(
                decided.reports_status(),
                !act.is_write(),
                "status reported exactly when nothing is written: {act:?}"
            );
            let StepAct::Drive(drive) = decided.act else {
                panic!("no NetworkPolicy to write: the plan is driven, not {decided:?}");
            };
            assert_eq!(
                drive.auth,
                AuthStep::Off,
                "no credentials read: none decided"
            );
            assert_eq!(
                (&drive.verdict.decision, &drive.verdict.act),
                (&decision, &act)
            );
            assert_eq!(
                drive.checks.is_some(),
                !act.is_write(),
                "checks at rest exactly when nothing is written: {act:?}"
            );
            check(&decision, &act)
        })
    }

    /// `check` of what the step reads of this case: the desired objects and the snapshot of
    /// a spec to drive, and the view of one with nothing safe to run (whose status view is
    /// the objects', for both).
    fn with_views<R>(&self, check: impl FnOnce(&Desired, &Snapshot, &Unplanned) -> R) -> R {
        let want = self.want();
        let ri = instance(&[]);
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
            stalled: self.stalled,
            revisions: &self.revisions,
            primary: self.primary.as_deref(),
        };
        let status = StatusView::of_objects(&ri, live_sts.as_ref(), &self.pods, Time(self.now));
        let unplanned = Unplanned {
            desired_service: &self.svc,
            desired_headless: &self.headless,
            record: self.record.as_ref(),
            statefulset: live_sts.as_ref(),
            service: live_svc.as_ref(),
            headless: live_headless.as_ref(),
            migrated: false,
            status: &status,
        };
        check(&want, &seen, &unplanned)
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
    crashed.hash = newer.hash.clone();
    assert_eq!(crashed.decide(), Decision::Retarget { counted: true });

    // Redis exits on the data, not the config file (`databases 1` over data in database 3):
    // a crash all the same, and the fix goes out at once.
    let mut cannot_load = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged)
        .rolled_out(false);
    let fatal = "# FATAL: Data file was created with a Redis server configured to handle more than 1 databases. Exiting";
    let on_target = |ready, exit, message| {
        let hash = &cannot_load.hash;
        exited_with("redis-example-0", hash, "rev-b", ready, exit, message)
    };
    cannot_load.pods = vec![on_target(false, Some(1), Some(fatal))];
    let unfixed = cannot_load.decide();
    cannot_load.hash = newer.hash.clone();
    assert_eq!(cannot_load.decide(), Decision::Retarget { counted: true });
    // Without a newer config the rollout is the operator's to judge, not to replace.
    assert_ne!(unfixed, Decision::Retarget { counted: true });

    // Never ready and never crashed, past its readiness deadline: the same.
    let mut stalled = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged)
        .rolled_out(false);
    stalled.pods = vec![pod("redis-example-0", &stalled.hash, "rev-b", false, None)];
    stalled.hash = newer.hash;
    assert_eq!(stalled.decide(), Decision::Wait(Waiting::Rollout));
    stalled.stalled = true;
    assert_eq!(stalled.decide(), Decision::Retarget { counted: true });
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

mod act;
mod holds;
mod migration;
mod revisions;
mod step;
