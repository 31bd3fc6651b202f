//! The instance actor's memory between steps, in groups named by who reads and writes them.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use ractor::MessagingErr;
use ractor::concurrency::JoinHandle;
use tokio::sync::OwnedSemaphorePermit;

use super::InstanceMsg;

/// How the actor takes its turns: only its message loop reads these, and the Service
/// creation, which takes an allocation turn.
#[derive(Default)]
pub(super) struct Schedule {
    pub(super) step_queued: bool,
    /// When the queued step was queued, and the earliest watch event it answers.
    pub(super) queued_at: Option<Instant>,
    pub(super) event_since: Option<Instant>,
    /// The step permit a writing step passes to the next, and how many steps it served.
    pub(super) kept_turn: Option<OwnedSemaphorePermit>,
    /// A step found no turn to create its ClusterIP Service: the next waits for one first,
    /// before its step turn, and keeps it here for the write.
    pub(super) awaits_allocation: bool,
    pub(super) allocation: Option<OwnedSemaphorePermit>,
    pub(super) chained: u32,
    pub(super) timer: Option<JoinHandle<Result<(), MessagingErr<InstanceMsg>>>>,
    pub(super) consecutive_failures: u32,
}

/// What was told, so each is told once: the report phase and the API refusal set these.
#[derive(Default)]
pub(super) struct Reported {
    /// Start time of the restart whose overdue Event was posted.
    pub(super) overdue: Option<Timestamp>,
    /// Generation whose refusal was reported, so each refused edit is told once.
    pub(super) refused_generation: Option<i64>,
    /// The user was told the instance runs unrelated servers until converted.
    pub(super) unconverted: bool,
    /// Which of the mismatch kinds the last step saw, so each is counted when it appears.
    pub(super) mismatches: [bool; 3],
    /// The generation whose objects the API server refused (422), and its message.
    pub(super) api_refusal: Option<(Option<i64>, String)>,
}

impl Reported {
    /// The last step saw some kind of mismatch.
    pub(super) fn mismatched(&self) -> bool {
        self.mismatches.iter().any(|m| *m)
    }
}

/// The settle rule's clock: when the spec last changed and a restart last finished, by this
/// actor's watch.
#[derive(Default)]
pub(super) struct SpecClock {
    /// The last generation seen.
    pub(super) generation: Option<i64>,
    /// When it changed.
    pub(super) spec_changed_at: Option<Instant>,
    /// When this actor last saw a restart finish.
    pub(super) restart_finished_at: Option<Instant>,
}

impl SpecClock {
    /// Notes the generation a step saw; a change after the first is the spec's last change.
    pub(super) fn saw(&mut self, generation: Option<i64>) {
        if generation != self.generation {
            if self.generation.is_some() {
                self.spec_changed_at = Some(Instant::now());
            }
            self.generation = generation;
        }
    }

    /// How much longer a restart that follows another must wait for edits to settle (see
    /// [`crate::decide::settle_left`]), by this actor's clock.
    pub(super) fn settle_left(&self, settle: Duration) -> Option<Duration> {
        crate::decide::settle_left(
            settle,
            self.spec_changed_at.map(|at| at.elapsed()),
            self.restart_finished_at.map(|at| at.elapsed()),
        )
    }
}

/// What the last step decided, for status and the step-duration histogram.
pub(super) struct LastStep {
    /// The decision's name.
    pub(super) decided: &'static str,
    /// It waits for edits to settle before a restart.
    pub(super) settling: bool,
    /// What `spec.paused` holds back.
    pub(super) pending: Option<String>,
}

impl Default for LastStep {
    fn default() -> Self {
        Self {
            decided: "None",
            settling: false,
            pending: None,
        }
    }
}

/// What this actor's own writes left that the caches do not tell.
#[derive(Default)]
pub(super) struct Applied {
    /// The StatefulSet's generation after this actor's last write of it, until status holds it.
    pub(super) statefulset_generation: Option<i64>,
    /// This actor deleted the headless `<name>` to create it as ClusterIP: its creation is told
    /// as the migration's end rather than as drift.
    pub(super) service_migrated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_after_the_first_generation_starts_the_settle_clock() {
        let mut clock = SpecClock::default();
        clock.saw(Some(1));
        assert_eq!(
            clock.spec_changed_at, None,
            "the first generation seen is no edit"
        );
        clock.saw(Some(1));
        assert_eq!(
            clock.spec_changed_at, None,
            "the same generation is no edit"
        );
        clock.saw(Some(2));
        assert!(clock.spec_changed_at.is_some());
        assert_eq!(clock.generation, Some(2));
    }
}
