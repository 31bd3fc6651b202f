//! The ConfigMap that carries the rendered redis.conf.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::owned_meta;
use crate::config::render::{CONFIG_FILE_KEY, RenderedConfig};
use crate::crd::RedisInstance;

/// `<instance>-config`.
pub fn config_map_name(instance: &RedisInstance) -> String {
    format!("{}-config", instance.name_any())
}

/// The desired ConfigMap: one key, `redis.conf`, holding the rendered file.
pub fn config_map(instance: &RedisInstance, rendered: &RenderedConfig) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(instance, config_map_name(instance)),
        data: Some(BTreeMap::from([(
            CONFIG_FILE_KEY.to_owned(),
            rendered.text.clone(),
        )])),
        ..ConfigMap::default()
    }
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
        let owner = &cm.metadata.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "RedisInstance");
        assert_eq!(owner.controller, Some(true));
    }
}
