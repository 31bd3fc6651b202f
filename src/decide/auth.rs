//! The credentials part of a step: which Secrets to create or write, whether the pods' ACL users
//! must be brought in line, what to tell, and when to look again.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::Notice;
use crate::auth::acl::{self, AclUser};
use crate::auth::{Access, Credentials, OPERATOR_USER, REPLICATION_USER, enabled, seed_password};
use crate::crd::RedisInstance;
use crate::resources::{
    CachedPod, CachedSecret, SystemPasswords, acl_file_of, acl_secret, generated_auth_secret,
    system_secret,
};

/// How soon to look again after a create found the Secret already there: someone created it
/// meanwhile, and the cache shows it soon.
pub const CREATED_ELSEWHERE: Duration = Duration::from_millis(200);

/// How soon to look again while a Secret the spec names is missing: the Secret watch brings
/// the step when it appears; this is the safety net.
const MISSING_RETRY: Duration = Duration::from_secs(5);

/// How soon to try a pod again that could not be brought in line.
const SYNC_RETRY: Duration = Duration::from_secs(2);

/// The rules of the `default` user the operator generates a password for.
const GENERATED_USER_RULES: &str = "~* &* +@all";

/// What the credentials decision reads: the Secrets as the actor read them, and its memory.
/// No `Debug`: it holds passwords.
#[derive(Clone, Copy)]
pub struct AuthView<'a> {
    /// The last valid spec.
    pub instance: &'a RedisInstance,
    /// `<name>-operator`.
    pub system: Owned<'a, SystemPasswords, SystemPasswords>,
    /// `<name>-auth`, looked up only when the spec names no users.
    pub generated: Option<Owned<'a, CachedSecret, str>>,
    /// The Secret of each user the spec names, in the spec's order; `None`: missing.
    pub named: &'a [Option<Arc<CachedSecret>>],
    /// The ACL Secret the pods mount.
    pub acl: Option<&'a CachedSecret>,
    /// The ACL fingerprint every running pod was brought in line with: the actor's memory, else
    /// `status.aclHash`.
    pub recorded: Option<&'a str>,
    /// The instance's pods.
    pub pods: &'a [Arc<CachedPod>],
    /// The Secrets named by the spec that were missing, as last told.
    pub missing_told: &'a [String],
    /// The user was told that `spec.config.requirepass` is not used.
    pub requirepass_told: bool,
}

/// A Secret the operator owns, as the actor found it.
pub enum Owned<'a, T, F: ?Sized> {
    /// Read (from the cache, or as the actor wrote it).
    Read(&'a T),
    /// Missing: the actor drew fresh passwords for it, used if it is created.
    Missing(&'a F),
}

// Derived, they would ask `T` and `F` to be `Copy`, not the references.
impl<T, F: ?Sized> Clone for Owned<'_, T, F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, F: ?Sized> Copy for Owned<'_, T, F> {}

/// What the credentials part of a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthStep {
    /// `spec.auth` is off: no login, no fingerprint remembered, nothing to look again for.
    Off,
    /// The rest, in order.
    Run(Box<AuthPlan>),
}

impl AuthStep {
    /// Whether performing it writes (a Secret, or the pods' users).
    pub fn is_write(&self) -> bool {
        match self {
            AuthStep::Off => false,
            AuthStep::Run(plan) => {
                !plan.create.is_empty() || plan.acl.is_some() || plan.sync.is_some()
            }
        }
    }
}

/// What a credentials step with every owned Secret present does, in order. Its `Debug` names
/// the Secrets it writes and never shows their content.
#[derive(Clone, PartialEq)]
pub struct AuthPlan {
    /// Secrets of the operator's to create first; one someone created meanwhile ends the step
    /// (see [`CREATED_ELSEWHERE`]).
    pub create: Vec<Secret>,
    /// How the live and replication steps log in.
    pub access: Access,
    /// The spec's Secrets missing now, to remember as told.
    pub missing: Vec<String>,
    /// `spec.config.requirepass` has been told about.
    pub requirepass_told: bool,
    /// Events to post.
    pub tell: Vec<Notice>,
    /// The ACL Secret to write.
    pub acl: Option<AclWrite>,
    /// The pods' ACL users to bring in line.
    pub sync: Option<UsersSync>,
    /// When to look again, once all of it is done.
    pub wake: Duration,
}

