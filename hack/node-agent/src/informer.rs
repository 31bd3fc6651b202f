//! Watch-backed caches whose changes wake a reconcile loop (the binder and the provisioner).

use std::fmt::Debug;
use std::hash::Hash;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// A cache of `api`'s objects and a stream yielding `()` whenever it changed.
pub fn cache<K>(api: Api<K>, config: watcher::Config) -> (Store<K>, BoxStream<'static, ()>)
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let changes = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .filter_map(move |event| {
            let kind = kind.clone();
            async move {
                match event {
                    Ok(_) => Some(()),
                    Err(error) => {
                        tracing::warn!(%kind, %error, "watch failed; retrying");
                        None
                    }
                }
            }
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
