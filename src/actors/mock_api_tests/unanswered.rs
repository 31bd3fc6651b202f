//! A live check that cannot read a pod counts it and tells it in a Warning, once, until a
//! check reads every pod again.

use std::sync::atomic::AtomicUsize;

use super::permits::{live_caches, live_instance, running, serve_silent_pod};
use super::*;

fn unreachable_events(log: &Log) -> usize {
    requests(log)
        .iter()
        .filter(|(m, p, body)| {
            *m == Method::POST && p.contains("/events") && body["reason"] == "PodUnreachable"
        })
        .count()
}

/// The instance's `redis_operator_pods_unreachable` sample, if any.
async fn unreachable_sample(metrics: &ActorRef<MetricsMsg>) -> Option<String> {
    let text = ractor::call_t!(metrics, MetricsMsg::Render, 1000)
        .unwrap()
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("redis_operator_pods_unreachable{"))
        .map(str::to_owned)
}

#[tokio::test]
async fn a_pod_the_live_check_cannot_reach_is_counted_and_told_once() {
    // Nothing listens here yet: each dial is refused at once.
    const POD_IP: &str = "127.0.0.93";
    let instance = live_instance();
    let (stores, _watches) = live_caches(&instance, POD_IP);
    let log = Log::default();
    let client = scripted_api(&instance, log.clone(), Arc::default());
    let timings = Timings {
        live_check: Duration::from_millis(200),
        ..Timings::default()
    };
    let limiter = Limiter::unfenced(Limits::default());
    let snapshots = Snapshots::default();
    let args = instance_args(client, Arc::new(stores), limiter, timings, snapshots, None).await;
    let (actor, handle, metrics) = spawn_rendering_metrics(args).await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the PodUnreachable Event", |reqs| {
        reqs.iter()
            .any(|(_, p, body)| p.contains("/events") && body["reason"] == "PodUnreachable")
    })
    .await;
    let event = requests(&log)
        .into_iter()
        .find(|(_, _, body)| body["reason"] == "PodUnreachable")
        .unwrap()
        .2;
    assert_eq!(event["type"], "Warning");
    let note = event["note"].as_str().unwrap();
    assert!(note.contains("could not read redis-example-0"), "{note}");
    let sample = unreachable_sample(&metrics).await;
    assert!(
        sample.as_deref().is_some_and(|s| s.ends_with(" 1")),
        "{sample:?}"
    );
    // Several checks later, the same pod still silent: nothing told again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(unreachable_events(&log), 1, "{:#?}", requests(&log));

    // The pod answers, running the spec's value: the count goes back to 0.
    let held = Arc::new(AtomicUsize::new(0));
    let redis = serve_silent_pod(POD_IP, running("maxmemory", "104857600"), held).await;
    let mut back = None;
    for _ in 0..100 {
        back = unreachable_sample(&metrics).await;
        if back.as_deref().is_some_and(|s| s.ends_with(" 0")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        back.as_deref().is_some_and(|s| s.ends_with(" 0")),
        "{back:?}"
    );
    assert_eq!(unreachable_events(&log), 1);
    // Not stopped: the stand-in pod sits on the CONFIG SET of what it does not report.
    actor.kill();
    handle.await.unwrap();
    redis.abort();
}
