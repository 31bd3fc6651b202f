//! The instance actor's TLS: the `spec.tls` Secret's material (read again every few seconds),
//! the connection each pod needs, and the reload of every pod that does not serve the Secret's
//! certificate yet: `CONFIG SET` of the same file paths, which makes Redis read the files again,
//! checked by a handshake. No restart, whatever triggered the step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use tracing::{debug, info, warn};

use super::InstanceState;
use super::observe::Observed;
use super::target::Plan;
use crate::config::render::REDIS_PORT;
use crate::live::pods::{self, PodAddress};
use crate::resources::{CachedPod, TLS_ANNOTATION};
use crate::tls::client::ClientTls;
use crate::tls::material::{Material, short};

/// How often the Secret is read again when the metadata watch shows no change: a safety net,
/// since a change of its resourceVersion has it read at the step the watch gives.
const SECRET_REREAD: Duration = Duration::from_secs(300);
/// How soon a Secret the API server did not return is asked for again.
const READ_RETRY: Duration = Duration::from_secs(5);
/// How often every pod's served certificate is checked once all served the Secret's.
const SERVED_RECHECK: Duration = Duration::from_secs(60);
/// How soon a pod that does not serve the Secret's certificate yet is looked at again: its
/// volume may not show the new files yet.
const RELOAD_RETRY: Duration = Duration::from_secs(2);

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
    /// How to reach `pod`: over TLS when it was started with TLS (its template says so).
    pub fn for_pod(&self, pod: &CachedPod) -> Option<Arc<ClientTls>> {
        pod.annotations
            .get(TLS_ANNOTATION)
            .is_some()
            .then(|| self.client.clone())
            .flatten()
    }
}

/// Reads the Secret when the metadata watch shows another resourceVersion than the one read
/// (or the safety-net interval passed) and builds the client from a changed one. Cheap when
/// not due, so it runs before anything talks to the pods.
pub(super) async fn read_secret(state: &mut InstanceState, plan: &Plan) {
    let Some(spec) = &plan.instance.spec.tls else {
        state.tls.read_at = None;
        state.tls.verified = None;
        return;
    };
    let watched = state
        .args
        .stores
        .secret_version(&state.args.key.namespace, &spec.secret_name);
    let moved = watched.is_some() && watched != state.tls.version;
    if !moved
        && state
            .tls
            .read_at
            .is_some_and(|at| at.elapsed() < SECRET_REREAD)
    {
        return;
    }
    let secret = match state.args.api.secret(&spec.secret_name).await {
        Ok(secret) => secret,
        Err(error) => {
            warn!(%error, "could not read the TLS Secret; trying again");
            return;
        }
    };
    state.tls.read_at = Some(Instant::now());
    let Some(secret) = secret else {
        let problem = format!(
            "spec.tls names Secret {}, which does not exist: the pods cannot start until it does",
            spec.secret_name
        );
        tell(state, plan, problem).await;
        return;
    };
    if secret.metadata.resource_version.is_some()
        && secret.metadata.resource_version == state.tls.version
    {
        return;
    }
    let built = Material::from_secret(&secret).map(|material| {
        let previous = state.tls.ca.as_deref().filter(|ca| *ca != material.ca);
        let server_name = crate::tls::server_name(&plan.instance);
        (ClientTls::new(&material, previous, &server_name), material)
    });
    match built {
        Ok((Ok(client), material)) => {
            debug!(fingerprint = %short(&material.fingerprint), "TLS Secret read");
            state.tls.client = Some(Arc::new(client));
            state.tls.ca = Some(material.ca);
            state.tls.version = secret.metadata.resource_version;
            state.tls.told = None;
        }
        Ok((Err(error), _)) => tell(state, plan, format!("{}: {error}", spec.secret_name)).await,
        Err(error) => tell(state, plan, error.to_string()).await,
    }
}

