//! An object's labels as the caches keep them: one piece of text.
//!
//! A `BTreeMap` allocates its first node whole, about 550 bytes for `String` keys and values
//! however few labels it holds; the operator's objects carry three. At 10,000 instances the
//! caches hold 90,000 such objects, so each cached kind moves its labels out of its metadata
//! into this: `key=value` pairs, one a line (neither a label key nor its value can hold `=`
//! or a line break), about 90 bytes for the operator's three. Pods keep the annotations the
//! operator reads the same way (an annotation's key cannot hold `=` or a line break either;
//! a value with a line break is not kept).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The labels, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Box<str>);

impl Labels {
    /// Takes the labels out of `metadata`.
    pub(crate) fn take(metadata: &mut ObjectMeta) -> Self {
        Self::from(&metadata.labels.take().unwrap_or_default())
    }

    /// The value of label `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Every label of `wanted` is here with the same value (others may be here too).
    pub fn hold(&self, wanted: &BTreeMap<String, String>) -> bool {
        wanted
            .iter()
            .all(|(key, value)| self.get(key) == Some(value.as_str()))
    }

    /// Drops every label but `key`.
    pub fn keep_only(&mut self, key: &str) {
        let kept = self.get(key).map(|value| format!("{key}={value}"));
        self.0 = kept.unwrap_or_default().into_boxed_str();
    }

    /// Sets label `key` to `value`.
    #[cfg(test)]
    pub fn insert(&mut self, key: &str, value: &str) {
        let mut map = self.to_map();
        map.insert(key.to_owned(), value.to_owned());
        *self = Self::from(&map);
    }

    /// The labels as a map, as the API server would show them.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.pairs()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.lines().filter_map(|line| line.split_once('='))
    }
}

impl From<&BTreeMap<String, String>> for Labels {
    fn from(labels: &BTreeMap<String, String>) -> Self {
        let text: Vec<String> = labels
            .iter()
            .filter(|(_, v)| !v.contains(['\n', '\r']))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        Self(text.join("\n").into_boxed_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_label_and_answers_as_the_map_did() {
        let map = BTreeMap::from([
            (
                "app.kubernetes.io/instance".to_owned(),
                "redis-1".to_owned(),
            ),
            ("app.kubernetes.io/name".to_owned(), "redis".to_owned()),
            ("empty".to_owned(), String::new()),
        ]);
        let mut metadata = ObjectMeta {
            labels: Some(map.clone()),
            ..ObjectMeta::default()
        };
        let labels = Labels::take(&mut metadata);
        assert_eq!(metadata.labels, None, "moved out of the metadata");
        assert_eq!(labels.to_map(), map);
        assert_eq!(labels.get("app.kubernetes.io/instance"), Some("redis-1"));
        assert_eq!(labels.get("empty"), Some(""));
        assert_eq!(labels.get("app.kubernetes.io"), None);
        assert!(labels.hold(&BTreeMap::from([(
            "app.kubernetes.io/name".to_owned(),
            "redis".to_owned()
        )])));
        assert!(!labels.hold(&BTreeMap::from([(
            "app.kubernetes.io/name".to_owned(),
            "other".to_owned()
        )])));
        assert!(!labels.hold(&BTreeMap::from([("missing".to_owned(), String::new())])));
        assert!(Labels::default().hold(&BTreeMap::new()));
        assert_eq!(Labels::take(&mut ObjectMeta::default()), Labels::default());
        let mut one = labels.clone();
        one.keep_only("app.kubernetes.io/name");
        assert_eq!(one.to_map().len(), 1);
        assert_eq!(one.get("app.kubernetes.io/name"), Some("redis"));
        let mut none = labels;
        none.keep_only("missing");
        assert_eq!(none, Labels::default());
        let mut more = Labels::default();
        more.insert("a", "1=2");
        more.insert("b", "2");
        assert_eq!(more.get("a"), Some("1=2"), "a value may hold =");
        let broken = BTreeMap::from([("a".to_owned(), "1\nb=3".to_owned())]);
        assert_eq!(
            Labels::from(&broken),
            Labels::default(),
            "a line break is not kept"
        );
    }
}
