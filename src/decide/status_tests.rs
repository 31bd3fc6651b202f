use super::*;
use crate::crd::Phase;
use crate::decide::pods_fixtures::{record, t, with_status};
use crate::resources::fixtures::instance;
use crate::resources::statefulset;
use crate::status::find_condition;

/// A converged one-pod instance's view: its StatefulSet rolled out (or not), nothing found,
/// written or told.
fn view<'a>(ri: &'a RedisInstance, sts: &'a CachedStatefulSet) -> StatusView<'a> {
    StatusView {
        driven: Some(Driven {
            replicas: 1,
            template_hash: "0123456789abcdef",
            live: false,
            live_hash: "l",
        }),
        ..StatusView::of_objects(ri, Some(sts), &[], Time(t(0)))
    }
}

fn sts_of(ri: &RedisInstance, done: bool) -> CachedStatefulSet {
    CachedStatefulSet::from(&with_status(statefulset(ri, "h", None), done))
}

/// A phase, and a condition's status and reason.
type Expected<'a> = (Option<Phase>, &'a str, &'a str);

/// (phase, Progressing status, its reason) of a status.
fn progress(status: &RedisInstanceStatus) -> (Option<Phase>, String, String) {
    let p = find_condition(status, condition::PROGRESSING).expect("Progressing is set");
    (status.phase, p.status.clone(), p.reason.clone())
}

/// While a change waits (a pause, the settle rule, a halt, a refusal), Progressing says so
/// and never "Converged"; only an instance running its spec with nothing held is converged.
#[test]
fn progressing_names_what_holds_the_change() {
    let ri = instance(&[("maxmemory", "100mb")]);
    let done = sts_of(&ri, true);
    let rolling = sts_of(&ri, false);
    let restart = record("h");
    let failed = FailedConfig {
        hash: "h",
        spec_hash: "s",
        reason: "NeverReady",
        message: "pod redis-example-0 never became ready",
    };
    let base = view(&ri, &done);
    // What happened, the view, and the (phase, Progressing status, reason) it calls for.
    let rows: Vec<(&str, StatusView, Expected)> = vec![
        (
            "at rest",
            base.clone(),
            (Some(Phase::Running), "False", "Converged"),
        ),
        (
            "the controller starting pods",
            StatusView {
                statefulset: Some(&rolling),
                ..base.clone()
            },
            (Some(Phase::Pending), "True", "RollingOut"),
        ),
        (
            "a restart in flight",
            StatusView {
                rollout: Some(restart.clone()),
                ..base.clone()
            },
            (Some(Phase::Restarting), "True", "Restarting"),
        ),
        (
            "a restart told overdue",
            StatusView {
                rollout: Some(restart.clone()),
                overdue: Some(restart.started_at.0),
                ..base.clone()
            },
            (Some(Phase::Restarting), "True", "RolloutStuck"),
        ),
        (
            "waiting for edits to settle",
            StatusView {
                settling: Some(Duration::from_secs(5)),
                ..base.clone()
            },
            (Some(Phase::Running), "True", "Settling"),
        ),
        (
            "a pause holding a change",
            StatusView {
                pending: Some("restart to config 0123456789ab"),
                ..base.clone()
            },
            (Some(Phase::Paused), "True", "Paused"),
        ),
        (
            "halted on the restart in flight",
            StatusView {
                rollout: Some(restart.clone()),
                halted: Some(failed),
                ..base.clone()
            },
            (Some(Phase::Halted), "False", HALTED_REASON),
        ),
        (
            "a halt of another config is over",
            StatusView {
                halted: Some(FailedConfig {
                    hash: "other",
                    ..failed
                }),
                ..base.clone()
            },
            (Some(Phase::Running), "False", "Converged"),
        ),
        (
            "the API server refused this generation",
            StatusView {
                api_refusal: Some((
                    ri.metadata.generation,
                    "spec.volumeClaimTemplates: Forbidden",
                )),
                ..base.clone()
            },
            (Some(Phase::Running), "False", "ApiRefused"),
        ),
        (
            "the API server refused an earlier generation",
            StatusView {
                api_refusal: Some((Some(-1), "spec.volumeClaimTemplates: Forbidden")),
                ..base.clone()
            },
            (Some(Phase::Running), "False", "Converged"),
        ),
    ];
    for (row, view, (phase, state, reason)) in rows {
        let got = status(&view);
        assert_eq!(
            progress(&got),
            (phase, state.to_owned(), reason.to_owned()),
            "{row}"
        );
    }
    // A newer config waiting behind the restart in flight is named; the one rolling out alone
    // names nothing else.
    let message = |view: &StatusView| {
        let status = status(view);
        let p = find_condition(&status, condition::PROGRESSING).expect("Progressing is set");
        p.message.clone()
    };
    let behind = StatusView {
        rollout: Some(restart.clone()),
        ..base.clone()
    };
    assert!(
        message(&behind).ends_with("; config 0123456789ab waits for it"),
        "{}",
        message(&behind)
    );
    let alone = StatusView {
        driven: Some(Driven {
            template_hash: "h",
            ..base.driven.unwrap()
        }),
        ..behind
    };
    assert!(!message(&alone).contains("waits"), "{}", message(&alone));
}

