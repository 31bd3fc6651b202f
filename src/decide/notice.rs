//! The Events the operator posts on an instance, and the facts that name them.

use crate::config::render::short_hash;
use crate::crd::RolloutRecord;

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
