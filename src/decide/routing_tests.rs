//! Rows for how clients reach the primary: which Services they write through, a pod replaced
//! only once none of them lists it, a switchover target's routing, the labels a switchover
//! moves and the role Services.

use std::time::{Duration, Instant};

use super::*;
use crate::crd::ReplicationStatus;
use crate::replication::{PodReplication, Role};
use crate::resources::fixtures::instance;
use crate::resources::{headless_service, service};

use crate::decide::replication::ReplicaPod;
use crate::decide::replication::tests::{IPS, answering_as, view_of};

fn pod(ordinal: usize, probe: &PodReplication, label: Role) -> ReplicaPod<'_> {
    crate::decide::replication::tests::pod(ordinal, Some(probe), Some(label.as_str()))
}

/// What a rolling restart of three pods decides with pod `old` not yet replaced, `listing`
/// as read; and whether the step reads the listing at all (asked without one).
fn rolling(old: usize, ip: bool, listing: Option<&Listing>) -> (ReplicationStep, bool) {
    let (p, r) = (
        answering_as(Role::Primary, 100),
        answering_as(Role::Replica, 100),
    );
    let mut pods = [
        pod(0, &p, Role::Primary),
        pod(1, &r, Role::Replica),
        pod(2, &r, Role::Replica),
    ];
    pods[old].up_to_date = false;
    if !ip {
        pods[old].ip = None;
    }
    let status = ReplicationStatus {
        primary: Some("r-0".into()),
        ..ReplicationStatus::default()
    };
    let view = ReplicationView {
        rolling: true,
        listing,
        ..view_of(&pods, Some(&status))
    };
    let limits = ReplicationLimits::default();
    let reads = reads_listing(
        &ReplicationView {
            listing: None,
            ..view
        },
        &limits,
    );
    (decide_replication(&view, &limits), reads)
}

fn listing(services: &[&[&str]]) -> Listing {
    Listing {
        services: services
            .iter()
            .map(|s| s.iter().map(|ip| (*ip).to_owned()).collect())
            .collect(),
    }
}

#[test]
fn a_pod_is_replaced_only_once_no_service_clients_write_through_lists_it() {
    let replace = ReplicationStep::ReplacePod { pod: "r-2".into() };
    let delisting = ReplicationStep::Wait(ReplicationWait::Delisting);
    let none = listing(&[]);
    let others = listing(&[&[IPS[0]], &[IPS[0], IPS[1]]]);
    let by_name = listing(&[&[IPS[0], IPS[2]]]);
    let by_legacy = listing(&[&[IPS[0]], &[IPS[2]]]);
    // (row, pod has an IP, listing as read, step)
    let table = [
        ("not read: never replaced blind", true, None, &delisting),
        (
            "no Service clients write through",
            true,
            Some(&none),
            &replace,
        ),
        ("listed by neither Service", true, Some(&others), &replace),
        ("still listed by <name>", true, Some(&by_name), &delisting),
        (
            "still listed by <name>-primary",
            true,
            Some(&by_legacy),
            &delisting,
        ),
        ("no IP: nothing can route to it", false, None, &replace),
    ];
    for (row, ip, listed, step) in table {
        assert_eq!(&rolling(2, ip, listed).0, step, "{row}");
    }
}

#[test]
fn the_listing_is_read_only_for_a_pod_to_replace() {
    let p = answering_as(Role::Primary, 100);
    let r = answering_as(Role::Replica, 100);
    let at_rest = [
        pod(0, &p, Role::Primary),
        pod(1, &r, Role::Replica),
        pod(2, &r, Role::Replica),
    ];
    let status = ReplicationStatus {
        primary: Some("r-0".into()),
        ..ReplicationStatus::default()
    };
    let view = ReplicationView {
        listing: None,
        ..view_of(&at_rest, Some(&status))
    };
    let limits = ReplicationLimits::default();
    // (row, reads)
    let table = [
        ("at rest", reads_listing(&view, &limits), false),
        ("a replica to replace", rolling(2, true, None).1, true),
        (
            "a replica to replace, without an IP",
            rolling(2, false, None).1,
            false,
        ),
        // The old primary is replaced only after a switchover, which the decision begins
        // first: nothing to read yet.
        (
            "the primary not replaced yet",
            rolling(0, true, None).1,
            false,
        ),
    ];
    for (row, reads, expected) in table {
        assert_eq!(reads, expected, "{row}");
    }
}

