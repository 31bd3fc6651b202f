//! The credentials part of an instance's step: read the Secrets it references, keep those it
//! owns, bring every running pod's ACL users in line live, and tell the rest of the step how
//! to log in. Runs before anything talks to Redis or creates pods.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use tracing::{info, warn};

use super::InstanceState;
use super::observe::{Observed, lookup, newest};
use crate::auth::acl::{self, AclUser};
use crate::auth::{
    Access, Credentials, OPERATOR_USER, REPLICATION_USER, acl_secret_name, enabled,
    generate_password, generated_secret_name, pods, seed_password, system_secret_name,
};
use crate::crd::RedisInstance;
use crate::kube_io;
use crate::live::pods::PodAddress;
use crate::resources::{
    CachedSecret, SystemPasswords, acl_file_of, acl_secret, generated_auth_secret, system_secret,
};

/// What the actor keeps between steps; what must survive a restart is in the Secrets and in
/// `status.aclHash`.
#[derive(Default)]
pub struct AuthMemory {
    /// Secrets of the user's as last read, by name: read again only when the watch shows a new
    /// version.
    read: HashMap<String, Arc<CachedSecret>>,
    /// Secrets the operator wrote, until its cache shows them.
    written: HashMap<String, Arc<CachedSecret>>,
    /// The ACL file's fingerprint every running pod was brought in line with, until status
    /// holds it.
    pub applied: Option<String>,
    /// Secrets named by the spec that were missing, as last reported.
    missing_reported: Vec<String>,
    /// The user was told that `spec.config.requirepass` is not used.
    requirepass_reported: bool,
}

/// Retry of a pod that could not be brought in line.
const RETRY: Duration = Duration::from_secs(2);

/// The rules of the `default` user the operator generates a password for.
const GENERATED_USER_RULES: &str = "~* &* +@all";

/// One credentials step for `instance` (the last valid spec). Returns when to look again.
pub(super) async fn step(
    state: &mut InstanceState,
    instance: &RedisInstance,
    seen: &Observed,
) -> Result<Duration, kube_io::Error> {
    if !enabled(instance) {
        state.access = Access::default();
        state.auth.applied = None;
        return Ok(Duration::MAX);
    }
    let Some(system) = system_passwords(state, instance).await? else {
        return Ok(Duration::from_millis(200));
    };
    state.access = Access {
        login: Some(Credentials {
            user: OPERATOR_USER.to_owned(),
            password: system.operator.clone(),
        }),
        replication: Some(Credentials {
            user: REPLICATION_USER.to_owned(),
            password: system.replication.clone(),
        }),
    };
    let Some(Clients {
        users: clients,
        mut default_passwords,
    }) = client_users(state, instance).await?
    else {
        return Ok(Duration::from_secs(5));
    };
    default_passwords.extend(seed_password(instance).map(str::to_owned));
    let users = acl::instance_users(clients, &system.operator, &system.replication);
    let file = acl::render(&users);
    let acl_name = acl_secret_name(instance);
    let stored = owned(state, &acl_name);
    if stored.as_deref().and_then(acl_file_of) != Some(file.as_str()) {
        let version = stored.as_ref().and_then(|s| s.resource_version());
        let secret = acl_secret(instance, &file, version);
        let api = state.args.api.clone();
        let written = match stored {
            Some(_) => Some(api.apply("Secret", &secret).await?),
            None => api.create_secret(&secret).await?,
        };
        match written {
            Some(written) => wrote(state, &written),
            // Someone created it meanwhile: the cache shows it soon.
            None => return Ok(Duration::from_millis(200)),
        }
        info!(secret = %acl_name, users = users.len(), "ACL file written");
    }
    let fingerprint = acl::fingerprint(&file);
    let recorded = state.auth.applied.clone().or_else(|| {
        seen.instance
            .status
            .as_ref()
            .and_then(|s| s.acl_hash.clone())
    });
    if recorded.as_deref() == Some(fingerprint.as_str()) {
        return Ok(Duration::MAX);
    }
    let mut logins = vec![state.access.login.clone()];
    logins.extend(default_passwords.into_iter().map(|password| {
        Some(Credentials {
            user: "default".to_owned(),
            password,
        })
    }));
    logins.push(None);
    let running: Vec<PodAddress> = seen
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            Some(PodAddress {
                pod: p.name_any(),
                ip: Some(ip),
                tls: state.tls.for_pod(p),
            })
        })
        .collect();
    let gate = state.args.api.limiter().clone();
    let results = futures::future::join_all(
        running
            .iter()
            .map(|pod| pods::sync(pod, &logins, &users, &gate)),
    )
    .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    if !failed.is_empty() {
        warn!(failed = %failed.join("; "), "ACL users not yet in line on every pod");
        return Ok(RETRY);
    }
    state.auth.applied = Some(fingerprint);
    if !running.is_empty() {
        let names: Vec<&str> = running.iter().map(|p| p.pod.as_str()).collect();
        let note = format!(
            "ACL users ({}) applied live on pods {}; no restart",
            users.len(),
            names.join(", ")
        );
        info!(pods = %names.join(","), "ACL users applied live");
        state
            .args
            .api
            .event(&seen.instance, false, "UsersApplied", "ApplyUsers", note)
            .await;
    }
    Ok(Duration::MAX)
}

