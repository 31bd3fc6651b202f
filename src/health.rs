//! What `/readyz` and `/healthz` report: whether the watch caches hold their first lists, and
//! which watches are failing (the API server is down or refuses the operator) and since when.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Shared between the watch tasks, which report, and the HTTP side, which asks.
#[derive(Default)]
pub struct Health {
    synced: AtomicBool,
    failing: Mutex<BTreeMap<&'static str, Instant>>,
    /// Why this process does not act: it waits for the leader Lease.
    standby: Mutex<Option<String>>,
    /// Why this leader writes nothing: it could not renew its Lease.
    lapsed: Mutex<Option<String>>,
}

impl Health {
    /// Every cache holds its first list and the instances were routed; true the first time.
    pub fn set_synced(&self) -> bool {
        !self.synced.swap(true, Ordering::SeqCst)
    }

    /// The watch of `kind` failed; it retries with backoff.
    pub fn watch_failed(&self, kind: &'static str) {
        self.failing
            .lock()
            .expect("health lock")
            .entry(kind)
            .or_insert_with(Instant::now);
    }

    /// The watch of `kind` delivered an event.
    pub fn watch_ok(&self, kind: &'static str) {
        let mut failing = self.failing.lock().expect("health lock");
        if !failing.is_empty() {
            failing.remove(kind);
        }
    }

    /// This process waits for the Lease (`Some(why)`), or holds it (`None`).
    pub fn set_standby(&self, why: Option<String>) {
        *self.standby.lock().expect("health lock") = why;
    }

    /// This leader could not renew its Lease for a lease duration (`Some(why)`): it writes
    /// nothing and is not ready until a renewal goes through; `None` once one did.
    pub fn set_lapsed(&self, why: Option<String>) {
        *self.lapsed.lock().expect("health lock") = why;
    }

    /// Ready: a standby waiting for the Lease (it is ready to take over, and a Deployment's
    /// rollout needs every replica ready), or the leader with its caches synced and no watch
    /// failing, so its decisions rest on current caches. Says which.
    pub fn readiness(&self) -> Result<String, String> {
        if let Some(why) = self.standby.lock().expect("health lock").clone() {
            return Ok(format!("ok: standby, {why}"));
        }
        if !self.synced.load(Ordering::SeqCst) {
            return Err("waiting for the watch caches' first lists".into());
        }
        let mut problems = Vec::new();
        let failing = self.failing_watches(Duration::ZERO);
        if !failing.is_empty() {
            problems.push(format!("watches failing: {}", failing.join(", ")));
        }
        if let Some(why) = self.lapsed.lock().expect("health lock").clone() {
            problems.push(why);
        }
        if problems.is_empty() {
            Ok("ok".into())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Alive unless a watch has been failing for longer than `limit`.
    pub fn liveness(&self, limit: Duration) -> Result<(), String> {
        match self.failing_watches(limit) {
            failing if failing.is_empty() => Ok(()),
            failing => Err(format!(
                "watches failing for over {}s: {}",
                limit.as_secs(),
                failing.join(", ")
            )),
        }
    }

    fn failing_watches(&self, longer_than: Duration) -> Vec<String> {
        let now = Instant::now();
        self.failing
            .lock()
            .expect("health lock")
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= longer_than)
            .map(|(kind, since)| format!("{kind} ({}s)", now.duration_since(*since).as_secs()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_watch_unreadies_at_once_and_kills_after_the_limit() {
        let health = Health::default();
        assert!(health.readiness().is_err(), "not synced yet");
        assert!(health.set_synced());
        assert!(!health.set_synced());
        assert_eq!(health.readiness(), Ok("ok".into()));
        health.watch_failed("Pod");
        let unready = health.readiness().unwrap_err();
        assert!(unready.contains("Pod"), "{unready}");
        assert_eq!(health.liveness(Duration::from_secs(60)), Ok(()));
        tokio::time::advance(Duration::from_secs(61)).await;
        health.watch_failed("Pod");
        assert!(
            health.liveness(Duration::from_secs(60)).is_err(),
            "the first failure counts"
        );
        health.watch_ok("Pod");
        assert_eq!(health.readiness(), Ok("ok".into()));
        health.set_standby(Some("lease held by b".into()));
        assert_eq!(
            health.readiness(),
            Ok("ok: standby, lease held by b".into())
        );
        health.set_standby(None);
        assert_eq!(health.liveness(Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn a_leader_that_cannot_renew_is_not_ready_but_alive() {
        let health = Health::default();
        health.set_synced();
        health.set_lapsed(Some("the leader lease could not be renewed for 15s".into()));
        health.watch_failed("Pod");
        let unready = health.readiness().unwrap_err();
        assert!(
            unready.contains("watches failing: Pod") && unready.contains("could not be renewed"),
            "{unready}"
        );
        assert_eq!(health.liveness(Duration::from_secs(60)), Ok(()));
        health.watch_ok("Pod");
        health.set_lapsed(None);
        assert_eq!(health.readiness(), Ok("ok".into()));
    }
}
