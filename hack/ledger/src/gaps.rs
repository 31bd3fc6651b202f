//! Write gaps: spans with no acknowledged write on any connection, overall and per marked event.
//!
//! Pure bookkeeping on milliseconds since the run started; the writer feeds it under a lock, so
//! calls arrive in time order.

use std::collections::BTreeMap;

use serde::Serialize;

/// A span without any acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Gap {
    pub start_ms: f64,
    pub end_ms: f64,
    pub ms: f64,
}

/// A mark as received, e.g. `rollout-3 start`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    pub at_ms: f64,
    pub text: String,
}

/// An event framed by the marks `<name> start` and `<name> end`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub name: String,
    pub start_ms: f64,
    /// `None` when no end mark came before the run ended.
    pub end_ms: Option<f64>,
    /// The longest gap that overlaps the event, in full (also the part outside it).
    pub longest_gap_ms: f64,
    /// Writes acknowledged and writes failed between the marks.
    pub acked: u64,
    pub failed: u64,
}

impl Event {
    fn overlaps(&self, from_ms: f64, to_ms: f64) -> bool {
        self.start_ms < to_ms && self.end_ms.is_none_or(|end| end > from_ms)
    }

    fn contains(&self, at_ms: f64) -> bool {
        self.start_ms <= at_ms && self.end_ms.is_none_or(|end| at_ms <= end)
    }
}

/// What the tracker found, ready for the JSON report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GapReport {
    pub threshold_ms: f64,
    pub longest: Gap,
    /// Every gap of at least `threshold_ms`, in time order.
    pub over_threshold: Vec<Gap>,
    pub marks: Vec<Mark>,
    pub events: Vec<Event>,
    pub acked: u64,
    /// Failed writes by cause (`readonly`, `io`, `refused`, `timeout`, `wait`, ...).
    pub failed: BTreeMap<String, u64>,
}

/// Accumulates acknowledgements, failures and marks.
#[derive(Debug)]
pub struct GapTracker {
    threshold_ms: f64,
    last_ack_ms: f64,
    longest: Gap,
    over_threshold: Vec<Gap>,
    marks: Vec<Mark>,
    events: Vec<Event>,
    acked: u64,
    failed: BTreeMap<String, u64>,
}

impl GapTracker {
    /// A tracker whose first gap starts at 0 (the run's start): connecting counts as a stall.
    pub fn new(threshold_ms: f64) -> Self {
        Self {
            threshold_ms,
            last_ack_ms: 0.0,
            longest: Gap {
                start_ms: 0.0,
                end_ms: 0.0,
                ms: 0.0,
            },
            over_threshold: Vec::new(),
            marks: Vec::new(),
            events: Vec::new(),
            acked: 0,
            failed: BTreeMap::new(),
        }
    }

    /// A write was acknowledged at `now_ms`.
    pub fn ack(&mut self, now_ms: f64) {
        self.close_gap(now_ms);
        self.acked += 1;
        for event in self.events.iter_mut().filter(|e| e.contains(now_ms)) {
            event.acked += 1;
        }
    }

    /// A write failed at `now_ms` for `cause`.
    pub fn fail(&mut self, now_ms: f64, cause: &str) {
        *self.failed.entry(cause.to_owned()).or_default() += 1;
        for event in self.events.iter_mut().filter(|e| e.contains(now_ms)) {
            event.failed += 1;
        }
    }

    /// Records a mark; `<name> start` opens an event and `<name> end` closes the open one of
    /// that name.
    pub fn mark(&mut self, now_ms: f64, text: &str) {
        self.marks.push(Mark {
            at_ms: now_ms,
            text: text.to_owned(),
        });
        let mut words = text.split_whitespace();
        let (Some(name), Some(edge), None) = (words.next(), words.next(), words.next()) else {
            return;
        };
        match edge {
            "start" => self.events.push(Event {
                name: name.to_owned(),
                start_ms: now_ms,
                end_ms: None,
                // A gap already open when the event starts is part of it.
                longest_gap_ms: now_ms - self.last_ack_ms,
                acked: 0,
                failed: 0,
            }),
            "end" => {
                if let Some(event) = self
                    .events
                    .iter_mut()
                    .rev()
                    .find(|e| e.name == name && e.end_ms.is_none())
                {
                    event.end_ms = Some(now_ms);
                }
            }
            _ => {}
        }
    }

