//! Events about an instance, told through its [`InstanceApi`]: held back while a restart's
//! writes are under way, posted in the background, and told again only when owed.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;

use super::InstanceApi;
use crate::crd::RedisInstance;
use crate::events::{Occurrence, Told};

/// How many told facts an instance remembers: a restart and its failure at most are retold.
const TOLD_REMEMBERED: usize = 8;

/// What an actor remembers of an Event telling a fact.
fn told_key(told: &Told) -> Option<String> {
    match &told.occurrence {
        Occurrence::Fact(fact) => Some(format!("{} {fact}", told.reason)),
        Occurrence::Repeat => None,
    }
}

/// Events held back while a restart's writes are under way, each with the span it was told in.
pub(super) type HeldEvents = Arc<Mutex<Option<Vec<(Told, ObjectReference, tracing::Span)>>>>;

impl InstanceApi {
    /// Publishes an Event on the instance, in the background; the same text told again counts
    /// as the same Event happening again. Failures are logged, not returned: an Event is worth
    /// less than the step that caused it.
    pub async fn event(
        &self,
        instance: &RedisInstance,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let told = Told {
            warning,
            reason: reason.to_owned(),
            action: action.to_owned(),
            note,
            occurrence: Occurrence::Repeat,
        };
        self.tell(instance, told);
    }

    /// Publishes `told` on the instance, in the background, or holds it back while a restart's
    /// writes are under way.
    pub fn tell(&self, instance: &RedisInstance, told: Told) {
        if let Some(key) = told_key(&told) {
            let mut remembered = self.told.lock().expect("told facts lock");
            if !remembered.contains(&key) {
                if remembered.len() == TOLD_REMEMBERED {
                    remembered.remove(0);
                }
                remembered.push(key);
            }
        }
        let regarding = instance.object_ref(&());
        let span = tracing::Span::current();
        if let Some(held) = self.held.lock().expect("held events lock").as_mut() {
            held.push((told, regarding, span));
            return;
        }
        self.publish(told, regarding, span);
    }

    /// Tells `told` unless this actor told its fact already: for Events that an actor taking
    /// over may owe, whose second telling the API server turns away by name.
    pub fn tell_unless_told(&self, instance: &RedisInstance, told: Told) {
        if let Some(key) = told_key(&told)
            && self.told.lock().expect("told facts lock").contains(&key)
        {
            return;
        }
        self.tell(instance, told);
    }

    /// Holds back the Events told from now on until [`InstanceApi::release_events`]: a
    /// restart's Events then reach the API server after its template patch, not beside it,
    /// where they would slow the patch that ends the edit's latency.
    pub fn hold_events(&self) {
        self.held
            .lock()
            .expect("held events lock")
            .get_or_insert_with(Vec::new);
    }

    /// Publishes the held Events, in the order told, and stops holding.
    pub fn release_events(&self) {
        let held = self.held.lock().expect("held events lock").take();
        for (told, regarding, span) in held.into_iter().flatten() {
            self.publish(told, regarding, span);
        }
    }

    /// In the background: an Event must not delay the step that follows (a restart's writes
    /// wait for no Event), and the limiter still paces it.
    fn publish(&self, told: Told, regarding: ObjectReference, span: tracing::Span) {
        self.events
            .post_in_background(self.limiter.clone(), regarding, told, span);
    }
}