impl std::fmt::Debug for AuthPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let created: Vec<String> = self.create.iter().map(|s| s.name_any()).collect();
        let acl = self.acl.as_ref().map(|w| (w.secret.name_any(), w.create));
        let sync = self.sync.as_ref().map(|sync| {
            let pods: Vec<String> = sync.pods.iter().map(|(p, _)| p.name_any()).collect();
            (pods, &sync.logins, &sync.fingerprint)
        });
        f.debug_struct("AuthPlan")
            .field("create", &created)
            .field("access", &self.access)
            .field("missing", &self.missing)
            .field("requirepass_told", &self.requirepass_told)
            .field("tell", &self.tell)
            .field("acl", &acl)
            .field("sync", &sync)
            .field("wake", &self.wake)
            .finish()
    }
}

/// The ACL Secret, and how it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct AclWrite {
    /// Holding the file, and the resourceVersion it was decided from when it replaces one.
    pub secret: Secret,
    /// Server-side apply when one exists, else a create that fails if someone made one.
    pub create: bool,
    /// How many users the file holds, for the log.
    pub users: usize,
}

/// Bringing every running pod's ACL users in line with the file.
#[derive(Debug, Clone, PartialEq)]
pub struct UsersSync {
    /// The users to set; every other user is deleted.
    pub users: Vec<AclUser>,
    /// Logins to try on each pod, in order: the operator's, `default` with each of its
    /// passwords (a pod that has not been given the operator's user yet), none.
    pub logins: Vec<Option<Credentials>>,
    /// The file's fingerprint, remembered once every pod is in line.
    pub fingerprint: String,
    /// The running pods and their IPs.
    pub pods: Vec<(Arc<CachedPod>, String)>,
}

/// What came of a [`UsersSync`].
#[derive(Debug, Clone, PartialEq)]
pub enum Synced {
    /// Some pod is not in line: try again after the duration.
    Retry(Duration),
    /// Every pod is: remember the fingerprint, tell the Event if any.
    InLine {
        fingerprint: String,
        tell: Option<Notice>,
    },
}

/// The users clients log in as, and the plain passwords of `default` among them.
struct Clients {
    users: Vec<AclUser>,
    default_passwords: Vec<String>,
}

/// Which Secrets the credentials decision needs read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthReads {
    /// None: `spec.auth` is off.
    Off,
    /// The operator's, the ACL Secret, each user's the spec names, and `<name>-auth` when it
    /// names none.
    Secrets { generated: bool },
}

/// Which Secrets to read for `instance` (the last valid spec).
pub fn auth_reads(instance: &RedisInstance) -> AuthReads {
    match enabled(instance) {
        false => AuthReads::Off,
        true => AuthReads::Secrets {
            generated: instance.spec.auth.users.is_empty(),
        },
    }
}

/// Decides the credentials part of a step.
pub fn auth_step(view: &AuthView<'_>) -> AuthStep {
    let instance = view.instance;
    if !enabled(instance) {
        return AuthStep::Off;
    }
    let mut create = Vec::new();
    let system = match view.system {
        Owned::Read(system) => system,
        Owned::Missing(fresh) => {
            create.push(system_secret(instance, fresh));
            fresh
        }
    };
    let access = Access {
        login: Some(Credentials {
            user: OPERATOR_USER.to_owned(),
            password: system.operator.clone(),
        }),
        replication: Some(Credentials {
            user: REPLICATION_USER.to_owned(),
            password: system.replication.clone(),
        }),
    };
    let mut plan = AuthPlan {
        create,
        access,
        missing: Vec::new(),
        requirepass_told: view.requirepass_told,
        tell: Vec::new(),
        acl: None,
        sync: None,
        wake: Duration::MAX,
    };
    let clients = if instance.spec.auth.users.is_empty() {
        let seed = seed_password(instance);
        let (passwords, seeded_now) = match view.generated {
            Some(Owned::Read(secret)) => (secret.passwords(), false),
            // An instance upgraded from `spec.config.requirepass` keeps its password.
            Some(Owned::Missing(fresh)) => {
                let password = seed.unwrap_or(fresh);
                plan.create.push(generated_auth_secret(instance, password));
                (vec![password.to_owned()], seed.is_some())
            }
            // Not looked up: the actor looks it up whenever the spec names no users.
            None => (Vec::new(), false),
        };
        if seed.is_some() && !view.requirepass_told {
            plan.requirepass_told = true;
            plan.tell.push(password_moved(instance, seeded_now));
        }
        Clients {
            users: vec![AclUser::with_passwords(
                "default",
                passwords.iter().map(String::as_str),
                GENERATED_USER_RULES,
            )],
            default_passwords: passwords,
        }
    } else {
        match named_clients(instance, view.named) {
            Ok(clients) => clients,
            Err(missing) => {
                if view.missing_told != missing.as_slice() {
                    plan.tell.push(secret_missing(instance, &missing));
                }
                plan.missing = missing;
                plan.wake = MISSING_RETRY;
                return AuthStep::Run(Box::new(plan));
            }
        }
    };
    let mut default_passwords = clients.default_passwords;
    default_passwords.extend(seed_password(instance).map(str::to_owned));
    let users = acl::instance_users(clients.users, &system.operator, &system.replication);
    let file = acl::render(&users);
    if view.acl.and_then(acl_file_of) != Some(file.as_str()) {
        let version = view.acl.and_then(|s| s.resource_version());
        plan.acl = Some(AclWrite {
            secret: acl_secret(instance, &file, version),
            create: view.acl.is_none(),
            users: users.len(),
        });
    }
    let fingerprint = acl::fingerprint(&file);
    if view.recorded == Some(fingerprint.as_str()) {
        return AuthStep::Run(Box::new(plan));
    }
    let mut logins = vec![plan.access.login.clone()];
    logins.extend(default_passwords.into_iter().map(|password| {
        Some(Credentials {
            user: "default".to_owned(),
            password,
        })
    }));
    logins.push(None);
    let pods = view
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.clone(), p.status.as_ref()?.pod_ip.clone()?)))
        .collect();
    plan.sync = Some(UsersSync {
        users,
        logins,
        fingerprint,
        pods,
    });
    AuthStep::Run(Box::new(plan))
}

