//! A Secret as the operator keeps it: its metadata and its values as text, in a short list.
//!
//! The k8s-openapi `Secret` holds its data in a `BTreeMap`, whose first node is a fixed block
//! of about 550 bytes however few keys it holds; the operator owns three Secrets per instance,
//! each of one or two keys, and reads every value as text (passwords, the ACL file).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

use super::{Labels, split_metadata};

/// The cached Secret.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(from = "Wire")]
pub struct CachedSecret {
    /// Its metadata (managed fields and owner references dropped by the watch), without its
    /// labels.
    pub metadata: ObjectMeta,
    /// Its labels.
    pub labels: Labels,
    /// Its values that are text, by key, in key order (a value that is not UTF-8 is never a
    /// password or an ACL file, and is left out).
    values: Vec<(String, String)>,
}

/// The Secret as the API server sends it, with only the fields the cache keeps.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default, rename = "data", deserialize_with = "text_values")]
    values: Vec<(String, String)>,
}

impl From<Wire> for CachedSecret {
    fn from(mut wire: Wire) -> Self {
        Self {
            labels: Labels::take(&mut wire.metadata),
            metadata: wire.metadata,
            values: wire.values,
        }
    }
}

fn text_values<'de, D: Deserializer<'de>>(data: D) -> Result<Vec<(String, String)>, D::Error> {
    let data = Option::<BTreeMap<String, ByteString>>::deserialize(data)?;
    Ok(as_text(data.unwrap_or_default()))
}

fn as_text(data: BTreeMap<String, ByteString>) -> Vec<(String, String)> {
    let mut values: Vec<_> = data
        .into_iter()
        .filter_map(|(key, bytes)| Some((key, String::from_utf8(bytes.0).ok()?)))
        .collect();
    values.shrink_to_fit();
    values
}

namespaced_resource!(CachedSecret, "Secret", "", "secrets");

impl CachedSecret {
    /// The value of `key`, as text.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value that is not empty, in key order: each is one password.
    pub fn passwords(&self) -> Vec<String> {
        self.values
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl From<&Secret> for CachedSecret {
    /// The Secret as the watch would have delivered it to the cache.
    fn from(secret: &Secret) -> Self {
        let (metadata, labels) = split_metadata(&secret.metadata);
        Self {
            metadata,
            labels,
            values: as_text(secret.data.clone().unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(data: &[(&str, &[u8])]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("s".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn keeps_the_text_values_read_from_the_api_servers_json() {
        let full = secret(&[
            ("b", b"two"),
            ("a", b"one"),
            ("empty", b""),
            ("bin", &[0xff]),
        ]);
        let cached: CachedSecret =
            serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        assert_eq!(cached, CachedSecret::from(&full));
        assert_eq!(cached.value("a"), Some("one"));
        assert_eq!(cached.value("empty"), Some(""));
        assert_eq!(cached.value("bin"), None, "not text");
        assert_eq!(
            cached.passwords(),
            ["one", "two"],
            "key order, no empty one"
        );
        assert_eq!(cached.metadata.resource_version.as_deref(), Some("7"));
        let bare: CachedSecret =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert!(bare.passwords().is_empty());
    }
}
