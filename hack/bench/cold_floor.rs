//! The floor for `make bench-scale`'s cold start: what the cluster alone takes to bring up the
//! objects the operator would write for a fleet of new RedisInstances. It watches
//! RedisInstances and, once for each, creates the nine objects a default instance owns, built
//! by the operator's own builders and credentials decision: its NetworkPolicy, three Secrets,
//! two ConfigMaps, two Services and StatefulSet. No caches of owned objects, no status, no
//! retries beyond an object that already exists; at most as many creations in flight as the
//! operator's default `--api-concurrency` (each instance's objects one after another).
//!
//! It runs on a fresh cluster of its own, without the operator, so the two cold starts do the
//! same work on the same machine one after the other; the benchmark times it until every
//! StatefulSet has its pods ready.
//!
//!   cargo bench --bench cold_floor -- --kubeconfig <file>
//!
//! Runs until SIGTERM/SIGINT. Prints one line per instance (`created <ns>/<name>`), and
//! `cold floor: failed ...` for an object it could not create.

#[path = "kube_client.rs"]
mod kube_client;

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use kube::api::PostParams;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use redis_operator::crd::RedisInstance;
use redis_operator::decide::{AuthStep, AuthView, Owned, auth_step};
use redis_operator::resources::{self, SystemPasswords};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;

/// The operator's default `--api-concurrency`: API writes in flight at once.
const WRITES_IN_FLIGHT: usize = 32;

/// Creates `object` in its namespace; one that exists already counts as created.
async fn create<K>(client: &Client, object: &K) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let api = Api::<K>::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// The Secrets a new default instance gets: the credentials decision's, for nothing read yet.
fn secrets(instance: &RedisInstance) -> anyhow::Result<Vec<k8s_openapi::api::core::v1::Secret>> {
    let draw = || {
        redis_operator::auth::generate_password()
            .map_err(|error| anyhow::anyhow!("no randomness: {error}"))
    };
    let password = draw()?;
    let system = SystemPasswords {
        operator: draw()?,
        replication: draw()?,
    };
    let view = AuthView {
        instance,
        system: Owned::Missing(&system),
        generated: Some(Owned::Missing(&password)),
        named: &[],
        acl: None,
        recorded: None,
        pods: &[],
        missing_told: &[],
        requirepass_told: false,
    };
    Ok(match auth_step(&view) {
        AuthStep::Off => Vec::new(),
        AuthStep::Run(plan) => {
            let plan = *plan;
            let mut secrets = plan.create;
            secrets.extend(plan.acl.map(|write| write.secret));
            secrets
        }
    })
}

/// Creates `instance`'s objects in the order the operator writes them: the NetworkPolicy
/// before any pod, the Secrets and ConfigMaps the pods mount before the StatefulSet.
async fn bring_up(client: &Client, instance: &RedisInstance) -> anyhow::Result<()> {
    let effective = redis_operator::config::effective(instance);
    let rendered = redis_operator::config::render::render(&effective);
    let hash = redis_operator::live::template_hash(instance, &rendered);
    if instance.spec.network_policy.enabled {
        create(client, &resources::network_policy(instance, None)).await?;
    }
    for secret in secrets(instance)? {
        create(client, &secret).await?;
    }
    create(
        client,
        &resources::revision_config_map(instance, &rendered, &hash),
    )
    .await?;
    create(client, &resources::config_map(instance, &rendered)).await?;
    create(client, &resources::service(instance)).await?;
    create(client, &resources::headless_service(instance)).await?;
    create(client, &resources::statefulset(instance, &hash, None)).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = kube_client::kubeconfig_arg("cold_floor --kubeconfig <file>")?;
    let client = kube_client::client(&path).await?;
    let writes = Arc::new(Semaphore::new(WRITES_IN_FLIGHT));
    let mut seen = HashSet::new();
    let api = Api::<RedisInstance>::all(client.clone());
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    eprintln!("cold floor: watching RedisInstances");
    loop {
        let event = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            event = events.next() => event,
        };
        let instance = match event {
            Some(Ok(Event::Apply(instance) | Event::InitApply(instance))) => instance,
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                eprintln!("cold floor: watch error: {error}");
                continue;
            }
            None => break,
        };
        // Once per instance: an edit or a status change is not a new instance.
        if !seen.insert(instance.uid().unwrap_or_default()) {
            continue;
        }
        let (client, writes) = (client.clone(), writes.clone());
        tokio::spawn(async move {
            let Ok(_turn) = writes.acquire().await else {
                return;
            };
            let key = format!(
                "{}/{}",
                instance.namespace().unwrap_or_default(),
                instance.name_any()
            );
            match bring_up(&client, &instance).await {
                Ok(()) => println!("created {key}"),
                Err(error) => eprintln!("cold floor: failed {key}: {error}"),
            }
        });
    }
    Ok(())
}
