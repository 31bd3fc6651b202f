//! Rows for the step's other choices: what an instance with nothing safe to run does, which
//! findings are told, and when a step that wrote nothing looks again.

use super::*;

/// What [`hold_act`] chose, in words: the variant, then the decision or the Event's reason.
fn hold_label(case: &Case, migrated: bool) -> String {
    let live_sts = case.live_sts.as_ref().map(CachedStatefulSet::from);
    let live_svc = case.live_svc.as_ref().map(CachedService::from);
    let live_headless = case.live_headless.as_ref().map(CachedService::from);
    let ri = instance(&[]);
    let status = StatusView::of_objects(&ri, live_sts.as_ref(), &case.pods, Time(case.now));
    let view = Unplanned {
        desired_service: &case.svc,
        desired_headless: &case.headless,
        record: case.record.as_ref(),
        statefulset: live_sts.as_ref(),
        service: live_svc.as_ref(),
        headless: live_headless.as_ref(),
        migrated,
        status: &status,
    };
    match hold_act(&view) {
        HoldAct::FinishRestart {
            record,
            status,
            event,
        } => {
            assert_eq!(Some(record), case.record.as_ref());
            assert_eq!(status.rollout, None, "closed: no record left behind");
            format!("FinishRestart {}", event.reason)
        }
        HoldAct::Services { decided, act, .. } => {
            let told = match act {
                ServicesAct::Service {
                    told: ServiceTold::Migrated(event),
                    ..
                } => event.reason,
                ServicesAct::Service {
                    told: ServiceTold::Repaired(drift),
                    ..
                } => drift.event.reason,
                ServicesAct::Service {
                    told: ServiceTold::Created,
                    ..
                } => "Created",
                ServicesAct::Headless(Some(drift)) => drift.event.reason,
                ServicesAct::Headless(None) => "Created",
                ServicesAct::DeleteHeadlessNamed(_) => "Deleted",
            };
            format!("{decided} {told}")
        }
        HoldAct::Hold => "Hold".into(),
    }
}

#[test]
fn with_nothing_safe_to_run_only_a_finished_record_and_the_services_are_written() {
    let converged = Case::converged(RollingUpdate);
    let never_ran = {
        let mut case = converged.clone();
        case.live_sts = None;
        case.live_svc = None;
        case.live_headless = None;
        case
    };
    let mut no_service = converged.clone();
    no_service.live_svc = None;
    let mut no_headless = converged.clone();
    no_headless.live_headless = None;
    let mut service_edited = converged.clone();
    if let Some(svc) = service_edited.live_svc.as_mut() {
        svc.spec.as_mut().unwrap().ports = None;
    }
    let mut gone_with_record = converged.clone().recorded(RestartReason::ConfigChanged);
    gone_with_record.live_sts = None;
    // (case, the actor deleted the headless `<name>`, what is done)
    let table = [
        (converged.clone(), false, "Hold"),
        (never_ran, false, "Hold"),
        (
            converged.clone().recorded(RestartReason::ConfigChanged),
            false,
            "FinishRestart RestartCompleted",
        ),
        (
            converged
                .clone()
                .recorded(RestartReason::ConfigChanged)
                .rolled_out(false),
            false,
            "Hold",
        ),
        (
            converged
                .clone()
                .edited()
                .recorded(RestartReason::ConfigChanged),
            false,
            "Hold",
        ),
        (gone_with_record, false, "Hold"),
        (no_service.clone(), false, "ApplyService DriftRepaired"),
        (no_service, true, "ApplyService ServicesMigrated"),
        (no_headless, false, "ApplyHeadlessService Created"),
        (service_edited, false, "ApplyService DriftRepaired"),
    ];
    for (row, (case, migrated, done)) in table.into_iter().enumerate() {
        assert_eq!(hold_label(&case, migrated), done, "row {row}");
    }
}

