//! The ACL users an instance's Redis runs with, as one pure description: rendered into the ACL
//! file and into the `ACL SETUSER` commands that bring running pods in line with it.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use super::{OPERATOR_USER, REPLICATION_USER};

/// The rights of the operator's user: exactly the commands it sends.
pub const OPERATOR_RULES: &str = "-@all +ping +info +role +config|get +config|set +replicaof \
     +failover +acl|setuser +acl|deluser +acl|users";
/// The rights of the replication user: what a replica sends to its primary.
pub const REPLICATION_RULES: &str = "-@all +psync +replconf +ping";

/// One ACL user as Redis should hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclUser {
    pub name: String,
    /// Off: nobody can authenticate as it (`default` when the spec declares other users).
    pub enabled: bool,
    /// SHA-256 (hex) of each accepted password.
    pub password_hashes: BTreeSet<String>,
    /// Keys, channels and commands, as `ACL SETUSER` takes them.
    pub rules: String,
}

impl AclUser {
    /// A user that accepts each of `passwords`.
    pub fn with_passwords<'a>(
        name: &str,
        passwords: impl IntoIterator<Item = &'a str>,
        rules: &str,
    ) -> Self {
        Self {
            name: name.to_owned(),
            enabled: true,
            password_hashes: passwords.into_iter().map(hash_password).collect(),
            rules: rules.to_owned(),
        }
    }

    /// `default`, switched off, for instances whose clients use their own users.
    pub fn default_off() -> Self {
        Self {
            name: "default".to_owned(),
            enabled: false,
            password_hashes: BTreeSet::new(),
            rules: "-@all".to_owned(),
        }
    }

    /// The rules that set this user completely, whatever it held before: one `ACL SETUSER`
    /// with them is atomic, and clients already authenticated as the user stay connected.
    pub fn rules_from_scratch(&self) -> Vec<String> {
        let mut rules = vec![
            if self.enabled { "on" } else { "off" }.to_owned(),
            "resetpass".to_owned(),
        ];
        rules.extend(self.password_hashes.iter().map(|h| format!("#{h}")));
        rules.extend(["resetkeys", "resetchannels", "-@all"].map(str::to_owned));
        rules.extend(self.rules.split_whitespace().map(str::to_owned));
        rules
    }
}

/// SHA-256 (hex) of a password, the form Redis accepts as `#<hash>`.
pub fn hash_password(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

/// Every user of an instance: the clients' (from the spec or the generated `default`), with
/// `default` off when the clients have users of their own, then the operator's and
/// replication's.
pub fn instance_users(
    clients: Vec<AclUser>,
    operator_password: &str,
    replication_password: &str,
) -> Vec<AclUser> {
    let mut users = clients;
    if !users.iter().any(|u| u.name == "default") {
        users.push(AclUser::default_off());
    }
    users.push(AclUser::with_passwords(
        OPERATOR_USER,
        [operator_password],
        OPERATOR_RULES,
    ));
    users.push(AclUser::with_passwords(
        REPLICATION_USER,
        [replication_password],
        REPLICATION_RULES,
    ));
    users.sort_by(|a, b| a.name.cmp(&b.name));
    users
}

/// The ACL file: one `user` line per user, sorted, so equal users give equal bytes.
pub fn render(users: &[AclUser]) -> String {
    let mut text = String::new();
    for user in users {
        text.push_str("user ");
        text.push_str(&user.name);
        for rule in user.rules_from_scratch() {
            text.push(' ');
            text.push_str(&rule);
        }
        text.push('\n');
    }
    text
}

/// SHA-256 of the ACL file: what status records once every pod runs it.
pub fn fingerprint(file: &str) -> String {
    hex::encode(Sha256::digest(file.as_bytes()))
}

/// Why a user name from the spec cannot be used, if it cannot.
pub fn user_name_problem(name: &str) -> Option<String> {
    if name == OPERATOR_USER || name == REPLICATION_USER {
        return Some(format!(
            "{name} is the operator's own user; choose another name"
        ));
    }
    let odd = name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    odd.then(|| "a user name is letters, digits and - _ . @ only".to_owned())
}

/// Why a user's rules cannot be used, if they cannot: passwords come only from Secrets, and
/// the operator decides whether a user is on.
pub fn rules_problem(rules: &str) -> Option<String> {
    let bad = rules.split_whitespace().find(|rule| {
        let lower = rule.to_ascii_lowercase();
        rule.starts_with(['>', '<', '#', '!'])
            || ["nopass", "resetpass", "reset", "on", "off"].contains(&lower.as_str())
    })?;
    Some(format!(
        "{bad:?} is not allowed in rules: passwords come from the user's Secret and the operator switches users on"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_holds_hashes_never_passwords_and_switches_default_off_beside_other_users() {
        let app = AclUser::with_passwords("app", ["old", "new"], "~app:* +@read");
        let file = render(&instance_users(vec![app], "op-pw", "repl-pw"));
        for password in ["old", "new", "op-pw", "repl-pw"] {
            assert!(!file.contains(password), "{password} in {file}");
            assert!(file.contains(&hash_password(password)));
        }
        let lines: Vec<&str> = file.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("user app on resetpass #"));
        assert!(lines[0].ends_with("resetkeys resetchannels -@all ~app:* +@read"));
        assert_eq!(
            lines[1],
            "user default off resetpass resetkeys resetchannels -@all -@all"
        );
        assert!(lines[2].starts_with("user redis-operator on resetpass #"));
        assert!(lines[3].ends_with("-@all +psync +replconf +ping"));
    }

    #[test]
    fn a_declared_default_user_is_kept_as_declared() {
        let default = AclUser::with_passwords("default", ["pw"], "~* &* +@all");
        let users = instance_users(vec![default.clone()], "a", "b");
        assert_eq!(users.iter().filter(|u| u.name == "default").count(), 1);
        assert!(users.contains(&default));
    }

    #[test]
    fn equal_users_render_equal_files() {
        let one = AclUser::with_passwords("app", ["b", "a"], "+@all");
        let two = AclUser::with_passwords("app", ["a", "b"], "+@all");
        assert_eq!(fingerprint(&render(&[one])), fingerprint(&render(&[two])));
    }

    #[test]
    fn rules_may_not_carry_passwords_or_switches() {
        for rules in [
            ">pw +@all",
            "#abc",
            "nopass",
            "ON +@all",
            "+@all !abc",
            "<pw",
        ] {
            assert!(rules_problem(rules).is_some(), "{rules}");
        }
        assert!(rules_problem("~* &* +@all -flushall").is_none());
        assert!(user_name_problem("app-1.x@corp").is_none());
        assert!(user_name_problem("a b").is_some());
    }
}
