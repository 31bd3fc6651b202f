//! The credentials part of an instance's step: reads the Secrets `decide::auth_step` decides
//! from, and performs its answer (Secret writes, the pods' ACL users set live, the login the
//! rest of the step uses) before anything talks to Redis or creates pods.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use tracing::{info, warn};

use super::InstanceArgs;
use super::observe::{Observed, lookup, newest};
use super::tls::TlsMemory;
use crate::auth::{
    Access, acl_secret_name, generate_password, generated_secret_name, pods, system_secret_name,
};
use crate::crd::RedisInstance;
use crate::decide::{
    AuthPlan, AuthReads, AuthStep, AuthView, CREATED_ELSEWHERE, Owned, Synced, auth_reads, synced,
};
use crate::kube_io;
use crate::live::pods::PodAddress;
use crate::resources::{CachedSecret, SystemPasswords};

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

impl AuthMemory {
    /// Secrets written that the cache does not show yet, or an ACL applied to the pods that
    /// the status (`recorded`) does not hold yet.
    pub fn unseen_writes(&self, recorded: Option<&str>) -> bool {
        !self.written.is_empty() || self.applied.as_deref().is_some_and(|a| Some(a) != recorded)
    }

    /// A problem told, which a fresh actor would tell again.
    pub fn told(&self) -> bool {
        !self.missing_reported.is_empty() || self.requirepass_reported
    }

    /// User Secrets read from the API, which a fresh actor would read again.
    pub fn asked(&self) -> bool {
        !self.read.is_empty()
    }
}

/// The Secrets one credentials decision reads, as read for the last valid spec; `None` when
/// [`auth_reads`] names none.
pub(super) struct Secrets {
    named: Vec<Option<Arc<CachedSecret>>>,
    /// `Err`: missing, with the passwords drawn for it.
    system: Result<SystemPasswords, SystemPasswords>,
    /// `Err`: missing, with the password drawn for it; `None`: not looked up.
    generated: Option<Result<Arc<CachedSecret>, String>>,
    acl: Option<Arc<CachedSecret>>,
    recorded: Option<String>,
}

/// Reads the Secrets [`auth_reads`] names for `instance` (the last valid spec).
pub(super) async fn read(
    args: &InstanceArgs,
    memory: &mut AuthMemory,
    instance: &RedisInstance,
    seen: &Observed,
) -> Result<Option<Secrets>, kube_io::Error> {
    let AuthReads::Secrets { generated } = auth_reads(instance) else {
        return Ok(None);
    };
    let named = named_secrets(args, memory, instance).await?;
    // Passwords for a Secret to create are drawn here, where randomness is read; only those
    // of a missing Secret, which the decision then creates with them.
    let system = match owned(args, memory, &system_secret_name(instance))
        .as_deref()
        .and_then(SystemPasswords::of)
    {
        Some(read) => Ok(read),
        None => Err(SystemPasswords {
            operator: fresh_password()?,
            replication: fresh_password()?,
        }),
    };
    let generated = match generated {
        true => Some(
            match owned(args, memory, &generated_secret_name(instance)) {
                Some(read) => Ok(read),
                None => Err(fresh_password()?),
            },
        ),
        false => None,
    };
    let acl = owned(args, memory, &acl_secret_name(instance));
    let recorded = memory.applied.clone().or_else(|| {
        seen.instance
            .status
            .as_ref()
            .and_then(|s| s.acl_hash.clone())
    });
    Ok(Some(Secrets {
        named,
        system,
        generated,
        acl,
        recorded,
    }))
}

/// What [`auth_step`](crate::decide::auth_step) reads: the Secrets as `read`, the actor's memory, the pods.
pub(super) fn view<'a>(
    read: &'a Secrets,
    memory: &'a AuthMemory,
    instance: &'a RedisInstance,
    seen: &'a Observed,
) -> AuthView<'a> {
    AuthView {
        instance,
        system: match &read.system {
            Ok(read) => Owned::Read(read),
            Err(fresh) => Owned::Missing(fresh),
        },
        generated: read.generated.as_ref().map(|found| match found {
            Ok(read) => Owned::Read(read.as_ref()),
            Err(fresh) => Owned::Missing(fresh.as_str()),
        }),
        named: &read.named,
        acl: read.acl.as_deref(),
        recorded: read.recorded.as_deref(),
        pods: &seen.pods,
        missing_told: &memory.missing_reported,
        requirepass_told: memory.requirepass_reported,
    }
}

/// What performing a credentials decision changes (the actor's memory of the credentials,
/// and the login the rest of the step uses) and what it writes and dials with.
pub(super) struct Credentials<'a> {
    pub args: &'a InstanceArgs,
    pub memory: &'a mut AuthMemory,
    pub access: &'a mut Access,
    /// How to reach each pod whose ACL users are set live.
    pub tls: &'a TlsMemory,
}

/// Performs what [`auth_step`](crate::decide::auth_step) decided. Returns when to look again.
pub(super) async fn perform(
    credentials: Credentials<'_>,
    instance: &RedisInstance,
    decided: AuthStep,
) -> Result<Duration, kube_io::Error> {
    match decided {
        AuthStep::Off => Ok(off(credentials.access, credentials.memory)),
        AuthStep::Run(plan) => perform_plan(credentials, instance, *plan).await,
    }
}

