//! The Secrets an instance owns: the generated password of its `default` user, the ACL file
//! Redis loads (password hashes only), and the operator's own passwords (never mounted).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{CachedSecret, owned_meta};
use crate::auth::{
    ACL_FILE_KEY, GENERATED_PASSWORD_KEY, OPERATOR_PASSWORD_KEY, REPLICATION_PASSWORD_KEY,
    acl_secret_name, generated_secret_name, system_secret_name,
};
use crate::crd::RedisInstance;

fn bytes(text: &str) -> ByteString {
    ByteString(text.as_bytes().to_vec())
}

fn opaque(metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Secret {
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// `<name>-auth`: the password applications use as the `default` user.
pub fn generated_auth_secret(instance: &RedisInstance, password: &str) -> Secret {
    Secret {
        data: Some(BTreeMap::from([(
            GENERATED_PASSWORD_KEY.to_owned(),
            bytes(password),
        )])),
        ..opaque(owned_meta(instance, generated_secret_name(instance)))
    }
}

/// The operator's passwords for its own user and for replication; generated once, kept in
/// `<name>-operator` and never mounted into the pods.
#[derive(Clone, PartialEq, Eq)]
pub struct SystemPasswords {
    pub operator: String,
    pub replication: String,
}

impl SystemPasswords {
    /// The passwords a `<name>-operator` Secret holds, if it holds both.
    pub fn of(secret: &CachedSecret) -> Option<Self> {
        let text = |key: &str| {
            secret
                .value(key)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Some(Self {
            operator: text(OPERATOR_PASSWORD_KEY)?,
            replication: text(REPLICATION_PASSWORD_KEY)?,
        })
    }
}

/// `<name>-operator`: the system passwords, created once and never rewritten.
pub fn system_secret(instance: &RedisInstance, system: &SystemPasswords) -> Secret {
    Secret {
        data: Some(BTreeMap::from([
            (OPERATOR_PASSWORD_KEY.to_owned(), bytes(&system.operator)),
            (
                REPLICATION_PASSWORD_KEY.to_owned(),
                bytes(&system.replication),
            ),
        ])),
        ..opaque(owned_meta(instance, system_secret_name(instance)))
    }
}

/// `<name>-acl`: the ACL file the pods mount, and nothing else. `resource_version` makes the
/// write conditional on the Secret being the one read.
pub fn acl_secret(
    instance: &RedisInstance,
    acl_file: &str,
    resource_version: Option<String>,
) -> Secret {
    let mut metadata = owned_meta(instance, acl_secret_name(instance));
    metadata.resource_version = resource_version;
    Secret {
        data: Some(BTreeMap::from([(ACL_FILE_KEY.to_owned(), bytes(acl_file))])),
        ..opaque(metadata)
    }
}

/// The ACL file a `<name>-acl` Secret holds.
pub fn acl_file_of(secret: &CachedSecret) -> Option<&str> {
    secret.value(ACL_FILE_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::instance;

    #[test]
    fn owned_secrets_round_trip_and_are_owned() {
        let one = instance(&[]);
        let system = SystemPasswords {
            operator: "op".into(),
            replication: "re".into(),
        };
        let acl = acl_secret(&one, "user x\n", Some("7".into()));
        assert_eq!(acl.metadata.name.as_deref(), Some("redis-example-acl"));
        assert_eq!(acl.metadata.resource_version.as_deref(), Some("7"));
        assert!(acl.metadata.owner_references.is_some());
        assert_eq!(acl_file_of(&CachedSecret::from(&acl)), Some("user x\n"));
        assert_eq!(acl.data.as_ref().unwrap().len(), 1, "the file only");
        let held = system_secret(&one, &system);
        assert_eq!(
            held.metadata.name.as_deref(),
            Some("redis-example-operator")
        );
        assert!(SystemPasswords::of(&CachedSecret::from(&held)) == Some(system));
        let generated = generated_auth_secret(&one, "pw");
        assert_eq!(CachedSecret::from(&generated).passwords(), ["pw"]);
        assert_eq!(
            generated.metadata.name.as_deref(),
            Some("redis-example-auth")
        );
    }
}