#[test]
fn an_overdue_restart_is_told_once_and_never_while_held() {
    let record = pods_fixtures::record("abc");
    let started = record.started_at.0;
    // (restart recorded, held by a pause, seconds since it began, start of the one told, told)
    let table = [
        (false, false, 500, None, false),
        (true, false, 100, None, false),
        (true, false, 121, None, true),
        (true, true, 121, None, false),
        (true, false, 500, Some(started), false),
        (true, false, 500, Some(t(-600)), true),
    ];
    for (row, (recorded, held, secs, told, tells)) in table.into_iter().enumerate() {
        let record = recorded.then_some(&record);
        let found = overdue_to_tell(record, held, t(secs), &DEADLINES, told);
        assert_eq!(found.is_some(), tells, "row {row}");
    }
}

#[test]
fn a_refused_spec_is_told_once_per_generation_even_across_a_restart() {
    let in_status = |observed: i64, reason: &'static str| {
        let status = crate::crd::RedisInstanceStatus {
            observed_generation: Some(observed),
            ..Default::default()
        };
        let valid = crate::status::condition::CONFIG_VALID;
        crate::status::fixtures::failing(status, valid, reason, "spec.config refused")
    };
    // (stored status, generation, generation this actor told, to tell)
    let table = [
        (None, Some(3), None, true),
        (None, Some(3), Some(3), false),
        (None, Some(4), Some(3), true),
        (Some(in_status(3, "InvalidConfig")), Some(3), None, false),
        (Some(in_status(2, "InvalidConfig")), Some(3), None, true),
        (
            Some(in_status(3, "RedisRejectedConfig")),
            Some(3),
            None,
            true,
        ),
    ];
    for (row, (status, generation, told, tells)) in table.into_iter().enumerate() {
        assert_eq!(
            refusal_to_tell(status.as_ref(), generation, told),
            tells,
            "row {row}"
        );
    }
}

#[test]
fn a_step_that_wrote_nothing_looks_again_at_the_soonest_reason_or_when_edits_settle() {
    let s = Duration::from_secs;
    let never = Wakes::default();
    // (wakes, look again in)
    let table = [
        (never, Duration::MAX),
        (
            Wakes {
                live: s(60),
                ..never
            },
            s(60),
        ),
        (
            Wakes {
                progress: s(30),
                pod_deadline: s(10),
                tls: s(20),
                ..never
            },
            s(10),
        ),
        (
            Wakes {
                replication: Duration::from_millis(500),
                auth: s(2),
                ..never
            },
            Duration::from_millis(500),
        ),
        (
            Wakes {
                settle: Some(s(4)),
                replication: s(1),
                ..never
            },
            s(4),
        ),
    ];
    for (row, (wakes, after)) in table.into_iter().enumerate() {
        assert_eq!(next_wake(&wakes), after, "row {row}");
    }
}

#[test]
fn the_annotation_pauses_like_the_spec_unless_it_says_false() {
    // (spec.paused, annotation, paused)
    let table = [
        (false, None, false),
        (true, None, true),
        (false, Some("true"), true),
        (false, Some(""), true),
        (false, Some("false"), false),
        (true, Some("false"), true),
    ];
    for (row, (spec, annotation, held)) in table.into_iter().enumerate() {
        let mut ri = instance(&[]);
        ri.spec.paused = spec;
        if let Some(value) = annotation {
            ri.metadata.annotations =
                Some([(PAUSED_ANNOTATION.to_owned(), value.to_owned())].into());
        }
        assert_eq!(paused(&ri), held, "row {row}");
    }
}

