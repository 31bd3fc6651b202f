//! Pure handling of `spec.config`: validate the directives, render `redis.conf`, hash it.

pub mod directives;
pub mod render;
pub mod validate;

/// Builds a `spec.config` map from pairs, for tests.
#[cfg(test)]
pub(crate) fn config_of(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