/// What a sync that left `failed` pods behind (none: all in line) comes to.
pub fn synced(sync: &UsersSync, failed: usize) -> Synced {
    if failed > 0 {
        return Synced::Retry(SYNC_RETRY);
    }
    let tell = (!sync.pods.is_empty()).then(|| {
        let names: Vec<String> = sync.pods.iter().map(|(pod, _)| pod.name_any()).collect();
        let note = format!(
            "ACL users ({}) applied live on pods {}; no restart",
            sync.users.len(),
            names.join(", ")
        );
        Notice::normal("UsersApplied", "ApplyUsers", note)
    });
    Synced::InLine {
        fingerprint: sync.fingerprint.clone(),
        tell,
    }
}

/// The users the spec names, with the passwords of their Secrets; `Err`: the names of the
/// Secrets missing.
fn named_clients(
    instance: &RedisInstance,
    named: &[Option<Arc<CachedSecret>>],
) -> Result<Clients, Vec<String>> {
    let mut users = Vec::new();
    let mut default_passwords = Vec::new();
    let mut missing = Vec::new();
    let spec = &instance.spec.auth.users;
    for (user, secret) in spec
        .iter()
        .zip(named.iter().chain(std::iter::repeat(&None)))
    {
        let Some(secret) = secret else {
            missing.push(user.password_secret.clone());
            continue;
        };
        let passwords = secret.passwords();
        if user.name == "default" {
            default_passwords.extend(passwords.iter().cloned());
        }
        users.push(AclUser::with_passwords(
            &user.name,
            passwords.iter().map(String::as_str),
            &user.rules,
        ));
    }
    match missing.is_empty() {
        true => Ok(Clients {
            users,
            default_passwords,
        }),
        false => Err(missing),
    }
}

fn secret_missing(instance: &RedisInstance, missing: &[String]) -> Notice {
    let note = format!(
        "spec.auth.users names Secret {} in namespace {}, which does not exist; the pods' users are left as they are until it does",
        missing.join(", "),
        instance.namespace().unwrap_or_default()
    );
    Notice {
        warning: true,
        reason: "SecretMissing",
        action: "ReadSecret",
        note,
        fact: None,
    }
}

fn password_moved(instance: &RedisInstance, seeded_now: bool) -> Notice {
    let name = crate::auth::generated_secret_name(instance);
    let note = if seeded_now {
        format!(
            "the password of spec.config.requirepass now lives in Secret {name} (key password), where the operator reads it; remove requirepass from spec.config, where anyone who can read the RedisInstance sees it"
        )
    } else {
        format!(
            "spec.config.requirepass is not used: the default user's passwords are in Secret {name}; remove it from spec.config"
        )
    };
    Notice {
        warning: true,
        reason: "PasswordMoved",
        action: "MovePassword",
        note,
        fact: None,
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
