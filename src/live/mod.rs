//! Live config: which directives a running Redis takes with `CONFIG SET`, and the hashes that
//! split a config into the part that needs a restart and the part applied in place.
//!
//! Under `configUpdate: Live` the pod template carries the hash of the restart part only, so a
//! change confined to live directives never touches the template; `status.liveConfigHash`
//! records the live part the pods were last verified to run.

pub mod normalize;
pub mod pods;

use std::collections::{BTreeMap, BTreeSet};

use crate::config::directives::{self, Access, Kind};
use crate::config::render::config_hash;
use crate::config::render::{RenderedConfig, USER_OVERRIDABLE_DEFAULTS, render};
use crate::crd::{ConfigUpdate, RedisInstance};

/// Live directives that still restart: `requirepass` is never rendered (passwords live in the
/// ACL file, see `auth`) and is kept here so that no live path could ever send it; the TLS
/// directives of `spec.tls` come with a Secret volume, which only a new pod mounts.
const RESTART_ANYWAY: &[&str] = &[
    "requirepass",
    "tls-port",
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-replication",
    "tls-auth-clients",
];

/// Whether a `spec.config` key can change on a running server. Unknown keys, immutable,
/// protected and file-only directives, and ignored compatibility knobs need a restart.
pub fn is_live(key: &str) -> bool {
    directives::lookup(key).is_some_and(|d| {
        d.access == Access::Mutable
            && !matches!(d.kind, Kind::Ignored { .. })
            && !RESTART_ANYWAY.contains(&d.name)
    })
}

/// The directive's primary name, which `CONFIG SET`/`GET` use; the key itself when unknown.
pub fn canonical(key: &str) -> String {
    directives::lookup(key).map_or_else(|| key.to_ascii_lowercase(), |d| d.name.to_owned())
}

/// `spec.config` split into the directives applied live (by primary name) and the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// Directives that need a restart.
    pub restart: BTreeMap<String, String>,
    /// Directives applied with `CONFIG SET`, keyed by primary name, each value in the form
    /// `CONFIG SET` takes (see [`normalize::for_config_set`]).
    pub live: BTreeMap<String, String>,
}

/// Splits a config; with `Restart` everything is in the restart part.
pub fn split(config: &BTreeMap<String, String>, mode: ConfigUpdate) -> Split {
    let mut out = Split::default();
    for (key, value) in config {
        if mode == ConfigUpdate::Live && is_live(key) {
            out.live
                .insert(canonical(key), normalize::for_config_set(key, value));
        } else {
            out.restart.insert(key.clone(), value.clone());
        }
    }
    if mode == ConfigUpdate::Live {
        // The file carries these when the spec does not, so removing one from the spec is a
        // live change back to the operator's default.
        for (name, value) in USER_OVERRIDABLE_DEFAULTS {
            if is_live(name) && !out.live.contains_key(*name) {
                out.live.insert((*name).to_owned(), (*value).to_owned());
            }
        }
    }
    out
}

/// SHA-256 of the live directives, one `name value` line each, in name order.
pub fn live_hash(live: &BTreeMap<String, String>) -> String {
    let text: String = live.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    config_hash(&text)
}

/// The hash the pod template carries: of the whole rendered file under `Restart` (the spec's
/// rule), of the file rendered from the restart part only under `Live`.
pub fn template_hash(instance: &RedisInstance, rendered: &RenderedConfig) -> String {
    match instance.spec.config_update {
        ConfigUpdate::Restart => rendered.hash.clone(),
        ConfigUpdate::Live => {
            render(&split(&crate::config::effective(instance), ConfigUpdate::Live).restart).hash
        }
    }
}

/// Directive names on lines that differ between two rendered files, and whether `old` has a
/// directive `new` lacks.
fn differing(old: &str, new: &str) -> (BTreeSet<String>, bool) {
    let lines = |text: &str| -> BTreeMap<String, String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| match l.split_once(' ') {
                Some((name, rest)) => (name.to_owned(), rest.to_owned()),
                None => (l.to_owned(), String::new()),
            })
            .collect()
    };
    let (old, new) = (lines(old), lines(new));
    let removed = old.keys().any(|k| !new.contains_key(k));
    let names = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(new.keys().filter(|k| !old.contains_key(*k)).cloned())
        .collect();
    (names, removed)
}

