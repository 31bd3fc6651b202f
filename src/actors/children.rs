//! The supervisor's book of instance actors: each instance's running actor and how many
//! messages it was sent, the instances whose actor hibernates, and how often each instance's
//! actors failed.
//!
//! The supervisor is the only sender of an instance actor's outside messages, so an actor's
//! offer to hibernate "having handled K of them" is taken only when K is every message sent to
//! it: then none is on its way, and stopping it loses none. A stale offer (more sent since) is
//! ignored; the actor handles what came and offers again later.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ractor::{ActorId, ActorRef};

use super::instance::InstanceMsg;
use super::metrics::InstanceKey;
use super::routing::respawn_delay;

/// Something that takes an instance actor's messages: its `ActorRef`, or a test's stand-in.
pub trait Mailbox {
    /// Which actor.
    fn id(&self) -> ActorId;
    /// Sends `msg`; `false` when the actor has stopped.
    fn post(&self, msg: InstanceMsg) -> bool;
}

impl Mailbox for ActorRef<InstanceMsg> {
    fn id(&self) -> ActorId {
        self.get_id()
    }

    fn post(&self, msg: InstanceMsg) -> bool {
        self.send_message(msg).is_ok()
    }
}

/// A running actor and how many messages it was sent.
struct Child<A> {
    actor: A,
    sent: u64,
}

/// See the module docs.
pub struct Children<A> {
    running: HashMap<InstanceKey, Child<A>>,
    /// The key of each running actor, for the supervision events that name only the actor.
    keys: HashMap<ActorId, InstanceKey>,
    hibernating: HashSet<InstanceKey>,
    /// Failures of each instance's actors, for the respawn backoff; kept until it is forgotten.
    failures: HashMap<InstanceKey, u32>,
}

impl<A> Default for Children<A> {
    fn default() -> Self {
        Self {
            running: HashMap::new(),
            keys: HashMap::new(),
            hibernating: HashSet::new(),
            failures: HashMap::new(),
        }
    }
}

impl<A: Mailbox> Children<A> {
    /// Whether `key` has a running actor.
    pub fn runs(&self, key: &InstanceKey) -> bool {
        self.running.contains_key(key)
    }

    /// Whether `key`'s actor hibernates: the next message for it starts one.
    pub fn hibernates(&self, key: &InstanceKey) -> bool {
        self.hibernating.contains(key)
    }

    /// The instances whose actor hibernates.
    pub fn hibernating(&self) -> Vec<InstanceKey> {
        self.hibernating.iter().cloned().collect()
    }

    /// How many actors hibernate.
    pub fn hibernated(&self) -> usize {
        self.hibernating.len()
    }

    /// Every instance with a running actor.
    pub fn running(&self) -> Vec<InstanceKey> {
        self.running.keys().cloned().collect()
    }

    /// Notes `actor` as `key`'s, which no longer hibernates. Returns whether it did.
    pub fn started(&mut self, key: &InstanceKey, actor: A) -> bool {
        self.keys.insert(actor.id(), key.clone());
        self.running.insert(key.clone(), Child { actor, sent: 0 });
        self.hibernating.remove(key)
    }

    /// Sends `msg` to `key`'s running actor, counting it; `false` when it has none.
    pub fn send(&mut self, key: &InstanceKey, msg: InstanceMsg) -> bool {
        let Some(child) = self.running.get_mut(key) else {
            return false;
        };
        let delivered = child.actor.post(msg);
        if delivered {
            child.sent += 1;
        }
        delivered
    }

    /// The instance of an actor that ended, if the book still holds it.
    pub fn ended(&mut self, actor: &ActorId) -> Option<InstanceKey> {
        self.keys.remove(actor)
    }

    /// Drops `key`'s actor only if it is `ended`: when an instance is deleted and created again
    /// quickly, the old actor's end must not unregister the new one.
    pub fn remove_if_current(&mut self, key: &InstanceKey, ended: &ActorId) -> bool {
        let current = self
            .running
            .get(key)
            .is_some_and(|c| c.actor.id() == *ended);
        if current {
            self.running.remove(key);
        }
        current
    }

    /// `actor` failed: its instance, and how long to wait before starting a new actor for it,
    /// if it was the instance's running actor. `None` for an actor the book no longer holds
    /// (its instance forgotten, or a newer actor started in its place): nothing to respawn.
    pub fn failed(&mut self, actor: &ActorId) -> Option<(InstanceKey, Duration)> {
        let key = self.ended(actor)?;
        if !self.remove_if_current(&key, actor) {
            return None;
        }
        let failures = self.failures.entry(key.clone()).or_insert(0);
        *failures += 1;
        Some((key, respawn_delay(*failures)))
    }

    /// The instance is gone: its actor, to stop, if it runs.
    pub fn forget(&mut self, key: &InstanceKey) -> Option<A> {
        self.failures.remove(key);
        self.hibernating.remove(key);
        let child = self.running.remove(key)?;
        self.keys.remove(&child.actor.id());
        Some(child.actor)
    }

