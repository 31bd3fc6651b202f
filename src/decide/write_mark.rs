//! The marks a write leaves on the object it wrote, naming what it did and when, so that an
//! operator taking over tells what the one before it did and may not have told (it was stopped
//! between the write and the Event): a repair's, and a live change's on the ConfigMap written
//! after the pods took it.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::Notice;
use super::act::{Drift, drift};
use crate::config::render::short_hash;

/// Where a repair write leaves its mark: `<kind> <unix second>`.
pub const REPAIRED_ANNOTATION: &str = "redis.github.com/repaired";

/// How long after a repair an operator that did not tell it still does: a takeover comes well
/// within it (a Lease lapses in seconds), and a mark older than this is history.
pub const RETELL_WITHIN: Duration = Duration::from_secs(300);

/// The kinds of repair that leave a mark: the ones whose write puts an object back and starts
/// no restart (a restart's own record tells a restart-class repair again).
const MARKED_KINDS: [&str; 2] = ["Service", "StatefulSetSpec"];

impl Drift {
    /// This repair of the object `object` made at `at`, with the mark its write leaves there and
    /// the Event telling it: the same Event as the one an operator taking over tells from the
    /// mark.
    #[must_use]
    pub fn marked(self, name: &str, object: &str, at: Timestamp) -> Drift {
        let mark = format!("{} {}", self.kind, at.as_second());
        let event = repaired(name, object, &mark).map_or(self.event, |(_, event)| event);
        Drift {
            kind: self.kind,
            event,
            mark: Some(mark),
        }
    }
}

/// The repair `mark` on the object `object` tells, with when it was made; `None` for a value
/// the operator did not write (the annotation is anyone's to edit).
fn repaired(name: &str, object: &str, mark: &str) -> Option<(Timestamp, Notice)> {
    let (kind, second) = mark.split_once(' ')?;
    let kind = MARKED_KINDS.into_iter().find(|k| *k == kind)?;
    let at = Timestamp::from_second(second.parse().ok()?).ok()?;
    let fact = format!("repair {kind} {object} {}", at.as_second());
    Some((at, drift(name, kind).event.of_fact(fact)))
}

/// Where a live change leaves its mark, on the ConfigMap `<name>-config` written once every
/// pod took it: `<config hash> <unix second>`.
pub const APPLIED_LIVE_ANNOTATION: &str = "redis.github.com/applied-live";

/// The mark a live change of config `hash` leaves at `at`, and the Event telling it: `told` as
/// the applying operator words it, under the name an operator taking over tells it.
pub fn live_marked(hash: &str, at: Timestamp, told: Notice) -> (String, Notice) {
    (
        format!("{hash} {}", at.as_second()),
        told.of_fact(live_fact(hash, at)),
    )
}

fn live_fact(hash: &str, at: Timestamp) -> String {
    format!("live {hash} {}", at.as_second())
}

/// The config hash and time a live change's mark names; `None` for a value the operator did not
/// write (the annotation is anyone's to edit).
fn live_mark(mark: &str) -> Option<(&str, Timestamp)> {
    let (hash, second) = mark.split_once(' ')?;
    let at = Timestamp::from_second(second.parse().ok()?).ok()?;
    let valid = !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then_some((hash, at))
}

/// The `ConfigAppliedLive` Event of the live change marked on the ConfigMap (`mark`) within
/// [`RETELL_WITHIN`] of `now`: owed unless this operator told it. Told in the taker's words,
/// which cannot know which directives the pods took; under the same name, so it is posted only
/// when the first telling never was.
pub fn owed_live_apply(mark: Option<&str>, now: Timestamp) -> Option<Notice> {
    let (hash, at) = live_mark(mark?)?;
    if now.duration_since(at).unsigned_abs() > RETELL_WITHIN {
        return None;
    }
    let note = format!(
        "the pods took config {}'s live directives with CONFIG SET, no restart, and it was \
         written to the ConfigMap (told by the operator that took over)",
        short_hash(hash)
    );
    Some(Notice::normal("ConfigAppliedLive", "LiveApply", note).of_fact(live_fact(hash, at)))
}

