//! How long each stage of an instance step takes, from the watch event to the last write: one
//! histogram family with fixed labels (no per-instance series), so `/metrics` shows where a
//! config edit's latency goes.
//!
//! Process-wide, like the clock it reads: the writes are timed at the write gate and the
//! waits in the supervisor and the actors, which share no handle but the limiter. Nothing is
//! exported until [`register`] adds the family to a registry.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus::{HistogramOpts, HistogramVec, Registry};

/// A stage of the path from a watch event to the writes it leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// From the watch delivering the event until the supervisor passed it to the actor: the
    /// supervisor's mailbox and routing.
    Route,
    /// From the supervisor passing it on until the instance actor handled it.
    Deliver,
    /// From the actor queuing its step until the step message was handled.
    Queue,
    /// Waiting for a step permit (at most `--max-concurrent-steps` steps run at once).
    Permit,
    /// Reading the instance and its objects from the caches.
    Observe,
    /// From the observation to a decision: validation, rendering, the desired objects,
    /// the NetworkPolicy and TLS sub-steps, the credentials' reads.
    Plan,
    /// The pure decision.
    Decide,
    /// Carrying out a decision that writes (the writes included); the credentials' writes
    /// and live ACL changes count as one of their own.
    Perform,
    /// Deriving and (when it changed) writing the status at the end of a step that did not
    /// otherwise write.
    Report,
    /// Waiting at the write gate: the Lease fence, the token bucket and a write slot.
    WriteGate,
    /// One API request that writes, by the kind of object written.
    Write,
    /// From the watch event to the end of the first step after it that wrote.
    EventToWrite,
}

impl Stage {
    /// The `stage` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Route => "route",
            Stage::Deliver => "deliver",
            Stage::Queue => "queue",
            Stage::Permit => "permit",
            Stage::Observe => "observe",
            Stage::Plan => "plan",
            Stage::Decide => "decide",
            Stage::Perform => "perform",
            Stage::Report => "report",
            Stage::WriteGate => "write_gate",
            Stage::Write => "write",
            Stage::EventToWrite => "event_to_write",
        }
    }
}

/// The kinds a [`Stage::Write`] is labelled with; anything else counts as `Other`.
pub const WRITE_KINDS: [&str; 9] = [
    "ConfigMap",
    "StatefulSet",
    "Service",
    "Status",
    "Pod",
    "Secret",
    "NetworkPolicy",
    "Event",
    "Other",
];

static STAGE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    HistogramVec::new(
        HistogramOpts::new(
            "redis_operator_step_stage_seconds",
            "Time spent in each stage of an instance step, from the watch event to the writes; writes by kind",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0,
        ]),
        &["stage", "kind"],
    )
    .expect("constant, valid histogram options")
});

/// Adds the family to `registry`, every stage's series at 0 so that a quantile query finds
/// them before the first step.
pub fn register(registry: &Registry) -> Result<(), prometheus::Error> {
    for stage in [
        Stage::Route,
        Stage::Deliver,
        Stage::Queue,
        Stage::Permit,
        Stage::Observe,
        Stage::Plan,
        Stage::Decide,
        Stage::Perform,
        Stage::Report,
        Stage::WriteGate,
        Stage::EventToWrite,
    ] {
        STAGE_SECONDS.with_label_values(&[stage.as_str(), ""]);
    }
    for kind in WRITE_KINDS {
        STAGE_SECONDS.with_label_values(&[Stage::Write.as_str(), kind]);
    }
    registry.register(Box::new(STAGE_SECONDS.clone()))
}

/// Records that `stage` took `took`.
pub fn record(stage: Stage, took: Duration) {
    STAGE_SECONDS
        .with_label_values(&[stage.as_str(), ""])
        .observe(took.as_secs_f64());
}

/// Records the time since `since` as `stage`.
pub fn since(stage: Stage, since: Instant) {
    record(stage, since.elapsed());
}

/// Records one write of `kind` that took `took`.
pub fn record_write(kind: &'static str, took: Duration) {
    let kind = if WRITE_KINDS.contains(&kind) {
        kind
    } else {
        "Other"
    };
    STAGE_SECONDS
        .with_label_values(&[Stage::Write.as_str(), kind])
        .observe(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(stage: &str, kind: &str) -> u64 {
        STAGE_SECONDS
            .with_label_values(&[stage, kind])
            .get_sample_count()
    }

    #[test]
    fn writes_of_unknown_kinds_share_one_series() {
        let before = count("write", "Other");
        record_write("Lease", Duration::from_millis(1));
        record_write("Widget", Duration::from_millis(1));
        assert_eq!(count("write", "Other"), before + 2);
        let before = count("write", "StatefulSet");
        record_write("StatefulSet", Duration::from_millis(3));
        assert_eq!(count("write", "StatefulSet"), before + 1);
    }

    #[test]
    fn registered_series_render_before_any_step() {
        let registry = Registry::new();
        register(&registry).unwrap();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        for stage in ["route", "permit", "observe", "event_to_write"] {
            assert!(
                text.contains(&format!(
                    "redis_operator_step_stage_seconds_count{{kind=\"\",stage=\"{stage}\"}}"
                )),
                "{stage} missing"
            );
        }
        assert!(text.contains("kind=\"StatefulSet\",stage=\"write\""));
    }
}
