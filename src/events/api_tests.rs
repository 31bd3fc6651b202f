//! The poster against a scripted Events API: names taken, repeats, retries and refusals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

use super::{Error, EventPoster, Occurrence, Posted, Told};
use crate::leader::Fence;
use crate::limiter::{Limiter, Limits};

/// What the scripted API holds and answers.
#[derive(Default)]
struct Script {
    /// Events by name.
    stored: HashMap<String, Value>,
    /// Answers for the next creates, in order: a create stored before its failure answered
    /// when `landed`.
    failures: Vec<(StatusCode, bool)>,
    /// Every request, as method and path.
    requests: Vec<(Method, String)>,
}

fn status(code: StatusCode) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "code": code.as_u16(), "reason": code.canonical_reason(), "message": "scripted"})
}

fn events_api(script: Arc<Mutex<Script>>) -> EventPoster {
    let service = tower::service_fn(move |req: Request<Body>| {
        let script = script.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let sent: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_owned();
            let mut script = script.lock().unwrap();
            script.requests.push((parts.method.clone(), path.clone()));
            let name = path.rsplit('/').next().unwrap_or_default().to_owned();
            let (code, reply) = match parts.method {
                Method::POST => {
                    let name = sent["metadata"]["name"].as_str().unwrap().to_owned();
                    let failure = (!script.failures.is_empty()).then(|| script.failures.remove(0));
                    match failure {
                        Some((code, landed)) => {
                            if landed {
                                script.stored.insert(name, sent);
                            }
                            (code, status(code))
                        }
                        None if script.stored.contains_key(&name) => {
                            (StatusCode::CONFLICT, status(StatusCode::CONFLICT))
                        }
                        None => {
                            script.stored.insert(name, sent.clone());
                            (StatusCode::CREATED, sent)
                        }
                    }
                }
                Method::GET => match script.stored.get(&name) {
                    Some(event) => (StatusCode::OK, event.clone()),
                    None => (StatusCode::NOT_FOUND, status(StatusCode::NOT_FOUND)),
                },
                Method::PATCH => match script.stored.get_mut(&name) {
                    Some(event) => {
                        event["series"] = sent["series"].clone();
                        (StatusCode::OK, event.clone())
                    }
                    None => (StatusCode::NOT_FOUND, status(StatusCode::NOT_FOUND)),
                },
                _ => (StatusCode::NOT_FOUND, status(StatusCode::NOT_FOUND)),
            };
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let reporter = Reporter {
        controller: "redis-operator".into(),
        instance: Some("redis-operator-0".into()),
    };
    EventPoster::new(kube::Client::new(service, "team-a"), reporter)
}

fn regarding() -> ObjectReference {
    ObjectReference {
        api_version: Some("redis.github.com/v1".into()),
        kind: Some("RedisInstance".into()),
        name: Some("cache".into()),
        namespace: Some("team-a".into()),
        uid: Some("uid-1".into()),
        ..ObjectReference::default()
    }
}

fn told(note: &str, occurrence: Occurrence) -> Told {
    Told {
        warning: false,
        reason: "RestartStarted".into(),
        action: "Restart".into(),
        note: note.into(),
        occurrence,
    }
}

fn creates(script: &Mutex<Script>) -> usize {
    let script = script.lock().unwrap();
    script
        .requests
        .iter()
        .filter(|(m, _)| *m == Method::POST)
        .count()
}

fn open() -> Limiter {
    Limiter::unfenced(Limits::default())
}

#[tokio::test]
async fn a_fact_told_by_a_second_operator_is_not_posted_twice() {
    let script = Arc::new(Mutex::new(Script::default()));
    let (first, second) = (events_api(script.clone()), events_api(script.clone()));
    let fact = || Occurrence::Fact("restart ConfigChanged abc 1700000000".into());
    let posted = first
        .post(&open(), &regarding(), &told("from a to b", fact()))
        .await;
    assert_eq!(posted.unwrap(), Posted::Created);
    let again = second
        .post(&open(), &regarding(), &told("resumed", fact()))
        .await;
    assert_eq!(again.unwrap(), Posted::AlreadyPosted);
    let script = script.lock().unwrap();
    assert_eq!(script.stored.len(), 1);
    let event = script.stored.values().next().unwrap();
    assert_eq!(event["note"], "from a to b", "the first telling stays");
    assert!(event["series"].is_null(), "{event}");
    assert!(!script.requests.iter().any(|(m, _)| *m == Method::PATCH));
}

#[tokio::test]
async fn the_same_text_again_is_counted_in_the_series_of_one_event() {
    let script = Arc::new(Mutex::new(Script::default()));
    let poster = events_api(script.clone());
    for expected in [Posted::Created, Posted::Repeated, Posted::Repeated] {
        let posted = poster
            .post(
                &open(),
                &regarding(),
                &told("Service differed", Occurrence::Repeat),
            )
            .await;
        assert_eq!(posted.unwrap(), expected);
    }
    let script = script.lock().unwrap();
    assert_eq!(script.stored.len(), 1);
    let event = script.stored.values().next().unwrap();
    assert_eq!(event["series"]["count"], 3, "{event}");
    assert!(event["series"]["lastObservedTime"].is_string(), "{event}");
}

#[tokio::test]
async fn a_create_that_landed_but_failed_is_retried_without_a_second_event() {
    let script = Arc::new(Mutex::new(Script {
        failures: vec![(StatusCode::GATEWAY_TIMEOUT, true)],
        ..Script::default()
    }));
    let poster = events_api(script.clone());
    let posted = poster
        .post(&open(), &regarding(), &told("drift", Occurrence::Repeat))
        .await;
    assert_eq!(posted.unwrap(), Posted::AlreadyPosted);
    assert_eq!(creates(&script), 2);
    let script = script.lock().unwrap();
    assert_eq!(script.stored.len(), 1);
    assert!(script.stored.values().next().unwrap()["series"].is_null());
}

#[tokio::test]
async fn throttled_and_failed_creates_are_retried_until_one_lands() {
    let script = Arc::new(Mutex::new(Script {
        failures: vec![
            (StatusCode::TOO_MANY_REQUESTS, false),
            (StatusCode::SERVICE_UNAVAILABLE, false),
        ],
        ..Script::default()
    }));
    let poster = events_api(script.clone());
    let posted = poster
        .post(&open(), &regarding(), &told("x", Occurrence::Repeat))
        .await;
    assert_eq!(posted.unwrap(), Posted::Created);
    assert_eq!(creates(&script), 3);
    assert_eq!(script.lock().unwrap().stored.len(), 1);
}

#[tokio::test]
async fn a_refused_event_is_not_retried_and_one_that_keeps_failing_is_given_up() {
    let script = Arc::new(Mutex::new(Script {
        failures: vec![(StatusCode::UNPROCESSABLE_ENTITY, false)],
        ..Script::default()
    }));
    let poster = events_api(script.clone());
    let posted = poster
        .post(&open(), &regarding(), &told("x", Occurrence::Repeat))
        .await;
    assert!(matches!(posted, Err(Error::Api(_))));
    assert_eq!(creates(&script), 1);

    let script = Arc::new(Mutex::new(Script {
        failures: vec![(StatusCode::SERVICE_UNAVAILABLE, false); 10],
        ..Script::default()
    }));
    let poster = events_api(script.clone());
    tokio::time::pause();
    let posted = poster
        .post(&open(), &regarding(), &told("x", Occurrence::Repeat))
        .await;
    assert!(matches!(posted, Err(Error::Api(_))));
    assert_eq!(creates(&script), super::ATTEMPTS as usize);
}

#[tokio::test]
async fn a_deposed_leader_posts_nothing() {
    let script = Arc::new(Mutex::new(Script::default()));
    let poster = events_api(script.clone());
    let fenced = Limiter::new(Limits::default(), Arc::new(Fence::closed()));
    let posted = poster
        .post(&fenced, &regarding(), &told("x", Occurrence::Repeat))
        .await;
    assert!(matches!(posted, Err(Error::NotLeader)));
    assert!(script.lock().unwrap().requests.is_empty());
}

#[tokio::test]
async fn a_stopping_operator_waits_for_the_events_still_being_retried() {
    let script = Arc::new(Mutex::new(Script {
        failures: vec![
            (StatusCode::SERVICE_UNAVAILABLE, false),
            (StatusCode::SERVICE_UNAVAILABLE, false),
        ],
        ..Script::default()
    }));
    let poster = events_api(script.clone());
    let told = told("restarting", Occurrence::Repeat);
    poster.post_in_background(open(), regarding(), told, tracing::Span::none());
    assert_eq!(
        poster.clone().drained(std::time::Duration::ZERO).await,
        1,
        "counted by every clone while it is retried"
    );
    assert_eq!(
        poster.drained(std::time::Duration::from_secs(10)).await,
        0,
        "done before the limit"
    );
    assert_eq!(creates(&script), 3);
    assert_eq!(script.lock().unwrap().stored.len(), 1, "posted");
}
