//! The rules of a `configUpdate: Live` instance's live directives: when its pods are checked,
//! when a refusal is over, and what an apply or a repaired drift tells.
//!
//! Pure: the instance actor dials the pods and reports what each one changed (`PodChange`);
//! these rules say what that means.

use std::collections::BTreeSet;
use std::time::Duration;

use super::Notice;
use crate::auth::shown;
use crate::config::render::short_hash;
use crate::live::pods::PodChange;

/// How long until the pods' live directives are checked again: never for an instance with no
/// live directives (or not `Live`), now when never checked, else `every` after the last check.
pub fn next_check_in(has_live: bool, every: Duration, since_check: Option<Duration>) -> Duration {
    if !has_live {
        return Duration::MAX;
    }
    since_check.map_or(Duration::ZERO, |since| every.saturating_sub(since))
}

/// Whether a refusal of live config `refused` is over: the spec's live config is another, or
/// the pods were found running the refused one (a restart carried it in the file).
pub fn refusal_over(refused: &str, live_hash: &str, verified: Option<&str>) -> bool {
    refused != live_hash || verified == Some(refused)
}

/// The directives that changed, and `name old -> new` for each, from the first pod that
/// changed it (values of secret directives are not shown).
pub fn described(changes: &[PodChange]) -> (BTreeSet<String>, String) {
    let mut names = BTreeSet::new();
    let mut parts = Vec::new();
    for change in changes {
        for (name, before, after) in &change.changed {
            if names.insert(name.clone()) {
                let (before, after) = (shown(name, before), shown(name, after));
                parts.push(format!("{name} {before:?} -> {after:?}"));
            }
        }
    }
    (names, parts.join(", "))
}

/// `ConfigAppliedLive`: `changes` were set on `pods` pods, then config `short` was written.
pub fn applied(changes: &[PodChange], pods: usize, short: &str) -> Notice {
    let (_, detail) = described(changes);
    let note = if detail.is_empty() {
        format!("the pods already ran these live directives; wrote config {short} to the ConfigMap")
    } else {
        format!(
            "set {detail} on {pods} pods with CONFIG SET, no restart; wrote config {short} to the ConfigMap"
        )
    };
    Notice {
        warning: false,
        reason: "ConfigAppliedLive",
        action: "LiveApply",
        note,
        fact: None,
    }
}

/// Live drift a check found and set back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveDrift {
    /// The pods that ran other values.
    pub pods: Vec<String>,
    /// The directives set back.
    pub directives: BTreeSet<String>,
    /// `LiveDriftRepaired`.
    pub event: Notice,
}

/// What a check that set `changes` back to live config `live_hash` found: `None` when every pod
/// already ran it.
pub fn drift_found(changes: &[PodChange], live_hash: &str) -> Option<LiveDrift> {
    let (directives, detail) = described(changes);
    if directives.is_empty() {
        return None;
    }
    let pods: Vec<String> = changes
        .iter()
        .filter(|c| !c.changed.is_empty())
        .map(|c| c.pod.clone())
        .collect();
    let note = format!(
        "pods {} ran other values than spec.config; set back {detail} (live config {})",
        pods.join(", "),
        short_hash(live_hash)
    );
    Some(LiveDrift {
        pods,
        directives,
        event: Notice {
            warning: true,
            reason: "LiveDriftRepaired",
            action: "Repair",
            note,
            fact: None,
        },
    })
}

/// What a live check tells of the pods it could not read: their count when it changed since
/// the last check, and a Warning when a pod joined them, so a pod that stays silent is told
/// once and a pod that falls silent again after answering is told again.
#[derive(Debug, PartialEq)]
pub struct Unanswered {
    /// How many pods this check could not read, if that changed (or is the first count).
    pub count: Option<u32>,
    /// The Warning, naming every pod and why.
    pub event: Option<Notice>,
}

