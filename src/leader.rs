//! Leader election on a `coordination.k8s.io` Lease: only its holder runs instance actors, and
//! every write is fenced by the time until which the lease is surely still held, so a second
//! operator (a standby replica, or a second install by mistake) never writes alongside.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::health::Health;

/// Failures talking to the API about the Lease.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the Lease failed.
    #[error("failed to read lease {name}: {source}")]
    Read {
        /// The Lease.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the Lease failed (a conflict means someone else wrote it first).
    #[error("failed to write lease {name}: {source}")]
    Write {
        /// The Lease.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Another replica wrote the Lease first (both created it, or both took it over): routine.
    pub fn is_race(&self) -> bool {
        matches!(self, Error::Write { source: kube::Error::Api(status), .. } if status.code == 409)
    }
}

/// Which Lease, who we are, and how long a hold lasts.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// This process's identity (the pod name in a cluster).
    pub identity: String,
    /// How long a hold lasts without renewal; a standby takes over after that.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// How often a standby looks again.
    pub retry_every: Duration,
}

/// What to do with the Lease as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// There is none: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or its holder stopped renewing: take it.
    TakeOver,
    /// Someone else holds it and renews it.
    Wait {
        /// Who.
        holder: String,
    },
}

/// Decides from the Lease's spec and how long, by our own clock, it has stayed unchanged (so
/// clock skew between machines does not matter). A holder is waited for as long as the
/// duration it wrote into the Lease, which is what its fence counts on, whatever ours is.
pub fn next_step(
    spec: Option<&LeaseSpec>,
    me: &str,
    unchanged_for: Duration,
    duration: Duration,
) -> LeaseStep {
    let Some(spec) = spec else {
        return LeaseStep::Create;
    };
    let holders_duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(duration, Duration::from_secs);
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => LeaseStep::Renew,
        None | Some("") => LeaseStep::TakeOver,
        Some(_) if unchanged_for >= holders_duration => LeaseStep::TakeOver,
        Some(holder) => LeaseStep::Wait {
            holder: holder.to_owned(),
        },
    }
}

/// Until when this process may write. Shared by the elector, which extends it, and every
/// writer, which checks it before each request.
#[derive(Debug)]
pub struct Fence {
    valid_until: Mutex<Option<Instant>>,
    /// Bumped each time writing becomes allowed again after a lapse, to wake waiting actors.
    regained: watch::Sender<u64>,
}

impl Fence {
    /// A fence that allows nothing until extended.
    pub fn closed() -> Self {
        Self {
            valid_until: Mutex::new(None),
            regained: watch::channel(0).0,
        }
    }

    /// A fence that always allows writing: leader election is off.
    pub fn open() -> Self {
        let fence = Self::closed();
        *fence.valid_until.lock().expect("fence lock") = Some(Instant::now() + YEARS);
        fence
    }

    /// Whether a write may start now.
    pub fn allows(&self) -> bool {
        self.valid_until
            .lock()
            .expect("fence lock")
            .is_some_and(|until| Instant::now() < until)
    }

    fn extend(&self, until: Instant) {
        let lapsed = !self.allows();
        *self.valid_until.lock().expect("fence lock") = Some(until);
        if lapsed {
            self.regained.send_modify(|n| *n += 1);
        }
    }

    fn revoke(&self) {
        *self.valid_until.lock().expect("fence lock") = None;
    }

    /// Changes each time writing is allowed again after a lapse.
    pub fn regained(&self) -> watch::Receiver<u64> {
        self.regained.subscribe()
    }
}

const YEARS: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The Lease's last state as read, and when by our clock it last changed.
struct Seen {
    lease: Option<Lease>,
    version: Option<String>,
    since: Instant,
}

/// Takes and keeps the Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    seen: Seen,
    recorder: Recorder,
    told_standby: Option<String>,
    /// This elector has held the Lease: finding it taken then means this operator was
    /// deposed and stops, so it does not announce itself as a standby.
    has_led: bool,
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// We hold the Lease until at least this instant.
    Until(Instant),
    /// Someone else holds it.
    By(String),
}

impl Elector {
    /// An elector for `config`, publishing Events as `reporter`.
    pub fn new(client: Client, config: LeaseConfig, reporter: Reporter) -> Self {
        Self {
            api: Api::namespaced(client.clone(), &config.namespace),
            recorder: Recorder::new(client, reporter),
            config,
            seen: Seen {
                lease: None,
                version: None,
                since: Instant::now(),
            },
            told_standby: None,
            has_led: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn lease_spec(&self, acquired: bool) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let old = self.seen.lease.as_ref().and_then(|l| l.spec.clone());
        let transitions = old.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.duration.as_secs() as i32),
            acquire_time: if acquired {
                Some(now.clone())
            } else {
                old.as_ref().and_then(|s| s.acquire_time.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if acquired {
                transitions + 1
            } else {
                transitions
            }),
            ..LeaseSpec::default()
        }
    }

