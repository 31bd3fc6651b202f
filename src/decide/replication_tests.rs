//! Rows of replication situations and the step each one takes.

use super::*;
use crate::crd::SwitchoverRecord;
use crate::replication::{BOOT_PRIMARY_HOST, BOOT_PRIMARY_PORT};

pub(crate) fn primary(offset: i64) -> PodReplication {
    PodReplication {
        role: Role::Primary,
        primary_host: None,
        primary_port: None,
        link_up: false,
        syncing: false,
        offset,
        replid: "h1".into(),
        failover: FailoverState::None,
        replicas: Vec::new(),
    }
}

pub(crate) fn replica_of(ip: &str, offset: i64) -> PodReplication {
    PodReplication {
        role: Role::Replica,
        primary_host: Some(ip.into()),
        primary_port: Some(6379),
        link_up: true,
        ..primary(offset)
    }
}

/// A pod's answer in `role`: a replica of the first pod's IP.
pub(crate) fn answering_as(role: Role, offset: i64) -> PodReplication {
    match role {
        Role::Primary => primary(offset),
        Role::Replica => replica_of(IPS[0], offset),
    }
}

fn booting() -> PodReplication {
    PodReplication {
        primary_host: Some(BOOT_PRIMARY_HOST.into()),
        primary_port: Some(BOOT_PRIMARY_PORT),
        link_up: false,
        replid: "fresh".into(),
        ..replica_of("", 0)
    }
}

pub(crate) const IPS: [&str; 3] = ["10.0.0.10", "10.0.0.11", "10.0.0.12"];
pub(crate) const NAMES: [&str; 3] = ["r-0", "r-1", "r-2"];

pub(crate) fn pod<'a>(
    ordinal: usize,
    probe: Option<&'a PodReplication>,
    label: Option<&'a str>,
) -> ReplicaPod<'a> {
    ReplicaPod {
        name: NAMES[ordinal],
        ordinal: i32::try_from(ordinal).unwrap(),
        ip: Some(IPS[ordinal]),
        deleting: false,
        ready: true,
        up_to_date: true,
        role_label: label,
        probe,
        probed: true,
    }
}

fn status(primary: &str) -> ReplicationStatus {
    ReplicationStatus {
        primary: Some(primary.into()),
        ..ReplicationStatus::default()
    }
}

/// No lag remembered.
pub(crate) static NO_LAGS: BTreeMap<String, i64> = BTreeMap::new();

/// No Service clients write through lists any pod.
static NO_LISTING: Listing = Listing {
    services: Vec::new(),
};

/// A view of `pods` at rest: as many pods as asked for, nothing remembered.
pub(crate) fn view_of<'a>(
    pods: &'a [ReplicaPod<'a>],
    status: Option<&'a ReplicationStatus>,
) -> ReplicationView<'a> {
    ReplicationView {
        pods,
        replicas: i32::try_from(pods.len()).unwrap(),
        status,
        rolling: false,
        primary_silent_for: None,
        switchover_sent: false,
        last_lag: &NO_LAGS,
        paused: false,
        switchover_halted: false,
        routing: None,
        listing: Some(&NO_LISTING),
    }
}

fn decide_with(
    pods: &[ReplicaPod],
    status: Option<&ReplicationStatus>,
    rolling: bool,
) -> ReplicationStep {
    let view = ReplicationView {
        rolling,
        ..view_of(pods, status)
    };
    decide_replication(&view, &ReplicationLimits::default())
}

fn healthy() -> (PodReplication, PodReplication, PodReplication) {
    (
        primary(100),
        replica_of(IPS[0], 100),
        replica_of(IPS[0], 100),
    )
}

#[test]
fn a_new_instance_elects_ordinal_zero_then_promotes_it_and_points_the_others_at_it() {
    let (b0, b1, b2) = (booting(), booting(), booting());
    let pods = [
        pod(0, Some(&b0), None),
        pod(1, Some(&b1), None),
        pod(2, Some(&b2), None),
    ];
    assert_eq!(
        decide_with(&pods, None, false),
        ReplicationStep::Elect {
            pod: "r-0".into(),
            lost: false
        }
    );
    let recorded = status("r-0");
    assert_eq!(
        decide_with(&pods, Some(&recorded), false),
        ReplicationStep::Promote { pod: "r-0".into() }
    );
    let p0 = primary(0);
    let pods = [
        pod(0, Some(&p0), None),
        pod(1, Some(&b1), None),
        pod(2, Some(&b2), None),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), false),
        ReplicationStep::Follow {
            pod: "r-1".into(),
            primary_ip: IPS[0].into()
        }
    );
}

