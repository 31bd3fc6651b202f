//! Who may talk to an instance's Redis: ACL users whose passwords come from Secrets, the ACL
//! file Redis loads at startup, and the operator's and replication's own users.

pub mod acl;
pub mod pods;

use std::collections::BTreeSet;

use kube::ResourceExt;

use crate::config::validate::Violation;
use crate::crd::RedisInstance;

/// The operator's own ACL user: only the commands it runs.
pub const OPERATOR_USER: &str = "redis-operator";
/// The user replicas authenticate as to their primary: only the replication commands.
pub const REPLICATION_USER: &str = "replication";
/// Where the ACL file's Secret is mounted (a whole directory, so updates reach the pod).
pub const ACL_DIR: &str = "/etc/redis-acl";
/// Key of the ACL file in the `<name>-acl` Secret (its only key), and its file name in
/// [`ACL_DIR`].
pub const ACL_FILE_KEY: &str = "users.acl";
/// Key of the generated password in `<name>-auth`.
pub const GENERATED_PASSWORD_KEY: &str = "password";
/// Keys of the operator's and replication's passwords in `<name>-operator` (never mounted).
pub const OPERATOR_PASSWORD_KEY: &str = "operator-password";
pub const REPLICATION_PASSWORD_KEY: &str = "replication-password";
/// Directives whose values are credentials: never rendered, shown or logged.
pub const SECRET_DIRECTIVES: &[&str] = &[
    "requirepass",
    "masterauth",
    "tls-key-file-pass",
    "tls-client-key-file-pass",
];

/// Whether the instance runs with ACL users (everything but `spec.auth.disabled`).
pub fn enabled(instance: &RedisInstance) -> bool {
    !instance.spec.auth.disabled
}

/// The Secret the operator generates the `default` user's password into, when the spec names
/// no users.
pub fn generated_secret_name(instance: &RedisInstance) -> String {
    format!("{}-auth", instance.name_any())
}

/// The Secret holding the ACL file: password hashes only.
pub fn acl_secret_name(instance: &RedisInstance) -> String {
    format!("{}-acl", instance.name_any())
}

/// The Secret holding the operator's own passwords, for its user and for replication.
pub fn system_secret_name(instance: &RedisInstance) -> String {
    format!("{}-operator", instance.name_any())
}

/// Every Secret whose change concerns the instance: the users', those the operator owns, and
/// the certificate of `spec.tls`.
pub fn referenced_secrets(instance: &RedisInstance) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    names.extend(instance.spec.tls.as_ref().map(|t| t.secret_name.clone()));
    if !enabled(instance) {
        return names;
    }
    names.insert(acl_secret_name(instance));
    names.insert(system_secret_name(instance));
    if instance.spec.auth.users.is_empty() {
        names.insert(generated_secret_name(instance));
    }
    names.extend(
        instance
            .spec
            .auth
            .users
            .iter()
            .map(|u| u.password_secret.clone()),
    );
    names
}

/// Whether a directive's value is a credential.
pub fn is_secret_directive(key: &str) -> bool {
    SECRET_DIRECTIVES
        .iter()
        .any(|d| d.eq_ignore_ascii_case(key))
}

/// `value`, or a placeholder when the directive holds a credential.
pub fn shown<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret_directive(key) {
        "<redacted>"
    } else {
        value
    }
}

/// A fresh random password: 32 bytes from the OS, hex.
pub fn generate_password() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// What is wrong with `spec.auth` and with credentials in `spec.config`.
pub fn validate(instance: &RedisInstance) -> Vec<Violation> {
    let spec = &instance.spec;
    let mut violations = Vec::new();
    let refuse = |directive: &str, reason: String| Violation {
        directive: directive.to_owned(),
        reason,
    };
    // An instance that ran (`status::has_run`) with `requirepass` under an earlier version keeps working: its
    // password moves into `<name>-auth` (see `seed_password`). Anywhere else it is a password in
    // plain text, or a second, conflicting one for `default`.
    let declared = !spec.auth.users.is_empty() || spec.auth.disabled;
    for key in spec.config.keys() {
        if !key.eq_ignore_ascii_case("requirepass") {
            continue;
        }
        if declared {
            violations.push(refuse(
                key,
                "not supported with spec.auth: give the default user's passwords in a Secret named by spec.auth.users".into(),
            ));
        } else if !crate::status::has_run(instance) {
            violations.push(refuse(
                key,
                format!(
                    "passwords are not read from spec.config, where anyone who can read the RedisInstance sees them: remove it to get a generated password in Secret {}, or name a Secret in spec.auth.users",
                    generated_secret_name(instance)
                ),
            ));
        }
    }
    let mut names = BTreeSet::new();
    for user in &spec.auth.users {
        let field = format!("spec.auth.users[{}]", user.name);
        if let Some(why) = acl::user_name_problem(&user.name) {
            violations.push(refuse(&field, why));
        } else if !names.insert(user.name.as_str()) {
            violations.push(refuse(&field, "listed twice".into()));
        }
        if let Some(why) = acl::rules_problem(&user.rules) {
            violations.push(refuse(&format!("{field}.rules"), why));
        }
    }
    if spec.auth.disabled && !spec.auth.users.is_empty() {
        violations.push(refuse(
            "spec.auth.disabled",
            "users are listed: remove them or leave auth enabled".into(),
        ));
    }
    violations
}

