//! Renders `spec.config` into a deterministic redis.conf and hashes it.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Where the config volume is mounted, and the file Redis is started with.
pub const CONFIG_DIR: &str = "/usr/local/etc/redis";
/// Key of the rendered file inside the ConfigMap.
pub const CONFIG_FILE_KEY: &str = "redis.conf";
/// Mount path of the data volume; Redis's `dir`.
pub const DATA_DIR: &str = "/data";
/// The port every Redis pod listens on.
pub const REDIS_PORT: i32 = 6379;

/// Directives the operator always sets; validation refuses them from users. With `tls-port`
/// (rendered from `spec.tls`), the plain port is closed: TLS only.
fn operator_directives(tls: bool) -> [(&'static str, String); 4] {
    let port = if tls { 0 } else { REDIS_PORT };
    [
        // Listen on every address of the pod, IPv6 only where the pod has it.
        ("bind", "* -::*".to_owned()),
        // Kubernetes supervises the process; a daemonized Redis would look like an exit.
        ("daemonize", "no".to_owned()),
        ("dir", DATA_DIR.to_owned()),
        ("port", port.to_string()),
    ]
}

/// Defaults a user may override. Protected mode would refuse every client outside the pod
/// when no password is set, which is the common in-cluster setup.
pub const USER_OVERRIDABLE_DEFAULTS: &[(&str, &str)] = &[("protected-mode", "no")];

const HEADER: &str =
    "# Rendered by redis-operator from spec.config; edit the RedisInstance, not this file.\n";

/// A rendered redis.conf and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedConfig {
    /// The file's exact bytes.
    pub text: String,
    /// Lowercase hex SHA-256 of `text`, so `sha256sum redis.conf` shows the same value.
    pub hash: String,
}

impl RenderedConfig {
    /// The first 12 hex digits, for columns and log lines.
    pub fn short_hash(&self) -> &str {
        short_hash(&self.hash)
    }
}

/// The first 12 characters of a hash (all of it when shorter). Hashes read back from
/// annotations are user-editable text, so this counts characters, not bytes.
pub fn short_hash(hash: &str) -> &str {
    crate::text::prefix_chars(hash, 12)
}

/// Renders user directives (already validated) plus the operator's own, sorted by name,
/// one directive per line, so equal configs always give equal bytes and hashes.
pub fn render(user: &BTreeMap<String, String>) -> RenderedConfig {
    let mut lines: BTreeMap<String, String> = USER_OVERRIDABLE_DEFAULTS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), quote(v)))
        .collect();
    for (name, value) in user {
        lines.insert(name.to_ascii_lowercase(), quote(value));
    }
    for (name, value) in operator_directives(user.contains_key("tls-port")) {
        // Raw, not quoted: `bind` takes several arguments.
        lines.insert(name.to_owned(), value);
    }
    let mut text = String::from(HEADER);
    for (name, value) in &lines {
        text.push_str(name);
        text.push(' ');
        text.push_str(value);
        text.push('\n');
    }
    let hash = config_hash(&text);
    RenderedConfig { text, hash }
}

/// SHA-256 of a redis.conf's bytes, as lowercase hex.
pub fn config_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Quotes a value the way Redis's config tokenizer reads it back as one argument. Redis splits
/// a single quoted argument of multi-argument directives (`save "900 1 300 10"`) on spaces itself.
fn quote(value: &str) -> String {
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\') || c.is_control());
    if !needs_quotes {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\x{:02x}", c as u32 & 0xff)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::config_of as config;

    #[test]
    fn renders_sorted_directives_with_operator_lines() {
        let rendered = render(&config(&[
            ("maxmemory-policy", "allkeys-lru"),
            ("maxmemory", "100mb"),
            ("appendonly", "yes"),
        ]));
        assert_eq!(
            rendered.text,
            format!(
                "{HEADER}appendonly yes\nbind * -::*\ndaemonize no\ndir /data\nmaxmemory 100mb\n\
                 maxmemory-policy allkeys-lru\nport 6379\nprotected-mode no\n"
            )
        );
    }

    #[test]
    fn tls_closes_the_plain_port() {
        let mut instance = crate::resources::fixtures::instance(&[("maxmemory", "100mb")]);
        instance.spec.tls = Some(crate::crd::TlsSpec {
            secret_name: "redis-tls".into(),
            auth_clients: false,
        });
        let rendered = render(&crate::config::effective(&instance));
        assert!(rendered.text.contains("\nport 0\n"), "{}", rendered.text);
        assert!(rendered.text.contains("\ntls-port 6379\n"));
        assert!(rendered.text.contains("\ntls-cert-file /tls/tls.crt\n"));
        assert!(rendered.text.contains("\ntls-replication yes\n"));
        assert!(rendered.text.contains("\nmaxmemory 100mb\n"));
    }

    #[test]
    fn quotes_values_with_spaces_and_empty_values() {
        let rendered = render(&config(&[("save", "900 1 300 10"), ("requirepass", "")]));
        assert!(rendered.text.contains("save \"900 1 300 10\"\n"));
        assert!(rendered.text.contains("requirepass \"\"\n"));
    }

    #[test]
    fn escapes_quotes_and_backslashes() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("plain"), "plain");
    }

    #[test]
    fn user_may_override_protected_mode_but_not_operator_lines() {
        let rendered = render(&config(&[("protected-mode", "yes"), ("port", "1234")]));
        assert!(rendered.text.contains("protected-mode yes\n"));
        assert!(rendered.text.contains("port 6379\n"));
        assert!(!rendered.text.contains("1234"));
    }

    #[test]
    fn hash_is_sha256_hex_of_the_text_and_stable() {
        let a = render(&config(&[("maxmemory", "100mb")]));
        let b = render(&config(&[("maxmemory", "100mb")]));
        let c = render(&config(&[("maxmemory", "200mb")]));
        assert_eq!(a, b);
        assert_ne!(a.hash, c.hash);
        assert_eq!(a.hash.len(), 64);
        // Known vector: SHA-256 of "abc".
        assert_eq!(
            config_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(a.short_hash(), &a.hash[..12]);
    }

    #[test]
    fn a_hand_written_non_ascii_hash_is_shortened_without_panicking() {
        // Its 12th byte falls inside a character.
        assert_eq!(short_hash("abcdefghijké€xyz"), "abcdefghijké");
        assert_eq!(short_hash("€€€€€€€€€€€€€€"), "€€€€€€€€€€€€");
    }
}