#[test]
fn no_election_before_ordinal_zero_answers() {
    let b1 = booting();
    let pods = [pod(0, None, None), pod(1, Some(&b1), None)];
    assert_eq!(
        decide_with(&pods, None, false),
        ReplicationStep::Wait(ReplicationWait::NoCandidate)
    );
}

#[test]
fn labels_follow_roles_with_a_wrong_primary_label_removed_first() {
    let (p0, r1, r2) = healthy();
    let recorded = status("r-0");
    let pods = [
        pod(0, Some(&p0), None),
        pod(1, Some(&r1), Some("primary")),
        pod(2, Some(&r2), None),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), false),
        ReplicationStep::Label {
            pod: "r-1".into(),
            role: Some(Role::Replica)
        }
    );
    let pods = [
        pod(0, Some(&p0), None),
        pod(1, Some(&r1), Some("replica")),
        pod(2, Some(&r2), None),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), false),
        ReplicationStep::Label {
            pod: "r-0".into(),
            role: Some(Role::Primary)
        }
    );
    let pods = [
        pod(0, Some(&p0), Some("primary")),
        pod(1, Some(&r1), Some("replica")),
        pod(2, Some(&r2), Some("replica")),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), false),
        ReplicationStep::Idle
    );
}

#[test]
fn a_second_primary_is_made_to_follow_the_recorded_one() {
    let (p0, r1, _) = healthy();
    let rogue = primary(500);
    let recorded = status("r-0");
    let pods = [
        pod(0, Some(&p0), Some("primary")),
        pod(1, Some(&r1), Some("replica")),
        pod(2, Some(&rogue), Some("primary")),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), false),
        ReplicationStep::Follow {
            pod: "r-2".into(),
            primary_ip: IPS[0].into()
        }
    );
}

#[test]
fn a_restart_replaces_replicas_first_highest_ordinal_first_then_switches_over_once() {
    let (p0, r1, r2) = healthy();
    let recorded = status("r-0");
    let old = |mut p: ReplicaPod<'static>| {
        p.up_to_date = false;
        p
    };
    let (p0, r1, r2): (&'static _, &'static _, &'static _) = (
        Box::leak(Box::new(p0)),
        Box::leak(Box::new(r1)),
        Box::leak(Box::new(r2)),
    );
    let pods = [
        old(pod(0, Some(p0), Some("primary"))),
        old(pod(1, Some(r1), Some("replica"))),
        old(pod(2, Some(r2), Some("replica"))),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), true),
        ReplicationStep::ReplacePod { pod: "r-2".into() }
    );
    let pods = [
        old(pod(0, Some(p0), Some("primary"))),
        old(pod(1, Some(r1), Some("replica"))),
        pod(2, Some(r2), Some("replica")),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), true),
        ReplicationStep::ReplacePod { pod: "r-1".into() }
    );
    let pods = [
        old(pod(0, Some(p0), Some("primary"))),
        pod(1, Some(r1), Some("replica")),
        pod(2, Some(r2), Some("replica")),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), true),
        ReplicationStep::BeginSwitchover {
            from: "r-0".into(),
            to: "r-1".into()
        }
    );
}

