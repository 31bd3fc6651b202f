//! The pods' `INFO replication` as the prober took them outside the step: which answer a step
//! may decide on, and whether a new round changes what a decision would see.

use std::time::Instant;

use crate::replication::{FailoverState, PodReplication, Role};

/// One pod's `INFO replication`, with the pod incarnation it was taken from and when.
#[derive(Debug, Clone, PartialEq)]
pub struct PodProbe {
    /// Pod name.
    pub pod: String,
    /// The uid of the pod probed: a pod the StatefulSet made anew under the same name is
    /// another incarnation.
    pub uid: String,
    /// The IP dialled; `None` when the pod had none (then it counts as silent).
    pub ip: Option<String>,
    /// When the probe was sent, by the operator's clock.
    pub at: Instant,
    /// What its Redis said; `None` when it did not answer in time.
    pub answer: Option<PodReplication>,
}

/// A pod as the cache shows it now.
#[derive(Debug, Clone, Copy)]
pub struct Incarnation<'a> {
    /// Its uid.
    pub uid: &'a str,
    /// Its IP, if assigned.
    pub ip: Option<&'a str>,
}

/// What a step may decide on for one pod: `Some(answer)` (`Some(None)`: probed and silent),
/// or `None`, not yet probed: no probe, a probe of another incarnation (the pod was replaced
/// or its IP changed since), or one sent before the operator's last role write
/// (`role_written`), which the answer may not show yet.
pub fn usable<'p>(
    probe: Option<&'p PodProbe>,
    pod: Incarnation,
    role_written: Option<Instant>,
) -> Option<Option<&'p PodReplication>> {
    let probe = probe?;
    let same_pod = probe.uid == pod.uid && probe.ip.as_deref() == pod.ip;
    let after_write = role_written.is_none_or(|written| probe.at > written);
    (same_pod && after_write).then_some(probe.answer.as_ref())
}

/// What a decision reads of one probe: its incarnation and the answer's role, links and
/// sync, and for a replica how far behind the round's primary it is, as `bound` and whole
/// MiB tell it. Offsets alone move with every write to the primary and are left out.
#[derive(Debug, PartialEq, Eq)]
struct Seen<'a> {
    pod: &'a str,
    uid: &'a str,
    ip: Option<&'a str>,
    answer: Option<Answer<'a>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Answer<'a> {
    role: Role,
    primary_host: Option<&'a str>,
    primary_port: Option<u16>,
    link_up: bool,
    syncing: bool,
    replid: &'a str,
    failover: FailoverState,
    /// `(lag > bound, lag in whole MiB)`, for a replica of the round's primary.
    behind: Option<(bool, i64)>,
}

/// Whether a prober's round `new` starts a step: it changes what a decision would see
/// compared with `old`, a step waits for a round (`awaited`), or the recorded primary is
/// silent (`primary_silent`: its silence grows with each round, toward a failover).
pub fn starts_step(
    old: &[PodProbe],
    new: &[PodProbe],
    bound: i64,
    awaited: bool,
    primary_silent: bool,
) -> bool {
    awaited || primary_silent || changes(old, new, bound)
}

/// Whether the round `new` changes what a decision would see compared with `old`.
pub fn changes(old: &[PodProbe], new: &[PodProbe], bound: i64) -> bool {
    seen(old, bound) != seen(new, bound)
}

