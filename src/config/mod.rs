//! Pure handling of `spec.config`: validate the directives, render `redis.conf`, hash it.

pub mod directives;
pub mod render;
pub mod validate;

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::crd::RedisInstance;

/// The directives the pods run: `spec.config`, plus, on a replicated instance with a password,
/// `masterauth` set to it, so that replicas authenticate to the primary they follow, plus the
/// TLS directives of `spec.tls`.
pub fn effective(instance: &RedisInstance) -> Cow<'_, BTreeMap<String, String>> {
    let tls = crate::tls::directives(instance);
    let mut config = without_tls(instance);
    if !tls.is_empty() {
        let with = config.to_mut();
        for (name, value) in tls {
            with.insert(name.to_owned(), value);
        }
    }
    config
}

fn without_tls(instance: &RedisInstance) -> Cow<'_, BTreeMap<String, String>> {
    let config = &instance.spec.config;
    match config.get("requirepass") {
        Some(password)
            if crate::resources::replicated(instance) && !config.contains_key("masterauth") =>
        {
            let mut with = config.clone();
            with.insert("masterauth".to_owned(), password.clone());
            Cow::Owned(with)
        }
        _ => Cow::Borrowed(config),
    }
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
    fn replicas_of_a_password_protected_instance_authenticate_with_it() {
        let mut one = instance(&[("requirepass", "s3cret")]);
        assert!(
            !effective(&one).contains_key("masterauth"),
            "one pod follows nobody"
        );
        one.spec.replicas = 3;
        assert_eq!(effective(&one)["masterauth"], "s3cret");
        one.spec.config.insert("masterauth".into(), "other".into());
        assert_eq!(
            effective(&one)["masterauth"],
            "other",
            "the user's own wins"
        );
    }
}