#[test]
fn no_pod_is_replaced_while_a_replica_syncs_or_lags_or_a_pod_is_unready() {
    let (p0, _, r2) = healthy();
    let mut syncing = replica_of(IPS[0], 100);
    syncing.syncing = true;
    let lagging = replica_of(IPS[0], 100 - 2 * 1024 * 1024);
    let recorded = status("r-0");
    for r1 in [&syncing, &lagging] {
        let mut pods = [
            pod(0, Some(&p0), Some("primary")),
            pod(1, Some(r1), Some("replica")),
            pod(2, Some(&r2), Some("replica")),
        ];
        pods[2].up_to_date = false;
        assert_eq!(
            decide_with(&pods, Some(&recorded), true),
            ReplicationStep::Wait(ReplicationWait::Sync)
        );
    }
    let r1 = replica_of(IPS[0], 100);
    let mut pods = [
        pod(0, Some(&p0), Some("primary")),
        pod(1, Some(&r1), Some("replica")),
        pod(2, Some(&r2), Some("replica")),
    ];
    pods[2].up_to_date = false;
    pods[1].ready = false;
    assert_eq!(
        decide_with(&pods, Some(&recorded), true),
        ReplicationStep::Wait(ReplicationWait::Pods)
    );
}

/// A replaced replica's pod is gone from the cache for a moment before the StatefulSet
/// controller creates it again: the two pods left, the primary and a replaced replica, are not
/// a finished round, so no switchover starts (seen on the local cluster: a FAILOVER sent while
/// pod 1 was being replaced).
#[test]
fn no_switchover_while_a_replaced_pod_is_missing() {
    let (p0, _, r2) = healthy();
    let recorded = status("r-0");
    let mut old_primary = pod(0, Some(&p0), Some("primary"));
    old_primary.up_to_date = false;
    let pods = [old_primary, pod(2, Some(&r2), Some("replica"))];
    let view = ReplicationView {
        rolling: true,
        replicas: 3,
        ..view_of(&pods, Some(&recorded))
    };
    assert_eq!(
        decide_replication(&view, &ReplicationLimits::default()),
        ReplicationStep::Wait(ReplicationWait::Pods)
    );
}

#[test]
fn a_recorded_switchover_is_sent_then_finished_by_whoever_leads() {
    let (p0, r1, r2) = healthy();
    let mut recorded = status("r-0");
    recorded.switchover = Some(SwitchoverRecord {
        from: "r-0".into(),
        to: "r-1".into(),
        started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ),
    });
    let pods = [
        pod(0, Some(&p0), Some("primary")),
        pod(1, Some(&r1), Some("replica")),
        pod(2, Some(&r2), Some("replica")),
    ];
    // The target joins the primary's Service first, and every proxy routes to it before
    // `FAILOVER` is sent.
    assert_eq!(
        decide_with(&pods, Some(&recorded), true),
        ReplicationStep::Label {
            pod: "r-1".into(),
            role: Some(Role::Primary)
        }
    );
    let pods = [
        pod(0, Some(&p0), Some("primary")),
        pod(1, Some(&r1), Some("primary")),
        pod(2, Some(&r2), Some("replica")),
    ];
    let limits = ReplicationLimits::default();
    let routed = |labelled_for: Duration, listed_for: Option<Duration>| {
        let view = ReplicationView {
            rolling: true,
            routing: Some(Routing {
                labelled_for,
                listed_for,
            }),
            ..view_of(&pods, Some(&recorded))
        };
        decide_replication(&view, &limits)
    };
    let settle = limits.route_settle;
    for (labelled, listed) in [
        (Duration::ZERO, None),
        (settle * 3, None),
        (settle, Some(Duration::ZERO)),
        (settle * 3, Some(settle / 2)),
    ] {
        assert_eq!(
            routed(labelled, listed),
            ReplicationStep::Wait(ReplicationWait::Routing),
            "{labelled:?} {listed:?}"
        );
    }
    assert_eq!(
        routed(settle * 2, Some(settle)),
        ReplicationStep::Switchover {
            from: "r-0".into(),
            to_ip: IPS[1].into()
        }
    );
    // Never listed (not ready, or no endpoints controller): given up, the primary stays.
    assert!(matches!(
        routed(limits.route_bound + Duration::from_secs(1), None),
        ReplicationStep::AbortSwitchover { .. }
    ));
    // Listed at last, however late: sent.
    assert!(matches!(
        routed(limits.route_bound * 2, Some(settle)),
        ReplicationStep::Switchover { .. }
    ));
    let mut pausing = primary(100);
    pausing.failover = FailoverState::WaitingForSync;
    let pods = [
        pod(0, Some(&pausing), Some("primary")),
        pod(1, Some(&r1), Some("replica")),
        pod(2, Some(&r2), Some("replica")),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), true),
        ReplicationStep::Wait(ReplicationWait::Switchover)
    );
    // Done before the operator could record it: a new leader finishes it, no second one.
    let (new_primary, old_primary) = (primary(120), replica_of(IPS[1], 120));
    let pods = [
        pod(0, Some(&old_primary), Some("primary")),
        pod(1, Some(&new_primary), Some("replica")),
        pod(2, Some(&r2), Some("replica")),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), true),
        ReplicationStep::FinishSwitchover { to: "r-1".into() }
    );
}

