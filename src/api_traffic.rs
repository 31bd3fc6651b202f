//! Counts of the operator's API traffic: every request by verb and outcome (a layer on the
//! client, so watches, status writes and Lease renewals all count), and watch events by kind.
//! The same layer hands each response's headers to [`crate::cluster_clock`].

use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use http::{Method, Request, Response};
use prometheus::{IntCounterVec, Opts, Registry};
use tower::{Layer, Service};

/// The counters, cheap to clone and shared by the client layer and the watch tasks.
#[derive(Clone)]
pub struct ApiTraffic {
    requests: IntCounterVec,
    watch_events: IntCounterVec,
}

impl ApiTraffic {
    /// Creates and registers both families.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "redis_operator_api_requests_total",
                "Requests the operator made to the Kubernetes API, by verb (get, list, watch, \
                 create, update, patch, delete, deletecollection) and outcome (success, conflict, \
                 not_found, forbidden, invalid, throttled, server_error, transport_error, other)",
            ),
            &["verb", "outcome"],
        )?;
        let watch_events = IntCounterVec::new(
            Opts::new(
                "redis_operator_watch_events_total",
                "Events the operator's watches delivered (an object applied or deleted, or a relist done), by kind",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(watch_events.clone()))?;
        Ok(Self {
            requests,
            watch_events,
        })
    }

    /// A watch delivered an object of `kind`.
    pub fn watch_event(&self, kind: &str) {
        self.watch_events.with_label_values(&[kind]).inc();
    }

    fn request(&self, verb: &'static str, outcome: &'static str) {
        self.requests.with_label_values(&[verb, outcome]).inc();
    }
}

/// Wraps the client's HTTP service so each request is counted when its response head arrives.
impl<S> Layer<S> for ApiTraffic {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            traffic: self.clone(),
        }
    }
}

/// See [`ApiTraffic`]'s `Layer` impl.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    traffic: ApiTraffic,
}

impl<S, B, R> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let verb = verb_of(request.method(), request.uri());
        let traffic = self.traffic.clone();
        self.inner
            .call(request)
            .map(move |result| {
                let outcome = match &result {
                    Ok(response) => {
                        crate::cluster_clock::learn(response.headers());
                        outcome_of(response.status().as_u16())
                    }
                    Err(_) => "transport_error",
                };
                traffic.request(verb, outcome);
                result
            })
            .boxed()
    }
}

/// The Kubernetes verb of a request, from its method and whether its path names a collection.
fn verb_of(method: &Method, uri: &http::Uri) -> &'static str {
    let query = uri.query().unwrap_or("");
    let watching = query
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1");
    let collection = names_collection(uri.path());
    match *method {
        Method::GET if watching => "watch",
        Method::GET if collection => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// `/api/v1[/namespaces/NS]/RESOURCE` or `/apis/GROUP/VERSION[/namespaces/NS]/RESOURCE`, with no
/// object name after it.
fn names_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    };
    let Some(mut rest) = rest else {
        return false;
    };
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        rest = &rest[2..];
    }
    rest.len() == 1
}

fn outcome_of(code: u16) -> &'static str {
    match code {
        200..=299 => "success",
        400 | 422 => "invalid",
        401 | 403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        429 => "throttled",
        500..=599 => "server_error",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verb(method: Method, uri: &str) -> &'static str {
        verb_of(&method, &uri.parse().unwrap())
    }

    #[test]
    fn verbs_follow_the_kubernetes_names() {
        assert_eq!(verb(Method::GET, "/api/v1/pods?labelSelector=a"), "list");
        assert_eq!(
            verb(
                Method::GET,
                "/api/v1/namespaces/ns/pods?watch=true&resourceVersion=5"
            ),
            "watch"
        );
        assert_eq!(
            verb(Method::GET, "/api/v1/namespaces/ns/pods/redis-0"),
            "get"
        );
        assert_eq!(verb(Method::GET, "/api/v1/namespaces"), "list");
        assert_eq!(verb(Method::GET, "/api/v1/namespaces/ns"), "get");
        assert_eq!(
            verb(
                Method::GET,
                "/apis/redis.github.com/v1/redisinstances?limit=1"
            ),
            "list"
        );
        assert_eq!(
            verb(
                Method::PATCH,
                "/apis/redis.github.com/v1/namespaces/ns/redisinstances/r/status"
            ),
            "patch"
        );
        assert_eq!(
            verb(Method::DELETE, "/apis/apps/v1/namespaces/ns/statefulsets/r"),
            "delete"
        );
        assert_eq!(
            verb(Method::DELETE, "/apis/apps/v1/namespaces/ns/statefulsets"),
            "deletecollection"
        );
        assert_eq!(verb(Method::POST, "/api/v1/namespaces/ns/events"), "create");
        assert_eq!(
            verb(
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"
            ),
            "update"
        );
    }

    #[test]
    fn outcomes_are_a_fixed_set() {
        assert_eq!(outcome_of(201), "success");
        assert_eq!(outcome_of(409), "conflict");
        assert_eq!(outcome_of(429), "throttled");
        assert_eq!(outcome_of(503), "server_error");
        assert_eq!(outcome_of(422), "invalid");
        assert_eq!(outcome_of(418), "other");
    }

    #[tokio::test]
    async fn the_layer_counts_each_request_once_by_verb_and_outcome() {
        let registry = Registry::new();
        let traffic = ApiTraffic::register(&registry).unwrap();
        let inner = tower::service_fn(|req: Request<()>| async move {
            let code = if req.method() == Method::DELETE {
                404
            } else {
                200
            };
            Ok::<_, std::convert::Infallible>(Response::builder().status(code).body(()).unwrap())
        });
        let mut svc = traffic.layer(inner);
        for (method, uri) in [
            (Method::GET, "/api/v1/namespaces/ns/configmaps?watch=true"),
            (Method::GET, "/api/v1/namespaces/ns/configmaps?watch=true"),
            (Method::DELETE, "/api/v1/namespaces/ns/pods/p"),
        ] {
            let req = Request::builder().method(method).uri(uri).body(()).unwrap();
            svc.call(req).await.unwrap();
        }
        let watch = traffic.requests.with_label_values(&["watch", "success"]);
        let missing = traffic.requests.with_label_values(&["delete", "not_found"]);
        assert_eq!((watch.get(), missing.get()), (2, 1));
    }
}
