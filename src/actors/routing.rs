//! Which instances a RedisInstance watch event concerns and what each needs: a step, a look
//! at its new status, or to be forgotten. Pure, so every case is a row in the table below.

use std::collections::{HashMap, HashSet};

use kube::ResourceExt;
use kube::runtime::watcher;

use super::instance::PAUSED_ANNOTATION;
use super::metrics::InstanceKey;
use crate::crd::RedisInstance;
use crate::resources::CONVERT_ANNOTATION;

/// What the supervisor does for one instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// Its spec, or an annotation the operator reads, changed (or it is new, or a relist
    /// ended): it takes a step.
    Step(InstanceKey),
    /// Only its status (or something the operator does not read) changed: no step.
    StatusSeen(InstanceKey),
    /// It is gone: stop its actor and drop what is kept of it.
    Forget(InstanceKey),
}

/// What of an instance, when it changes, calls for a step: the spec (its generation) and every
/// annotation the operator reads. Nothing else of the object does.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Routed {
    generation: Option<i64>,
    paused: Option<String>,
    convert: Option<String>,
}

impl Routed {
    fn of(instance: &RedisInstance) -> Self {
        Self {
            generation: instance.metadata.generation,
            paused: instance.annotations().get(PAUSED_ANNOTATION).cloned(),
            convert: instance.annotations().get(CONVERT_ANNOTATION).cloned(),
        }
    }
}

/// The instances known, as last routed.
#[derive(Debug, Default)]
pub struct Router {
    instances: HashMap<InstanceKey, Routed>,
    /// Keys seen since the watcher's last (re)list began.
    relisting: Option<HashSet<InstanceKey>>,
}

impl Router {
    /// The routes of one watch event. A relist's objects reach the cache together, at its end:
    /// only then does every instance take a step (the operator's resync), and the instances
    /// the relist no longer holds, deleted while the watch was down, are forgotten.
    pub fn route(&mut self, event: &watcher::Event<RedisInstance>) -> Vec<Route> {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(instance) => {
                let key = key_of(instance);
                if let Some(seen) = self.relisting.as_mut() {
                    seen.insert(key.clone());
                }
                self.instances.insert(key, Routed::of(instance));
                Vec::new()
            }
            watcher::Event::Apply(instance) => {
                let key = key_of(instance);
                let routed = Routed::of(instance);
                let known = self.instances.insert(key.clone(), routed.clone());
                let deleting = instance.metadata.deletion_timestamp.is_some();
                if known.as_ref() != Some(&routed) || deleting {
                    vec![Route::Step(key)]
                } else {
                    vec![Route::StatusSeen(key)]
                }
            }
            watcher::Event::Delete(instance) => {
                let key = key_of(instance);
                self.instances.remove(&key);
                vec![Route::Forget(key)]
            }
            watcher::Event::InitDone => {
                let mut routes = Vec::new();
                if let Some(seen) = self.relisting.take() {
                    self.instances.retain(|key, _| {
                        let kept = seen.contains(key);
                        if !kept {
                            routes.push(Route::Forget(key.clone()));
                        }
                        kept
                    });
                }
                routes.extend(self.instances.keys().cloned().map(Route::Step));
                routes
            }
        }
    }

    /// Whether the instance exists, as last routed.
    pub fn knows(&self, key: &InstanceKey) -> bool {
        self.instances.contains_key(key)
    }

    /// Every instance known.
    pub fn keys(&self) -> Vec<InstanceKey> {
        self.instances.keys().cloned().collect()
    }

    /// How many instances are known.
    pub fn len(&self) -> usize {
        self.instances.len()
    }
}

/// The instance's namespace and name.
pub fn key_of(instance: &RedisInstance) -> InstanceKey {
    InstanceKey {
        namespace: instance.namespace().unwrap_or_default(),
        name: instance.name_any(),
    }
}