#[test]
fn a_switchover_that_was_sent_and_left_the_primary_in_place_aborts() {
    let (p0, r1, r2) = healthy();
    let mut recorded = status("r-0");
    recorded.switchover = Some(SwitchoverRecord {
        from: "r-0".into(),
        to: "r-1".into(),
        started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ),
    });
    let pods = [
        pod(0, Some(&p0), Some("primary")),
        pod(1, Some(&r1), Some("replica")),
        pod(2, Some(&r2), Some("replica")),
    ];
    let view = ReplicationView {
        rolling: true,
        switchover_sent: true,
        ..view_of(&pods, Some(&recorded))
    };
    assert!(matches!(
        decide_replication(&view, &ReplicationLimits::default()),
        ReplicationStep::AbortSwitchover { .. }
    ));
}

#[test]
fn a_lost_primary_is_replaced_by_the_replica_furthest_ahead_after_the_silence_bound() {
    let r1 = replica_of(IPS[0], 90);
    let r2 = replica_of(IPS[0], 95);
    let recorded = status("r-0");
    let pods = [
        pod(0, None, Some("primary")),
        pod(1, Some(&r1), Some("replica")),
        pod(2, Some(&r2), Some("replica")),
    ];
    let mut view = ReplicationView {
        primary_silent_for: Some(Duration::from_secs(1)),
        ..view_of(&pods, Some(&recorded))
    };
    let limits = ReplicationLimits::default();
    assert_eq!(
        decide_replication(&view, &limits),
        ReplicationStep::Wait(ReplicationWait::PrimarySilent)
    );
    view.primary_silent_for = Some(Duration::from_secs(4));
    assert_eq!(
        decide_replication(&view, &limits),
        ReplicationStep::Elect {
            pod: "r-2".into(),
            lost: true
        }
    );
    // A replica last seen far behind is not promoted.
    let lags = BTreeMap::from([("r-2".to_owned(), 10 * 1024 * 1024)]);
    view.last_lag = &lags;
    assert_eq!(
        decide_replication(&view, &limits),
        ReplicationStep::Elect {
            pod: "r-1".into(),
            lost: true
        }
    );
    // Both far behind: none, unless the spec says the furthest ahead will do.
    let lags = BTreeMap::from([
        ("r-1".to_owned(), 9 * 1024 * 1024),
        ("r-2".to_owned(), 10 * 1024 * 1024),
    ]);
    view.last_lag = &lags;
    assert_eq!(
        decide_replication(&view, &limits),
        ReplicationStep::Wait(ReplicationWait::NoCandidate)
    );
    let lagging = ReplicationLimits {
        failover_to_lagging: true,
        ..limits
    };
    assert_eq!(
        decide_replication(&view, &lagging),
        ReplicationStep::Elect {
            pod: "r-2".into(),
            lost: true
        }
    );
}

#[test]
fn a_restarted_primary_loses_its_role_to_a_replica_and_then_follows_it() {
    let b0 = booting();
    let r1 = replica_of(IPS[0], 100);
    let r2 = replica_of(IPS[0], 100);
    let recorded = status("r-0");
    let pods = [
        pod(0, Some(&b0), Some("primary")),
        pod(1, Some(&r1), Some("replica")),
        pod(2, Some(&r2), Some("replica")),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), false),
        ReplicationStep::Elect {
            pod: "r-1".into(),
            lost: true
        }
    );
    // Recorded, not yet promoted: promote it (a new leader does the same).
    let recorded = status("r-1");
    assert_eq!(
        decide_with(&pods, Some(&recorded), false),
        ReplicationStep::Promote { pod: "r-1".into() }
    );
    let p1 = primary(100);
    let pods = [
        pod(0, Some(&b0), Some("primary")),
        pod(1, Some(&p1), Some("replica")),
        pod(2, Some(&r2), Some("replica")),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), false),
        ReplicationStep::Follow {
            pod: "r-0".into(),
            primary_ip: IPS[1].into()
        }
    );
}

