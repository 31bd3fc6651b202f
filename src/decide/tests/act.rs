//! What carrying out a decision writes and tells: one row per choice of form, reason or Event.

use super::*;
use crate::config::render::short_hash;
use crate::decide::record_fact;
use crate::resources::other_shape;

/// The decision of `case` and the reason, note and drift kind of every Event its act posts.
fn told(case: &Case, facts: &Facts) -> (Decision, Told) {
    case.with_act(facts, |decision, act| {
        let events: Vec<&Notice> = match act {
            Act::BeginRestart {
                restart,
                file,
                drift,
            } => [Some(&restart.event)]
                .into_iter()
                .chain([file.as_ref().and_then(|f| f.event.as_ref())])
                .chain([drift.as_ref().map(|d| &d.event)])
                .flatten()
                .collect(),
            Act::CreateStatefulSet { event, .. } => event.iter().collect(),
            Act::WriteConfigMap(file) => file.event.iter().collect(),
            Act::RepairStatefulSet { drift, .. } => drift.iter().map(|d| &d.event).collect(),
            Act::Retarget(restart) => vec![&restart.event],
            Act::MoveRecord { event, .. } | Act::FinishRestart { event, .. } => vec![event],
            Act::ReplacePods(replacements) => replacements.iter().map(|r| &r.event).collect(),
            other => panic!("no Events listed for {other:?}"),
        };
        let events = events
            .into_iter()
            .map(|e| (e.reason, e.note.clone()))
            .collect();
        (decision.clone(), events)
    })
}

/// Events as [`told`] lists them: reason and note.
type Told = Vec<(&'static str, String)>;

fn written_at(generation: i64) -> Facts<'static> {
    Facts {
        written_generation: Some(generation),
        ..Facts::default()
    }
}

#[test]
fn a_restart_the_spec_did_not_ask_for_is_told_as_drift_by_kind() {
    use RestartReason::*;
    // (reason, the StatefulSet was edited by someone else, drift kind told)
    let table = [
        (ConfigMapChanged, false, Some("ConfigMap")),
        (ConfigMapChanged, true, Some("ConfigMap")),
        (ImageChanged, false, None),
        (ImageChanged, true, Some("Image")),
        (PodTemplateChanged, false, None),
        (PodTemplateChanged, true, Some("PodTemplate")),
        (ConfigChanged, true, None),
        (Superseded, true, None),
        (RolledBack, true, None),
    ];
    for (reason, hand_edited, kind) in table {
        assert_eq!(drift_restarted(reason, hand_edited), kind, "{reason:?}");
    }

    let mut image = Case::converged(RollingUpdate);
    let template = &mut image.live_sts.as_mut().unwrap().spec.template;
    template.spec.as_mut().unwrap().containers[0].image = Some("redis:6.2".into());
    let restarted = format!(
        "ImageChanged: config {0} -> {0}: replacing pods one at a time",
        short_hash(&image.hash)
    );
    let drifted = "Image of redis-example differed from what the operator builds; restored it";
    // The live StatefulSet is at generation 2 (`with_status`).
    // (the operator's last write, what is told)
    let rows: [(Facts, Vec<(&str, &str)>); 3] = [
        (
            written_at(1),
            vec![("RestartStarted", &restarted), ("DriftRepaired", drifted)],
        ),
        (written_at(2), vec![("RestartStarted", &restarted)]),
        (Facts::default(), vec![("RestartStarted", &restarted)]),
    ];
    for (facts, want) in rows {
        let (decision, events) = told(&image, &facts);
        assert!(matches!(decision, Decision::BeginRestart { .. }));
        let want: Vec<_> = want.into_iter().map(|(r, n)| (r, n.to_owned())).collect();
        assert_eq!(events, want, "{facts:?}");
    }
}