/// A Warning Event about the Secret, once per distinct problem; the pods keep what they serve.
async fn tell(state: &mut InstanceState, plan: &Plan, problem: String) {
    if state.tls.told.as_deref() == Some(problem.as_str()) {
        return;
    }
    warn!(%problem, "TLS Secret unusable");
    state.tls.told = Some(problem.clone());
    let note = format!("{problem}; the pods keep the certificate they serve");
    state
        .args
        .api
        .event(
            &plan.instance,
            true,
            "TLSSecretInvalid",
            "LoadCertificate",
            note,
        )
        .await;
}

/// Makes every ready TLS pod serve the Secret's certificate; returns when to look again.
pub(super) async fn reload(state: &mut InstanceState, plan: &Plan, seen: &Observed) -> Duration {
    if plan.instance.spec.tls.is_none() {
        return Duration::MAX;
    }
    // Never read (the API did not answer): soon again, not after the safety net's interval.
    let reread_in = state
        .tls
        .read_at
        .map_or(READ_RETRY, |at| SECRET_REREAD.saturating_sub(at.elapsed()));
    let Some(client) = state.tls.client.clone() else {
        return reread_in;
    };
    let wanted = client.fingerprint().to_owned();
    if let Some((verified, at)) = &state.tls.verified
        && *verified == wanted
        && at.elapsed() < SERVED_RECHECK
    {
        return reread_in.min(SERVED_RECHECK - at.elapsed());
    }
    let port = u16::try_from(REDIS_PORT).expect("the Redis port fits");
    let login = state.access.login.clone();
    let gate = state.args.api.limiter().clone();
    let pods: Vec<(String, String)> = seen
        .pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && crate::decide::is_ready(p)
                && state.tls.for_pod(p).is_some()
        })
        .filter_map(|p| Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?)))
        .collect();
    let mut reloaded = Vec::new();
    let mut behind = Vec::new();
    for (pod, ip) in &pods {
        let quick = Duration::from_secs(2);
        let served = match client.dial(ip, port, quick).await {
            Ok(dialed) => dialed.served,
            Err(error) => {
                debug!(%pod, %error, "served certificate not read");
                behind.push(pod.clone());
                continue;
            }
        };
        if served == wanted {
            continue;
        }
        let address = PodAddress {
            pod: pod.clone(),
            ip: Some(ip.clone()),
            tls: Some(client.clone()),
        };
        match reload_pod(&address, login.as_ref(), &gate).await {
            Ok(()) => {}
            Err(error) => {
                warn!(%pod, %error, "certificate reload not sent");
                behind.push(pod.clone());
                continue;
            }
        }
        // Until the volume shows the new files, Redis reads the old ones again.
        match client.dial(ip, port, quick).await {
            Ok(dialed) if dialed.served == wanted => reloaded.push(pod.clone()),
            _ => behind.push(pod.clone()),
        }
    }
    if !reloaded.is_empty() {
        info!(pods = ?reloaded, fingerprint = %short(&wanted), "certificate reloaded, no restart");
        let note = format!(
            "{} now serve the certificate of Secret {} (SHA-256 {}), reloaded with CONFIG SET, no restart",
            reloaded.join(", "),
            plan.instance
                .spec
                .tls
                .as_ref()
                .map(|t| t.secret_name.as_str())
                .unwrap_or_default(),
            short(&wanted)
        );
        state
            .args
            .api
            .event(
                &plan.instance,
                false,
                "CertificateReloaded",
                "LoadCertificate",
                note,
            )
            .await;
    }
    if pods.is_empty() {
        // Nothing serves yet (or any more): a pod that starts reads the current files.
        reread_in
    } else if behind.is_empty() {
        state.tls.verified = Some((wanted, Instant::now()));
        reread_in.min(SERVED_RECHECK)
    } else {
        if !behind.is_empty() {
            debug!(pods = ?behind, "pods not serving the Secret's certificate yet");
        }
        RELOAD_RETRY
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
    let _permit = gate.acquire().await?;
    cmd.query_async::<()>(&mut conn).await?;
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