/// The operator's own passwords from `<name>-operator`, generated into it once. `None` when
/// someone else created it meanwhile: it is read again at the next step.
async fn system_passwords(
    state: &mut InstanceState,
    instance: &RedisInstance,
) -> Result<Option<SystemPasswords>, kube_io::Error> {
    let name = system_secret_name(instance);
    if let Some(known) = owned(state, &name).as_deref().and_then(SystemPasswords::of) {
        return Ok(Some(known));
    }
    let fresh = SystemPasswords {
        operator: fresh_password()?,
        replication: fresh_password()?,
    };
    let api = state.args.api.clone();
    match api.create_secret(&system_secret(instance, &fresh)).await? {
        Some(created) => {
            wrote(state, &created);
            Ok(Some(fresh))
        }
        // Someone created it meanwhile: the cache shows it soon.
        None => Ok(None),
    }
}

fn fresh_password() -> Result<String, kube_io::Error> {
    generate_password().map_err(|e| kube_io::Error::NoRandomness(e.to_string()))
}

/// The users clients log in as, and the plain passwords of `default` among them (an older pod
/// that has not been given the operator's user yet is logged in to with one of them).
struct Clients {
    users: Vec<AclUser>,
    default_passwords: Vec<String>,
}

/// A Secret the operator owns, from its watch cache, or as written while the cache is behind.
fn owned(state: &mut InstanceState, name: &str) -> Option<Arc<CachedSecret>> {
    let stores = &state.args.stores;
    let cached = lookup(&stores.secrets, &state.args.key.namespace, name);
    let mut written = state.auth.written.remove(name);
    let newest = newest(cached, &mut written, Some(&stores.versions.secrets));
    if let Some(still) = written {
        state.auth.written.insert(name.to_owned(), still);
    }
    newest
}

/// Notes a Secret the operator just wrote, for [`owned`] to see before the cache does.
fn wrote(state: &mut InstanceState, secret: &k8s_openapi::api::core::v1::Secret) {
    state
        .auth
        .written
        .insert(secret.name_any(), Arc::new(CachedSecret::from(secret)));
}

/// A user's Secret by name, read again only when the Secret watch shows another version than
/// the one read last (or knows nothing of it).
async fn read(
    state: &mut InstanceState,
    name: &str,
) -> Result<Option<Arc<CachedSecret>>, kube_io::Error> {
    let watched = state
        .args
        .stores
        .secret_version(&state.args.key.namespace, name);
    if let (Some(version), Some(known)) = (&watched, state.auth.read.get(name))
        && known.metadata.resource_version.as_ref() == Some(version)
    {
        return Ok(Some(known.clone()));
    }
    let got = state
        .args
        .api
        .secret(name)
        .await?
        .map(|s| Arc::new(CachedSecret::from(&s)));
    match &got {
        Some(secret) => state.auth.read.insert(name.to_owned(), secret.clone()),
        None => state.auth.read.remove(name),
    };
    Ok(got)
}

/// The users clients log in as: those of the spec, or `default` with the generated password.
/// `None` while a Secret the spec names is missing (reported once per set of missing names).
async fn client_users(
    state: &mut InstanceState,
    instance: &RedisInstance,
) -> Result<Option<Clients>, kube_io::Error> {
    if instance.spec.auth.users.is_empty() {
        return generated_default(state, instance).await;
    }
    let mut users = Vec::new();
    let mut default_passwords = Vec::new();
    let mut missing = Vec::new();
    for user in &instance.spec.auth.users {
        match read(state, &user.password_secret).await? {
            Some(secret) => {
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
            None => missing.push(user.password_secret.clone()),
        }
    }
    if missing.is_empty() {
        state.auth.missing_reported.clear();
        return Ok(Some(Clients {
            users,
            default_passwords,
        }));
    }
    if state.auth.missing_reported != missing {
        let note = format!(
            "spec.auth.users names Secret {} in namespace {}, which does not exist; the pods' users are left as they are until it does",
            missing.join(", "),
            state.args.key.namespace
        );
        warn!(secrets = %missing.join(","), "password Secret missing");
        state
            .args
            .api
            .event(instance, true, "SecretMissing", "ReadSecret", note)
            .await;
        state.auth.missing_reported = missing;
    }
    Ok(None)
}

/// `default` with the passwords of `<name>-auth`, created with a fresh password (or, for an
/// instance upgraded from `spec.config.requirepass`, that password) when it does not exist.
/// `None` when someone else created it meanwhile: it is read again at the next step.
async fn generated_default(
    state: &mut InstanceState,
    instance: &RedisInstance,
) -> Result<Option<Clients>, kube_io::Error> {
    let name = generated_secret_name(instance);
    let mut seeded_now = false;
    let secret = match owned(state, &name) {
        Some(secret) => secret,
        None => {
            let seeded = seed_password(instance);
            let password = match seeded {
                Some(p) => p.to_owned(),
                None => fresh_password()?,
            };
            let api = state.args.api.clone();
            let Some(created) = api
                .create_secret(&generated_auth_secret(instance, &password))
                .await?
            else {
                return Ok(None);
            };
            seeded_now = seeded.is_some();
            wrote(state, &created);
            Arc::new(CachedSecret::from(&created))
        }
    };
    if seed_password(instance).is_some() && !state.auth.requirepass_reported {
        state.auth.requirepass_reported = true;
        let note = if seeded_now {
            format!(
                "the password of spec.config.requirepass now lives in Secret {name} (key password), where the operator reads it; remove requirepass from spec.config, where anyone who can read the RedisInstance sees it"
            )
        } else {
            format!(
                "spec.config.requirepass is not used: the default user's passwords are in Secret {name}; remove it from spec.config"
            )
        };
        state
            .args
            .api
            .event(instance, true, "PasswordMoved", "MovePassword", note)
            .await;
    }
    let passwords = secret.passwords();
    Ok(Some(Clients {
        users: vec![AclUser::with_passwords(
            "default",
            passwords.iter().map(String::as_str),
            GENERATED_USER_RULES,
        )],
        default_passwords: passwords,
    }))
}