/// The step's one decision in words: what it performs, and whether the remembered
/// NetworkPolicy write is dropped.
fn step_label(policy: &PolicyView, case: &Case, planned: bool) -> String {
    case.with_views(|want, seen, unplanned| {
        let facts = Facts::default();
        let course = match planned {
            true => Course::Planned(Planned {
                auth: None,
                want,
                seen,
                deadlines: &DEADLINES,
                facts: &facts,
                replication: None,
                checks: &crate::decide::ChecksView::NONE,
                status: unplanned.status,
            }),
            false => Course::Unplanned(*unplanned),
        };
        let decided = step(policy, &course);
        let status = if decided.reports_status() {
            ", status"
        } else {
            ""
        };
        let act = match decided.act {
            StepAct::Policy(PolicyAct::Apply { .. }) => "Policy Apply".to_owned(),
            StepAct::Policy(PolicyAct::Delete(_)) => "Policy Delete".to_owned(),
            StepAct::Policy(PolicyAct::Keep) => "Policy Keep".to_owned(),
            StepAct::Hold(HoldAct::Hold) => "Hold".to_owned(),
            StepAct::Hold(HoldAct::FinishRestart { .. }) => "Hold FinishRestart".to_owned(),
            StepAct::Hold(HoldAct::Services { decided, .. }) => format!("Hold {decided}"),
            StepAct::Drive(drive) => format!("Drive {}", drive.verdict.decision.name()),
        };
        let forget = if decided.forget_policy {
            ", forget"
        } else {
            ""
        };
        format!("{act}{forget}{status}")
    })
}

#[test]
fn the_network_policy_comes_first_in_the_one_decision_planned_or_not() {
    use crate::resources::{CachedNetworkPolicy, network_policy};
    let desired = network_policy(&crate::resources::fixtures::instance(&[]), None);
    let stored = |version: &str| {
        let mut policy = desired.clone();
        policy.metadata.uid = Some("np".into());
        policy.metadata.resource_version = Some(version.into());
        CachedNetworkPolicy::from(&policy)
    };
    let (cached, newer) = (stored("5"), stored("9"));
    let applied = PolicyWrite::Applied(Arc::new(stored("7")));
    let policy = |desired, cached, written| PolicyView {
        desired,
        cached,
        written,
    };
    let on = Some(&desired);
    let converged = Case::converged(RollingUpdate);
    let edited = converged.clone().edited();
    let mut no_service = converged.clone();
    no_service.live_svc = None;
    let finished = converged.clone().recorded(RestartReason::ConfigChanged);
    // (row, NetworkPolicy view, case, a spec to drive, what the step does; status: its report
    // writes the status, as it does exactly when the step writes nothing else)
    let table = [
        (
            "policy missing, spec valid",
            policy(on, None, None),
            &converged,
            true,
            "Policy Apply",
        ),
        // The policy is written from the current spec even when nothing is safe to run.
        (
            "policy missing, spec invalid",
            policy(on, None, None),
            &converged,
            false,
            "Policy Apply",
        ),
        (
            "policy missing, edit waiting",
            policy(on, None, None),
            &edited,
            true,
            "Policy Apply",
        ),
        (
            "policy turned off, spec invalid",
            policy(None, Some(&cached), None),
            &converged,
            false,
            "Policy Delete, forget",
        ),
        (
            "policy in place, converged",
            policy(on, Some(&cached), None),
            &converged,
            true,
            "Drive Idle, forget, status",
        ),
        (
            "policy in place, spec edited",
            policy(on, Some(&cached), None),
            &edited,
            true,
            "Drive BeginRestart, forget",
        ),
        (
            "policy in place, spec invalid",
            policy(on, Some(&cached), None),
            &converged,
            false,
            "Hold, forget, status",
        ),
        (
            "policy in place, Service deleted, spec invalid",
            policy(on, Some(&cached), None),
            &no_service,
            false,
            "Hold ApplyService, forget",
        ),
        (
            "policy in place, restart done, spec invalid",
            policy(on, Some(&cached), None),
            &finished,
            false,
            "Hold FinishRestart, forget",
        ),
        // Our apply is not in the cache yet: it stands, and is remembered.
        (
            "own apply ahead of the cache",
            policy(on, Some(&cached), Some(&applied)),
            &converged,
            true,
            "Drive Idle, status",
        ),
        (
            "cache past our apply",
            policy(on, Some(&newer), Some(&applied)),
            &converged,
            false,
            "Hold, forget, status",
        ),
        (
            "no policy at all",
            policy(None, None, None),
            &converged,
            true,
            "Drive Idle, forget, status",
        ),
    ];
    for (row, view, case, planned, done) in table {
        assert_eq!(step_label(&view, case, planned), done, "{row}");
    }
}

