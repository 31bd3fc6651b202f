//! A replicated instance's prober: a task of its own, outside every step and permit, that dials
//! the pods' `INFO replication` on the replication cadence and sends each round to the actor.

use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::super::InstanceMsg;
use crate::auth::Access;
use crate::decide::probes::PodProbe;
use crate::live::pods::PodAddress;
use crate::replication;

/// Longer than one probe's own bounds (a second to connect, a second to answer): a pod that
/// takes longer counts as silent, so a round never holds up the next.
const ROUND_BOUND: Duration = Duration::from_secs(3);

/// A pod to probe: where it listens and which incarnation it is.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub address: PodAddress,
    pub uid: String,
}

impl Target {
    /// The same pod incarnation, reached the same way (the same TLS material).
    fn same(&self, other: &Target) -> bool {
        let (a, b) = (&self.address, &other.address);
        let same_tls = match (&a.tls, &b.tls) {
            (Some(x), Some(y)) => std::sync::Arc::ptr_eq(x, y),
            (x, y) => x.is_none() && y.is_none(),
        };
        self.uid == other.uid && a.pod == b.pod && a.ip == b.ip && same_tls
    }
}

/// What the actor asks of its prober: the pods as its last step saw them, how to log in,
/// how often to probe, and a count raised to ask for a round at once.
#[derive(Debug, Clone)]
pub(super) struct Ask {
    pub pods: Vec<Target>,
    pub access: Access,
    pub every: Duration,
    pub now: u64,
}

impl Ask {
    fn same(&self, other: &Ask) -> bool {
        self.pods.len() == other.pods.len()
            && self.pods.iter().zip(&other.pods).all(|(a, b)| a.same(b))
            && self.access == other.access
            && self.every == other.every
            && self.now == other.now
    }
}

/// The running prober; dropping it ends the task.
pub(super) struct Prober {
    ask: watch::Sender<Ask>,
    task: JoinHandle<()>,
}

impl Prober {
    /// Starts probing for `actor`, the first round at once.
    pub(super) fn start(actor: ActorRef<InstanceMsg>, ask: Ask) -> Self {
        let (tx, rx) = watch::channel(ask);
        let task = tokio::spawn(run(actor, rx));
        Prober { ask: tx, task }
    }

    /// Changes what is probed and how often; wakes the task only when something changed.
    pub(super) fn ask(&self, ask: Ask) {
        self.ask.send_if_modified(|current| {
            let changed = !current.same(&ask);
            *current = ask;
            changed
        });
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Probes every `every` (jittered, as the step timers are), or at once when `now` is raised,
/// until the actor is gone or the prober is dropped.
async fn run(actor: ActorRef<InstanceMsg>, mut asks: watch::Receiver<Ask>) {
    let mut next = tokio::time::Instant::now();
    let mut answered_now = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            changed = asks.changed() => {
                if changed.is_err() {
                    return;
                }
                let ask = asks.borrow_and_update();
                next = match answered_now != Some(ask.now) {
                    true => tokio::time::Instant::now(),
                    false => next.min(tokio::time::Instant::now() + ask.every),
                };
                continue;
            }
        }
        let ask = asks.borrow_and_update().clone();
        answered_now = Some(ask.now);
        let round = probe_all(&ask).await;
        if actor.send_message(InstanceMsg::Probed(round)).is_err() {
            return;
        }
        next = tokio::time::Instant::now() + super::super::jittered(ask.every);
    }
}

/// One round: every pod at once, each bounded.
async fn probe_all(ask: &Ask) -> Vec<PodProbe> {
    futures::future::join_all(ask.pods.iter().map(|target| async {
        let at = Instant::now();
        let answer = tokio::time::timeout(
            ROUND_BOUND,
            replication::probe(&target.address, &ask.access),
        )
        .await;
        PodProbe {
            pod: target.address.pod.clone(),
            uid: target.uid.clone(),
            ip: target.address.ip.clone(),
            at,
            answer: answer.ok().and_then(Result::ok),
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};
    use tokio::sync::mpsc;

    /// Stands in for the instance actor: passes on the rounds it receives.
    struct Receiver;

    impl Actor for Receiver {
        type Msg = InstanceMsg;
        type State = mpsc::UnboundedSender<usize>;
        type Arguments = mpsc::UnboundedSender<usize>;

        async fn pre_start(
            &self,
            _: ActorRef<InstanceMsg>,
            rounds: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(rounds)
        }

        async fn handle(
            &self,
            _: ActorRef<InstanceMsg>,
            msg: InstanceMsg,
            rounds: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let InstanceMsg::Probed(round) = msg {
                let _ = rounds.send(round.len());
            }
            Ok(())
        }
    }

    fn ask() -> Ask {
        // A pod with no IP answers at once (as silent): no network needed.
        let pod = Target {
            address: PodAddress {
                pod: "r-0".into(),
                ip: None,
                tls: None,
            },
            uid: "u0".into(),
        };
        Ask {
            pods: vec![pod],
            access: Access::default(),
            every: Duration::from_millis(10),
            now: 0,
        }
    }

    async fn ended(task: &tokio::task::AbortHandle) -> bool {
        for _ in 0..200 {
            if task.is_finished() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_prober_sends_rounds_and_ends_when_dropped_or_when_its_actor_is_gone() {
        for stop_actor in [false, true] {
            let (tx, mut rounds) = mpsc::unbounded_channel();
            let (actor, handle) = Actor::spawn(None, Receiver, tx).await.unwrap();
            let prober = Prober::start(actor.clone(), ask());
            assert_eq!(rounds.recv().await, Some(1), "a round of the one pod");
            let task = prober.task.abort_handle();
            if stop_actor {
                actor.stop(None);
                handle.await.unwrap();
                assert!(ended(&task).await, "the prober of a stopped actor ends");
                drop(prober);
            } else {
                drop(prober);
                assert!(ended(&task).await, "a dropped prober ends");
                actor.stop(None);
                handle.await.unwrap();
            }
        }
    }
}