#[test]
fn a_changed_or_missing_file_is_told_but_not_a_new_instances_first() {
    let mut changed = Case::converged(Recreate);
    changed.live_text = Some("maxmemory 1mb\n".into());
    let mut missing = Case::converged(RollingUpdate);
    missing.live_text = None;
    let mut new = Case::converged(RollingUpdate);
    (new.live_text, new.live_sts) = (None, None);
    let hash = short_hash(&changed.hash).to_owned();
    let old = short_hash(&crate::config::render::config_hash("maxmemory 1mb\n")).to_owned();
    let started = format!("ConfigMapChanged: config {hash} -> {hash}");
    let drifted = "ConfigMap of redis-example differed from what the operator builds; restored it";
    // (case, decision, Events in the order they are listed)
    let rows: [(Case, &str, Told); 3] = [
        (
            // Recreate writes the file after deleting the StatefulSet, not beside the record.
            changed,
            "BeginRestart",
            vec![
                (
                    "RestartStarted",
                    format!(
                        "{started}: deleting the StatefulSet and its pods (keeping the data claims), then recreating it"
                    ),
                ),
                ("DriftRepaired", drifted.into()),
            ],
        ),
        (
            missing,
            "BeginRestart",
            vec![
                (
                    "RestartStarted",
                    format!("{started}: replacing pods one at a time"),
                ),
                (
                    "ConfigUpdated",
                    format!("the ConfigMap was missing; wrote config {hash}"),
                ),
                ("DriftRepaired", drifted.into()),
            ],
        ),
        (new, "WriteConfigMap", vec![]),
    ];
    for (case, decision, want) in rows {
        let (got, events) = told(&case, &Facts::default());
        assert_eq!(got.name(), decision);
        assert_eq!(events, want, "{decision}");
    }
    let mut recreating = Case::converged(Recreate)
        .edited()
        .recorded(RestartReason::ConfigChanged);
    recreating.live_sts = None;
    recreating.live_text = Some("maxmemory 1mb\n".into());
    recreating.pods.clear();
    let (decision, events) = told(&recreating, &Facts::default());
    assert_eq!(decision, Decision::WriteConfigMap);
    let new_hash = short_hash(&recreating.hash);
    assert_eq!(
        events,
        [(
            "ConfigUpdated",
            format!("redis.conf changed from config {old} to {new_hash}")
        )]
    );
}

#[test]
fn a_statefulset_created_again_is_told_a_new_one_is_not() {
    let mut again = Case::converged(RollingUpdate);
    again.live_sts = None;
    let mut recreate = Case::converged(Recreate)
        .edited()
        .recorded(RestartReason::ConfigChanged);
    (recreate.live_sts, recreate.live_text) = (None, Some(recreate.text.clone()));
    recreate.pods.clear();
    let ran = Facts {
        has_run: true,
        ..Facts::default()
    };
    let note = |case: &Case| {
        let note = format!(
            "recreated StatefulSet redis-example with config {}",
            short_hash(&case.hash)
        );
        vec![("Recreated", note)]
    };
    // (case, facts, Events)
    let rows = [
        (&again, Facts::default(), vec![]),
        (&again, ran, note(&again)),
        (&recreate, Facts::default(), note(&recreate)),
    ];
    for (case, facts, want) in rows {
        let (decision, events) = told(case, &facts);
        assert_eq!(decision, Decision::CreateStatefulSet);
        assert_eq!(events, want, "{facts:?}");
    }
    recreate.with_act(&Facts::default(), |_, act| {
        let Act::CreateStatefulSet {
            template, mount, ..
        } = act
        else {
            panic!("{act:?}")
        };
        assert_eq!(template.hash, recreate.hash, "the record's config");
        assert_eq!(mount, &recreate.revision);
        assert_eq!(template.service_name, None);
    });
}

/// A restart to the edited config, failing past its deadline, that a newer spec replaces:
/// `back` makes the newer spec the config the untouched pods run, with a restart marker.
fn failing(back: bool) -> Case {
    let mut case = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged)
        .rolled_out(false);
    let older = render(
        &instance(&[("maxmemory", if back { "100mb" } else { "300mb" })])
            .spec
            .config,
    );
    let first = render(&instance(&[("maxmemory", "100mb")]).spec.config);
    let mut untouched = CachedPod::clone(&pod("redis-example-1", &first.hash, "rev-a", true, None));
    untouched.annotations.insert(
        crate::resources::RESTARTED_AT_ANNOTATION,
        "2026-12-05T10:00:00Z",
    );
    case.pods = vec![
        pod("redis-example-0", &case.hash, "rev-b", false, None),
        Arc::new(untouched),
    ];
    (case.hash, case.text) = (older.hash, older.text);
    case.now = t(121);
    case
}

