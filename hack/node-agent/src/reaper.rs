//! For simulated nodes (the scale profile): removes pods being deleted at once, as a kubelet
//! would after stopping their containers. The delete names the pod's uid as a precondition, so a
//! StatefulSet pod recreated under the same name is never hit by a late delete of its
//! predecessor.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;

/// Deletes, with grace period 0, every scheduled pod that has a deletion timestamp.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let mut events =
        watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).boxed();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        let pod = match event {
            Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => pod,
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                tracing::warn!(%error, "pod watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            None => return,
        };
        let scheduled = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some();
        if pod.metadata.deletion_timestamp.is_none() || !scheduled {
            continue;
        }
        let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => tracing::debug!(pod = %pod.name_any(), "removed deleted pod"),
            // Gone already, or a new pod under the same name (uid precondition failed).
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(error) => tracing::warn!(pod = %pod.name_any(), %error, "failed to remove pod"),
        }
    }
}
