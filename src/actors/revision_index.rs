//! The names of each instance's revision ConfigMaps, kept from the ConfigMap watch: the cache
//! is keyed by name alone, and collecting an instance's old revisions needs to know which it
//! has without scanning every ConfigMap of the fleet.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use kube::ResourceExt;
use kube::runtime::watcher;

use super::metrics::InstanceKey;
use crate::resources::{CachedConfigMap, INSTANCE_LABEL, is_revision_of};

/// One revision ConfigMap: its instance and its name.
type Revision = (InstanceKey, String);

/// Revision ConfigMap names by instance; cheap to clone.
#[derive(Clone, Default)]
pub struct RevisionIndex {
    names: Arc<DashMap<InstanceKey, BTreeSet<String>>>,
    /// What the watch's current relist has delivered so far.
    relisting: Arc<Mutex<Option<HashSet<Revision>>>>,
}

/// The instance a ConfigMap is a revision of, and its name; `None` for any other ConfigMap.
fn revision(cm: &CachedConfigMap) -> Option<Revision> {
    let instance = cm.labels.get(INSTANCE_LABEL)?;
    let name = cm.name_any();
    is_revision_of(instance, &name).then(|| {
        let key = InstanceKey {
            namespace: cm.namespace().unwrap_or_default(),
            name: instance.to_owned(),
        };
        (key, name)
    })
}

impl RevisionIndex {
    /// The revision ConfigMaps of `namespace/instance` the watch has delivered.
    pub fn names(&self, namespace: &str, instance: &str) -> Vec<String> {
        let key = InstanceKey {
            namespace: namespace.to_owned(),
            name: instance.to_owned(),
        };
        self.names
            .get(&key)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Follows one watch event. A relist forgets, at its end, the names it did not deliver:
    /// ConfigMaps deleted while the watch was down.
    pub fn follow(&self, event: &watcher::Event<CachedConfigMap>) {
        let mut relisting = self.relisting.lock().expect("relisting lock");
        match event {
            watcher::Event::Init => *relisting = Some(HashSet::new()),
            watcher::Event::InitApply(cm) | watcher::Event::Apply(cm) => {
                if let Some((key, name)) = revision(cm) {
                    if let (Some(seen), watcher::Event::InitApply(_)) = (relisting.as_mut(), event)
                    {
                        seen.insert((key.clone(), name.clone()));
                    }
                    self.names.entry(key).or_default().insert(name);
                }
            }
            watcher::Event::Delete(cm) => {
                if let Some((key, name)) = revision(cm) {
                    self.forget(&key, &name);
                }
            }
            watcher::Event::InitDone => {
                let seen = relisting.take().unwrap_or_default();
                self.names.retain(|key, names| {
                    names.retain(|name| seen.contains(&(key.clone(), name.clone())));
                    !names.is_empty()
                });
            }
        }
    }

    fn forget(&self, key: &InstanceKey, name: &str) {
        self.names.remove_if_mut(key, |_, names| {
            names.remove(name);
            names.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::render::render;
    use crate::resources::fixtures::instance;

    fn revision_cm(hash: &str) -> CachedConfigMap {
        let ri = instance(&[]);
        CachedConfigMap::from(&crate::resources::revision_config_map(
            &ri,
            &render(&ri.spec.config),
            hash,
        ))
    }

    #[test]
    fn keeps_revisions_by_instance_and_forgets_what_a_relist_misses() {
        let index = RevisionIndex::default();
        let (a, b) = (revision_cm(&"a".repeat(64)), revision_cm(&"b".repeat(64)));
        let shared = CachedConfigMap::from(&crate::resources::config_map(
            &instance(&[]),
            &render(&Default::default()),
        ));
        index.follow(&watcher::Event::Init);
        index.follow(&watcher::Event::InitApply(a.clone()));
        index.follow(&watcher::Event::InitApply(shared.clone()));
        index.follow(&watcher::Event::InitDone);
        index.follow(&watcher::Event::Apply(b.clone()));
        assert_eq!(
            index.names("team-a", "redis-example"),
            [a.name_any(), b.name_any()],
            "the shared ConfigMap is no revision"
        );
        index.follow(&watcher::Event::Delete(a.clone()));
        assert_eq!(index.names("team-a", "redis-example"), [b.name_any()]);
        // b was deleted while the watch was down: the relist does not deliver it.
        index.follow(&watcher::Event::Init);
        index.follow(&watcher::Event::InitApply(a.clone()));
        index.follow(&watcher::Event::InitDone);
        assert_eq!(index.names("team-a", "redis-example"), [a.name_any()]);
        index.follow(&watcher::Event::Delete(a));
        assert!(index.names.is_empty(), "no key left behind");
        assert!(index.names("team-a", "other").is_empty());
    }
}