#[test]
fn a_failing_target_given_up_is_a_rollback_only_from_a_config_the_pods_failed_on() {
    let failed = failing(true).record.unwrap().config_hash;
    // (newer spec is the old config, the config the pods failed on, reason, marker)
    let marker = Some("2026-12-05T10:00:00Z");
    let rows = [
        (
            true,
            Some(failed.as_str()),
            RestartReason::RolledBack,
            marker,
        ),
        (true, None, RestartReason::Superseded, None),
        (true, Some("other"), RestartReason::Superseded, None),
        (
            false,
            Some(failed.as_str()),
            RestartReason::RolledBack,
            None,
        ),
        (false, None, RestartReason::Superseded, None),
    ];
    for (back, rejected, reason, restarted_at) in rows {
        let case = failing(back);
        let facts = Facts {
            rejected_hash: rejected,
            ..Facts::default()
        };
        case.with_act(&facts, |decision, act| {
            assert_eq!(decision, &Decision::Retarget { counted: true });
            let Act::Retarget(restart) = act else {
                panic!("{act:?}")
            };
            let row = format!("back {back}, rejected {rejected:?}");
            assert_eq!(restart.record.reason, reason, "{row}");
            assert_eq!(restart.record.config_hash, case.hash, "{row}");
            assert_eq!(
                restart.record.restarted_at.as_deref(),
                restarted_at,
                "{row}"
            );
            assert_eq!(restart.record.started_at.0, t(121), "{row}");
            assert_eq!(restart.old_hash, failed, "{row}");
            assert_eq!(
                (restart.status.rollout.as_ref(), restart.status.restarts),
                (Some(&restart.record), 1),
                "{row}: recorded and counted as a restart of its own"
            );
            let note = format!(
                "{}: config {} -> {}: replacing pods one at a time",
                reason.as_str(),
                short_hash(&failed),
                short_hash(&case.hash)
            );
            assert_eq!(restart.event.note, note, "{row}");
            let fact = format!("restart {} {}", reason.as_str(), t(121).as_second());
            assert_eq!(
                restart.event.fact,
                Some(fact),
                "{row}: a new restart, a new fact"
            );
        });
    }
}

#[test]
fn a_target_moved_before_any_pod_restarted_keeps_its_start_and_reason() {
    let mut case = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigMapChanged);
    case.record.as_mut().unwrap().restarted_at = Some("then".into());
    let newer = render(&instance(&[("maxmemory", "300mb")]).spec.config);
    case.hash = newer.hash;
    case.now = t(30);
    case.with_act(&Facts::default(), |decision, act| {
        assert_eq!(decision, &Decision::Retarget { counted: false });
        let Act::MoveRecord {
            record,
            status,
            event,
        } = act
        else {
            panic!("{act:?}")
        };
        assert_eq!(record.config_hash, case.hash);
        assert_eq!(
            (status.rollout.as_ref(), status.restarts),
            (Some(record), 0),
            "the record moves, counted once already"
        );
        assert_eq!(record.reason, RestartReason::ConfigMapChanged);
        assert_eq!(
            record.started_at.0,
            t(0),
            "the deadline still counts from the start"
        );
        assert_eq!(
            record.restarted_at,
            Some(t(30).to_string()),
            "a marker stays"
        );
        assert_eq!(event.reason, "RestartRetargeted");
        // Still the restart that began at t(0): its RestartStarted, told again by a new
        // leader, is the Event already posted; each move is an Event of its own.
        let started = case.record.as_ref().unwrap();
        assert_eq!(record_fact(record), record_fact(started));
        assert_eq!(
            event.fact,
            Some(format!("{} onto {}", record_fact(started), case.hash))
        );
        assert_eq!(
            event.note,
            format!(
                "config changed before any pod restarted; the restart continues with config {}",
                short_hash(&case.hash)
            )
        );
    });
}

