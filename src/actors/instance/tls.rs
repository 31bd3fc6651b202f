//! The instance actor's TLS, as `decide::tls` decides it: the `spec.tls` Secret's material, the
//! connection each pod needs, and the reload of every pod that does not serve the Secret's
//! certificate yet (`CONFIG SET` of the same file paths, which makes Redis read the files
//! again), each pod's answer judged by `decide::tls`. No restart, whatever triggered the step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::InstanceArgs;
use super::observe::Observed;
use super::plan::Plan;
use crate::auth::Access;
use crate::config::render::REDIS_PORT;
use crate::decide::{
    PodReload, SecretRead, SecretView, ServedView, client_problem, pod_reload, reloaded,
    secret_missing_problem, secret_read, secret_read_due, tell_problem,
};
use crate::live::pods::{self, PodAddress};
use crate::resources::{CachedPod, TLS_ANNOTATION};
use crate::tls::client::ClientTls;
use crate::tls::material::{Material, short};

/// What the actor knows of its TLS between steps.
#[derive(Debug, Default)]
pub struct TlsMemory {
    /// Built from the Secret's content; kept after `spec.tls` is removed, for the pods that
    /// still serve TLS until they are replaced.
    client: Option<Arc<ClientTls>>,
    /// The Secret's `ca.crt` the client trusts, trusted too by the next client.
    ca: Option<Vec<u8>>,
    /// The Secret's resourceVersion the client was built from.
    version: Option<String>,
    /// When the Secret was last read.
    read_at: Option<Instant>,
    /// Fingerprint every ready pod was last seen serving, and when.
    verified: Option<(String, Instant)>,
    /// The last problem told about the Secret, so each is told once.
    told: Option<String>,
}

impl TlsMemory {
    /// Holds no material and has told nothing: what a fresh actor starts with.
    pub fn is_blank(&self) -> bool {
        self.client.is_none()
            && self.ca.is_none()
            && self.version.is_none()
            && self.read_at.is_none()
            && self.verified.is_none()
            && self.told.is_none()
    }

    /// How to reach `pod`: over TLS when it was started with TLS (its template says so).
    pub fn for_pod(&self, pod: &CachedPod) -> Option<Arc<ClientTls>> {
        pod.annotations
            .get(TLS_ANNOTATION)
            .is_some()
            .then(|| self.client.clone())
            .flatten()
    }
}

/// Reads the Secret when [`secret_read_due`] says so and builds the client from a changed one.
/// Cheap when not due, so it runs before anything talks to the pods.
pub(super) async fn read_secret(args: &InstanceArgs, memory: &mut TlsMemory, plan: &Plan) {
    let Some(spec) = &plan.instance.spec.tls else {
        memory.read_at = None;
        memory.verified = None;
        return;
    };
    let watched = args
        .stores
        .secret_version(&args.key.namespace, &spec.secret_name);
    let due = SecretView {
        watched: watched.as_deref(),
        built: memory.version.as_deref(),
        read_ago: memory.read_at.map(|at| at.elapsed()),
    };
    if !secret_read_due(&due) {
        return;
    }
    let secret = match args.api.secret(&spec.secret_name).await {
        Ok(secret) => secret,
        Err(error) => {
            warn!(%error, "could not read the TLS Secret; trying again");
            return;
        }
    };
    memory.read_at = Some(Instant::now());
    let found = secret
        .as_ref()
        .map(|s| s.metadata.resource_version.as_deref());
    let secret = match (secret_read(found, memory.version.as_deref()), secret) {
        (SecretRead::Build, Some(secret)) => secret,
        (SecretRead::Missing, _) => {
            let problem = secret_missing_problem(&spec.secret_name);
            return tell(args, memory, plan, problem).await;
        }
        _ => return,
    };
    let built = Material::from_secret(&secret).map(|material| {
        let previous = memory.ca.as_deref().filter(|ca| *ca != material.ca);
        let server_name = crate::tls::server_name(&plan.instance);
        (ClientTls::new(&material, previous, &server_name), material)
    });
    match built {
        Ok((Ok(client), material)) => {
            debug!(fingerprint = %short(&material.fingerprint), "TLS Secret read");
            memory.client = Some(Arc::new(client));
            memory.ca = Some(material.ca);
            memory.version = secret.metadata.resource_version;
            memory.told = None;
        }
        Ok((Err(error), _)) => {
            tell(
                args,
                memory,
                plan,
                client_problem(&spec.secret_name, &error),
            )
            .await
        }
        Err(error) => tell(args, memory, plan, error.to_string()).await,
    }
}

/// Tells a problem with the Secret as [`tell_problem`] decides; the pods keep what they serve.
async fn tell(args: &InstanceArgs, memory: &mut TlsMemory, plan: &Plan, problem: String) {
    let Some(event) = tell_problem(&problem, memory.told.as_deref()) else {
        return;
    };
    warn!(%problem, "TLS Secret unusable");
    memory.told = Some(problem);
    args.api
        .event(
            &plan.instance,
            event.warning,
            event.reason,
            event.action,
            event.note,
        )
        .await;
}

/// What the certificate checks read of the memory, taken before the step decides (the
/// decision borrows it while the step changes the memory).
pub(super) struct Served {
    client: Option<Arc<ClientTls>>,
    verified: Option<(String, Instant)>,
    read_at: Option<Instant>,
}

impl Served {
    pub(super) fn of(memory: &TlsMemory) -> Self {
        Self {
            client: memory.client.clone(),
            verified: memory.verified.clone(),
            read_at: memory.read_at,
        }
    }

