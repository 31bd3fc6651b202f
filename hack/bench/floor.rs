//! The floor for `make bench-scale`'s edit latency: the least a controller can do to carry a
//! RedisInstance spec change to its StatefulSet. It watches RedisInstances and, whenever one's
//! `metadata.generation` grows, merge-patches an annotation on the same-named StatefulSet. No
//! cache of owned objects, no status, no rendering: only the watch and one write.
//!
//! It runs beside the operator, answering the same edits, so both are measured on the same
//! machine at the same moment: the annotation goes on the StatefulSet's own metadata, which
//! the operator neither owns nor compares, and which restarts no pod.
//!
//!   cargo bench --bench floor -- --kubeconfig <file>
//!
//! Runs until SIGTERM/SIGINT. Prints one line per patch sent (`patched <ns>/<name> <generation>`).

#[path = "kube_client.rs"]
mod kube_client;

use std::collections::HashMap;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::signal::unix::{SignalKind, signal};

const ANNOTATION: &str = "bench.redis.github.com/generation";

/// Patches `<ns>/<name>`'s annotation to `generation`.
async fn patch(client: Client, ns: String, name: String, generation: i64) {
    let body = serde_json::json!({"metadata": {"annotations": {
        ANNOTATION: generation.to_string()}}});
    let api = Api::<StatefulSet>::namespaced(client, &ns);
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => println!("patched {ns}/{name} {generation}"),
        Err(error) => eprintln!("patch {ns}/{name} failed: {error}"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = kube_client::kubeconfig_arg("floor --kubeconfig <file>")?;
    let client = kube_client::client(&path).await?;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "redis.github.com",
        "v1",
        "RedisInstance",
    ));
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let mut seen: HashMap<(String, String), i64> = HashMap::new();
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    eprintln!("floor: watching RedisInstances");
    loop {
        let event = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            event = events.next() => event,
        };
        let object = match event {
            Some(Ok(Event::Apply(object))) => (object, true),
            // The initial list (and any relist) only records what exists.
            Some(Ok(Event::InitApply(object))) => (object, false),
            Some(Ok(Event::InitDone)) => {
                eprintln!("floor: initial list done");
                continue;
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                eprintln!("watch error: {error}");
                continue;
            }
            None => break,
        };
        let (object, live) = object;
        let key = (object.namespace().unwrap_or_default(), object.name_any());
        let generation = object.metadata.generation.unwrap_or_default();
        let previous = seen.insert(key.clone(), generation);
        if live && previous.is_some_and(|p| generation > p) {
            tokio::spawn(patch(client.clone(), key.0, key.1, generation));
        }
    }
    Ok(())
}