#[test]
fn a_template_write_is_a_patch_unless_more_than_the_restart_annotations_differ() {
    let mut written = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ConfigChanged);
    written.live_text = Some(written.text.clone());
    let seen = &mut written.live_sts.as_mut().unwrap().metadata;
    seen.uid = Some("uid-sts".into());
    seen.resource_version = Some("17".into());
    let mut scaled = written.clone();
    scaled.live_sts.as_mut().unwrap().spec.replicas = Some(3);
    let mut earlier = written.clone();
    earlier.live_sts.as_mut().unwrap().spec.service_name = Some("redis-example".into());
    let mut gone = written.clone();
    gone.live_sts = None;
    // (case, form, serviceName kept)
    let rows = [
        (&written, Form::Patch, Some("redis-example-headless")),
        (&scaled, Form::Apply, Some("redis-example-headless")),
        (&earlier, Form::Patch, Some("redis-example")),
    ];
    for (case, want_form, service_name) in rows {
        case.with_act(&Facts::default(), |decision, act| {
            assert_eq!(decision, &Decision::RollOut);
            let Act::RollOut {
                template,
                mount,
                form,
                uid,
                resource_version,
            } = act
            else {
                panic!("{act:?}")
            };
            assert_eq!(*form, want_form);
            let seen = &case.live_sts.as_ref().unwrap().metadata;
            assert!(seen.uid.is_some(), "the fixture's StatefulSet has a uid");
            assert_eq!(
                (uid, resource_version),
                (&seen.uid, &seen.resource_version),
                "the write holds only on the StatefulSet seen, as it was"
            );
            assert_eq!(template.hash, case.hash);
            assert_eq!(mount, &case.revision);
            assert_eq!(template.service_name.as_deref(), service_name);
        });
    }
    assert_eq!(
        gone.decide(),
        Decision::CreateStatefulSet,
        "no StatefulSet, nothing to patch"
    );
}

#[test]
fn a_repair_keeps_the_template_it_finds_and_tells_only_a_hand_edit() {
    let mut scaled = Case::converged(RollingUpdate);
    let live = scaled.live_sts.as_mut().unwrap();
    live.spec.replicas = Some(3);
    live.metadata.resource_version = Some("42".into());
    live.spec
        .template
        .metadata
        .as_mut()
        .unwrap()
        .annotations
        .as_mut()
        .unwrap()
        .insert(
            crate::resources::RESTARTED_AT_ANNOTATION.into(),
            "then".into(),
        );
    crate::resources::mount_config_map(live, "redis-example-config");
    let drifted =
        "StatefulSetSpec of redis-example differed from what the operator builds; restored it";
    // (the operator's last write, what is told)
    let rows = [
        (written_at(1), vec![("DriftRepaired", drifted.to_owned())]),
        (written_at(2), vec![]),
        (Facts::default(), vec![]),
    ];
    for (facts, want) in rows {
        assert_eq!(told(&scaled, &facts), (Decision::RepairStatefulSet, want));
    }
    scaled.with_act(&written_at(1), |_, act| {
        let Act::RepairStatefulSet {
            drift: Some(drift), ..
        } = act
        else {
            panic!("{act:?}")
        };
        let mark = drift.mark.as_deref().expect("a repair leaves its mark");
        assert!(mark.starts_with("StatefulSetSpec "), "{mark}");
        let now = scaled.now;
        let retold = crate::decide::owed_repairs("redis-example", [("redis-example", mark)], now);
        assert_eq!(
            retold,
            vec![drift.event.clone()],
            "an operator taking over tells the repair from its mark as its repairer did"
        );
    });
    scaled.with_act(&Facts::default(), |_, act| {
        let Act::RepairStatefulSet {
            template,
            mount,
            resource_version,
            ..
        } = act
        else {
            panic!("{act:?}")
        };
        assert_eq!(template.hash, scaled.hash);
        assert_eq!(template.marker, Some("then"));
        assert_eq!(mount.as_deref(), Some("redis-example-config"));
        assert_eq!(resource_version.as_deref(), Some("42"));
    });
}