/// The password an instance's `spec.config.requirepass` held, to move into `<name>-auth` when
/// the operator creates it, so clients that use it keep working after an upgrade.
pub fn seed_password(instance: &RedisInstance) -> Option<&str> {
    instance
        .spec
        .config
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("requirepass"))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// A user name and password the operator connects with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.user)
    }
}

/// How the operator reaches an instance's Redis: its own login, and the one replicas use to
/// log in to their primary. Both empty when `spec.auth.disabled`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub login: Option<Credentials>,
    pub replication: Option<Credentials>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AuthUser;
    use crate::resources::fixtures::instance;

    fn user(name: &str, rules: &str) -> AuthUser {
        AuthUser {
            name: name.into(),
            password_secret: format!("{name}-pw"),
            rules: rules.into(),
        }
    }

    #[test]
    fn requirepass_is_refused_unless_an_instance_that_already_ran_moves_it_to_a_secret() {
        let mut one = instance(&[("requirepass", "s3cret")]);
        let refused = validate(&one);
        assert_eq!(refused.len(), 1, "a new instance: {refused:?}");
        assert!(
            refused[0].reason.contains("redis-example-auth"),
            "{refused:?}"
        );
        one.status = Some(crate::crd::RedisInstanceStatus {
            config_hash: Some("0".repeat(64)),
            ..Default::default()
        });
        assert!(validate(&one).is_empty(), "an instance that already ran");
        assert_eq!(seed_password(&one), Some("s3cret"));
        one.spec.auth.users.push(user("app", "~* +@all"));
        let refused = validate(&one);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].reason.contains("spec.auth"), "{refused:?}");
    }

    #[test]
    fn reserved_or_odd_user_names_and_password_rules_are_refused() {
        let mut one = instance(&[]);
        one.spec.auth.users = vec![
            user(OPERATOR_USER, "+@all"),
            user("app", ">plain"),
            user("app", "+@all"),
            user("has space", "+@all"),
        ];
        let directives: Vec<String> = validate(&one).into_iter().map(|v| v.directive).collect();
        assert_eq!(
            directives,
            [
                "spec.auth.users[redis-operator]",
                "spec.auth.users[app].rules",
                "spec.auth.users[app]",
                "spec.auth.users[has space]",
            ]
        );
    }

    #[test]
    fn referenced_secrets_follow_the_spec() {
        let mut one = instance(&[]);
        let names: Vec<String> = referenced_secrets(&one).into_iter().collect();
        assert_eq!(
            names,
            [
                "redis-example-acl",
                "redis-example-auth",
                "redis-example-operator"
            ]
        );
        one.spec.auth.users.push(user("app", "+@all"));
        let names: Vec<String> = referenced_secrets(&one).into_iter().collect();
        assert_eq!(
            names,
            ["app-pw", "redis-example-acl", "redis-example-operator"]
        );
        one.spec.auth = Default::default();
        one.spec.auth.disabled = true;
        assert!(referenced_secrets(&one).is_empty());
        one.spec.tls = Some(crate::crd::TlsSpec {
            secret_name: "redis-tls".into(),
            auth_clients: false,
        });
        let names: Vec<String> = referenced_secrets(&one).into_iter().collect();
        assert_eq!(names, ["redis-tls"], "with auth off too");
    }

    #[test]
    fn credentials_never_print_their_password() {
        let c = Credentials {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(shown("MasterAuth", "x"), "<redacted>");
        assert_eq!(shown("maxmemory", "1mb"), "1mb");
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let (a, b) = (generate_password().unwrap(), generate_password().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
