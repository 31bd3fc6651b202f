//! Rows for how clients reach the primary: which Services they write through, and a pod
//! replaced only once none of them lists it.

use std::collections::BTreeMap;

use super::*;
use crate::crd::ReplicationStatus;
use crate::replication::{FailoverState, PodReplication, Role};
use crate::resources::fixtures::instance;
use crate::resources::{headless_service, service};

use crate::decide::replication::ReplicaPod;

const IPS: [&str; 3] = ["10.0.0.10", "10.0.0.11", "10.0.0.12"];
const NAMES: [&str; 3] = ["r-0", "r-1", "r-2"];

fn probe(role: Role, offset: i64) -> PodReplication {
    PodReplication {
        role,
        primary_host: (role == Role::Replica).then(|| IPS[0].into()),
        primary_port: (role == Role::Replica).then_some(6379),
        link_up: role == Role::Replica,
        syncing: false,
        offset,
        replid: "h1".into(),
        failover: FailoverState::None,
        replicas: Vec::new(),
    }
}

fn pod(ordinal: usize, probe: &PodReplication, label: Role) -> ReplicaPod<'_> {
    ReplicaPod {
        name: NAMES[ordinal],
        ordinal: i32::try_from(ordinal).unwrap(),
        ip: Some(IPS[ordinal]),
        deleting: false,
        ready: true,
        up_to_date: true,
        role_label: Some(label.as_str()),
        probe: Some(probe),
    }
}

/// No lag remembered.
static NO_LAGS: BTreeMap<String, i64> = BTreeMap::new();

/// What a rolling restart of three pods decides with pod `old` not yet replaced, `listing`
/// as read; and whether the step reads the listing at all (asked without one).
fn rolling(old: usize, ip: bool, listing: Option<&Listing>) -> (ReplicationStep, bool) {
    let (p, r) = (probe(Role::Primary, 100), probe(Role::Replica, 100));
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
        pods: &pods,
        replicas: 3,
        status: Some(&status),
        rolling: true,
        primary_silent_for: None,
        switchover_sent: false,
        last_lag: &NO_LAGS,
        paused: false,
        switchover_halted: false,
        routing: None,
        listing,
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
    let p = probe(Role::Primary, 100);
    let r = probe(Role::Replica, 100);
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
        pods: &at_rest,
        replicas: 3,
        status: Some(&status),
        rolling: false,
        primary_silent_for: None,
        switchover_sent: false,
        last_lag: &NO_LAGS,
        paused: false,
        switchover_halted: false,
        routing: None,
        listing: None,
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
