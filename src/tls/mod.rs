//! TLS from `spec.tls`: the directives the pods run, the Secret volume they read, and the name
//! the operator verifies when it dials a pod.
//!
//! Redis serves TLS only, on the usual port: `port 0`, `tls-port 6379`, replication over TLS.
//! The Secret is mounted as a whole directory (never `subPath`, whose files never refresh), so
//! a renewed certificate reaches the pods' files, and `CONFIG SET` of the same file paths makes
//! Redis read them again: no restart, and the config hash never depends on the Secret's content.

pub mod client;
pub mod material;

use kube::ResourceExt;

use crate::config::render::REDIS_PORT;
use crate::crd::RedisInstance;

/// Name of the pod volume holding the Secret.
pub const TLS_VOLUME: &str = "tls";
/// Where the Secret's files appear in the Redis container.
pub const TLS_DIR: &str = "/tls";
/// The Secret's keys, as a `kubernetes.io/tls` Secret from cert-manager names them.
pub const CERT_KEY: &str = "tls.crt";
/// Private key of `tls.crt`.
pub const KEY_KEY: &str = "tls.key";
/// The CA that signed `tls.crt`, which clients and the operator trust.
pub const CA_KEY: &str = "ca.crt";

/// `tls-*` directives users may set in `spec.config`: tuning that needs no file and changes
/// nothing the operator relies on. Every other `tls-*` directive is the operator's.
pub const USER_TUNABLE: &[&str] = &[
    "tls-prefer-server-ciphers",
    "tls-session-caching",
    "tls-session-cache-size",
    "tls-session-cache-timeout",
];

fn path(key: &str) -> String {
    format!("{TLS_DIR}/{key}")
}

/// The directives `spec.tls` adds to the pods' config (`port 0` comes with `tls-port`, see
/// `config::render`); none when TLS is off. The paths never change, so rotating the
/// certificate changes no hash and restarts nothing.
pub fn directives(instance: &RedisInstance) -> Vec<(&'static str, String)> {
    let Some(tls) = &instance.spec.tls else {
        return Vec::new();
    };
    vec![
        ("tls-port", REDIS_PORT.to_string()),
        ("tls-cert-file", path(CERT_KEY)),
        ("tls-key-file", path(KEY_KEY)),
        ("tls-ca-cert-file", path(CA_KEY)),
        // Redis presents `tls-cert-file` as its client certificate to the primary it follows.
        ("tls-replication", "yes".to_owned()),
        (
            "tls-auth-clients",
            if tls.auth_clients { "yes" } else { "no" }.to_owned(),
        ),
    ]
}

/// `CONFIG SET` pairs that make Redis read its certificate, key and CA files again.
pub fn reload_pairs() -> Vec<(String, String)> {
    [
        ("tls-cert-file", CERT_KEY),
        ("tls-key-file", KEY_KEY),
        ("tls-ca-cert-file", CA_KEY),
    ]
    .into_iter()
    .map(|(name, key)| (name.to_owned(), path(key)))
    .collect()
}

/// The name the operator verifies in every pod's certificate while dialing the pod's IP: the
/// headless Service's, `<instance>.<namespace>.svc`, the same for every pod since they share
/// one certificate.
pub fn server_name(instance: &RedisInstance) -> String {
    format!(
        "{}.{}.svc",
        instance.name_any(),
        instance.namespace().unwrap_or_default()
    )
}

/// Arguments that make `redis-cli` in the pod speak TLS, verifying the server against the CA
/// and presenting the pod's own certificate (needed when clients must authenticate).
pub fn redis_cli_args() -> String {
    format!(
        "--tls --cacert {} --cert {} --key {}",
        path(CA_KEY),
        path(CERT_KEY),
        path(KEY_KEY)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TlsSpec;
    use crate::resources::fixtures::instance;

    fn with_tls(auth_clients: bool) -> RedisInstance {
        let mut i = instance(&[]);
        i.spec.tls = Some(TlsSpec {
            secret_name: "redis-tls".into(),
            auth_clients,
        });
        i
    }

    #[test]
    fn no_tls_adds_nothing() {
        assert!(directives(&instance(&[])).is_empty());
    }

    #[test]
    fn tls_serves_on_the_redis_port_from_the_mounted_files() {
        let d: std::collections::BTreeMap<_, _> =
            directives(&with_tls(false)).into_iter().collect();
        assert_eq!(d["tls-port"], "6379");
        assert_eq!(d["tls-cert-file"], "/tls/tls.crt");
        assert_eq!(d["tls-key-file"], "/tls/tls.key");
        assert_eq!(d["tls-ca-cert-file"], "/tls/ca.crt");
        assert_eq!(d["tls-replication"], "yes");
        assert_eq!(d["tls-auth-clients"], "no");
        let d: std::collections::BTreeMap<_, _> = directives(&with_tls(true)).into_iter().collect();
        assert_eq!(d["tls-auth-clients"], "yes");
    }

    #[test]
    fn reload_sets_the_same_paths_the_config_names() {
        let d: std::collections::BTreeMap<_, _> =
            directives(&with_tls(false)).into_iter().collect();
        for (name, value) in reload_pairs() {
            assert_eq!(d[name.as_str()], value, "{name}");
        }
    }

    #[test]
    fn the_verified_name_is_the_headless_service() {
        assert_eq!(server_name(&with_tls(false)), "redis-example.team-a.svc");
    }
}
