//! Watch-backed caches whose changes wake a reconcile loop (the binder and the provisioner).

use std::fmt::Debug;
use std::hash::Hash;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// A cache of `api`'s objects and a stream yielding `()` whenever it changed. The watch runs in
/// its own task, so the cache stays current while the consumer is busy with a long pass (a
/// watch polled only between passes falls behind, and a pass then acts on a stale cache);
/// changes that arrive meanwhile coalesce into one wake-up.
pub fn cache<K>(api: Api<K>, config: watcher::Config) -> (Store<K>, BoxStream<'static, ()>)
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let (wake, woken) = tokio::sync::mpsc::channel(1);
    let events = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                // Full means a wake-up is already pending; closed means nobody listens.
                Ok(_) => {
                    if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) =
                        wake.try_send(())
                    {
                        return;
                    }
                }
                Err(error) => tracing::warn!(%kind, %error, "watch failed; retrying"),
            }
        }
    });
    let changes = futures::stream::unfold(woken, |mut woken| async move {
        woken.recv().await.map(|()| ((), woken))
    })
    .boxed();
    (store, changes)
}

/// Any of the change streams.
pub fn merge(
    streams: Vec<BoxStream<'static, ()>>,
) -> impl Stream<Item = ()> + Unpin + Send + 'static {
    futures::stream::select_all(streams)
}
