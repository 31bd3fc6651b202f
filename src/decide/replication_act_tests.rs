//! Rows of replication steps and what carrying each out records, tells, counts and waits.

use super::*;
use crate::replication::{FailoverState, PodReplication};

fn status() -> ReplicationStatus {
    ReplicationStatus {
        primary: Some("r-0".into()),
        role_changes: 2,
        failovers: 1,
        ..ReplicationStatus::default()
    }
}

fn switching() -> ReplicationStatus {
    ReplicationStatus {
        switchover: Some(SwitchoverRecord {
            from: "r-0".into(),
            to: "r-1".into(),
            started_at: Time(Timestamp::UNIX_EPOCH),
        }),
        ..status()
    }
}

fn summary() -> Vec<ReplicaPodStatus> {
    vec![ReplicaPodStatus {
        name: "r-0".into(),
        role: "primary".into(),
        link: None,
        lag_bytes: None,
    }]
}

fn facts(status: &ReplicationStatus) -> ReplicationFacts<'_> {
    ReplicationFacts {
        status,
        summary: summary(),
        converting: false,
        rollout_hash: Some("h2"),
        rolling: false,
        now: Timestamp::from_second(100).unwrap(),
    }
}

/// The act in words: counted change, what status changes, Event, wake.
fn label(act: &ReplicationAct, before: &ReplicationStatus) -> String {
    let mut words = Vec::new();
    words.extend(act.role_change.map(|c| format!("count {c}")));
    if let Some(next) = &act.status {
        let mut changed = Vec::new();
        if next.primary != before.primary {
            changed.push(format!(
                "primary={}",
                next.primary.as_deref().unwrap_or("-")
            ));
        }
        if next.switchover != before.switchover {
            let to = next.switchover.as_ref().map_or("-", |sw| sw.to.as_str());
            changed.push(format!("switchover={to}"));
        }
        if next.switchover_failed != before.switchover_failed {
            let hash = next.switchover_failed.as_ref();
            changed.push(format!("failed={}", hash.map_or("-", |f| &f.config_hash)));
        }
        assert_eq!(
            next.pods,
            summary(),
            "every status write carries the summary"
        );
        words.push(format!("write [{}]", changed.join(" ")));
    }
    if let Some(notice) = &act.notice {
        let kind = if notice.warning { "Warning" } else { "Normal" };
        words.push(format!("{kind} {}", notice.reason));
    }
    if act.forget_sent {
        words.push("forget sent".into());
    }
    words.push(match act.wake {
        None => "now".into(),
        Some(d) => format!("{}ms", d.as_millis()),
    });
    words.join(", ")
}

#[test]
fn each_step_records_tells_and_waits_as_listed() {
    let elect = |lost| ReplicationStep::Elect {
        pod: "r-1".into(),
        lost,
    };
    let plain = status();
    let sw = switching();
    let converting = ReplicationFacts {
        converting: true,
        ..facts(&plain)
    };
    let rolling = ReplicationFacts {
        rolling: true,
        ..facts(&plain)
    };
    let summarized = ReplicationStatus {
        pods: summary(),
        ..status()
    };
    let unchanged = facts(&summarized);
    let rolling_unchanged = ReplicationFacts {
        rolling: true,
        ..facts(&summarized)
    };
    // (step, facts, what is done)
    let table = [
        (
            elect(false),
            facts(&plain),
            "write [primary=r-1], Normal PrimaryElected, now",
        ),
        (
            elect(false),
            converting.clone(),
            "write [primary=r-1], Warning ReplicationConversion, now",
        ),
        // A failover is a failover even while converting.
        (
            elect(true),
            converting,
            "count Unplanned, write [primary=r-1], Warning Failover, now",
        ),
        (
            ReplicationStep::Promote { pod: "r-0".into() },
            facts(&plain),
            "now",
        ),
        (
            ReplicationStep::Follow {
                pod: "r-1".into(),
                primary_ip: "10.0.0.10".into(),
            },
            facts(&plain),
            "now",
        ),
        (
            ReplicationStep::Label {
                pod: "r-1".into(),
                role: Some(Role::Replica),
            },
            facts(&plain),
            "500ms",
        ),
        (
            ReplicationStep::BeginSwitchover {
                from: "r-0".into(),
                to: "r-1".into(),
            },
            facts(&plain),
            "write [switchover=r-1], now",
        ),
        (
            ReplicationStep::Switchover {
                from: "r-0".into(),
                to_ip: "10.0.0.11".into(),
            },
            facts(&sw),
            "0ms",
        ),
        (
            ReplicationStep::FinishSwitchover { to: "r-1".into() },
            facts(&sw),
            "count Planned, write [primary=r-1 switchover=-], Normal Switchover, forget sent, now",
        ),
        (
            ReplicationStep::AbortSwitchover {
                message: "r-1 did not take over".into(),
            },
            facts(&sw),
            "write [switchover=- failed=h2], Warning SwitchoverFailed, forget sent, now",
        ),
        (
            ReplicationStep::ReplacePod { pod: "r-1".into() },
            facts(&plain),
            "500ms",
        ),
        (
            ReplicationStep::Wait(ReplicationWait::Routing),
            facts(&sw),
            "100ms",
        ),
        // The pod to replace is still routed to: looked at again soon, nothing written.
        (
            ReplicationStep::Wait(ReplicationWait::Delisting),
            facts(&plain),
            "250ms",
        ),
        // The summary changed: written, whatever the wait.
        (
            ReplicationStep::Wait(ReplicationWait::Sync),
            facts(&plain),
            "write [], 500ms",
        ),
        (ReplicationStep::Idle, facts(&plain), "write [], 2000ms"),
        (ReplicationStep::Idle, unchanged, "2000ms"),
        // A restart in flight probes quickly even when nothing else is to do.
        (ReplicationStep::Idle, rolling, "write [], 500ms"),
        (ReplicationStep::Idle, rolling_unchanged, "500ms"),
        (
            ReplicationStep::Wait(ReplicationWait::PrimarySilent),
            facts(&summarized),
            "500ms",
        ),
        // A pod not yet probed: the summary would call it unreachable; probed at once instead.
        (
            ReplicationStep::Wait(ReplicationWait::Probes),
            facts(&plain),
            "0ms",
        ),
    ];
    for (step, facts, expected) in table {
        let act = replication_act(&step, &facts);
        assert_eq!(label(&act, facts.status), expected, "{step:?}");
    }
}