/// How long to wait before starting again the actor of an instance whose actor failed
/// `failures` times in a row: 2 s doubling, at most 64 s.
pub fn respawn_delay(failures: u32) -> std::time::Duration {
    std::time::Duration::from_secs(1u64 << failures.min(6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use watcher::Event;

    fn instance(name: &str, generation: i64, paused: Option<&str>) -> RedisInstance {
        let mut instance = crate::resources::fixtures::instance(&[]);
        instance.metadata.name = Some(name.into());
        instance.metadata.namespace = Some("ns".into());
        instance.metadata.generation = Some(generation);
        if let Some(value) = paused {
            instance.metadata.annotations =
                Some([(PAUSED_ANNOTATION.to_owned(), value.to_owned())].into());
        }
        instance
    }

    fn deleting(mut instance: RedisInstance) -> RedisInstance {
        instance.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        instance
    }

    fn key(name: &str) -> InstanceKey {
        InstanceKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn step(name: &str) -> Route {
        Route::Step(key(name))
    }

    /// What happened, the events in order, and the routes of the last event.
    type Row = (&'static str, Vec<Event<RedisInstance>>, Vec<Route>);

    /// Each row: what happened, the events in order, and the routes of the last event. Rows
    /// run one after another on one router, as the watch delivers them.
    #[test]
    fn routes_of_each_kind_of_event() {
        let a = || instance("a", 1, None);
        let rows: Vec<Row> = vec![
            (
                "the first list: every instance steps once it is complete",
                vec![
                    Event::Init,
                    Event::InitApply(a()),
                    Event::InitApply(instance("b", 1, None)),
                    Event::InitDone,
                ],
                vec![step("a"), step("b")],
            ),
            (
                "a status-only update: no step",
                vec![Event::Apply(a())],
                vec![Route::StatusSeen(key("a"))],
            ),
            (
                "a spec edit",
                vec![Event::Apply(instance("a", 2, None))],
                vec![step("a")],
            ),
            (
                "the pause annotation added, no spec edit",
                vec![Event::Apply(instance("a", 2, Some("true")))],
                vec![step("a")],
            ),
            (
                "the pause annotation removed, no spec edit",
                vec![Event::Apply(instance("a", 2, None))],
                vec![step("a")],
            ),
            (
                "the conversion agreed by annotation, no spec edit",
                vec![Event::Apply({
                    let mut agreed = instance("a", 2, None);
                    agreed
                        .annotations_mut()
                        .insert(CONVERT_ANNOTATION.into(), "true".into());
                    agreed
                })],
                vec![step("a")],
            ),
            (
                "a deletion begun",
                vec![Event::Apply(deleting(instance("a", 2, None)))],
                vec![step("a")],
            ),
            (
                "a new instance",
                vec![Event::Apply(instance("c", 1, None))],
                vec![step("c")],
            ),
            (
                "deleted",
                vec![Event::Delete(instance("c", 1, None))],
                vec![Route::Forget(key("c"))],
            ),
            (
                "a relist without b, deleted while the watch was down",
                vec![
                    Event::Init,
                    Event::InitApply(instance("a", 2, None)),
                    Event::InitDone,
                ],
                vec![Route::Forget(key("b")), step("a")],
            ),
        ];
        let mut router = Router::default();
        for (what, events, want) in rows {
            let mut routes = Vec::new();
            for event in &events {
                routes = router.route(event);
            }
            routes.sort();
            let mut want = want;
            want.sort();
            assert_eq!(routes, want, "{what}");
        }
        assert!(router.knows(&key("a")) && !router.knows(&key("b")));
        assert_eq!(router.len(), 1);
    }

    #[test]
    fn a_relist_routes_nothing_until_it_is_complete() {
        let mut router = Router::default();
        assert!(router.route(&Event::Init).is_empty());
        assert!(
            router
                .route(&Event::InitApply(instance("a", 1, None)))
                .is_empty()
        );
        assert_eq!(router.route(&Event::InitDone), vec![step("a")]);
    }

    #[test]
    fn respawns_back_off_to_a_minute() {
        assert_eq!(respawn_delay(1).as_secs(), 2);
        assert_eq!(respawn_delay(3).as_secs(), 8);
        assert_eq!(respawn_delay(6).as_secs(), 64);
        assert_eq!(respawn_delay(40).as_secs(), 64);
    }
}