/// `before`: the pods the last check could not read (`None`: no check yet); `now`: each pod
/// this check could not read, with why.
pub fn unanswered(before: Option<&[String]>, now: &[(String, String)]) -> Unanswered {
    let pods: Vec<&str> = now.iter().map(|(pod, _)| pod.as_str()).collect();
    let same = before.is_some_and(|b| b.iter().map(String::as_str).eq(pods.iter().copied()));
    let count = (!same).then(|| u32::try_from(pods.len()).unwrap_or(u32::MAX));
    let told = before.unwrap_or_default();
    let joined = pods.iter().any(|pod| !told.iter().any(|t| t == pod));
    let event = joined.then(|| {
        let why: Vec<&str> = now.iter().map(|(_, why)| why.as_str()).collect();
        Notice {
            warning: true,
            reason: "PodUnreachable",
            action: "LiveCheck",
            note: format!(
                "live config check could not read {}: {}; their live config is unchecked until \
                 they answer",
                pods.join(", "),
                why.join("; ")
            ),
            fact: None,
        }
    });
    Unanswered { count, event }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_pod_is_counted_when_the_count_changes_and_told_when_it_falls_silent() {
        let silent = |pods: &[&str]| -> Vec<(String, String)> {
            pods.iter()
                .map(|p| ((*p).to_owned(), format!("{p} timed out")))
                .collect()
        };
        let names =
            |pods: &[&str]| -> Vec<String> { pods.iter().map(|p| (*p).to_owned()).collect() };
        let told = |u: &Unanswered| u.event.as_ref().map(|e| e.note.clone());
        // The first check counts, even nothing.
        let first = unanswered(None, &[]);
        assert_eq!((first.count, told(&first)), (Some(0), None));
        // Every pod answered before, and still does: nothing.
        assert_eq!(
            unanswered(Some(&[]), &[]),
            Unanswered {
                count: None,
                event: None
            }
        );
        // A pod falls silent: counted and told, with why.
        let fell = unanswered(Some(&[]), &silent(&["r-1"]));
        assert_eq!(fell.count, Some(1));
        let note = told(&fell).unwrap();
        assert!(
            note.starts_with("live config check could not read r-1: r-1 timed out;"),
            "{note}"
        );
        assert_eq!(fell.event.as_ref().unwrap().reason, "PodUnreachable");
        assert!(fell.event.as_ref().unwrap().warning);
        // Still silent: nothing again.
        let still = unanswered(Some(&names(&["r-1"])), &silent(&["r-1"]));
        assert_eq!(
            still,
            Unanswered {
                count: None,
                event: None
            }
        );
        // A second pod joins: counted, and both told.
        let joined = unanswered(Some(&names(&["r-1"])), &silent(&["r-1", "r-2"]));
        assert_eq!(joined.count, Some(2));
        assert!(told(&joined).unwrap().contains("could not read r-1, r-2:"));
        // One answers again: counted, nothing told.
        let fewer = unanswered(Some(&names(&["r-1", "r-2"])), &silent(&["r-2"]));
        assert_eq!((fewer.count, told(&fewer)), (Some(1), None));
        // Back to all answering, then silent again: told again.
        let back = unanswered(Some(&names(&["r-2"])), &[]);
        assert_eq!((back.count, told(&back)), (Some(0), None));
        assert!(told(&unanswered(Some(&[]), &silent(&["r-2"]))).is_some());
        // A first check that finds a silent pod tells it.
        assert!(told(&unanswered(None, &silent(&["r-1"]))).is_some());
    }

    fn change(pod: &str, changed: &[(&str, &str, &str)]) -> PodChange {
        PodChange {
            pod: pod.into(),
            changed: changed
                .iter()
                .map(|(n, b, a)| ((*n).into(), (*b).into(), (*a).into()))
                .collect(),
        }
    }

    #[test]
    fn live_checks_are_due_on_a_timer_only_for_live_directives() {
        let every = Duration::from_secs(60);
        let s = Duration::from_secs;
        // (has live directives, since the last check, due in)
        let table = [
            (false, None, Duration::MAX),
            (false, Some(s(600)), Duration::MAX),
            (true, None, Duration::ZERO),
            (true, Some(s(10)), s(50)),
            (true, Some(s(60)), Duration::ZERO),
            (true, Some(s(600)), Duration::ZERO),
        ];
        for (has_live, since, want) in table {
            assert_eq!(
                next_check_in(has_live, every, since),
                want,
                "{has_live} {since:?}"
            );
        }
    }

    #[test]
    fn a_live_refusal_ends_with_a_new_live_config_or_pods_running_it() {
        // (live hash of the spec, verified on the pods, over)
        let table = [
            ("a", None, false),
            ("a", Some("b"), false),
            ("b", None, true),
            ("a", Some("a"), true),
        ];
        for (live, verified, want) in table {
            assert_eq!(
                refusal_over("a", live, verified),
                want,
                "{live} {verified:?}"
            );
        }
    }

    #[test]
    fn drift_is_told_by_pod_and_directive_and_nothing_when_none() {
        let none = [change("r-0", &[]), change("r-1", &[])];
        assert_eq!(drift_found(&none, "h"), None);
        let drifted = [
            change("r-0", &[("maxmemory", "1mb", "100mb")]),
            change("r-1", &[]),
            change("r-2", &[("maxmemory", "2mb", "100mb"), ("hz", "5", "10")]),
        ];
        let found = drift_found(&drifted, "0123456789abcdef").unwrap();
        assert_eq!(found.pods, ["r-0", "r-2"]);
        assert_eq!(
            found.directives.into_iter().collect::<Vec<_>>(),
            ["hz", "maxmemory"]
        );
        assert!(found.event.warning);
        assert_eq!(
            found.event.note,
            "pods r-0, r-2 ran other values than spec.config; set back maxmemory \"1mb\" -> \"100mb\", hz \"5\" -> \"10\" (live config 0123456789ab)"
        );
    }

    #[test]
    fn an_apply_tells_what_it_set_or_that_the_pods_had_it() {
        let set = [change("r-0", &[("maxmemory", "1mb", "100mb")])];
        // (changes, note)
        let table: [(&[PodChange], &str); 2] = [
            (
                &set,
                "set maxmemory \"1mb\" -> \"100mb\" on 2 pods with CONFIG SET, no restart; wrote config abc to the ConfigMap",
            ),
            (
                &[],
                "the pods already ran these live directives; wrote config abc to the ConfigMap",
            ),
        ];
        for (changes, note) in table {
            let event = applied(changes, 2, "abc");
            assert_eq!(
                (event.reason, event.note.as_str()),
                ("ConfigAppliedLive", note)
            );
        }
    }
}
