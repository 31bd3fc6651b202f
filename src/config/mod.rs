//! Pure handling of `spec.config`: validate the directives, render `redis.conf`, hash it.

pub mod directives;
pub mod render;
pub mod validate;

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::crd::RedisInstance;

/// The directives the pods run: `spec.config` without any password (those live in Secrets,
/// see `auth`), plus the ACL file that holds the users unless auth is disabled, plus the TLS
/// directives of `spec.tls`.
pub fn effective(instance: &RedisInstance) -> Cow<'_, BTreeMap<String, String>> {
    let tls = crate::tls::directives(instance);
    let mut config = with_credentials(instance);
    if !tls.is_empty() {
        let with = config.to_mut();
        for (name, value) in tls {
            with.insert(name.to_owned(), value);
        }
    }
    config
}

fn with_credentials(instance: &RedisInstance) -> Cow<'_, BTreeMap<String, String>> {
    let config = &instance.spec.config;
    let enabled = crate::auth::enabled(instance);
    let has_password = config.keys().any(|k| k.eq_ignore_ascii_case("requirepass"));
    if !enabled && !has_password {
        return Cow::Borrowed(config);
    }
    let mut with = config.clone();
    with.retain(|k, _| !k.eq_ignore_ascii_case("requirepass"));
    if enabled {
        with.insert(
            "aclfile".to_owned(),
            format!("{}/{}", crate::auth::ACL_DIR, crate::auth::ACL_FILE_KEY),
        );
    }
    Cow::Owned(with)
}

/// The redis.conf an instance's pods run: [`effective`] rendered.
pub fn rendered(instance: &RedisInstance) -> render::RenderedConfig {
    render::render(&effective(instance))
}

/// Everything refused in an instance's spec: its directives, and its `spec.auth` with the
/// credentials `spec.config` may not carry.
pub fn violations(instance: &RedisInstance) -> Vec<validate::Violation> {
    let mut found = validate::validate(&instance.spec.config);
    found.extend(crate::auth::validate(instance));
    found
}

/// Builds a `spec.config` map from pairs, for tests.
#[cfg(test)]
pub(crate) fn config_of(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::instance;

    #[test]
    fn passwords_never_reach_the_file_and_the_acl_file_does_unless_auth_is_off() {
        let mut one = instance(&[("requirepass", "s3cret"), ("maxmemory", "1mb")]);
        one.spec.replicas = 3;
        let config = effective(&one);
        assert!(!config.contains_key("requirepass"));
        assert!(!config.contains_key("masterauth"));
        assert_eq!(config["aclfile"], "/etc/redis-acl/users.acl");
        one.spec.auth.disabled = true;
        one.spec.config.remove("requirepass");
        assert_eq!(*effective(&one), one.spec.config, "nothing added");
    }
}
