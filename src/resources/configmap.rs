//! The ConfigMaps that carry the rendered redis.conf: the spec's `<name>-config`, and one per
//! pod-template revision, which is what the pods mount.
//!
//! `<name>-config` is the spec's object: the rendered config, compared and rewritten by the
//! spec's rules. The pods do not mount it: each revision of the pod template mounts
//! `<name>-config-<12 hex of its hash>`, created before the template that names it, so a pod
//! of an older revision that restarts mid-rollout reads its own revision's file, never the new
//! one. Under `configUpdate: Restart` the template hash covers the whole file, so the name
//! fixes the content: the ConfigMap is immutable (the kubelet then stops watching it, and no
//! hand edit can change what a revision runs). Under `Live` the hash covers the restart-class
//! directives only and live ones change in place, so the revision's ConfigMap changes with
//! them: mutable, and named with a `-live` suffix, so that switching `configUpdate` never
//! meets an immutable ConfigMap of the same hash.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::{CONFIG_HASH_ANNOTATION, owned_meta};
use crate::config::render::{CONFIG_FILE_KEY, RenderedConfig};
use crate::crd::{ConfigUpdate, RedisInstance};

/// `<instance>-config`.
pub fn config_map_name(instance: &RedisInstance) -> String {
    shared_config_map_name(&instance.name_any())
}

/// `<instance>-config`, from the instance's name.
pub fn shared_config_map_name(instance: &str) -> String {
    format!("{instance}-config")
}

/// How many hex digits of the template hash name a revision's ConfigMap.
const REVISION_DIGITS: usize = 12;
const LIVE_SUFFIX: &str = "-live";

/// `<instance>-config-<12 hex of hash>`, with `-live` under `configUpdate: Live`. Only hex
/// digits of `hash` are used: a hash read back from an annotation is text anyone could edit,
/// and must not make an invalid name.
pub fn revision_config_map_name(instance: &str, hash: &str, live: bool) -> String {
    let digits: String = hash
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(REVISION_DIGITS)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let suffix = if live { LIVE_SUFFIX } else { "" };
    format!("{}-{digits}{suffix}", shared_config_map_name(instance))
}

/// The revision ConfigMap name of `hash` under the instance's `configUpdate`.
pub fn revision_of(instance: &RedisInstance, hash: &str) -> String {
    revision_config_map_name(
        &instance.name_any(),
        hash,
        instance.spec.config_update == ConfigUpdate::Live,
    )
}

/// Whether `name` is the name of one of `instance`'s revision ConfigMaps.
pub fn is_revision_of(instance: &str, name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(instance)
        .and_then(|r| r.strip_prefix("-config-"))
    else {
        return false;
    };
    let digits = rest.strip_suffix(LIVE_SUFFIX).unwrap_or(rest);
    digits.len() == REVISION_DIGITS
        && digits
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// The desired `<name>-config`: one key, `redis.conf`, holding the rendered file.
pub fn config_map(instance: &RedisInstance, rendered: &RenderedConfig) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(instance, config_map_name(instance)),
        data: Some(config_data(rendered)),
        ..ConfigMap::default()
    }
}

/// The ConfigMap of the template revision `hash`, holding `rendered`; annotated with the whole
/// hash, immutable under `configUpdate: Restart` (see the module docs).
pub fn revision_config_map(
    instance: &RedisInstance,
    rendered: &RenderedConfig,
    hash: &str,
) -> ConfigMap {
    let mut metadata = owned_meta(instance, revision_of(instance, hash));
    metadata.annotations = Some(BTreeMap::from([(
        CONFIG_HASH_ANNOTATION.to_owned(),
        hash.to_owned(),
    )]));
    let live = instance.spec.config_update == ConfigUpdate::Live;
    ConfigMap {
        metadata,
        data: Some(config_data(rendered)),
        immutable: (!live).then_some(true),
        ..ConfigMap::default()
    }
}

fn config_data(rendered: &RenderedConfig) -> BTreeMap<String, String> {
    BTreeMap::from([(CONFIG_FILE_KEY.to_owned(), rendered.text.clone())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::render::render;
    use crate::resources::fixtures::instance;

    #[test]
    fn carries_rendered_text_and_owner() {
        let instance = instance(&[("maxmemory", "100mb")]);
        let rendered = render(&instance.spec.config);
        let cm = config_map(&instance, &rendered);
        assert_eq!(cm.metadata.name.as_deref(), Some("redis-example-config"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(cm.data.unwrap()["redis.conf"], rendered.text);
        assert_eq!(cm.immutable, None, "the spec's object is rewritten");
        let owner = &cm.metadata.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "RedisInstance");
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn a_revision_is_named_by_its_hash_owned_and_immutable_under_restart() {
        let instance = instance(&[("maxmemory", "100mb")]);
        let rendered = render(&instance.spec.config);
        let cm = revision_config_map(&instance, &rendered, &rendered.hash);
        let name = cm.metadata.name.clone().unwrap();
        assert_eq!(
            name,
            format!("redis-example-config-{}", &rendered.hash[..12])
        );
        assert!(is_revision_of("redis-example", &name));
        assert_eq!(cm.immutable, Some(true));
        assert_eq!(cm.data.unwrap()["redis.conf"], rendered.text);
        assert_eq!(
            cm.metadata.annotations.unwrap()[CONFIG_HASH_ANNOTATION],
            rendered.hash
        );
        assert_eq!(
            cm.metadata.labels,
            Some(crate::resources::labels(&instance))
        );
        let owner = &cm.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("RedisInstance", Some(true))
        );
    }

    #[test]
    fn a_live_revision_is_mutable_and_named_apart() {
        let mut instance = instance(&[("maxmemory", "100mb")]);
        instance.spec.config_update = ConfigUpdate::Live;
        let rendered = render(&instance.spec.config);
        let cm = revision_config_map(&instance, &rendered, &rendered.hash);
        assert_eq!(cm.immutable, None, "its live lines change in place");
        let name = cm.metadata.name.unwrap();
        assert_eq!(
            name,
            format!("redis-example-config-{}-live", &rendered.hash[..12])
        );
        assert!(is_revision_of("redis-example", &name));
        assert_ne!(
            name,
            revision_config_map_name("redis-example", &rendered.hash, false)
        );
    }

    #[test]
    fn names_are_valid_whatever_the_hash_text() {
        assert_eq!(
            revision_config_map_name("r", "ABCDEF0123456789", false),
            "r-config-abcdef012345"
        );
        // Text edited by hand into an annotation: only its hex digits are used.
        assert_eq!(
            revision_config_map_name("r", "é1x2-3/4", false),
            "r-config-1234"
        );
        for other in [
            "redis-example-config",
            "redis-example-config-0123456789a",
            "redis-example-config-0123456789abc",
            "redis-example-config-0123456789AB",
            "redis-example-config-0123456789ab-old",
            "other-config-0123456789ab",
            "redis-example-acl",
        ] {
            assert!(!is_revision_of("redis-example", other), "{other}");
        }
        assert!(is_revision_of(
            "redis-example",
            "redis-example-config-0123456789ab"
        ));
    }
}