    /// What [`crate::decide::reload`] reads.
    pub(super) fn view<'a>(&'a self, plan: &Plan, seen: &'a Observed) -> ServedView<'a> {
        ServedView {
            enabled: plan.instance.spec.tls.is_some(),
            read_ago: self.read_at.map(|at| at.elapsed()),
            wanted: self.client.as_deref().map(ClientTls::fingerprint),
            verified: self
                .verified
                .as_ref()
                .map(|(served, at)| (served.as_str(), at.elapsed())),
            pods: &seen.pods,
        }
    }
}

/// Makes the `pods` a [`crate::decide::Reload::Check`] named serve the Secret's certificate,
/// as [`reloaded`] decides; returns when to look again. The pods are dialled without the
/// step's permit (`turn`), under a pod check permit instead: other instances' steps need not
/// wait for a silent pod.
pub(super) async fn reload_pods(
    args: &InstanceArgs,
    memory: &mut TlsMemory,
    access: &Access,
    turn: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    plan: &Plan,
    served: (&Served, &ServedView<'_>),
    pods: &[(String, String)],
) -> Duration {
    let (served, view) = served;
    let client = served.client.clone();
    // A check is decided only with a client built: `wanted` is its fingerprint.
    let Some(client) = client.as_ref() else {
        return Duration::MAX;
    };
    let wanted = client.fingerprint().to_owned();
    turn.take();
    let _check = args.api.limiter().pod_check().await;
    let port = u16::try_from(REDIS_PORT).expect("the Redis port fits");
    let login = access.login.clone();
    let gate = args.api.limiter().clone();
    let mut reloaded_pods = Vec::new();
    let mut behind = Vec::new();
    for (pod, ip) in pods {
        let served = served_by(client, pod, ip, port).await;
        match pod_reload(served.as_deref(), &wanted) {
            PodReload::Serving => continue,
            PodReload::Unread => {
                behind.push(pod.clone());
                continue;
            }
            PodReload::Reload => {}
        }
        let address = PodAddress {
            pod: pod.clone(),
            ip: Some(ip.clone()),
            tls: Some(client.clone()),
        };
        if let Err(error) = reload_pod(&address, login.as_ref(), &gate).await {
            warn!(%pod, %error, "certificate reload not sent");
            behind.push(pod.clone());
            continue;
        }
        let served = served_by(client, pod, ip, port).await;
        match pod_reload(served.as_deref(), &wanted) {
            PodReload::Serving => reloaded_pods.push(pod.clone()),
            PodReload::Reload | PodReload::Unread => behind.push(pod.clone()),
        }
    }
    let outcome = reloaded(&plan.instance, view, pods.len(), &reloaded_pods, &behind);
    if let Some(event) = outcome.tell {
        info!(pods = ?reloaded_pods, fingerprint = %short(&wanted), "certificate reloaded, no restart");
        args.api
            .event(
                &plan.instance,
                event.warning,
                event.reason,
                event.action,
                event.note,
            )
            .await;
    }
    if !behind.is_empty() {
        debug!(pods = ?behind, "pods not serving the Secret's certificate yet");
    }
    if outcome.verified {
        memory.verified = Some((wanted, Instant::now()));
    }
    outcome.wake
}

/// The fingerprint of the certificate `pod` serves; `None` when it was not read in time.
async fn served_by(client: &ClientTls, pod: &str, ip: &str, port: u16) -> Option<String> {
    match client.dial(ip, port, Duration::from_secs(2)).await {
        Ok(dialed) => Some(dialed.served),
        Err(error) => {
            debug!(%pod, %error, "served certificate not read");
            None
        }
    }
}

/// `CONFIG SET` of the TLS file paths, unchanged: Redis 7 reads the files again and serves
/// the new certificate to new connections; established ones (replication included) go on.
async fn reload_pod(
    pod: &PodAddress,
    login: Option<&crate::auth::Credentials>,
    gate: &crate::limiter::Limiter,
) -> Result<(), ReloadError> {
    let mut conn = pods::connect(pod, login).await?;
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("SET");
    for (name, value) in crate::tls::reload_pairs() {
        cmd.arg(name).arg(value);
    }
    gate.write_to_pod(cmd.query_async::<()>(&mut conn))
        .await??;
    Ok(())
}

/// Why a pod was not told to reload.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    /// Not reached.
    #[error(transparent)]
    Unreachable(#[from] pods::Error),
    /// Not surely the leader: nothing is sent.
    #[error(transparent)]
    NotLeader(#[from] crate::limiter::NotLeader),
    /// Redis refused (files that do not match, or are not readable).
    #[error("CONFIG SET of the TLS files refused: {0}")]
    Refused(#[from] redis::RedisError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::material::tests::material;

    #[test]
    fn a_pod_is_reached_over_tls_only_when_started_with_it() {
        let mut memory = TlsMemory::default();
        let mut tls_pod = CachedPod::default();
        tls_pod.annotations.insert(TLS_ANNOTATION, "true");
        let plain_pod = CachedPod::default();
        assert!(memory.for_pod(&tls_pod).is_none(), "no Secret read yet");
        memory.client = Some(Arc::new(
            ClientTls::new(&material(), None, "redis-example.team-a.svc").unwrap(),
        ));
        assert!(memory.for_pod(&tls_pod).is_some());
        assert!(
            memory.for_pod(&plain_pod).is_none(),
            "a pod started before TLS was turned on speaks plain RESP until replaced"
        );
    }
}