    async fn read(&mut self) -> Result<(), Error> {
        let lease = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|source| Error::Read {
                name: self.config.name.clone(),
                source,
            })?;
        self.remember(lease);
        Ok(())
    }

    fn remember(&mut self, lease: Option<Lease>) {
        let version = lease
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone());
        if version != self.seen.version {
            self.seen.since = Instant::now();
        }
        self.seen = Seen {
            lease,
            version,
            since: self.seen.since,
        };
    }

    /// One attempt to take or renew the Lease. A renewal writes with the last version read, so
    /// it needs no read first; a conflict means someone else wrote it, and the next attempt reads.
    pub async fn attempt(&mut self) -> Result<Held, Error> {
        let started = Instant::now();
        if self.seen.lease.is_none() {
            self.read().await?;
        }
        let step = next_step(
            self.seen.lease.as_ref().and_then(|l| l.spec.as_ref()),
            &self.config.identity,
            self.seen.since.elapsed(),
            self.config.duration,
        );
        let write_err = |name: &str| {
            let name = name.to_owned();
            move |source| Error::Write { name, source }
        };
        let written = match step {
            LeaseStep::Wait { holder } => {
                if !self.has_led {
                    self.tell_standby(&holder).await;
                }
                // Read again next time, to see whether the holder still renews.
                self.seen.lease = None;
                return Ok(Held::By(holder));
            }
            LeaseStep::Create => {
                let lease = Lease {
                    metadata: kube::api::ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.lease_spec(true)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            LeaseStep::Renew | LeaseStep::TakeOver => {
                let mut lease = self.seen.lease.clone().expect("read above");
                lease.spec = Some(self.lease_spec(step == LeaseStep::TakeOver));
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                if step != LeaseStep::Renew {
                    info!(lease = %self.config.name, namespace = %self.config.namespace,
                        identity = %self.config.identity, "acquired the lease; acting on instances");
                    self.told_standby = None;
                }
                self.has_led = true;
                self.remember(Some(lease));
                Ok(Held::Until(started + self.config.duration))
            }
            Err(source) => {
                // Someone else wrote it (or it vanished): read it afresh next time.
                self.seen.lease = None;
                Err(write_err(&self.config.name)(source))
            }
        }
    }

    /// Says once per holder, in the log and as an Event on the Lease, that this operator waits.
    async fn tell_standby(&mut self, holder: &str) {
        if self.told_standby.as_deref() == Some(holder) {
            return;
        }
        self.told_standby = Some(holder.to_owned());
        let note = format!(
            "lease {}/{} is held by {holder}; {} stays passive and does not act until it is released or expires",
            self.config.namespace, self.config.name, self.config.identity
        );
        warn!(lease = %self.config.name, holder, identity = %self.config.identity, "standby: another operator holds the lease");
        if let Some(lease) = &self.seen.lease {
            let event = Event {
                type_: EventType::Normal,
                reason: "Standby".into(),
                note: Some(note),
                action: "LeaderElection".into(),
                secondary: None,
            };
            if let Err(error) = self.recorder.publish(&event, &lease.object_ref(&())).await {
                warn!(%error, "failed to publish the standby event");
            }
        }
    }

    /// Gives the Lease up on a clean stop, so a standby takes over at once.
    pub async fn release(&mut self) {
        let Some(mut lease) = self.seen.lease.clone() else {
            return;
        };
        if let Some(spec) = lease.spec.as_mut() {
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return;
            }
            spec.holder_identity = None;
        }
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.config.name, "released the lease"),
            Err(error) => warn!(%error, "failed to release the lease; it expires by itself"),
        }
    }
}

/// Whether a leader whose last renewal went through `since_renewed` ago has lapsed: a whole
/// lease duration has passed, so a standby may have taken over. It then writes nothing (its
/// fence closed long before), reports 0 on `redis_operator_leader` and fails `/readyz` until
/// a renewal goes through, or it sees the Lease held by another and stops.
pub fn lapsed(since_renewed: Duration, duration: Duration) -> bool {
    since_renewed >= duration
}

