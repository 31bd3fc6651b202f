//! The Events the operator posts on an instance, and the facts that name them.

use std::time::Duration;

use crate::config::render::short_hash;
use crate::crd::RolloutRecord;

use super::{Outcome, Recalled, Rejection};

/// An Event to post on the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// Why, a fixed short string.
    pub reason: &'static str,
    /// What the operator did, a fixed short string.
    pub action: &'static str,
    /// The details.
    pub note: String,
    /// The recorded fact it tells (see [`record_fact`]), when there is one: whoever tells it
    /// again, a retry or the next leader, tells the same Event. Without one, the same note
    /// again is the same Event happening again.
    pub fact: Option<String>,
}

impl Notice {
    pub(super) fn normal(reason: &'static str, action: &'static str, note: String) -> Self {
        Notice {
            warning: false,
            reason,
            action,
            note,
            fact: None,
        }
    }

    /// This Notice, telling the fact `fact`.
    pub fn of_fact(self, fact: String) -> Self {
        Notice {
            fact: Some(fact),
            ..self
        }
    }

    /// The Event to post.
    pub fn told(&self) -> crate::events::Told {
        crate::events::Told {
            warning: self.warning,
            reason: self.reason.to_owned(),
            action: self.action.to_owned(),
            note: self.note.clone(),
            occurrence: match &self.fact {
                Some(fact) => crate::events::Occurrence::Fact(fact.clone()),
                None => crate::events::Occurrence::Repeat,
            },
        }
    }
}

/// What identifies the restart `record` in Events about it: why and when it began, the same
/// after the record went through status (which keeps whole seconds) and back to a restarted
/// operator, and after a change made before any pod restarted moved it onto another config.
pub fn record_fact(record: &RolloutRecord) -> String {
    format!(
        "restart {} {}",
        record.reason.as_str(),
        record.started_at.0.as_second()
    )
}

/// `RestartStarted` for `record`, told by an operator that took the restart over and may not
/// know the config it started from; the same Event as the one its starter told.
pub fn restart_resumed(record: &RolloutRecord) -> Notice {
    let note = format!(
        "{}: pods restart onto config {} ({})",
        record.reason.as_str(),
        short_hash(&record.config_hash),
        record.strategy.as_str()
    );
    Notice::normal("RestartStarted", "Restart", note).of_fact(record_fact(record))
}

impl Notice {
    pub(super) fn warning(reason: &'static str, action: &'static str, note: String) -> Self {
        Notice {
            warning: true,
            ..Notice::normal(reason, action, note)
        }
    }
}

/// What identifies a config the pods failed on, at `generation`: status records it
/// (`rejectedConfigHash`, the condition's reason) for as long as the spec holds it, so a
/// restarted operator names the same failure the same way.
fn failure_fact(failure: &Rejection, generation: i64) -> String {
    format!(
        "{} {} generation {}",
        failure.reason, failure.spec_hash, generation
    )
}

/// `RedisRejectedConfig`: redis-server refused the newest valid config.
pub fn redis_rejected(failure: &Rejection, generation: i64) -> Notice {
    Notice::warning("RedisRejectedConfig", "Restart", failure.message.clone())
        .of_fact(failure_fact(failure, generation))
}

/// `RolloutRolledBack` or `RolloutHalted`: a pod the restart started never became ready.
pub fn rollout_failed(failure: &Rejection, outcome: Outcome, generation: i64) -> Notice {
    failure_retold(failure, outcome.into(), generation)
}

/// A failure recalled from status, told again as its finder told it: the same Event, so a
/// second telling is a no-op.
pub fn failure_retold(failure: &Rejection, recalled: Recalled, generation: i64) -> Notice {
    Notice::warning(recalled.event_reason(), "Restart", failure.message.clone())
        .of_fact(failure_fact(failure, generation))
}

/// `RolloutStuck`: the restart `record` has not finished within `deadline`.
pub fn restart_overdue(record: &RolloutRecord, deadline: Duration) -> Notice {
    let note = format!(
        "restart to config {} not finished {}s after it began at {}; check the pods' readiness and redis logs",
        short_hash(&record.config_hash),
        deadline.as_secs(),
        record.started_at.0
    );
    Notice::warning("RolloutStuck", "Restart", note).of_fact(record_fact(record))
}