/// A config Redis refused, or a live config it refused, makes the config invalid; the spec's
/// own violations come first.
#[test]
fn config_valid_names_the_refusal() {
    let ri = instance(&[("maxmemory", "100mb")]);
    let done = sts_of(&ri, true);
    let valid = |view: &StatusView| {
        let got = status(view);
        let c = find_condition(&got, condition::CONFIG_VALID).expect("ConfigValid is set");
        (got.phase, c.status.clone(), c.reason.clone())
    };
    let base = view(&ri, &done);
    assert_eq!(
        valid(&base),
        (Some(Phase::Running), "True".into(), "Valid".into())
    );
    let rejected = StatusView {
        rejection: Some(FailedConfig {
            hash: "h",
            spec_hash: "s",
            reason: "RedisRejectedConfig",
            message: "Redis refused it",
        }),
        ..base.clone()
    };
    assert_eq!(
        valid(&rejected),
        (
            Some(Phase::Invalid),
            "False".into(),
            "RedisRejectedConfig".into()
        )
    );
    assert_eq!(status(&rejected).rejected_config_hash.as_deref(), Some("s"));
    let live = StatusView {
        live_refusal: Some(("l", "ERR maxmemory")),
        ..base.clone()
    };
    assert_eq!(valid(&live).2, "LiveConfigRefused");
    assert_eq!(status(&live).refused_live_config_hash.as_deref(), Some("l"));
    let fixed = StatusView {
        live_refusal: Some(("refused-before", "ERR maxmemory")),
        ..base.clone()
    };
    assert_eq!(
        valid(&fixed).2,
        "Valid",
        "a refusal of live directives no longer set"
    );
    assert_eq!(status(&fixed).refused_live_config_hash, None);
    let bad = instance(&[("maxmemory", "lots")]);
    let refused = StatusView {
        instance: &bad,
        ..rejected
    };
    assert_eq!(valid(&refused).2, "InvalidConfig", "the spec's own first");
}

#[test]
fn refusal_message_names_directive_and_running_config() {
    let violations = [Violation {
        directive: "maxmemory".into(),
        reason: "\"lots\" is not a memory size".into(),
    }];
    let message = refusal_message(&violations, Some("0123456789abcdef"));
    assert!(
        message.contains("maxmemory: \"lots\" is not a memory size"),
        "{message}"
    );
    assert!(message.contains("keep config 0123456789ab"), "{message}");
    let first = refusal_message(&violations, None);
    assert!(first.ends_with("Nothing was created"), "{first}");
}

/// A config of `maxmemory` alone, rendered.
fn rendered(maxmemory: &str) -> crate::config::render::RenderedConfig {
    let config = std::collections::BTreeMap::from([("maxmemory".to_owned(), maxmemory.to_owned())]);
    crate::config::render::render(&config)
}

#[test]
fn a_held_change_names_what_it_would_do_the_directives_and_the_config() {
    let (old, new) = (rendered("100mb"), rendered("200mb"));
    let restart = Decision::BeginRestart {
        reason: crate::crd::RestartReason::ConfigChanged,
        marker: false,
    };
    let hash = "0123456789abcdef";
    let strategy = crate::crd::RestartStrategy::Recreate;
    assert_eq!(
        pending_change(&restart, Some(&old.text), &new.text, hash, strategy),
        "restart (ConfigChanged, Recreate) (maxmemory) to config 0123456789ab"
    );
    assert_eq!(
        pending_change(
            &Decision::ApplyLive,
            Some(&old.text),
            &new.text,
            hash,
            strategy
        ),
        format!("live apply (maxmemory) of config {}", new.short_hash())
    );
    // No file mounted yet: no directive to name.
    assert_eq!(
        pending_change(&Decision::WriteConfigMap, None, &new.text, hash, strategy),
        "WriteConfigMap toward config 0123456789ab"
    );
}