/// Keeps renewing while held: extends `fence` on each renewal, and returns the new holder once
/// the Lease is seen held by someone else (the fence is then closed at once). While no renewal
/// goes through for a lease duration, says so on `health` and `leading`.
pub async fn keep(
    elector: &mut Elector,
    fence: &Fence,
    health: &Health,
    leading: &prometheus::IntGauge,
) -> String {
    let config = elector.config().clone();
    let mut renewed = Instant::now();
    let mut told = false;
    loop {
        let wait = match elector.attempt().await {
            Ok(Held::Until(until)) => {
                renewed = Instant::now();
                fence.extend(until - request_timeout(config.duration));
                if told {
                    told = false;
                    info!(lease = %config.name, "renewed the lease again; acting on instances");
                    health.set_lapsed(None);
                    leading.set(1);
                }
                config.renew_every
            }
            Ok(Held::By(holder)) => {
                fence.revoke();
                return holder;
            }
            Err(error) => {
                let since = renewed.elapsed();
                if lapsed(since, config.duration) && !told {
                    told = true;
                    warn!(%error, since_secs = since.as_secs(),
                        "cannot renew the lease for a lease duration; not leading until it is renewed");
                    health.set_lapsed(Some(format!(
                        "the leader lease could not be renewed for {}s; nothing is written",
                        since.as_secs()
                    )));
                    leading.set(0);
                } else if !fence.allows() && !told {
                    warn!(%error, "cannot renew the lease; writes are paused until it is renewed");
                }
                config.retry_every
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// How long every API request of a leader may take: a write admitted just before the fence
/// closes must have landed, or failed, before a standby can take over, which is a fifth of a
/// lease duration later. At least a second.
pub fn request_timeout(duration: Duration) -> Duration {
    (duration / 5).max(Duration::from_secs(1))
}

/// Waits until the Lease is ours; extends `fence` and returns then. Meanwhile `/readyz` says
/// who holds it.
pub async fn acquire(elector: &mut Elector, fence: &Fence, health: &Health) {
    let config = elector.config().clone();
    health.set_standby(Some(format!(
        "waiting for lease {}/{}",
        config.namespace, config.name
    )));
    loop {
        match elector.attempt().await {
            Ok(Held::Until(until)) => {
                fence.extend(until - request_timeout(config.duration));
                health.set_standby(None);
                return;
            }
            Ok(Held::By(holder)) => health.set_standby(Some(format!(
                "lease {}/{} is held by {holder}",
                config.namespace, config.name
            ))),
            Err(error) if error.is_race() => {
                tracing::debug!(%error, "another replica wrote the lease first")
            }
            Err(error) => warn!(%error, "failed to take the lease; retrying"),
        }
        tokio::time::sleep(config.retry_every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            ..LeaseSpec::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn lease_steps() {
        let fresh = Duration::from_secs(3);
        assert_eq!(next_step(None, "a", fresh, D), LeaseStep::Create);
        assert_eq!(
            next_step(Some(&held_by(Some("a"))), "a", fresh, D),
            LeaseStep::Renew
        );
        assert_eq!(
            next_step(Some(&held_by(None)), "a", fresh, D),
            LeaseStep::TakeOver
        );
        assert_eq!(
            next_step(Some(&held_by(Some(""))), "a", fresh, D),
            LeaseStep::TakeOver
        );
        assert_eq!(
            next_step(Some(&held_by(Some("b"))), "a", fresh, D),
            LeaseStep::Wait { holder: "b".into() }
        );
        assert_eq!(
            next_step(Some(&held_by(Some("b"))), "a", D, D),
            LeaseStep::TakeOver,
            "unrenewed for a whole lease duration, by our clock"
        );
        let mut long = held_by(Some("b"));
        long.lease_duration_seconds = Some(60);
        assert_eq!(
            next_step(Some(&long), "a", D, D),
            LeaseStep::Wait { holder: "b".into() },
            "the holder's own duration in the Lease is honoured, not ours"
        );
        assert_eq!(
            next_step(Some(&long), "a", Duration::from_secs(60), D),
            LeaseStep::TakeOver
        );
    }

    #[test]
    fn a_leader_lapses_after_a_lease_duration_without_renewal() {
        assert!(!lapsed(Duration::from_secs(14), D));
        assert!(lapsed(D, D));
        assert!(
            request_timeout(D) <= D / 5,
            "a request ends before a standby may take over"
        );
        assert_eq!(
            request_timeout(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fence_allows_until_its_deadline_and_says_when_it_is_regained() {
        let fence = Fence::closed();
        assert!(!fence.allows());
        let mut regained = fence.regained();
        fence.extend(Instant::now() + Duration::from_secs(10));
        assert!(fence.allows());
        assert!(regained.has_changed().unwrap());
        regained.mark_unchanged();
        fence.extend(Instant::now() + Duration::from_secs(10));
        assert!(
            !regained.has_changed().unwrap(),
            "a renewal in time is no regain"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!fence.allows());
        fence.extend(Instant::now() + Duration::from_secs(10));
        assert!(regained.has_changed().unwrap());
        fence.revoke();
        assert!(!fence.allows());
        assert!(Fence::open().allows());
    }
}