    /// `actor` offers to hibernate having handled `handled` messages: taken (the actor
    /// returned, to stop) only if it is `key`'s running actor and was sent exactly that many.
    /// An actor that reached rest works: its instance's next failure starts the backoff afresh.
    pub fn offered(&mut self, key: &InstanceKey, actor: &ActorId, handled: u64) -> Option<A> {
        let child = self.running.get(key)?;
        if child.actor.id() != *actor {
            return None;
        }
        self.failures.remove(key);
        if child.sent != handled {
            return None;
        }
        let child = self.running.remove(key)?;
        self.keys.remove(actor);
        self.hibernating.insert(key.clone());
        Some(child.actor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Counts what it was sent.
    #[derive(Clone)]
    struct Fake {
        id: u64,
        got: Arc<Mutex<usize>>,
    }

    impl Mailbox for Fake {
        fn id(&self) -> ActorId {
            ActorId::Local(self.id)
        }
        fn post(&self, _: InstanceMsg) -> bool {
            *self.got.lock().unwrap() += 1;
            true
        }
    }

    fn key(name: &str) -> InstanceKey {
        InstanceKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn fake(id: u64) -> Fake {
        Fake {
            id,
            got: Arc::default(),
        }
    }

    #[test]
    fn an_offer_that_accounts_for_every_message_sent_is_taken() {
        let mut book = Children::default();
        book.started(&key("a"), fake(1));
        assert!(book.send(&key("a"), InstanceMsg::Changed));
        assert!(book.send(&key("a"), InstanceMsg::StatusSeen));
        let taken = book.offered(&key("a"), &ActorId::Local(1), 2);
        assert_eq!(taken.map(|a| a.id), Some(1));
        assert!(!book.runs(&key("a")));
        assert!(book.hibernates(&key("a")));
        assert_eq!(book.hibernated(), 1);
        assert_eq!(
            book.ended(&ActorId::Local(1)),
            None,
            "no longer in the book"
        );
        // Nothing is sent to a hibernating instance: the supervisor starts an actor instead.
        assert!(!book.send(&key("a"), InstanceMsg::Changed));
        assert!(!book.started(&key("b"), fake(3)));
        assert!(book.started(&key("a"), fake(2)), "woken");
        assert_eq!(book.hibernated(), 0);
    }

    #[test]
    fn a_stale_offer_is_ignored() {
        let mut book = Children::default();
        let actor = fake(1);
        book.started(&key("a"), actor.clone());
        book.send(&key("a"), InstanceMsg::Changed);
        // The actor offered after one message, while a second was on its way.
        book.send(&key("a"), InstanceMsg::StatusSeen);
        assert!(book.offered(&key("a"), &ActorId::Local(1), 1).is_none());
        assert!(book.runs(&key("a")));
        assert!(!book.hibernates(&key("a")));
        assert!(book.send(&key("a"), InstanceMsg::Changed));
        assert_eq!(*actor.got.lock().unwrap(), 3, "still delivered to it");
        // Its next offer counts every message.
        assert!(book.offered(&key("a"), &ActorId::Local(1), 3).is_some());
    }

    #[test]
    fn an_offer_from_an_older_actor_of_the_instance_is_ignored() {
        let mut book = Children::default();
        book.started(&key("a"), fake(1));
        book.forget(&key("a"));
        book.started(&key("a"), fake(2));
        assert!(book.offered(&key("a"), &ActorId::Local(1), 0).is_none());
        assert!(book.runs(&key("a")));
        assert!(!book.remove_if_current(&key("a"), &ActorId::Local(1)));
        assert!(book.runs(&key("a")));
    }

    #[test]
    fn a_failed_actor_is_respawned_after_a_growing_delay() {
        let mut book = Children::default();
        book.started(&key("a"), fake(1));
        let (failed, after) = book.failed(&ActorId::Local(1)).unwrap();
        assert_eq!((failed.name.as_str(), after.as_secs()), ("a", 2));
        assert!(!book.runs(&key("a")), "no message goes to the failed actor");
        book.started(&key("a"), fake(2));
        assert_eq!(book.failed(&ActorId::Local(2)).unwrap().1.as_secs(), 4);
        // Its end is reported once: a second report of the same actor respawns nothing.
        assert!(book.failed(&ActorId::Local(2)).is_none());
        // Deleted and created again: the new instance's actors start the backoff afresh.
        book.started(&key("a"), fake(3));
        book.forget(&key("a"));
        book.started(&key("a"), fake(4));
        assert_eq!(book.failed(&ActorId::Local(4)).unwrap().1.as_secs(), 2);
        // An actor that reached rest works: the failure after it starts afresh too.
        book.started(&key("a"), fake(5));
        assert_eq!(book.failed(&ActorId::Local(5)).unwrap().1.as_secs(), 4);
        book.started(&key("a"), fake(6));
        book.send(&key("a"), InstanceMsg::Changed);
        assert!(
            book.offered(&key("a"), &ActorId::Local(6), 0).is_none(),
            "stale"
        );
        assert_eq!(book.failed(&ActorId::Local(6)).unwrap().1.as_secs(), 2);
    }

    #[test]
    fn a_failed_actor_of_a_forgotten_or_replaced_instance_is_not_respawned() {
        let mut book = Children::default();
        book.started(&key("a"), fake(1));
        assert!(book.forget(&key("a")).is_some());
        assert!(book.failed(&ActorId::Local(1)).is_none(), "forgotten");
        // An older actor that failed after a newer one took its place: the newer one stays.
        book.started(&key("b"), fake(2));
        book.started(&key("b"), fake(3));
        assert!(book.failed(&ActorId::Local(2)).is_none());
        assert!(book.runs(&key("b")));
        assert!(book.send(&key("b"), InstanceMsg::Changed));
        assert_eq!(book.failed(&ActorId::Local(3)).unwrap().0.name, "b");
    }

    #[test]
    fn a_forgotten_instance_no_longer_hibernates() {
        let mut book = Children::default();
        book.started(&key("a"), fake(1));
        book.offered(&key("a"), &ActorId::Local(1), 0).unwrap();
        assert!(book.forget(&key("a")).is_none());
        assert!(!book.hibernates(&key("a")));
        assert_eq!(book.hibernated(), 0);
    }
}