/// A restart's record write stores the record, counts a restart only when one begins, and
/// never carries over a held change or a settle wait of the step before.
#[test]
fn a_record_write_counts_what_it_begins_and_holds_nothing() {
    let ri = instance(&[("maxmemory", "100mb")]);
    let rolling = sts_of(&ri, false);
    let restart = record("h");
    let before = StatusView {
        statefulset: Some(&rolling),
        pending: Some("restart to config 0123456789ab"),
        settling: Some(Duration::from_secs(5)),
        ..view(&ri, &rolling)
    };
    let begun = recorded_status(&before, Some(restart.clone()), true);
    assert_eq!(begun.rollout.as_ref(), Some(&restart));
    assert_eq!(begun.restarts, 1, "a restart begun is counted");
    assert_eq!(begun.last_restart_time, Some(restart.started_at.clone()));
    assert_eq!(
        progress(&begun),
        (
            Some(Phase::Restarting),
            "True".to_owned(),
            "Restarting".to_owned()
        ),
        "neither paused nor settling: the step that wrote it did neither"
    );
    let moved = recorded_status(&before, Some(restart.clone()), false);
    assert_eq!(moved.restarts, 0, "a moved record is the same restart");
    assert_eq!(moved.last_restart_time, None);
    let done = sts_of(&ri, true);
    let finished = recorded_status(
        &StatusView {
            rollout: Some(restart),
            ..view(&ri, &done)
        },
        None,
        false,
    );
    assert_eq!(
        finished.rollout, None,
        "a finished restart leaves no record"
    );
    assert_eq!(
        progress(&finished),
        (
            Some(Phase::Running),
            "False".to_owned(),
            "Converged".to_owned()
        )
    );
}

/// A row: its name, the StatefulSet and file seen, the desired hash, the kinds seen.
type MismatchRow<'a> = (
    &'a str,
    Option<&'a CachedStatefulSet>,
    Option<&'a str>,
    &'a str,
    [bool; 3],
);

/// Each kind of difference is seen only while a StatefulSet runs, by what differs.
#[test]
fn mismatches_name_each_difference_from_the_desired_config() {
    let ri = instance(&[("maxmemory", "100mb")]);
    let sts = CachedStatefulSet::from(&statefulset(&ri, "old", None));
    let rows: Vec<MismatchRow> = vec![
        ("nothing runs yet", None, None, "new", [false; 3]),
        (
            "all as desired",
            Some(&sts),
            Some("conf"),
            "old",
            [false; 3],
        ),
        (
            "no ConfigMap",
            Some(&sts),
            None,
            "old",
            [true, false, false],
        ),
        (
            "its file differs",
            Some(&sts),
            Some("other"),
            "old",
            [false, true, false],
        ),
        (
            "the template's hash differs",
            Some(&sts),
            Some("conf"),
            "new",
            [false, false, true],
        ),
    ];
    for (row, running, file, want_hash, expected) in rows {
        assert_eq!(
            mismatches(running, file, "conf", want_hash),
            expected,
            "{row}"
        );
    }
}

/// The replication step's record is part of the one derivation: the conditions read the
/// record being written, not the stored one it replaces, and without a record the stored one
/// is kept.
#[test]
fn the_replication_record_written_is_the_one_the_conditions_read() {
    let ri = instance(&[("maxmemory", "100mb")]);
    let rolling = sts_of(&ri, false);
    let restart = record("h");
    let failed = crate::crd::ReplicationStatus {
        primary: Some("redis-1".to_owned()),
        switchover_failed: Some(crate::crd::SwitchoverFailure {
            config_hash: restart.config_hash.clone(),
            message: "the replica did not catch up".to_owned(),
        }),
        ..crate::crd::ReplicationStatus::default()
    };
    let recorded = status(&StatusView {
        rollout: Some(restart.clone()),
        replication: Some(failed.clone()),
        ..view(&ri, &rolling)
    });
    assert_eq!(recorded.replication.as_ref(), Some(&failed));
    let progressing = find_condition(&recorded, condition::PROGRESSING).expect("set");
    assert_eq!(
        (progressing.reason.as_str(), progressing.message.as_str()),
        ("SwitchoverFailed", "the replica did not catch up"),
        "derived from the record written in the same status"
    );
    let stored = crate::crd::ReplicationStatus {
        primary: Some("redis-0".to_owned()),
        ..crate::crd::ReplicationStatus::default()
    };
    let mut holding = ri.clone();
    holding.status = Some(RedisInstanceStatus {
        replication: Some(stored.clone()),
        ..RedisInstanceStatus::default()
    });
    let kept = status(&StatusView {
        rollout: Some(restart),
        ..view(&holding, &rolling)
    });
    assert_eq!(kept.replication.as_ref(), Some(&stored), "no record: kept");
    assert_ne!(
        find_condition(&kept, condition::PROGRESSING).map(|c| c.reason.as_str()),
        Some("SwitchoverFailed")
    );
}