#[test]
fn replaced_pods_and_a_finished_restart_are_told() {
    let mut stuck = Case::converged(RollingUpdate)
        .edited()
        .recorded(RestartReason::ImageChanged)
        .rolled_out(false);
    stuck.pods = vec![pod("redis-example-0", "old", "rev-a", false, None)];
    stuck.now = t(121);
    let note = "deleted pod redis-example-0: not ready on an older revision, so the StatefulSet controller would never replace it";
    let (decision, events) = told(&stuck, &Facts::default());
    assert!(matches!(decision, Decision::ReplacePods(_)));
    assert_eq!(events, [("PodReplaced", note.to_owned())]);
    stuck.with_act(&Facts::default(), |_, act| {
        let Act::ReplacePods(replaced) = act else {
            panic!("{act:?}")
        };
        assert!(replaced[0].event.warning);
        assert_eq!(replaced[0].pod.name_any(), "redis-example-0");
    });

    let done = stuck.rolled_out(true);
    let note = format!(
        "all replicas run config {} and are ready",
        short_hash(&done.hash)
    );
    assert_eq!(
        told(&done, &Facts::default()),
        (Decision::FinishRestart, vec![("RestartCompleted", note)])
    );
}

#[test]
fn the_services_are_told_as_created_repaired_or_migrated() {
    let ri = instance(&[]);
    let (svc, headless) = (service(&ri), headless_service(&ri));
    let cached = |s: &Service| CachedService::from(s);
    let mut drifted = svc.clone();
    drifted.spec.as_mut().unwrap().selector = None;
    let (drifted, reshaped) = (cached(&drifted), cached(&other_shape(&svc)));
    let now = Timestamp::from_second(1_000_000).unwrap();
    let marked = |object| drift("redis-example", "Service").marked("redis-example", object, now);
    let repaired = ServiceTold::Repaired(marked("redis-example"));
    let ended = ServiceTold::Migrated(Notice {
        warning: false,
        reason: "ServicesMigrated",
        action: "ApplyService",
        note: "Service redis-example is now a ClusterIP Service; pods are named by redis-example-headless".into(),
        fact: None,
    });
    // (live `<name>`, StatefulSet exists, this actor deleted the headless `<name>`, told)
    let rows = [
        (None, true, true, ended),
        (None, true, false, repaired.clone()),
        (None, false, false, ServiceTold::Created),
        (Some(&drifted), true, false, repaired.clone()),
        (Some(&drifted), true, true, repaired),
        (Some(&reshaped), true, false, ServiceTold::Created),
    ];
    for (live, sts, migrated, want) in rows {
        let got = services_act(
            &Decision::ApplyService,
            &svc,
            &headless,
            (live, None),
            sts,
            migrated,
            now,
        );
        let allocates = live.is_none();
        assert_eq!(
            got,
            Some(ServicesAct::Service {
                told: want,
                allocates
            }),
            "{live:?} {sts} {migrated}"
        );
    }
    let live_headless = cached(&headless);
    let headless_act = |live| {
        services_act(
            &Decision::ApplyHeadlessService,
            &svc,
            &headless,
            (None, live),
            true,
            false,
            now,
        )
    };
    assert_eq!(
        headless_act(Some(&live_headless)),
        Some(ServicesAct::Headless(Some(marked(
            "redis-example-headless"
        ))))
    );
    assert_eq!(headless_act(None), Some(ServicesAct::Headless(None)));
    let delete = |live| {
        services_act(
            &Decision::DeleteHeadlessNamedService,
            &svc,
            &headless,
            (live, None),
            true,
            false,
            now,
        )
    };
    assert_eq!(
        delete(Some(&live_headless)),
        Some(ServicesAct::DeleteHeadlessNamed(&live_headless))
    );
    assert_eq!(delete(None), None);
}
