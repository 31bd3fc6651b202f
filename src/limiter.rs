//! The gate every write of the operator passes: only while this process holds the leader
//! Lease, at most `concurrency` in flight, and a token bucket of `qps` refilled per second up
//! to `burst`, so a cold start of thousands of instances queues here instead of turning into a
//! storm of 429s at the API server. Whole instance steps pass a gate of their own, so that
//! the instances waiting their turn hold no half-done step in memory, and so do the writes
//! that make the API server allocate a Service's cluster IP and the checks that dial pods.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::leader::Fence;

/// How fast the operator may write.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sustained writes per second.
    pub qps: f64,
    /// Writes allowed at once after a quiet period.
    pub burst: u32,
    /// Writes in flight at once.
    pub concurrency: usize,
    /// Instance steps running at once.
    pub steps: usize,
    /// Checks of pods' Redis (live config, served certificate) running at once.
    pub pod_checks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            qps: 200.0,
            burst: 1000,
            concurrency: 32,
            steps: 64,
            pod_checks: 16,
        }
    }
}

/// Creations of a ClusterIP Service in flight at once. The API server allocates cluster IPs
/// one at a time (each allocation writes an IPAddress object), so more creations in flight only
/// queue there: on a busy 2-core machine, with 30 in flight, a creation took 2.9 s (p50) and
/// most outlived the writes' 3 s timeout, each retry allocating (and releasing) one more
/// address. Queued here instead, each waits without a timer running.
pub const ALLOCATIONS_AT_ONCE: usize = 4;

/// Shared by every instance actor; cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    slots: Arc<Semaphore>,
    steps: Arc<Semaphore>,
    allocations: Arc<Semaphore>,
    pod_checks: Arc<Semaphore>,
    bucket: Arc<Mutex<Bucket>>,
    fence: Arc<Fence>,
    /// How long a write to a pod's Redis may take under leader election: the same bound as an
    /// API write's (see [`crate::leader::request_timeout`]); `None` without leader election.
    pod_write_timeout: Option<Duration>,
}

/// A write was refused because this process does not (or no longer surely) hold the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not the leader: another operator may hold the lease, so nothing is written")]
pub struct NotLeader;

struct Bucket {
    tokens: f64,
    burst: f64,
    qps: f64,
    last: Instant,
}

impl Bucket {
    /// Takes a token now, or says how long until one is free (then it is reserved).
    fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }
}

impl Limiter {
    /// A limiter with these limits that lets writes through while `fence` allows; a zero qps,
    /// concurrency, step or pod check count is taken as one.
    pub fn new(limits: Limits, fence: Arc<Fence>) -> Self {
        let burst = f64::from(limits.burst.max(1));
        Self {
            slots: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            steps: Arc::new(Semaphore::new(limits.steps.max(1))),
            allocations: Arc::new(Semaphore::new(ALLOCATIONS_AT_ONCE)),
            pod_checks: Arc::new(Semaphore::new(limits.pod_checks.max(1))),
            bucket: Arc::new(Mutex::new(Bucket {
                tokens: burst,
                burst,
                qps: limits.qps.max(0.001),
                last: Instant::now(),
            })),
            fence,
            pod_write_timeout: None,
        }
    }