    /// Ends the run at `now_ms`: a gap still open then counts as it stands.
    pub fn finish(mut self, now_ms: f64) -> GapReport {
        self.close_gap(now_ms);
        GapReport {
            threshold_ms: self.threshold_ms,
            longest: self.longest,
            over_threshold: self.over_threshold,
            marks: self.marks,
            events: self.events,
            acked: self.acked,
            failed: self.failed,
        }
    }

    fn close_gap(&mut self, now_ms: f64) {
        let gap = Gap {
            start_ms: self.last_ack_ms,
            end_ms: now_ms,
            ms: now_ms - self.last_ack_ms,
        };
        self.last_ack_ms = now_ms;
        if gap.ms > self.longest.ms {
            self.longest = gap;
        }
        if gap.ms >= self.threshold_ms {
            self.over_threshold.push(gap);
        }
        for event in self
            .events
            .iter_mut()
            .filter(|e| e.overlaps(gap.start_ms, gap.end_ms))
        {
            event.longest_gap_ms = event.longest_gap_ms.max(gap.ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_and_those_over_the_threshold_are_kept() {
        let mut tracker = GapTracker::new(50.0);
        for at in [10.0, 20.0, 120.0, 130.0, 400.0, 410.0] {
            tracker.ack(at);
        }
        let report = tracker.finish(420.0);
        assert_eq!(report.acked, 6);
        assert_eq!(
            report.longest,
            Gap {
                start_ms: 130.0,
                end_ms: 400.0,
                ms: 270.0
            }
        );
        let over: Vec<f64> = report.over_threshold.iter().map(|g| g.ms).collect();
        assert_eq!(over, [100.0, 270.0]);
    }

    #[test]
    fn a_gap_still_open_at_the_end_counts() {
        let mut tracker = GapTracker::new(50.0);
        tracker.ack(10.0);
        let report = tracker.finish(1000.0);
        assert_eq!(report.longest.ms, 990.0);
    }

    #[test]
    fn events_get_the_gaps_that_overlap_them_even_when_they_close_after_the_end_mark() {
        let mut tracker = GapTracker::new(50.0);
        tracker.ack(10.0);
        tracker.mark(20.0, "rollout-1 start");
        tracker.ack(30.0);
        tracker.fail(40.0, "readonly");
        tracker.mark(100.0, "rollout-1 end");
        // The gap 30..300 began inside the event and ends after its end mark.
        tracker.ack(300.0);
        tracker.mark(310.0, "kill-1 start");
        tracker.ack(320.0);
        tracker.ack(330.0);
        tracker.mark(340.0, "kill-1 end");
        // Began inside the event: counts. The trailing gap (345..370) began after: does not.
        tracker.ack(345.0);
        tracker.fail(350.0, "io");
        tracker.mark(360.0, "just a note");
        let report = tracker.finish(370.0);
        let rollout = &report.events[0];
        assert_eq!(
            (rollout.name.as_str(), rollout.end_ms),
            ("rollout-1", Some(100.0))
        );
        assert_eq!(rollout.longest_gap_ms, 270.0);
        assert_eq!((rollout.acked, rollout.failed), (1, 1));
        let kill = &report.events[1];
        assert_eq!(kill.longest_gap_ms, 20.0);
        assert_eq!((kill.acked, kill.failed), (2, 0));
        assert_eq!(
            report.events.len(),
            2,
            "a mark that is no edge opens nothing"
        );
        assert_eq!(report.marks.len(), 5);
        assert_eq!(report.failed["readonly"], 1);
        assert_eq!(report.failed["io"], 1);
    }

    #[test]
    fn a_gap_open_when_an_event_starts_belongs_to_it() {
        let mut tracker = GapTracker::new(50.0);
        tracker.ack(10.0);
        tracker.mark(200.0, "kill-1 start");
        tracker.mark(210.0, "kill-1 end");
        let report = tracker.finish(220.0);
        assert_eq!(report.events[0].longest_gap_ms, 210.0);
    }
}
