//! The metrics actor against its own registry: counts, series removal, and the dashboard's names.

use std::time::Duration;

use prometheus::Registry;
use ractor::Actor;

use super::*;

fn key() -> InstanceKey {
    InstanceKey {
        namespace: "ns".into(),
        name: "redis-example".into(),
    }
}

async fn render(actor: &ActorRef<MetricsMsg>) -> String {
    ractor::call_t!(actor, MetricsMsg::Render, 1000)
        .unwrap()
        .unwrap()
}

fn every_kind_of_message() -> Vec<MetricsMsg> {
    vec![
        MetricsMsg::Observed {
            key: key(),
            ready: 1,
            desired: 3,
            config_invalid: true,
            mismatched: true,
            restarting: false,
            strategy: "RollingUpdate",
        },
        MetricsMsg::Restarted {
            key: key(),
            strategy: "RollingUpdate",
            reason: "ConfigChanged",
        },
        MetricsMsg::DriftRepaired {
            key: key(),
            kind: "Service",
        },
        MetricsMsg::RestartCompleted {
            key: key(),
            strategy: "RollingUpdate",
            took: Duration::from_secs(3),
        },
        MetricsMsg::HashMismatch {
            key: key(),
            kind: "AnnotationDiffers",
        },
        MetricsMsg::InvalidConfig(key()),
        MetricsMsg::ReconcileError {
            key: key(),
            category: "ApplyFailed",
        },
        MetricsMsg::StepTook {
            decision: "Idle",
            took: Duration::from_millis(2),
        },
        MetricsMsg::ActorStarted,
    ]
}

/// A metrics actor that has been sent one message of each kind.
async fn told_every_kind_of_message() -> (ActorRef<MetricsMsg>, ractor::concurrency::JoinHandle<()>)
{
    let (actor, handle) = Actor::spawn(None, MetricsActor, Registry::new())
        .await
        .unwrap();
    for msg in every_kind_of_message() {
        actor.send_message(msg).unwrap();
    }
    (actor, handle)
}

#[tokio::test]
async fn counts_restarts_and_mismatches_and_forgets_instances() {
    let (actor, handle) = Actor::spawn(None, MetricsActor, Registry::new())
        .await
        .unwrap();
    actor
        .send_message(MetricsMsg::Observed {
            key: key(),
            ready: 0,
            desired: 1,
            config_invalid: false,
            mismatched: false,
            restarting: false,
            strategy: "Recreate",
        })
        .unwrap();
    let text = render(&actor).await;
    assert!(
        text.contains(
            r#"redis_operator_restarts_total{instance="redis-example",namespace="ns",reason="ConfigChanged",strategy="Recreate"} 0"#
        ),
        "the spec's restart series exists before the first restart:\n{text}"
    );
    assert!(text.contains(r#"redis_operator_config_hash_mismatches_total{instance="redis-example",kind="ConfigMapDiffers",namespace="ns"} 0"#));
    actor
        .send_message(MetricsMsg::Restarted {
            key: key(),
            strategy: "Recreate",
            reason: "ConfigChanged",
        })
        .unwrap();
    for kind in ["ConfigMapMissing", "AnnotationDiffers", "AnnotationDiffers"] {
        let msg = MetricsMsg::HashMismatch { key: key(), kind };
        actor.send_message(msg).unwrap();
    }
    let text = render(&actor).await;
    assert!(text.contains(
        r#"redis_operator_restarts_total{instance="redis-example",namespace="ns",reason="ConfigChanged",strategy="Recreate"} 1"#
    ));
    assert!(text.contains(r#"redis_operator_config_hash_mismatches_total{instance="redis-example",kind="AnnotationDiffers",namespace="ns"} 2"#));
    assert!(text.contains(r#"redis_operator_config_hash_mismatches_total{instance="redis-example",kind="ConfigMapMissing",namespace="ns"} 1"#));
    assert!(text.contains(
        r#"redis_operator_last_restart_timestamp_seconds{instance="redis-example",namespace="ns"}"#
    ));

    actor.send_message(MetricsMsg::Forget(key())).unwrap();
    let text = render(&actor).await;
    assert!(!text.contains("redis-example"), "{text}");
    actor.stop(None);
    handle.await.unwrap();
}

#[tokio::test]
async fn every_per_instance_series_goes_with_its_instance() {
    let (actor, handle) = told_every_kind_of_message().await;
    let text = render(&actor).await;
    assert!(
        text.contains(
            r#"redis_operator_config_invalid{instance="redis-example",namespace="ns"} 1"#
        )
    );
    assert!(
        text.contains(
            r#"redis_operator_desired_replicas{instance="redis-example",namespace="ns"} 3"#
        )
    );
    assert!(text.contains("redis_operator_instance_actors 1"));
    assert!(text.contains(r#"redis_operator_build_info{version=""#));
    actor.send_message(MetricsMsg::Forget(key())).unwrap();
    let text = render(&actor).await;
    assert!(!text.contains("redis-example"), "{text}");
    actor.stop(None);
    handle.await.unwrap();
}

#[tokio::test]
async fn every_metric_on_the_dashboard_and_in_the_alerts_is_exported() {
    let (actor, handle) = told_every_kind_of_message().await;
    let mut exported = render(&actor).await;
    // Exported by the process, not the actor.
    exported.push_str("\nredis_operator_leader\nredis_operator_api_requests_total\nredis_operator_watch_events_total\n");
    for (file, text) in [
        (
            "dashboards/redis-operator.json",
            include_str!("../../../dashboards/redis-operator.json"),
        ),
        (
            "deploy/components/monitoring/prometheusrule.yaml",
            include_str!("../../../deploy/components/monitoring/prometheusrule.yaml"),
        ),
    ] {
        let mut used = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("redis_operator_"))
            .map(|word| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .fold(word, |w, suffix| w.strip_suffix(suffix).unwrap_or(w))
            })
            .collect::<Vec<_>>();
        used.sort_unstable();
        used.dedup();
        assert!(
            used.len() >= 3,
            "{file} should use the operator's metrics: {used:?}"
        );
        for name in used {
            assert!(
                exported.contains(&format!("\n{name}")),
                "{file} uses {name}, which /metrics does not export"
            );
        }
    }
    actor.stop(None);
    handle.await.unwrap();
}