#[test]
fn clients_write_through_the_cluster_ip_service_and_the_old_primary_one() {
    let ri = instance(&[]);
    let cluster_ip = CachedService::from(&service(&ri));
    let headless = CachedService::from(&headless_service(&ri));
    let legacy = CachedService::from(&service(&ri));
    let names = |svc, old| write_services("r", svc, "r-primary", old);
    // (row, `<name>`, `<name>-primary`, the Services)
    let table: [(&str, _, _, &[&str]); 5] = [
        ("ClusterIP <name>", Some(&cluster_ip), None, &["r"]),
        (
            "headless <name> of earlier versions",
            Some(&headless),
            None,
            &[],
        ),
        (
            "both",
            Some(&cluster_ip),
            Some(&legacy),
            &["r", "r-primary"],
        ),
        (
            "headless <name> and the old primary Service",
            Some(&headless),
            Some(&legacy),
            &["r-primary"],
        ),
        ("none", None, None, &[]),
    ];
    for (row, svc, old, expected) in table {
        assert_eq!(names(svc, old), expected, "{row}");
    }
}

/// Three pods, r-1 recorded as the switchover target and labelled `target_label`: the target
/// found for routing, and whether the step reads the listing.
fn switching(target_label: Role, with_ip: bool) -> (Option<(String, String)>, bool) {
    let (p, r) = (
        answering_as(Role::Primary, 100),
        answering_as(Role::Replica, 100),
    );
    let mut pods = [
        pod(0, &p, Role::Primary),
        pod(1, &r, target_label),
        pod(2, &r, Role::Replica),
    ];
    if !with_ip {
        pods[1].ip = None;
    }
    let status = ReplicationStatus {
        primary: Some("r-0".into()),
        switchover: Some(crate::crd::SwitchoverRecord {
            from: "r-0".into(),
            to: "r-1".into(),
            started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        }),
        ..ReplicationStatus::default()
    };
    let target = routing_target(Some(&status), &pods);
    let view = ReplicationView {
        rolling: true,
        listing: None,
        ..view_of(&pods, Some(&status))
    };
    let reads = reads_listing(&view, &ReplicationLimits::default());
    let target = target.map(|(n, ip)| (n.to_owned(), ip.to_owned()));
    (target, reads)
}

#[test]
fn a_switchover_target_is_routed_to_once_labelled_primary() {
    // (row, the target's label, it has an IP, the target found, the listing read)
    let table = [
        (
            "labelled primary",
            Role::Primary,
            true,
            Some(("r-1", IPS[1])),
            true,
        ),
        (
            "not labelled yet: the label comes first",
            Role::Replica,
            true,
            None,
            false,
        ),
        ("labelled, no IP yet", Role::Primary, false, None, false),
    ];
    for (row, label, ip, found, reads) in table {
        let found = found.map(|(n, ip)| (n.to_owned(), ip.to_owned()));
        assert_eq!(switching(label, ip), (found, reads), "{row}");
    }
}