/// The Events of the repairs marked on instance `name`'s objects (`marks`: each object's name
/// and annotation) within [`RETELL_WITHIN`] of `now`: owed unless this operator told them.
pub fn owed_repairs<'a>(
    name: &str,
    marks: impl IntoIterator<Item = (&'a str, &'a str)>,
    now: Timestamp,
) -> Vec<Notice> {
    marks
        .into_iter()
        .filter_map(|(object, mark)| repaired(name, object, mark))
        // Either way: the operator that wrote the mark may run on a clock ahead of this one.
        .filter(|(at, _)| now.duration_since(*at).unsigned_abs() <= RETELL_WITHIN)
        .map(|(_, event)| event)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn the_repairer_and_the_operator_taking_over_tell_the_same_event() {
        let repair = drift("redis-a", "Service").marked("redis-a", "redis-a", at(1_000_000));
        let (mark, told) = (repair.mark.unwrap(), repair.event);
        assert_eq!(mark, "Service 1000000");
        assert_eq!(told.reason, "DriftRepaired");
        assert!(told.fact.is_some());
        let owed = owed_repairs("redis-a", [("redis-a", mark.as_str())], at(1_000_030));
        assert_eq!(owed, vec![told]);
    }

    #[test]
    fn two_repairs_of_one_kind_are_two_events() {
        let first = drift("r", "Service").marked("r", "r", at(1_000)).event;
        let later = drift("r", "Service").marked("r", "r", at(1_060)).event;
        let headless = drift("r", "Service")
            .marked("r", "r-headless", at(1_000))
            .event;
        assert_ne!(first.fact, later.fact);
        assert_ne!(
            first.fact, headless.fact,
            "both Services put back in one second"
        );
        assert_eq!(first.note, later.note);
    }

    #[test]
    fn only_recent_marks_written_by_a_repair_are_owed() {
        let now = at(10_000);
        let recent = "StatefulSetSpec 9800";
        let rows: [(&str, usize); 9] = [
            (recent, 1),
            ("Service 9700", 1),  // exactly RETELL_WITHIN ago
            ("Service 9699", 0),  // older
            ("Service 10060", 1), // written on a clock a minute ahead of this one
            ("Service 10301", 0),
            ("PodTemplate 9900", 0), // a restart tells itself
            ("Service", 0),
            ("Service soon", 0),
            ("Sérvice 9900 ", 0),
        ];
        for (mark, owed) in rows {
            assert_eq!(
                owed_repairs("r", [("r", mark)], now).len(),
                owed,
                "{mark:?}"
            );
        }
        let note = &owed_repairs("r", [("r", recent)], now)[0].note;
        assert!(note.starts_with("StatefulSetSpec of r"), "{note}");
    }

    #[test]
    fn a_live_change_is_told_again_under_the_name_it_was_first_told() {
        let hash = "ab".repeat(32);
        let first = Notice::normal("ConfigAppliedLive", "LiveApply", "set maxmemory".into());
        let (mark, told) = live_marked(&hash, at(2_000), first);
        assert_eq!(mark, format!("{hash} 2000"));
        assert_eq!(told.note, "set maxmemory", "the applier's words are kept");
        let owed = owed_live_apply(Some(&mark), at(2_100)).unwrap();
        assert_eq!((owed.reason, &owed.fact), (told.reason, &told.fact));
        assert!(owed.note.contains("abababababab"), "{}", owed.note);
        let rows = [
            (None, at(2_100), false),
            (Some(mark.as_str()), at(2_300), true),
            (Some(mark.as_str()), at(2_301), false),
            (Some("not-hex 2000"), at(2_000), false),
            (Some("abc"), at(2_000), false),
            (Some(" 2000"), at(2_000), false),
            (Some("abc 2000x"), at(2_000), false),
        ];
        for (mark, now, owed) in rows {
            assert_eq!(owed_live_apply(mark, now).is_some(), owed, "{mark:?}");
        }
    }

    #[test]
    fn a_mark_no_repair_wrote_is_told_as_the_drift_it_was() {
        let plain = drift("r", "Image");
        let marked = plain.clone().marked("r", "r", at(5));
        assert_eq!(marked.mark.as_deref(), Some("Image 5"));
        assert_eq!(
            marked.event, plain.event,
            "kinds without a mark keep their Event as it was"
        );
    }
}