#[test]
fn only_waits_on_time_or_endpoints_decide_again_without_a_new_probe_and_role_writes_ask_for_one() {
    let plain = status();
    let sw = switching();
    // (step, facts, next step in (ms, "now", or "probe"), role written)
    let rows = [
        (
            ReplicationStep::Promote { pod: "r-0".into() },
            facts(&plain),
            "now",
            true,
        ),
        (
            ReplicationStep::Follow {
                pod: "r-1".into(),
                primary_ip: "10.0.0.10".into(),
            },
            facts(&plain),
            "now",
            true,
        ),
        (
            ReplicationStep::Switchover {
                from: "r-0".into(),
                to_ip: "10.0.0.11".into(),
            },
            facts(&sw),
            "probe",
            true,
        ),
        (
            ReplicationStep::Wait(ReplicationWait::Routing),
            facts(&sw),
            "100ms",
            false,
        ),
        (
            ReplicationStep::Wait(ReplicationWait::Delisting),
            facts(&plain),
            "250ms",
            false,
        ),
        (
            ReplicationStep::Wait(ReplicationWait::Sync),
            facts(&plain),
            "probe",
            false,
        ),
        (
            ReplicationStep::Wait(ReplicationWait::PrimarySilent),
            facts(&plain),
            "probe",
            false,
        ),
        (
            ReplicationStep::Wait(ReplicationWait::Probes),
            facts(&plain),
            "probe",
            false,
        ),
        (ReplicationStep::Idle, facts(&plain), "probe", false),
    ];
    for (step, facts, next, role_written) in rows {
        let act = replication_act(&step, &facts);
        let got = match act.next_step() {
            None => "now".to_owned(),
            Some(Duration::MAX) => "probe".to_owned(),
            Some(d) => format!("{}ms", d.as_millis()),
        };
        assert_eq!(
            (got.as_str(), act.role_written),
            (next, role_written),
            "{step:?}"
        );
    }
}

#[test]
fn events_name_the_pods_and_a_switchover_its_ends() {
    let sw = switching();
    let finish = replication_act(
        &ReplicationStep::FinishSwitchover { to: "r-1".into() },
        &facts(&sw),
    );
    assert_eq!(finish.switchover, Some(("r-0".into(), "r-1".into())));
    let note = finish.notice.map(|n| n.note);
    assert_eq!(
        note.as_deref(),
        Some("switched the primary role from r-0 to r-1")
    );
    let plain = status();
    let lost = replication_act(
        &ReplicationStep::Elect {
            pod: "r-2".into(),
            lost: true,
        },
        &facts(&plain),
    );
    assert_eq!(lost.election, Some(Election::Failover));
    let note = lost.notice.map(|n| n.note);
    assert_eq!(
        note.as_deref(),
        Some("primary r-0 lost; promoting r-2, the replica furthest ahead")
    );
    let failover = lost.status.expect("written");
    assert_eq!((failover.role_changes, failover.failovers), (3, 2));
    let begun = replication_act(
        &ReplicationStep::BeginSwitchover {
            from: "r-0".into(),
            to: "r-2".into(),
        },
        &facts(&plain),
    );
    let record = begun.status.and_then(|s| s.switchover).expect("recorded");
    assert_eq!(record.started_at.0.as_second(), 100);
}