fn seen(round: &[PodProbe], bound: i64) -> Vec<Seen<'_>> {
    const MIB: i64 = 1024 * 1024;
    let primary = round
        .iter()
        .filter_map(|p| p.answer.as_ref())
        .find(|a| a.role == Role::Primary);
    let mut seen: Vec<Seen> = round
        .iter()
        .map(|p| Seen {
            pod: &p.pod,
            uid: &p.uid,
            ip: p.ip.as_deref(),
            answer: p.answer.as_ref().map(|a| Answer {
                role: a.role,
                primary_host: a.primary_host.as_deref(),
                primary_port: a.primary_port,
                link_up: a.link_up,
                syncing: a.syncing,
                replid: &a.replid,
                failover: a.failover,
                behind: primary
                    .filter(|p| a.role == Role::Replica && p.replid == a.replid)
                    .map(|p| (p.offset - a.offset).max(0))
                    .map(|lag| (lag > bound, lag / MIB)),
            }),
        })
        .collect();
    seen.sort_by(|a, b| a.pod.cmp(b.pod));
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::replication::tests::answering_as;
    use std::time::Duration;

    fn probe(pod: &str, uid: &str, at: Instant, answer: Option<PodReplication>) -> PodProbe {
        PodProbe {
            pod: pod.into(),
            uid: uid.into(),
            ip: Some("10.0.0.10".into()),
            at,
            answer,
        }
    }

    #[test]
    fn a_step_decides_only_on_a_probe_of_the_pod_it_sees_taken_after_the_last_role_write() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(10);
        let taken = probe("r-0", "u1", t0, Some(answering_as(Role::Primary, 5)));
        let silent = probe("r-0", "u1", t0, None);
        let pod = Incarnation {
            uid: "u1",
            ip: Some("10.0.0.10"),
        };
        let rows = [
            ("no probe yet", None, pod, None, None),
            ("same pod, no write", Some(&taken), pod, None, Some(true)),
            ("same pod, silent", Some(&silent), pod, None, Some(false)),
            (
                "written before the probe",
                Some(&taken),
                pod,
                Some(t0 - Duration::from_millis(1)),
                Some(true),
            ),
            (
                "written after the probe",
                Some(&taken),
                pod,
                Some(later),
                None,
            ),
            (
                "pod replaced",
                Some(&taken),
                Incarnation { uid: "u2", ..pod },
                None,
                None,
            ),
            (
                "IP changed",
                Some(&taken),
                Incarnation {
                    ip: Some("10.0.0.99"),
                    ..pod
                },
                None,
                None,
            ),
        ];
        for (row, probe, pod, written, want) in rows {
            let got = usable(probe, pod, written).map(|a| a.is_some());
            assert_eq!(got, want, "{row}");
        }
    }

    #[test]
    fn a_round_changes_what_a_decision_sees_only_when_roles_links_or_lag_buckets_move() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        const MIB: i64 = 1024 * 1024;
        let round = |at, replica_offset: i64, replica_uid: &str, replica: Option<Role>| {
            vec![
                probe("r-0", "u0", at, Some(answering_as(Role::Primary, 10 * MIB))),
                probe(
                    "r-1",
                    replica_uid,
                    at,
                    replica.map(|r| answering_as(r, replica_offset)),
                ),
            ]
        };
        let base = round(t0, 10 * MIB, "u1", Some(Role::Replica));
        let rows = [
            (
                "only time and small offsets moved",
                round(t1, 10 * MIB - 10, "u1", Some(Role::Replica)),
                false,
            ),
            (
                "replica fell a MiB behind",
                round(t1, 9 * MIB - 1, "u1", Some(Role::Replica)),
                true,
            ),
            ("replica stopped answering", round(t1, 0, "u1", None), true),
            (
                "replica promoted",
                round(t1, 10 * MIB, "u1", Some(Role::Primary)),
                true,
            ),
            (
                "pod replaced",
                round(t1, 10 * MIB, "u9", Some(Role::Replica)),
                true,
            ),
        ];
        for (row, new, want) in rows {
            assert_eq!(changes(&base, &new, MIB), want, "{row}");
        }
        // A round that changes nothing still starts a step that waits for one, or while the
        // recorded primary is silent.
        let same = round(t1, 10 * MIB - 10, "u1", Some(Role::Replica));
        let moved = round(t1, 0, "u1", None);
        let starts = [
            (&same, false, false, false),
            (&same, true, false, true),
            (&same, false, true, true),
            (&moved, false, false, true),
        ];
        for (new, awaited, silent, want) in starts {
            let got = starts_step(&base, new, MIB, awaited, silent);
            assert_eq!(got, want, "awaited {awaited}, silent {silent}");
        }
    }
}