/// `spec.auth` off: no login, nothing applied.
fn off(access: &mut Access, memory: &mut AuthMemory) -> Duration {
    *access = Access::default();
    memory.applied = None;
    Duration::MAX
}

/// Performs a credentials plan: Secrets created, Events, the ACL Secret, the pods' users.
async fn perform_plan(
    credentials: Credentials<'_>,
    instance: &RedisInstance,
    plan: AuthPlan,
) -> Result<Duration, kube_io::Error> {
    let Credentials {
        args,
        memory,
        access,
        tls,
    } = credentials;
    let api = args.api.clone();
    for secret in &plan.create {
        let Some(created) = api.create_secret(secret).await? else {
            return Ok(CREATED_ELSEWHERE);
        };
        wrote(memory, &created);
    }
    *access = plan.access;
    memory.missing_reported = plan.missing;
    memory.requirepass_reported = plan.requirepass_told;
    for event in plan.tell {
        warn!(reason = event.reason, note = %event.note, "credentials problem told");
        super::tell::tell(args, instance, &event).await;
    }
    if let Some(write) = plan.acl {
        let written = match write.create {
            false => Some(api.apply("Secret", &write.secret).await?),
            true => api.create_secret(&write.secret).await?,
        };
        let Some(written) = written else {
            return Ok(CREATED_ELSEWHERE);
        };
        wrote(memory, &written);
        info!(secret = %written.name_any(), users = write.users, "ACL file written");
    }
    let Some(sync) = plan.sync else {
        return Ok(plan.wake);
    };
    let running: Vec<PodAddress> = sync
        .pods
        .iter()
        .map(|(pod, ip)| PodAddress {
            pod: pod.name_any(),
            ip: Some(ip.clone()),
            tls: tls.for_pod(pod),
        })
        .collect();
    let gate = args.api.limiter().clone();
    let results = futures::future::join_all(
        running
            .iter()
            .map(|pod| pods::sync(pod, &sync.logins, &sync.users, &gate)),
    )
    .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    match synced(&sync, failed.len()) {
        Synced::Retry(wake) => {
            warn!(failed = %failed.join("; "), "ACL users not yet in line on every pod");
            Ok(wake)
        }
        Synced::InLine { fingerprint, tell } => {
            memory.applied = Some(fingerprint);
            if let Some(event) = tell {
                let names: Vec<&str> = running.iter().map(|p| p.pod.as_str()).collect();
                info!(pods = %names.join(","), "ACL users applied live");
                super::tell::tell(args, instance, &event).await;
            }
            Ok(plan.wake)
        }
    }
}

fn fresh_password() -> Result<String, kube_io::Error> {
    generate_password().map_err(|e| kube_io::Error::NoRandomness(e.to_string()))
}

/// A Secret the operator owns, from its watch cache, or as written while the cache is behind.
fn owned(args: &InstanceArgs, memory: &mut AuthMemory, name: &str) -> Option<Arc<CachedSecret>> {
    let stores = &args.stores;
    let cached = lookup(&stores.secrets, &args.key.namespace, name);
    let mut written = memory.written.remove(name);
    let newest = newest(cached, &mut written, Some(&stores.versions.secrets));
    if let Some(still) = written {
        memory.written.insert(name.to_owned(), still);
    }
    newest
}

/// Notes a Secret the operator just wrote, for [`owned`] to see before the cache does.
fn wrote(memory: &mut AuthMemory, secret: &k8s_openapi::api::core::v1::Secret) {
    memory
        .written
        .insert(secret.name_any(), Arc::new(CachedSecret::from(secret)));
}

/// A user's Secret by name, read again only when the Secret watch shows another version than
/// the one read last (or knows nothing of it).
async fn read_user_secret(
    args: &InstanceArgs,
    memory: &mut AuthMemory,
    name: &str,
) -> Result<Option<Arc<CachedSecret>>, kube_io::Error> {
    let watched = args.stores.secret_version(&args.key.namespace, name);
    if let (Some(version), Some(known)) = (&watched, memory.read.get(name))
        && known.metadata.resource_version.as_ref() == Some(version)
    {
        return Ok(Some(known.clone()));
    }
    let got = args
        .api
        .secret(name)
        .await?
        .map(|s| Arc::new(CachedSecret::from(&s)));
    match &got {
        Some(secret) => memory.read.insert(name.to_owned(), secret.clone()),
        None => memory.read.remove(name),
    };
    Ok(got)
}

/// The Secret of each user the spec names, in its order; `None`: missing.
async fn named_secrets(
    args: &InstanceArgs,
    memory: &mut AuthMemory,
    instance: &RedisInstance,
) -> Result<Vec<Option<Arc<CachedSecret>>>, kube_io::Error> {
    let mut named = Vec::with_capacity(instance.spec.auth.users.len());
    for user in &instance.spec.auth.users {
        named.push(read_user_secret(args, memory, &user.password_secret).await?);
    }
    Ok(named)
}
