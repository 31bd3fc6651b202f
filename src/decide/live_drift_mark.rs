//! The mark a live drift repair leaves on `<name>-config` before its `CONFIG SET`, so that an
//! operator taking over tells a repair the one before it made and was stopped before telling.
//!
//! A `CONFIG SET` writes nothing the cluster keeps: without the mark an operator killed between
//! setting a drifted directive back and posting `LiveDriftRepaired` loses the Event, and the
//! next finds no drift to tell. The mark is written first, so it may name a repair that never
//! happened (the operator stopped before its `CONFIG SET`); a taker tells it only once its own
//! read shows the marked pods running the spec's values of the marked directives.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;

use super::Notice;
use super::write_mark::RETELL_WITHIN;
use crate::config::render::short_hash;
use crate::live::pods::PodRead;

/// Where a live drift repair leaves its mark: `<pods> <directives> <live hash> <unix second>`,
/// each list comma separated, or `*` for one too long to keep.
pub const LIVE_DRIFT_ANNOTATION: &str = "redis.github.com/live-drift";

/// The most bytes a list of pods or directives takes in a mark; a longer one is written `*`
/// (every pod, every live directive), so a mark stays short whatever the instance's size.
const LIST_BYTES: usize = 200;

/// The most bytes of a mark read back: two lists, a SHA-256 in hex and a second, with room.
const MARK_BYTES: usize = 2 * LIST_BYTES + 64 + 24;

/// The pods or directives a mark names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Named {
    /// Too many to list: all of them.
    Every,
    These(BTreeSet<String>),
}

impl Named {
    fn of(names: BTreeSet<String>) -> Self {
        let listed = Named::These(names);
        match Named::parse(&listed.text()) {
            Some(Named::These(kept)) if !kept.is_empty() => Named::These(kept),
            _ => Named::Every,
        }
    }

    fn text(&self) -> String {
        match self {
            Named::Every => "*".to_owned(),
            Named::These(names) => names.iter().cloned().collect::<Vec<_>>().join(","),
        }
    }