#[test]
fn status_summarizes_each_pod_and_only_a_lag_past_the_bound() {
    let probe = |role, link_up, syncing, primary_host: Option<&str>| PodReplication {
        role,
        primary_host: primary_host.map(str::to_owned),
        primary_port: primary_host.map(|_| 6379),
        link_up,
        syncing,
        offset: 0,
        replid: "h".into(),
        failover: FailoverState::None,
        replicas: Vec::new(),
    };
    let primary = probe(Role::Primary, false, false, None);
    let up = probe(Role::Replica, true, false, Some("10.0.0.10"));
    let syncing = probe(Role::Replica, true, true, Some("10.0.0.10"));
    let down = probe(Role::Replica, false, false, Some("10.0.0.10"));
    let pod = |name, probe, deleting| ReplicaPod {
        name,
        ordinal: 0,
        ip: None,
        deleting,
        ready: true,
        up_to_date: true,
        role_label: None,
        probe,
        probed: true,
    };
    let pods = [
        pod("r-0", Some(&primary), false),
        pod("r-1", Some(&up), false),
        pod("r-2", Some(&syncing), false),
        pod("r-3", Some(&down), false),
        pod("r-4", None, false),
        pod("r-5", Some(&up), true),
    ];
    const MIB: i64 = 1024 * 1024;
    let lags = BTreeMap::from([
        ("r-1".to_owned(), 5 * MIB / 2),
        ("r-2".to_owned(), MIB),
        ("r-3".to_owned(), 0),
    ]);
    let rows: Vec<String> = summarize(&pods, &lags, MIB)
        .into_iter()
        .map(|p| {
            let lag = p.lag_bytes.map(|l| (l / MIB).to_string());
            format!(
                "{} {} {} {}",
                p.name,
                p.role,
                p.link.as_deref().unwrap_or("-"),
                lag.as_deref().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            "r-0 primary - -",
            "r-1 replica up 2",
            "r-2 replica syncing -",
            "r-3 replica down -",
            "r-4 unreachable - -",
        ]
    );
}

#[test]
fn a_switchover_halts_only_the_restart_it_failed_in() {
    let failed = ReplicationStatus {
        switchover_failed: Some(SwitchoverFailure {
            config_hash: "h2".into(),
            message: "timed out".into(),
        }),
        ..status()
    };
    // (status, restart in flight, halted)
    let table = [
        (&failed, Some("h2"), true),
        (&failed, Some("h3"), false),
        (&failed, None, false),
        (&status(), Some("h2"), false),
    ];
    for (status, hash, halted) in table {
        assert_eq!(failed_here(status, hash), halted, "{hash:?}");
    }
}

/// The prober's cadence after each kind of act: a round at once when the next decision waits
/// for one (a role written in Redis, pods not probed yet), otherwise the act's own period.
#[test]
fn the_prober_keeps_to_the_acts_period_and_probes_at_once_after_a_role_write() {
    let (plain, sw) = (status(), switching());
    let ms = Duration::from_millis;
    let rows = [
        (
            ReplicationStep::Promote { pod: "r-0".into() },
            facts(&plain),
            ms(500),
            true,
        ),
        (
            ReplicationStep::Switchover {
                from: "r-0".into(),
                to_ip: "10.0.0.11".into(),
            },
            facts(&sw),
            ms(500),
            true,
        ),
        (
            ReplicationStep::Wait(ReplicationWait::Routing),
            facts(&sw),
            ms(100),
            false,
        ),
        (
            ReplicationStep::Wait(ReplicationWait::Delisting),
            facts(&plain),
            ms(250),
            false,
        ),
        (
            ReplicationStep::Wait(ReplicationWait::Probes),
            facts(&plain),
            ms(500),
            true,
        ),
        (ReplicationStep::Idle, facts(&plain), ms(2000), false),
    ];
    for (step, facts, every, at_once) in rows {
        let probing = replication_act(&step, &facts).probing();
        assert_eq!(probing, Probing { every, at_once }, "{step:?}");
    }
}