#[test]
fn the_routing_memory_counts_from_the_label_and_from_the_listing() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let memory = |pod: &str, listed: Option<u64>| RoutingMemory {
        pod: pod.into(),
        labelled: t0,
        listed: listed.map(at),
    };
    let target = Some(("r-1", IPS[1]));
    let listed = listing(&[&[IPS[0], IPS[1]]]);
    let half = listing(&[&[IPS[1]], &[IPS[0]]]);
    let none = listing(&[]);
    let ms = Duration::from_millis;
    // (row, memory, target, listing, now, memory after, labelled for, listed for, newly listed)
    let table = [
        (
            "no target: forgotten",
            Some(memory("r-1", Some(0))),
            None,
            Some(&listed),
            500,
            None,
            None,
            false,
        ),
        (
            "first seen labelled, not listed",
            None,
            target,
            Some(&half),
            0,
            Some(memory("r-1", None)),
            Some((ms(0), None)),
            false,
        ),
        (
            "labelled a while, listed now",
            Some(memory("r-1", None)),
            target,
            Some(&listed),
            300,
            Some(memory("r-1", Some(300))),
            Some((ms(300), Some(ms(0)))),
            true,
        ),
        (
            "listed since",
            Some(memory("r-1", Some(300))),
            target,
            Some(&listed),
            1500,
            Some(memory("r-1", Some(300))),
            Some((ms(1500), Some(ms(1200)))),
            false,
        ),
        (
            "dropped by one Service: counts again",
            Some(memory("r-1", Some(300))),
            target,
            Some(&half),
            1500,
            Some(memory("r-1", None)),
            Some((ms(1500), None)),
            false,
        ),
        (
            "no Service to wait for",
            None,
            target,
            Some(&none),
            0,
            Some(memory("r-1", Some(0))),
            Some((ms(0), Some(Duration::MAX))),
            true,
        ),
        (
            "another target: counted anew",
            Some(memory("r-2", Some(0))),
            target,
            Some(&half),
            700,
            Some(RoutingMemory {
                pod: "r-1".into(),
                labelled: at(700),
                listed: None,
            }),
            Some((ms(0), None)),
            false,
        ),
        (
            "listing not read: not listed",
            Some(memory("r-1", Some(0))),
            target,
            None,
            700,
            Some(memory("r-1", None)),
            Some((ms(700), None)),
            false,
        ),
    ];
    for (row, before, target, listing, now, after, routing, newly) in table {
        let routed = route(before.as_ref(), target, listing, at(now));
        let expected = Routed {
            memory: after,
            routing: routing.map(|(labelled_for, listed_for)| Routing {
                labelled_for,
                listed_for,
            }),
            newly_listed: newly,
        };
        assert_eq!(routed, expected, "{row}");
    }
}

#[test]
fn a_finished_switchover_labels_the_new_primary_before_the_old_one() {
    let (p, r) = (
        answering_as(Role::Primary, 100),
        answering_as(Role::Replica, 100),
    );
    let moves = |from_probe: &PodReplication, from_label: Role, to_label: Role, deleting: bool| {
        let mut pods = [pod(0, from_probe, from_label), pod(1, &p, to_label)];
        pods[0].deleting = deleting;
        primary_label_moves(&pods, "r-0", "r-1")
    };
    let primary = ("r-1".to_owned(), Role::Primary);
    let replica = ("r-0".to_owned(), Role::Replica);
    // (row, old primary's probe, its label, new primary's label, old one deleting, moves)
    let table = [
        (
            "both move, new first",
            &r,
            Role::Primary,
            Role::Replica,
            false,
            vec![primary.clone(), replica.clone()],
        ),
        (
            "new one labelled while routed to",
            &r,
            Role::Primary,
            Role::Primary,
            false,
            vec![replica],
        ),
        (
            "old one not a replica yet: keeps its label",
            &p,
            Role::Primary,
            Role::Primary,
            false,
            vec![],
        ),
        (
            "old one being deleted",
            &r,
            Role::Primary,
            Role::Replica,
            true,
            vec![primary],
        ),
        (
            "done already",
            &r,
            Role::Replica,
            Role::Primary,
            false,
            vec![],
        ),
    ];
    for (row, from_probe, from_label, to_label, deleting, expected) in table {
        assert_eq!(
            moves(from_probe, from_label, to_label, deleting),
            expected,
            "{row}"
        );
    }
}
