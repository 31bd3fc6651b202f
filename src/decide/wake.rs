//! When an instance waiting on something looks again: after edits settle, at a restart's
//! progress deadline, or when an unready pod reaches its readiness deadline.
//!
//! Pure: the instance actor measures the durations on its own monotonic clock and asks.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::{overdue, unready_on};
use crate::crd::RolloutRecord;
use crate::resources::CachedPod;

/// How long after a restart finished a following one still waits for edits to settle (on top
/// of the settle time itself).
const SETTLE_WINDOW: Duration = Duration::from_secs(60);

/// How much longer a restart that follows another must wait for edits to settle: `Some` while
/// a restart finished within the last minute (plus `settle`) and the spec changed less than
/// `settle` ago. The durations are since the last spec change and since the restart finished.
pub fn settle_left(
    settle: Duration,
    since_spec_change: Option<Duration>,
    since_restart: Option<Duration>,
) -> Option<Duration> {
    let changed = since_spec_change?;
    let recent = since_restart? < SETTLE_WINDOW + settle;
    (recent && changed < settle).then(|| settle - changed)
}

/// How long after a restart finished `since_restart` ago an edit would still wait for edits
/// to settle (see [`settle_left`]); `None` once none would. An actor that forgets when the
/// restart finished (a fresh one) would not wait: the two decide alike only after this.
pub fn settle_window_left(settle: Duration, since_restart: Option<Duration>) -> Option<Duration> {
    if settle.is_zero() {
        return None;
    }
    (SETTLE_WINDOW + settle)
        .checked_sub(since_restart?)
        .filter(|left| !left.is_zero())
}

/// When to look at the restart `record` again if no event comes first: just past its progress
/// deadline. Not while a pause holds it, nor once it is overdue (that is told already).
pub fn progress_wake(
    record: Option<&RolloutRecord>,
    held: bool,
    now: Timestamp,
    progress: Duration,
) -> Duration {
    record
        .filter(|r| !held && !overdue(r, now, progress))
        .map_or(Duration::MAX, |r| {
            let elapsed = now.duration_since(r.started_at.0).unsigned_abs();
            progress.saturating_sub(elapsed) + Duration::from_secs(1)
        })
}

/// When the first unready pod of the restart `record` reaches its readiness `deadline`, by how
/// long each has been seen unready (`unready_for`). Past it, the failure is already found: no
/// timer needed.
pub fn pod_deadline_wake(
    pods: &[Arc<CachedPod>],
    record: &RolloutRecord,
    deadline: Duration,
    unready_for: impl Fn(&CachedPod) -> Option<Duration>,
) -> Duration {
    unready_on(pods, &record.config_hash, record.started_at.0)
        .filter_map(|p| unready_for(p))
        .filter(|age| *age <= deadline)
        .map(|age| deadline - age + Duration::from_secs(1))
        .min()
        .unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::pods_fixtures::{record, t};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_restart_after_another_waits_only_while_edits_keep_coming() {
        // (since the spec changed, since a restart finished, left to wait)
        let table = [
            (Some(s(1)), Some(s(10)), Some(s(4))),
            (Some(s(4)), Some(s(64)), Some(s(1))),
            (Some(s(5)), Some(s(10)), None),
            (Some(s(1)), Some(s(65)), None),
            (Some(s(1)), None, None),
            (None, Some(s(10)), None),
        ];
        for (changed, finished, want) in table {
            assert_eq!(
                settle_left(s(5), changed, finished),
                want,
                "{changed:?} {finished:?}"
            );
        }
    }

    #[test]
    fn the_settle_window_ends_when_no_edit_would_wait_any_more() {
        // (settle, since a restart finished, window left)
        let table = [
            (s(5), Some(s(10)), Some(s(55))),
            (s(5), Some(s(64)), Some(s(1))),
            (s(5), Some(s(65)), None),
            (s(5), Some(s(600)), None),
            (s(5), None, None),
            (s(0), Some(s(1)), None),
        ];
        for (settle, finished, want) in table {
            assert_eq!(
                settle_window_left(settle, finished),
                want,
                "{settle:?} {finished:?}"
            );
            // Past the window, an edit that has just come waits no more than with no restart
            // remembered at all: what a fresh actor would decide.
            if want.is_none() {
                assert_eq!(
                    settle_left(settle, Some(Duration::ZERO), finished),
                    None,
                    "{settle:?} {finished:?}"
                );
            }
        }
    }

    #[test]
    fn a_restart_is_looked_at_again_just_past_its_deadline() {
        let r = record("new");
        // (record, held, now, wake in)
        let table = [
            (None, false, t(10), Duration::MAX),
            (Some(&r), false, t(10), s(111)),
            (Some(&r), false, t(0), s(121)),
            (Some(&r), true, t(10), Duration::MAX),
            (Some(&r), false, t(121), Duration::MAX),
        ];
        for (record, held, now, want) in table {
            assert_eq!(
                progress_wake(record, held, now, s(120)),
                want,
                "{record:?} {held} {now}"
            );
        }
    }

    #[test]
    fn the_first_unready_pod_to_reach_its_deadline_sets_the_timer() {
        let unready = |name: &str, hash: &str| {
            let fixture = crate::decide::pods_fixtures::pod(name, hash, "rev-b", false, None);
            let mut pod = CachedPod::clone(&fixture);
            pod.metadata.creation_timestamp = Some(Time(t(1)));
            Arc::new(pod)
        };
        let pods = [
            unready("r-0", "new"),
            unready("r-1", "new"),
            unready("r-2", "old"),
        ];
        // (seen unready for, by pod, wake in)
        type Ages = &'static [(&'static str, u64)];
        let table: [(Ages, Duration); 5] = [
            (&[("r-0", 10), ("r-1", 20)], s(11)),
            (&[("r-0", 10)], s(21)),
            (&[("r-0", 30), ("r-1", 31)], s(1)),
            (&[("r-0", 31), ("r-1", 40), ("r-2", 1)], Duration::MAX),
            (&[], Duration::MAX),
        ];
        for (ages, want) in table {
            let unready_for = |p: &CachedPod| {
                let name = p.metadata.name.as_deref()?;
                ages.iter().find(|(n, _)| *n == name).map(|(_, a)| s(*a))
            };
            assert_eq!(
                pod_deadline_wake(&pods, &record("new"), s(30), unready_for),
                want,
                "{ages:?}"
            );
        }
    }
}