/// `InvalidConfig`: generation `generation` fails validation, with `message` saying why.
pub fn invalid_config(generation: i64, message: String) -> Notice {
    Notice::warning("InvalidConfig", "Validate", message)
        .of_fact(format!("refused generation {generation}"))
}

/// `ReplicationNotEnabled`: the `replicas` pods of an instance from before replication run as
/// unrelated servers until the user agrees to convert it.
pub fn replication_not_enabled(replicas: i32) -> Notice {
    let note = format!(
        "{replicas} pods run as unrelated servers, each with its own data; annotate the instance with {}=true to make pod 0 the primary and the others its replicas (their own data is replaced by the primary's)",
        crate::resources::CONVERT_ANNOTATION
    );
    Notice::warning("ReplicationNotEnabled", "Replicate", note)
}

/// `LiveConfigRefused`: Redis refused the live directives whose hash is `live_hash`, with
/// `error`; the note is also what status says of it.
pub fn live_config_refused(live_hash: &str, error: &str) -> Notice {
    let note = format!(
        "live config change refused: {error}; every pod keeps its running config and the \
         ConfigMap is unchanged. Fix spec.config"
    );
    Notice::warning("LiveConfigRefused", "LiveApply", note)
        .of_fact(format!("live config {live_hash} refused"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::HALTED_REASON;
    use crate::decide::pods_fixtures::{record, t};

    fn failure(reason: &'static str) -> Rejection {
        Rejection {
            hash: "a1b2c3".into(),
            spec_hash: "d4e5f6".into(),
            reason,
            message: "pod redis-example-0 never became ready".into(),
        }
    }

    /// A failure told again from status by another operator is the very Event its finder
    /// told, so telling it twice is a no-op; a later generation holding it is another fact.
    #[test]
    fn a_failure_retold_from_status_is_the_event_its_finder_told() {
        let rejected = failure("RedisRejectedConfig");
        let never_ready = failure("NeverReady");
        for (found, recalled) in [
            (
                redis_rejected(&rejected, 4),
                failure_retold(&rejected, Recalled::Rejected, 4),
            ),
            (
                rollout_failed(&never_ready, Outcome::RolledBack, 4),
                failure_retold(&never_ready, Recalled::RolledBack, 4),
            ),
            (
                rollout_failed(&never_ready, Outcome::Halted, 4),
                failure_retold(&never_ready, Recalled::Halted, 4),
            ),
        ] {
            assert_eq!(found, recalled);
            assert!(found.warning);
            assert_eq!(found.note, rejected.message);
        }
        assert_eq!(
            Recalled::from(Outcome::Halted).event_reason(),
            HALTED_REASON
        );
        assert_ne!(
            redis_rejected(&rejected, 4).fact,
            redis_rejected(&rejected, 5).fact
        );
    }

    #[test]
    fn an_overdue_restart_and_a_refusal_name_their_facts() {
        let mut overdue = record("a1b2c3d4e5f6a7b8");
        overdue.started_at.0 = t(100);
        let stuck = restart_overdue(&overdue, Duration::from_secs(300));
        assert_eq!(stuck.reason, "RolloutStuck");
        assert_eq!(stuck.fact, Some(record_fact(&overdue)));
        assert!(
            stuck.note.contains("not finished 300s after it began"),
            "{}",
            stuck.note
        );
        let invalid = invalid_config(7, "unknown directive foo".into());
        assert_eq!(invalid.fact.as_deref(), Some("refused generation 7"));
        let live = live_config_refused("abc", "ERR bad value");
        assert!(
            live.note
                .starts_with("live config change refused: ERR bad value;")
        );
        assert_eq!(live.fact.as_deref(), Some("live config abc refused"));
        assert!(
            replication_not_enabled(3)
                .note
                .starts_with("3 pods run as unrelated servers")
        );
    }
}