    /// This limiter with writes to pods abandoned after `timeout` (see
    /// [`Limiter::write_to_pod`]).
    pub fn with_pod_write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pod_write_timeout = timeout;
        self
    }

    /// One command that changes a pod's Redis (`CONFIG SET`, `REPLICAOF`, `FAILOVER`, `ACL`):
    /// sent only while the fence allows writing, with a write slot held, and, under leader
    /// election, given up after the same time as an API write, so that a write admitted just
    /// before the fence closes is over, or abandoned, before a standby can take over.
    pub async fn write_to_pod<T>(
        &self,
        write: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>, NotLeader> {
        let _permit = self.acquire().await?;
        let Some(limit) = self.pod_write_timeout else {
            return Ok(write.await);
        };
        Ok(match tokio::time::timeout(limit, write).await {
            Ok(answered) => answered,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer within {} ms, the bound of a write",
                    limit.as_millis()
                ),
            ))),
        })
    }

    /// A limiter for a process that writes without leader election.
    pub fn unfenced(limits: Limits) -> Self {
        Self::new(limits, Arc::new(Fence::open()))
    }

    /// Waits until fewer than `steps` instance steps run; the step runs until the permit is
    /// dropped. First come, first served.
    pub async fn step(&self) -> OwnedSemaphorePermit {
        self.steps
            .clone()
            .acquire_owned()
            .await
            .expect("the limiter's semaphore is never closed")
    }

    /// Waits until fewer than `pod_checks` checks dial pods; the check runs until the permit is
    /// dropped. Taken after the step's own turn is given back: a fleet of silent pods then holds
    /// this many checks, each at most its dial timeouts, and no step.
    pub async fn pod_check(&self) -> OwnedSemaphorePermit {
        self.pod_checks
            .clone()
            .acquire_owned()
            .await
            .expect("the limiter's semaphore is never closed")
    }

    /// A turn to create a ClusterIP Service now, if fewer than [`ALLOCATIONS_AT_ONCE`] such
    /// writes are in flight. A step that finds none waits for [`Limiter::allocation`] outside
    /// any step, holding neither a step turn nor a plan.
    pub fn try_allocation(&self) -> Option<OwnedSemaphorePermit> {
        self.allocations.clone().try_acquire_owned().ok()
    }

    /// Waits until fewer than [`ALLOCATIONS_AT_ONCE`] writes that create a ClusterIP Service
    /// are in flight; taken before [`Limiter::write`], so the Lease is checked after the wait.
    pub async fn allocation(&self) -> OwnedSemaphorePermit {
        self.allocations
            .clone()
            .acquire_owned()
            .await
            .expect("the limiter's semaphore is never closed")
    }

    /// [`Limiter::acquire`] for one API write of `kind`, timed: the wait at the gate and the
    /// time the permit is held (the request) go to the step stage histograms.
    pub async fn write(&self, kind: &'static str) -> Result<WritePermit, NotLeader> {
        let waited = std::time::Instant::now();
        let permit = self.acquire().await;
        crate::stages::since(crate::stages::Stage::WriteGate, waited);
        Ok(WritePermit {
            _permit: permit?,
            kind,
            since: std::time::Instant::now(),
        })
    }

    /// Waits for a token and a slot; the slot is held until the permit is dropped. Refused
    /// when the Lease is not surely held, before and after the wait.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, NotLeader> {
        if !self.fence.allows() {
            return Err(NotLeader);
        }
        let wait = self
            .bucket
            .lock()
            .expect("limiter bucket lock")
            .take(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the limiter's semaphore is never closed");
        if self.fence.allows() {
            Ok(permit)
        } else {
            Err(NotLeader)
        }
    }
}

/// A write slot held for one request of `kind`; dropped when the request is done, which
/// records how long it took.
pub struct WritePermit {
    _permit: OwnedSemaphorePermit,
    kind: &'static str,
    since: std::time::Instant,
}

