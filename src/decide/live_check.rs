//! What a live config check does with what it read of the pods: whether it marks the drift
//! on `<name>-config` before setting it back, and what the setting back came to (verified,
//! repaired and told, or refused and told once).

use k8s_openapi::jiff::Timestamp;

use super::Notice;
use super::live_drift::{LiveDrift, drift_found};
use super::live_drift_mark::LiveDriftMark;
use crate::live::pods::{PodChange, PodRead};

/// How a check sets the drift it read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Mark `<name>-config` with the mark first (so that an operator taking over tells the
    /// repair if this one stops before it does), then set the values back.
    MarkThenSet(LiveDriftMark),
    /// Set back without a mark: the read found no drift a mark can name (only setting a value
    /// tells whether it differs), or Redis refused this very repair before, which is tried
    /// again at each check without a write.
    Set,
    /// Leave it alone: there is no `<name>-config` to mark it on yet.
    NoConfigMap,
}

/// The repair `found` (the pods read against live config `live_hash`) calls for, at `now`;
/// `refused_mark`: the mark of a repair Redis refused, `has_config_map`: the cache holds
/// `<name>-config`.
pub fn repair(
    found: &[PodRead],
    live_hash: &str,
    refused_mark: Option<&str>,
    has_config_map: bool,
    now: Timestamp,
) -> Repair {
    match LiveDriftMark::of(found, live_hash, now).filter(|mark| !mark.repeats(refused_mark)) {
        Some(_) if !has_config_map => Repair::NoConfigMap,
        Some(mark) => Repair::MarkThenSet(mark),
        None => Repair::Set,
    }
}

/// What setting the values back came to.
#[derive(Debug, Clone, Copy)]
pub enum SetBack<'a> {
    /// Every pod runs the live config now; `changes` is what was set.
    Done(&'a [PodChange]),
    /// Redis refused a value, with `error`.
    Refused(&'a str),
    /// Nothing was set: a pod did not answer, or this operator may no longer lead.
    NotSet,
}

/// What follows a check's [`SetBack`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AfterSetBack {
    /// Every pod was found running the live config: the refusal of an earlier repair is over.
    pub verified: bool,
    /// The drift set back: counted as a repaired drift, and told with its `event`.
    pub repaired: Option<LiveDrift>,
    /// The mark of the repair Redis refused, remembered so it is not written again.
    pub refused_mark: Option<String>,
    /// `LiveDriftNotRepaired`, told once per live config.
    pub not_repaired: Option<Notice>,
}

/// What follows `set_back` of the repair `repair` to live config `live_hash`;
/// `refusal_told`: Redis's refusal of a repair to this live config was told already.
pub fn after_set_back(
    set_back: SetBack<'_>,
    repair: &Repair,
    live_hash: &str,
    refusal_told: bool,
) -> AfterSetBack {
    let mark = match repair {
        Repair::MarkThenSet(mark) => Some(mark),
        Repair::Set | Repair::NoConfigMap => None,
    };
    match set_back {
        SetBack::Done(changes) => AfterSetBack {
            verified: true,
            // Told under the mark's name, the one an operator taking over tells it by; a drift
            // only a CONFIG SET could find has no mark, and is told as it always was.
            repaired: drift_found(changes, live_hash).map(|drift| LiveDrift {
                event: match mark {
                    Some(mark) => mark.tells(drift.event),
                    None => drift.event,
                },
                ..drift
            }),
            ..AfterSetBack::default()
        },
        SetBack::Refused(error) => AfterSetBack {
            refused_mark: mark.map(LiveDriftMark::text),
            not_repaired: (!refusal_told).then(|| {
                let note = format!("live config drift could not be set back: {error}");
                Notice::warning("LiveDriftNotRepaired", "Repair", note)
            }),
            ..AfterSetBack::default()
        },
        SetBack::NotSet => AfterSetBack::default(),
    }
}

#[cfg(test)]
#[path = "live_check_tests.rs"]
mod tests;
