//! Whether an instance actor at rest may hibernate (stop, to be started again by the next
//! event for its instance): only when a fresh actor over the same caches would decide and tell
//! exactly what it would. Pure: the actor reads its memory into a [`RestView`].

use std::time::Duration;

/// What of an actor's memory a fresh actor would not have, read when its rest delay ends.
/// Every `true` is a reason to stay.
#[derive(Debug, Clone, Default)]
pub struct RestView {
    /// The last step decided something other than `Idle` (every object and pod runs the
    /// current spec, nothing held, nothing to wait for).
    pub not_idle: bool,
    /// The specs it remembers as last valid and last healthy are not the current spec, or
    /// the status records another as healthy: a fresh actor would drive elsewhere.
    pub other_spec: bool,
    /// A step is queued or keeps a turn, or a timer is pending (retry, deadline, probe, check).
    pub busy: bool,
    /// The status records a restart in flight.
    pub restarting: bool,
    /// Writes of its own the caches do not show yet: the read-your-writes overlay, Secrets,
    /// role Services, a StatefulSet generation not yet in status, an ACL not yet in status.
    pub unseen_writes: bool,
    /// A failure it found or recalled: a config Redis refused, a halted rollout, pods timed
    /// while unready, live directives refused, a write the API server refused.
    pub failure: bool,
    /// Something told once that a fresh actor would tell or count again: a credentials or TLS
    /// problem, an unconverted instance, a config mismatch.
    pub told: bool,
    /// What a fresh actor would learn again by asking the API or the pods: TLS material, user
    /// Secrets read, live directives verified, replication probes.
    pub asked: bool,
    /// It deleted the headless `<name>` Service to create it as ClusterIP.
    pub migrating: bool,
    /// How long an edit would still wait for edits to settle after the last restart (see
    /// [`super::settle_window_left`]).
    pub settle_window: Option<Duration>,
}

/// What an actor whose rest delay ended does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    /// Offer the supervisor to hibernate.
    Hibernate,
    /// Look again after this long: only the settle window separates it from a fresh actor.
    After(Duration),
    /// Stay, for this reason (logged): the next step that ends at rest starts the delay again.
    Stay(&'static str),
}

/// Conservative: any memory a fresh actor lacks keeps the actor, whether or not that memory
/// would change the next decision.
pub fn rest(view: &RestView) -> Rest {
    let reasons = [
        (view.not_idle, "NotIdle"),
        (view.other_spec, "OtherSpec"),
        (view.busy, "Busy"),
        (view.restarting, "Restarting"),
        (view.unseen_writes, "UnseenWrites"),
        (view.failure, "Failure"),
        (view.told, "Told"),
        (view.asked, "Asked"),
        (view.migrating, "Migrating"),
    ];
    if let Some((_, reason)) = reasons.into_iter().find(|(holds, _)| *holds) {
        return Rest::Stay(reason);
    }
    match view.settle_window {
        Some(left) => Rest::After(left),
        None => Rest::Hibernate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_actor_holding_nothing_a_fresh_one_lacks_hibernates() {
        let clear = RestView::default;
        let table: [(RestView, Rest); 12] = [
            (clear(), Rest::Hibernate),
            (
                RestView {
                    not_idle: true,
                    ..clear()
                },
                Rest::Stay("NotIdle"),
            ),
            (
                RestView {
                    other_spec: true,
                    ..clear()
                },
                Rest::Stay("OtherSpec"),
            ),
            (
                RestView {
                    busy: true,
                    ..clear()
                },
                Rest::Stay("Busy"),
            ),
            (
                RestView {
                    restarting: true,
                    ..clear()
                },
                Rest::Stay("Restarting"),
            ),
            (
                RestView {
                    unseen_writes: true,
                    ..clear()
                },
                Rest::Stay("UnseenWrites"),
            ),
            (
                RestView {
                    failure: true,
                    ..clear()
                },
                Rest::Stay("Failure"),
            ),
            (
                RestView {
                    told: true,
                    ..clear()
                },
                Rest::Stay("Told"),
            ),
            (
                RestView {
                    asked: true,
                    ..clear()
                },
                Rest::Stay("Asked"),
            ),
            (
                RestView {
                    migrating: true,
                    ..clear()
                },
                Rest::Stay("Migrating"),
            ),
            (
                RestView {
                    settle_window: Some(Duration::from_secs(7)),
                    ..clear()
                },
                Rest::After(Duration::from_secs(7)),
            ),
            // A reason to stay outweighs the window: nothing to look at again for.
            (
                RestView {
                    restarting: true,
                    settle_window: Some(Duration::from_secs(7)),
                    ..clear()
                },
                Rest::Stay("Restarting"),
            ),
        ];
        for (view, want) in table {
            assert_eq!(rest(&view), want, "{view:?}");
        }
    }
}