impl Drop for WritePermit {
    fn drop(&mut self) {
        crate::stages::record_write(self.kind, self.since.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_is_free_then_qps_paces() {
        let limiter = Limiter::unfenced(Limits {
            qps: 10.0,
            burst: 5,
            concurrency: 100,
            ..Limits::default()
        });
        let start = Instant::now();
        for _ in 0..5 {
            drop(limiter.acquire().await.unwrap());
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..10 {
            drop(limiter.acquire().await.unwrap());
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(999) && took <= Duration::from_millis(1001),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_bounds_writes_in_flight() {
        let limiter = Limiter::unfenced(Limits {
            qps: 1000.0,
            burst: 1000,
            concurrency: 2,
            ..Limits::default()
        });
        let first = limiter.acquire().await.unwrap();
        let _second = limiter.acquire().await.unwrap();
        let third = tokio::time::timeout(Duration::from_secs(1), limiter.acquire()).await;
        assert!(
            third.is_err(),
            "a third write waits while two are in flight"
        );
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(1), limiter.acquire()).await;
        assert!(third.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn steps_beyond_the_limit_wait_their_turn_in_order() {
        let limiter = Limiter::unfenced(Limits {
            steps: 2,
            ..Limits::default()
        });
        let first = limiter.step().await;
        let _second = limiter.step().await;
        let (third, fourth) = (limiter.step(), limiter.step());
        tokio::pin!(third, fourth);
        let wait = Duration::from_secs(1);
        assert!(
            tokio::time::timeout(wait, &mut third).await.is_err(),
            "a third step waits while two run"
        );
        assert!(tokio::time::timeout(wait, &mut fourth).await.is_err());
        drop(first);
        let third = tokio::time::timeout(wait, &mut third).await;
        assert!(third.is_ok(), "the first to wait runs first");
        assert!(
            tokio::time::timeout(wait, &mut fourth).await.is_err(),
            "one step ended, so one more runs"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cluster_ip_allocations_take_turns_apart_from_other_writes() {
        let limiter = Limiter::unfenced(Limits::default());
        let mut held = Vec::new();
        for _ in 0..ALLOCATIONS_AT_ONCE {
            held.push(limiter.allocation().await);
        }
        let wait = Duration::from_secs(1);
        let next = limiter.allocation();
        tokio::pin!(next);
        assert!(
            tokio::time::timeout(wait, &mut next).await.is_err(),
            "one more allocation waits while {ALLOCATIONS_AT_ONCE} are in flight"
        );
        assert!(
            tokio::time::timeout(wait, limiter.acquire()).await.is_ok(),
            "other writes pass meanwhile"
        );
        assert!(
            limiter.try_allocation().is_none(),
            "no turn to take at once"
        );
        held.pop();
        assert!(tokio::time::timeout(wait, &mut next).await.is_ok());
        held.pop();
        assert!(
            limiter.try_allocation().is_some(),
            "a free turn is taken at once"
        );
    }

    #[tokio::test]
    async fn nothing_passes_without_the_lease() {
        let limiter = Limiter::new(Limits::default(), Arc::new(Fence::closed()));
        assert_eq!(limiter.acquire().await.err(), Some(NotLeader));
        let unsent = async { unreachable!("a pod write sent without the lease") };
        let sent: Result<redis::RedisResult<()>, _> = limiter.write_to_pod(unsent).await;
        assert_eq!(sent.err(), Some(NotLeader));
    }

    /// Under leader election a pod that does not answer a write holds it no longer than an
    /// API write may take; without it, the write waits for the connection's own timeouts.
    #[tokio::test(start_paused = true)]
    async fn a_pod_write_is_given_up_after_the_bound_of_a_write() {
        let bound = Duration::from_secs(3);
        let fenced = Limiter::unfenced(Limits::default()).with_pod_write_timeout(Some(bound));
        let start = Instant::now();
        let silent = std::future::pending::<redis::RedisResult<()>>();
        let answer = fenced.write_to_pod(silent).await.expect("admitted");
        assert!(answer.is_err_and(|e| e.is_timeout()));
        assert_eq!(start.elapsed(), bound);
        let answered = fenced
            .write_to_pod(async { Ok(7) })
            .await
            .expect("admitted");
        assert_eq!(answered.ok(), Some(7));
        let unbounded = Limiter::unfenced(Limits::default());
        let slow = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        };
        let start = Instant::now();
        let answer = unbounded.write_to_pod(slow).await.expect("admitted");
        assert!(answer.is_ok());
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }
}