/// Replication in the one call: decided only when the verdict writes nothing, the role
/// Services first, and no planned change while the verdict holds one.
#[test]
fn replication_is_decided_with_the_step_only_when_the_rest_of_it_writes_nothing() {
    use crate::crd::ReplicationStatus;
    use crate::decide::replication::tests::{IPS, pod, primary, replica_of, view_of};
    use crate::decide::replication::{ReplicationLimits, ReplicationStep, ReplicationView};
    use crate::decide::replication_act::ReplicationFacts;
    use crate::decide::routing::RoleServicesView;
    use crate::decide::{Replication, ReplicationInputs};

    let ri = instance(&[]);
    let desired_service = crate::resources::service(&ri);
    let replicas = crate::resources::replicas_service(&ri);
    let replicas_cached = CachedService::from(&replicas);
    let services = |cached| RoleServicesView {
        desired_service: &desired_service,
        service: None,
        legacy: None,
        service_serving: None,
        desired_replicas: &replicas,
        replicas: cached,
        replicas_written: None,
    };
    let (p0, r1, r2) = (
        primary(100),
        replica_of(IPS[0], 100),
        replica_of(IPS[0], 100),
    );
    let mut old = pod(2, Some(&r2), Some("replica"));
    old.up_to_date = false;
    let pods = [
        pod(0, Some(&p0), Some("primary")),
        pod(1, Some(&r1), Some("replica")),
        old,
    ];
    let status = ReplicationStatus {
        primary: Some("r-0".into()),
        ..ReplicationStatus::default()
    };
    // A restart in flight: the old replica is next to replace, unless a change is held.
    let view = ReplicationView {
        rolling: true,
        ..view_of(&pods, Some(&status))
    };
    let limits = ReplicationLimits::default();
    let facts = ReplicationFacts {
        status: &status,
        summary: Vec::new(),
        converting: false,
        rollout_hash: None,
        rolling: true,
        now: t(0),
    };
    let converged = Case::converged(RollingUpdate);
    let edited = converged.clone().edited();
    let mut held = edited.clone();
    held.paused = true;
    let (kept, missing) = (services(Some(&replicas_cached)), services(None));
    // (row, case, role Services, what replication does)
    let table = [
        ("verdict idle", &converged, &kept, "ReplacePod"),
        ("verdict writes", &edited, &kept, "none"),
        ("verdict holds a change", &held, &kept, "Idle"),
        (
            "replicas Service missing",
            &converged,
            &missing,
            "ApplyReplicas",
        ),
    ];
    for (row, case, services, want) in table {
        let got = case.with_views(|want_objects, seen, unplanned| {
            let facts_of_step = Facts::default();
            let inputs = ReplicationInputs {
                services,
                view: &view,
                limits: &limits,
                facts: &facts,
            };
            let planned = Planned {
                auth: None,
                want: want_objects,
                seen,
                deadlines: &DEADLINES,
                facts: &facts_of_step,
                replication: Some(&inputs),
                checks: &crate::decide::ChecksView::NONE,
                status: unplanned.status,
            };
            let StepAct::Drive(drive) = step(&NO_POLICY, &Course::Planned(planned)).act else {
                panic!("{row}: a plan is driven");
            };
            match drive.replication {
                None => "none".to_owned(),
                Some(Replication::ApplyReplicas { .. }) => "ApplyReplicas".to_owned(),
                Some(Replication::RetireLegacy(_)) => "RetireLegacy".to_owned(),
                Some(Replication::Pods { plan, .. }) => match plan.step {
                    ReplicationStep::ReplacePod { .. } => "ReplacePod".to_owned(),
                    other => other.name().to_owned(),
                },
            }
        });
        assert_eq!(got, want, "{row}");
    }
}