    /// `None` for anything [`Named::text`] does not write: pod and directive names are lower
    /// case letters, digits, `-` and `.`.
    fn parse(text: &str) -> Option<Self> {
        if text == "*" {
            return Some(Named::Every);
        }
        if text.is_empty() || text.len() > LIST_BYTES {
            return None;
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        let names: BTreeSet<String> = text.split(',').map(str::to_owned).collect();
        names
            .iter()
            .all(|n| name_ok(n))
            .then_some(Named::These(names))
    }

    fn holds(&self, name: &str) -> bool {
        match self {
            Named::Every => true,
            Named::These(names) => names.contains(name),
        }
    }

    fn told(&self, every: &str) -> String {
        match self {
            Named::Every => every.to_owned(),
            Named::These(names) => names.iter().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

/// A live drift repair about to be made: which pods run other values of which directives than
/// the spec's live config `live_hash`, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveDriftMark {
    pods: Named,
    directives: Named,
    live_hash: String,
    at: Timestamp,
}

impl LiveDriftMark {
    /// The mark of a repair of what `read` found surely off the spec's live config `live_hash`;
    /// `None` when nothing is (a value only a `CONFIG SET` can compare is set unmarked: most
    /// such sets change nothing, and a mark for each would be a write at every check).
    pub fn of(read: &[PodRead], live_hash: &str, at: Timestamp) -> Option<Self> {
        let drifted: Vec<&PodRead> = read.iter().filter(|p| !p.differs.is_empty()).collect();
        if drifted.is_empty() {
            return None;
        }
        let pods = drifted.iter().map(|p| p.pod.clone()).collect();
        let directives = drifted.iter().flat_map(|p| p.differs.clone()).collect();
        let hex = !live_hash.is_empty() && live_hash.bytes().all(|b| b.is_ascii_hexdigit());
        Some(LiveDriftMark {
            pods: Named::of(pods),
            directives: Named::of(directives),
            live_hash: if hex {
                live_hash.to_owned()
            } else {
                "0".into()
            },
            at: Timestamp::from_second(at.as_second()).unwrap_or(at),
        })
    }

    /// The annotation's value.
    pub fn text(&self) -> String {
        format!(
            "{} {} {} {}",
            self.pods.text(),
            self.directives.text(),
            self.live_hash,
            self.at.as_second()
        )
    }

    /// The mark `text` holds; `None` for a value the operator did not write (the annotation
    /// is anyone's to edit).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() > MARK_BYTES {
            return None;
        }
        let mut fields = text.split(' ');
        let pods = Named::parse(fields.next()?)?;
        let directives = Named::parse(fields.next()?)?;
        let live_hash = fields.next()?;
        let at = Timestamp::from_second(fields.next()?.parse().ok()?).ok()?;
        let hex = !live_hash.is_empty()
            && live_hash.len() <= 64
            && live_hash.bytes().all(|b| b.is_ascii_hexdigit());
        (hex && fields.next().is_none()).then(|| LiveDriftMark {
            pods,
            directives,
            live_hash: live_hash.to_owned(),
            at,
        })
    }

    /// Whether this is the repair `earlier` marked (the same pods, directives and live config,
    /// whenever): one Redis refused is set again at every check, unmarked, so that a value
    /// Redis will not take costs no write at each.
    pub fn repeats(&self, earlier: Option<&str>) -> bool {
        earlier.and_then(LiveDriftMark::parse).is_some_and(|e| {
            (&e.pods, &e.directives, &e.live_hash)
                == (&self.pods, &self.directives, &self.live_hash)
        })
    }

    /// `event`, the repairer's `LiveDriftRepaired`, under the name the mark gives it: the one
    /// an operator taking over tells it by.
    pub fn tells(&self, event: Notice) -> Notice {
        event.of_fact(format!("live drift {}", self.text()))
    }

    /// Whether `read` shows the repair landed: every marked pod was read and runs the spec's
    /// value of every marked directive, which it surely did not when the mark was written.
    fn landed(&self, read: &[PodRead]) -> bool {
        let named_read = match &self.pods {
            Named::Every => !read.is_empty(),
            Named::These(pods) => pods.iter().all(|pod| read.iter().any(|p| p.pod == *pod)),
        };
        named_read
            && read
                .iter()
                .filter(|p| self.pods.holds(&p.pod))
                .flat_map(|p| p.differs.iter().chain(&p.unsure))
                .all(|d| !self.directives.holds(d))
    }
}

/// The `LiveDriftRepaired` Event of the repair marked on `<name>-config` (`mark`) within
/// [`RETELL_WITHIN`] of `now`, owed when `read` (the pods as this operator reads them, against
/// the spec's live config `live_hash`) shows it landed and this operator did not tell it. Told
/// in the taker's words, which cannot know the values set back; under the same name, so it is
/// posted only when the first telling never was.
pub fn owed_live_drift(
    mark: Option<&str>,
    live_hash: &str,
    read: &[PodRead],
    now: Timestamp,
) -> Option<Notice> {
    let mark = LiveDriftMark::parse(mark?)?;
    // Either way: the operator that wrote the mark may run on a clock ahead of this one.
    let recent = now.duration_since(mark.at).unsigned_abs() <= RETELL_WITHIN;
    if !recent || mark.live_hash != live_hash || !mark.landed(read) {
        return None;
    }
    let note = format!(
        "pods {} ran other values than spec.config; set back {} (live config {}; told by the \
         operator that took over)",
        mark.pods.told("all"),
        mark.directives.told("their live directives"),
        short_hash(&mark.live_hash)
    );
    let event = Notice {
        warning: true,
        reason: "LiveDriftRepaired",
        action: "Repair",
        note,
        fact: None,
    };
    Some(mark.tells(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn pod(name: &str, differs: &[&str], unsure: &[&str]) -> PodRead {
        PodRead {
            pod: name.into(),
            differs: differs.iter().map(|d| (*d).into()).collect(),
            unsure: unsure.iter().map(|d| (*d).into()).collect(),
        }
    }

    fn hash() -> String {
        "ab".repeat(32)
    }

    fn clean() -> Vec<PodRead> {
        vec![
            pod("r-0", &[], &[]),
            pod("r-1", &[], &[]),
            pod("r-2", &[], &[]),
        ]
    }

    #[test]
    fn the_repairer_and_the_operator_taking_over_tell_the_same_event() {
        let found = [
            pod("r-0", &["maxmemory"], &[]),
            pod("r-1", &[], &["oom-score-adj-values"]),
            pod("r-2", &["hz", "maxmemory"], &[]),
        ];
        let mark = LiveDriftMark::of(&found, &hash(), at(1_000)).unwrap();
        let text = mark.text();
        assert_eq!(text, format!("r-0,r-2 hz,maxmemory {} 1000", hash()));
        assert_eq!(LiveDriftMark::parse(&text), Some(mark.clone()));
        let first = Notice {
            warning: true,
            reason: "LiveDriftRepaired",
            action: "Repair",
            note: "set back maxmemory \"1mb\" -> \"100mb\"".into(),
            fact: None,
        };
        let told = mark.tells(first);
        let owed = owed_live_drift(Some(&text), &hash(), &clean(), at(1_030)).unwrap();
        assert_eq!((owed.reason, &owed.fact), (told.reason, &told.fact));
        assert!(owed.warning);
        assert_eq!(
            owed.note,
            "pods r-0, r-2 ran other values than spec.config; set back hz, maxmemory (live \
             config abababababab; told by the operator that took over)"
        );
    }

    #[test]
    fn a_repair_redis_refused_is_not_marked_again() {
        let found = [pod("r-0", &["maxmemory"], &[])];
        let mark = LiveDriftMark::of(&found, &hash(), at(2_000)).unwrap();
        let h = hash();
        // (the mark whose repair Redis refused, repeated)
        let rows: Vec<(Option<String>, bool)> = vec![
            (None, false),
            (Some(format!("r-0 maxmemory {h} 1000")), true),
            (Some(format!("r-0 hz {h} 1000")), false),
            (Some(format!("r-0,r-1 maxmemory {h} 1000")), false),
            (Some(format!("* maxmemory {h} 1000")), false),
            (
                Some(format!("r-0 maxmemory {} 1000", "cd".repeat(32))),
                false,
            ),
            (Some("r-0 maxmemory".into()), false),
        ];
        for (earlier, repeats) in rows {
            assert_eq!(mark.repeats(earlier.as_deref()), repeats, "{earlier:?}");
        }
    }

    #[test]
    fn nothing_surely_off_the_spec_leaves_no_mark() {
        let unsure = [
            pod("r-0", &[], &["oom-score-adj-values"]),
            pod("r-1", &[], &[]),
        ];
        assert_eq!(LiveDriftMark::of(&unsure, &hash(), at(1)), None);
        assert_eq!(LiveDriftMark::of(&[], &hash(), at(1)), None);
    }

    #[test]
    fn a_mark_stays_short_however_many_pods_drift() {
        let many: Vec<PodRead> = (0..500)
            .map(|i| pod(&format!("a-long-instance-name-{i}"), &["maxmemory"], &[]))
            .collect();
        let mark = LiveDriftMark::of(&many, &hash(), at(7)).unwrap();
        assert_eq!(mark.text(), format!("* maxmemory {} 7", hash()));
        assert!(mark.text().len() <= MARK_BYTES);
        let directives: Vec<String> = (0..100).map(|i| format!("directive-{i}")).collect();
        let names: Vec<&str> = directives.iter().map(String::as_str).collect();
        let mark = LiveDriftMark::of(&[pod("r-0", &names, &[])], &hash(), at(7)).unwrap();
        assert_eq!(mark.text(), format!("r-0 * {} 7", hash()));
        // Every pod read, none off the spec in any directive: the repair landed.
        assert!(owed_live_drift(Some(&mark.text()), &hash(), &clean(), at(8)).is_some());
    }

    #[test]
    fn a_repair_is_owed_only_once_the_pods_show_it_landed() {
        let text = format!("r-0 maxmemory {} 1000", hash());
        let every = format!("* maxmemory {} 1000", hash());
        let h = hash();
        let other = "cd".repeat(32);
        // (mark, spec's live hash, pods read, owed)
        let rows: Vec<(&str, &str, Vec<PodRead>, bool)> = vec![
            (&text, &h, clean(), true),
            // The CONFIG SET never came: the pod still drifts.
            (&text, &h, vec![pod("r-0", &["maxmemory"], &[])], false),
            (&text, &h, vec![pod("r-0", &[], &["maxmemory"])], false),
            // Other drift, on another pod or directive, is the reader's own to repair.
            (
                &text,
                &h,
                vec![pod("r-0", &["hz"], &[]), pod("r-1", &["maxmemory"], &[])],
                true,
            ),
            // The marked pod was not read (scaled away): nothing shows the repair landed.
            (&text, &h, vec![pod("r-1", &[], &[])], false),
            (&every, &h, clean(), true),
            (
                &every,
                &h,
                vec![pod("r-0", &[], &[]), pod("r-2", &["maxmemory"], &[])],
                false,
            ),
            (&every, &h, vec![], false),
            // The spec moved on: the values read are not the ones the repair set.
            (&text, &other, clean(), false),
        ];
        for (mark, live_hash, read, owed) in rows {
            assert_eq!(
                owed_live_drift(Some(mark), live_hash, &read, at(1_100)).is_some(),
                owed,
                "{mark:?} {read:?}"
            );
        }
        assert_eq!(owed_live_drift(None, &h, &clean(), at(1_100)), None);
    }

    #[test]
    fn only_recent_marks_the_operator_could_have_written_are_owed() {
        let now = at(10_000);
        let h = hash();
        let mark = |rest: &str| format!("r-0 maxmemory {rest}");
        let rows: Vec<(String, bool)> = vec![
            (mark(&format!("{h} 9800")), true),
            (mark(&format!("{h} 9700")), true), // exactly RETELL_WITHIN ago
            (mark(&format!("{h} 9699")), false),
            (mark(&format!("{h} 10060")), true), // written on a clock a minute ahead
            (mark(&format!("{h} 10301")), false),
            (mark(&format!("{h} 9800 extra")), false),
            (mark(&format!("{h}  9800")), false),
            (mark(&format!("{h} soon")), false),
            (mark(&format!("{h} 99999999999999999999")), false),
            (mark("9800"), false),
            (mark("not-hex 9800"), false),
            (format!("R-0 maxmemory {h} 9800"), false),
            (format!("r-0,,r-1 maxmemory {h} 9800"), false),
            (format!(" maxmemory {h} 9800"), false),
            (format!("ŕ-0 maxmemory {h} 9800"), false),
            (format!("r-0 maxmemory {}{h} 9800", "a".repeat(64)), false),
            (format!("{} maxmemory {h} 9800", "r".repeat(5_000)), false),
            (String::new(), false),
        ];
        for (text, owed) in rows {
            assert_eq!(
                owed_live_drift(Some(&text), &h, &clean(), now).is_some(),
                owed,
                "{text:?}"
            );
        }
    }
}