/// Whether a ConfigMap holding `old` reaches `new` by live changes alone: every differing
/// directive is live and none was removed (a removed directive returns to Redis's default,
/// which only a restart knows). Returns the changed directives' primary names.
pub fn live_only_change(old: &str, new: &str) -> Option<BTreeSet<String>> {
    let (names, removed) = differing(old, new);
    (!removed && names.iter().all(|n| is_live(n)))
        .then(|| names.iter().map(|n| canonical(n)).collect())
}

/// Directive names whose lines differ, for messages about a restart (`diff`, pause).
pub fn changed_directives(old: &str, new: &str) -> BTreeSet<String> {
    differing(old, new).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::config_of;
    use crate::resources::fixtures::instance;

    #[test]
    fn memory_policy_and_save_are_live_but_immutable_and_file_only_ones_are_not() {
        for live in [
            "maxmemory",
            "maxmemory-policy",
            "save",
            "appendonly",
            "slave-read-only",
        ] {
            assert!(is_live(live), "{live}");
        }
        for restart in [
            "databases",
            "io-threads",
            "rename-command",
            "requirepass",
            "dbfilename",
            "nonsense",
        ] {
            assert!(!is_live(restart), "{restart}");
        }
        assert_eq!(canonical("slave-read-only"), "replica-read-only");
    }

    #[test]
    fn the_template_hash_ignores_live_directives_only_under_live() {
        let mut a = instance(&[("maxmemory", "100mb"), ("databases", "16")]);
        let mut b = instance(&[("maxmemory", "200mb"), ("databases", "16")]);
        let hash = |i: &RedisInstance| template_hash(i, &render(&i.spec.config));
        assert_ne!(hash(&a), hash(&b), "Restart: the whole file");
        a.spec.config_update = ConfigUpdate::Live;
        b.spec.config_update = ConfigUpdate::Live;
        assert_eq!(hash(&a), hash(&b));
        b.spec.config.insert("databases".into(), "32".into());
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn a_change_is_live_only_when_every_differing_line_is_live_and_none_removed() {
        let text = |pairs: &[(&str, &str)]| render(&config_of(pairs)).text;
        let old = text(&[("maxmemory", "100mb"), ("save", "900 1")]);
        let more = text(&[("maxmemory", "200mb"), ("save", ""), ("hz", "20")]);
        assert_eq!(
            live_only_change(&old, &more)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["hz", "maxmemory", "save"]
        );
        assert_eq!(live_only_change(&old, &old).unwrap().len(), 0);
        let removed = text(&[("maxmemory", "100mb")]);
        assert_eq!(live_only_change(&old, &removed), None, "save removed");
        let immutable = text(&[
            ("maxmemory", "100mb"),
            ("save", "900 1"),
            ("databases", "8"),
        ]);
        assert_eq!(live_only_change(&old, &immutable), None);
        assert_eq!(
            changed_directives(&old, &immutable)
                .into_iter()
                .collect::<Vec<_>>(),
            ["databases"]
        );
    }

    #[test]
    fn split_keys_live_directives_by_primary_name() {
        let config = config_of(&[("slave-read-only", "no"), ("databases", "4")]);
        let s = split(&config, ConfigUpdate::Live);
        assert_eq!(
            s.live.keys().collect::<Vec<_>>(),
            ["protected-mode", "replica-read-only"],
            "the operator's default for protected-mode is live too"
        );
        assert_eq!(s.restart.keys().collect::<Vec<_>>(), ["databases"]);
        assert!(split(&config, ConfigUpdate::Restart).live.is_empty());
        assert_eq!(live_hash(&s.live).len(), 64);
    }

    #[test]
    fn live_values_have_the_single_spaces_config_set_needs() {
        // CONFIG SET refuses `save "900 1  300 10"`; the config file takes it.
        let config = config_of(&[("save", "900 1  300 10"), ("masterauth", "a  b")]);
        let s = split(&config, ConfigUpdate::Live);
        assert_eq!(s.live["save"], "900 1 300 10");
        assert_eq!(s.live["masterauth"], "a  b");
        assert_eq!(
            split(&config, ConfigUpdate::Restart).restart["save"],
            "900 1  300 10"
        );
    }
}