#[test]
fn when_every_pod_restarted_the_recorded_primary_keeps_its_role() {
    let (b0, b1, b2) = (booting(), booting(), booting());
    let recorded = status("r-1");
    let pods = [
        pod(0, Some(&b0), None),
        pod(1, Some(&b1), None),
        pod(2, Some(&b2), None),
    ];
    assert_eq!(
        decide_with(&pods, Some(&recorded), false),
        ReplicationStep::Promote { pod: "r-1".into() }
    );
}

#[test]
fn a_scale_down_moves_the_primary_off_the_removed_ordinals_first() {
    let p2 = primary(100);
    let r0 = replica_of(IPS[2], 100);
    let r1 = replica_of(IPS[2], 100);
    let recorded = status("r-2");
    let pods = [
        pod(0, Some(&r0), Some("replica")),
        pod(1, Some(&r1), Some("replica")),
        pod(2, Some(&p2), Some("primary")),
    ];
    let view = ReplicationView {
        replicas: 2,
        ..view_of(&pods, Some(&recorded))
    };
    assert_eq!(
        decide_replication(&view, &ReplicationLimits::default()),
        ReplicationStep::BeginSwitchover {
            from: "r-2".into(),
            to: "r-0".into()
        }
    );
}

#[test]
fn a_primary_being_deleted_keeps_its_role_while_it_answers_and_loses_it_at_once_when_gone() {
    let (p0, r1, r2) = healthy();
    let recorded = status("r-0");
    let mut pods = [
        pod(0, Some(&p0), Some("primary")),
        pod(1, Some(&r1), Some("replica")),
        pod(2, Some(&r2), Some("replica")),
    ];
    pods[0].deleting = true;
    assert_eq!(
        decide_with(&pods, Some(&recorded), false),
        ReplicationStep::Wait(ReplicationWait::PrimaryLeaving)
    );
    pods[0].probe = None;
    assert_eq!(
        decide_with(&pods, Some(&recorded), false),
        ReplicationStep::Elect {
            pod: "r-1".into(),
            lost: true
        }
    );
}

#[test]
fn nothing_is_decided_while_a_pod_is_not_yet_probed() {
    let (p0, r1, r2) = healthy();
    let unprobed = |mut pod: ReplicaPod<'static>| -> ReplicaPod<'static> {
        pod.probe = None;
        pod.probed = false;
        pod
    };
    let recorded = status("r-0");
    let sw = ReplicationStatus {
        switchover: Some(SwitchoverRecord {
            from: "r-0".into(),
            to: "r-1".into(),
            started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ),
        }),
        ..status("r-0")
    };
    // Each row would act on a probe of the pod as it was: promote, fail over, follow, or
    // finish a switchover the new answer may not show.
    let rows: [(&str, [ReplicaPod; 3], Option<&ReplicationStatus>); 4] = [
        (
            "no probe yet, new instance",
            [
                unprobed(pod(0, None, None)),
                pod(1, Some(&r1), None),
                pod(2, Some(&r2), None),
            ],
            None,
        ),
        (
            "primary replaced, not probed anew",
            [
                unprobed(pod(0, None, None)),
                pod(1, Some(&r1), None),
                pod(2, Some(&r2), None),
            ],
            Some(&recorded),
        ),
        (
            "replica written to, not probed since",
            [
                pod(0, Some(&p0), None),
                unprobed(pod(1, None, None)),
                pod(2, Some(&r2), None),
            ],
            Some(&recorded),
        ),
        (
            "switchover sent, target not probed since",
            [
                pod(0, Some(&p0), None),
                unprobed(pod(1, None, None)),
                pod(2, Some(&r2), None),
            ],
            Some(&sw),
        ),
    ];
    for (row, pods, status) in rows {
        assert_eq!(
            decide_with(&pods, status, false),
            ReplicationStep::Wait(ReplicationWait::Probes),
            "{row}"
        );
    }
}
