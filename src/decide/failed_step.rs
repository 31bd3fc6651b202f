//! What follows a step that failed: when to look again, whether a person is told, and what a
//! refusal of the API server leaves on the status.

use std::time::Duration;

use super::Notice;

/// How a step failed, as the operator read the API server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepFailure {
    /// The instance's namespace is being deleted: the instance goes with it.
    NamespaceTerminating,
    /// A write preconditioned on what the cache showed met a newer object.
    Conflict,
    /// The API server refused the object itself (422): the same write fails again until the
    /// spec changes.
    Refused,
    /// Anything else: an outage, a timeout, a fence closed.
    Other,
}

/// What a failed step leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterFailure {
    /// When to look again; `None`: at the next watch event only.
    pub retry_in: Option<Duration>,
    /// The consecutive failures counted from now on.
    pub failures: u32,
    /// Counted in `redis_operator_reconcile_errors_total`.
    pub counted: bool,
    /// A Warning to post.
    pub event: Option<Notice>,
    /// What status keeps of an API refusal of this generation, until the spec changes.
    pub refusal: Option<String>,
}

/// Consecutive failed steps after which a person is told with a Warning Event; fewer are
/// routine (a conflict, an API server restart) and only logged.
pub const FAILURES_BEFORE_EVENT: u32 = 3;

/// How soon a step whose write met a conflict looks again: soon, when the watch has brought
/// the newer object.
pub const CONFLICT_RETRY: Duration = Duration::from_millis(250);

/// 1 s, 2 s, 4 s ... for the `failures`th failure in a row, capped at `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(16)).min(max)
}

/// What follows `failure` (the error `error`, by its `reason`), after `failures` failed steps
/// in a row before it; `refusal_told`: this generation's refusal by the API server was told
/// already.
pub fn after_failure(
    failure: StepFailure,
    reason: &'static str,
    error: &str,
    failures: u32,
    max_backoff: Duration,
    refusal_told: bool,
) -> AfterFailure {
    let quiet = |retry_in, counted| AfterFailure {
        retry_in,
        failures,
        counted,
        event: None,
        refusal: None,
    };
    match failure {
        StepFailure::NamespaceTerminating => quiet(None, false),
        // Routine: no failure is counted in a row, none is told.
        StepFailure::Conflict => quiet(Some(CONFLICT_RETRY), true),
        // Final until the spec changes, and a spec change starts the next step.
        StepFailure::Refused if refusal_told => quiet(None, true),
        StepFailure::Refused => {
            let message = format!("{error}; not retried until the spec changes");
            AfterFailure {
                event: Some(Notice::warning("ApiRefused", "Reconcile", message.clone())),
                refusal: Some(message),
                ..quiet(None, true)
            }
        }
        StepFailure::Other => {
            let failures = failures + 1;
            let event = (failures == FAILURES_BEFORE_EVENT).then(|| {
                let note = format!(
                    "{error}; failed {FAILURES_BEFORE_EVENT} times in a row, retrying with backoff"
                );
                Notice::warning(reason, "Reconcile", note)
            });
            AfterFailure {
                retry_in: Some(backoff(failures, max_backoff)),
                failures,
                counted: true,
                event,
                refusal: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1, MAX), Duration::from_secs(1));
        assert_eq!(backoff(2, MAX), Duration::from_secs(2));
        assert_eq!(backoff(4, MAX), Duration::from_secs(8));
        assert_eq!(backoff(30, MAX), MAX);
    }

    #[test]
    fn only_the_third_failure_in_a_row_is_told_and_each_backs_off_longer() {
        let mut failures = 0;
        let mut told = Vec::new();
        for expected in [1, 2, 4, 8] {
            let refused = "connection refused";
            let after = after_failure(
                StepFailure::Other,
                "ApplyFailed",
                refused,
                failures,
                MAX,
                false,
            );
            assert_eq!(after.retry_in, Some(Duration::from_secs(expected)));
            assert!(after.counted && after.refusal.is_none());
            failures = after.failures;
            told.extend(after.event);
        }
        assert_eq!(failures, 4);
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(told[0].reason, "ApplyFailed");
        assert!(told[0].warning && told[0].fact.is_none());
        assert!(
            told[0].note.contains("failed 3 times in a row"),
            "{}",
            told[0].note
        );
    }

    #[test]
    fn a_conflict_or_a_deleted_namespace_is_routine() {
        let conflict = after_failure(StepFailure::Conflict, "Conflict", "", 2, MAX, false);
        assert_eq!(conflict.retry_in, Some(CONFLICT_RETRY));
        assert_eq!((conflict.failures, conflict.event), (2, None));
        let terminating = StepFailure::NamespaceTerminating;
        let going = after_failure(terminating, "Conflict", "", 2, MAX, false);
        assert_eq!(going.retry_in, None);
        assert!(!going.counted && going.event.is_none());
    }

    #[test]
    fn an_api_refusal_is_final_and_told_once_per_generation() {
        let (refused, invalid) = (StepFailure::Refused, "StatefulSet is invalid");
        let first = after_failure(refused, "ApplyFailed", invalid, 0, MAX, false);
        assert_eq!(first.retry_in, None, "not retried: the spec must change");
        let message = "StatefulSet is invalid; not retried until the spec changes";
        assert_eq!(first.refusal.as_deref(), Some(message));
        let event = first.event.expect("told");
        assert_eq!((event.reason, event.note.as_str()), ("ApiRefused", message));
        let again = after_failure(refused, "ApplyFailed", invalid, 0, MAX, true);
        assert_eq!(
            (again.retry_in, again.event, again.refusal),
            (None, None, None)
        );
    }
}
