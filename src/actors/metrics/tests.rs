//! The metrics actor on its own registry: counts, series removal, text format, dashboard names.

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
        MetricsMsg::PodsUnreachable {
            key: key(),
            pods: 1,
        },
        MetricsMsg::ReconcileError {
            key: key(),
            category: "ApplyFailed",
        },
        MetricsMsg::Replication {
            key: key(),
            primaries: 1,
            lags: vec![("redis-example-1".into(), 0)],
        },
        MetricsMsg::RoleChanged {
            key: key(),
            kind: "Planned",
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
    assert!(
        text.contains(
            r#"redis_operator_invalid_configs_total{instance="redis-example",namespace="ns"} 0"#
        ),
        "the refusal series exists before the first refusal:\n{text}"
    );
    actor
        .send_message(MetricsMsg::InvalidConfig(key()))
        .unwrap();
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
        r#"redis_operator_invalid_configs_total{instance="redis-example",namespace="ns"} 1"#
    ));
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
    assert!(
        text.contains(
            r#"redis_operator_pods_unreachable{instance="redis-example",namespace="ns"} 1"#
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

fn observed(namespace: &str, name: &str, strategy: &'static str) -> MetricsMsg {
    MetricsMsg::Observed {
        key: InstanceKey {
            namespace: namespace.into(),
            name: name.into(),
        },
        ready: 2,
        desired: 3,
        config_invalid: false,
        mismatched: true,
        restarting: true,
        strategy,
    }
}

/// The lines from `# HELP name` up to the next family.
fn family_block<'a>(text: &'a str, name: &str) -> &'a str {
    let start = text
        .find(&format!("# HELP {name} "))
        .unwrap_or_else(|| panic!("{name} is missing:\n{text}"));
    let rest = &text[start..];
    let end = rest[1..].find("# HELP ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// What a scraper needs of the text format: HELP and TYPE once per family, before its samples;
/// each sample `name{labels} value`, labels sorted by name (but a bucket's `le`, which the crate
/// writes last), the value a number.
fn assert_well_formed(text: &str) {
    let mut seen = std::collections::HashSet::new();
    let mut family = String::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (kind, name) = (words.next().unwrap(), words.next().unwrap());
            assert!(
                seen.insert((kind, name)),
                "second {kind} of {name}:\n{text}"
            );
            family = name.to_owned();
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
        assert!(
            name == family || base == family,
            "{line} is not in {family}"
        );
        assert!(seen.contains(&("TYPE", name)) || seen.contains(&("TYPE", base)));
        let labels = labels.strip_suffix('}').unwrap();
        let names = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once("=\"").unwrap().0)
            .filter(|&label| label != "le")
            .collect::<Vec<_>>();
        assert!(names.is_sorted(), "{line}");
    }
}

#[test]
fn per_instance_families_render_in_the_crates_text_format() {
    let mut state = MetricsState::register(Registry::new()).unwrap();
    state.record(observed("other", "b", "Recreate"));
    state.record(observed("ns", "a", "RollingUpdate"));
    for (strategy, reason) in [
        ("RollingUpdate", "ImageChanged"),
        ("RollingUpdate", "ConfigChanged"),
        ("Recreate", "ImageChanged"),
    ] {
        state.record(MetricsMsg::Restarted {
            key: InstanceKey {
                namespace: "ns".into(),
                name: "a".into(),
            },
            strategy,
            reason,
        });
    }
    state.record(MetricsMsg::ReconcileError {
        key: InstanceKey {
            namespace: "other".into(),
            name: "b".into(),
        },
        category: "ApplyFailed",
    });
    let text = state.render().unwrap();

    assert_eq!(
        family_block(&text, "redis_operator_restarts_total"),
        "# HELP redis_operator_restarts_total Restarts of an instance's pods started by the \
         operator, by strategy and reason\n\
         # TYPE redis_operator_restarts_total counter\n\
         redis_operator_restarts_total{instance=\"a\",namespace=\"ns\",reason=\"ConfigChanged\",strategy=\"RollingUpdate\"} 1\n\
         redis_operator_restarts_total{instance=\"a\",namespace=\"ns\",reason=\"ImageChanged\",strategy=\"Recreate\"} 1\n\
         redis_operator_restarts_total{instance=\"a\",namespace=\"ns\",reason=\"ImageChanged\",strategy=\"RollingUpdate\"} 1\n\
         redis_operator_restarts_total{instance=\"b\",namespace=\"other\",reason=\"ConfigChanged\",strategy=\"Recreate\"} 0\n"
    );
    assert_eq!(
        family_block(&text, "redis_operator_reconcile_errors_total"),
        "# HELP redis_operator_reconcile_errors_total Failed reconcile steps, by category\n\
         # TYPE redis_operator_reconcile_errors_total counter\n\
         redis_operator_reconcile_errors_total{category=\"ApplyFailed\",instance=\"b\",namespace=\"other\"} 1\n"
    );
    assert!(text.contains("redis_operator_ready_replicas{instance=\"b\",namespace=\"other\"} 2\n"));
    assert!(
        text.contains("redis_operator_restart_in_progress{instance=\"a\",namespace=\"ns\"} 1\n")
    );
    assert!(text.contains("redis_operator_config_invalid{instance=\"a\",namespace=\"ns\"} 0\n"));
    // No live check yet: 0 pods unreachable, from the first step on.
    assert!(text.contains("redis_operator_pods_unreachable{instance=\"a\",namespace=\"ns\"} 0\n"));
    assert_eq!(
        text.matches("redis_operator_last_restart_timestamp_seconds{")
            .count(),
        1
    );
    assert!(
        !text.contains("redis_operator_drift_repairs_total"),
        "a family without samples has no HELP or TYPE either:\n{text}"
    );
    assert_well_formed(&text);
}

#[test]
fn replication_series_exist_at_zero_and_count_role_changes_by_kind() {
    let mut state = MetricsState::register(Registry::new()).unwrap();
    let lags = vec![("r-1".to_owned(), 0), ("r-2".to_owned(), 1500)];
    state.record(MetricsMsg::Replication {
        key: key(),
        primaries: 1,
        lags,
    });
    state.record(MetricsMsg::RoleChanged {
        key: key(),
        kind: "Unplanned",
    });
    let text = state.render().unwrap();
    assert_eq!(
        family_block(&text, "redis_operator_role_changes_total")
            .lines()
            .skip(2)
            .collect::<Vec<_>>(),
        [
            "redis_operator_role_changes_total{instance=\"redis-example\",kind=\"Planned\",namespace=\"ns\"} 0",
            "redis_operator_role_changes_total{instance=\"redis-example\",kind=\"Unplanned\",namespace=\"ns\"} 1",
        ]
    );
    assert!(
        text.contains(
            "redis_operator_primary_pods{instance=\"redis-example\",namespace=\"ns\"} 1\n"
        )
    );
    assert!(text.contains(
        "redis_operator_replication_lag_bytes{instance=\"redis-example\",namespace=\"ns\",pod=\"r-2\"} 1500\n"
    ));
    assert_well_formed(&text);
}

#[test]
fn label_values_are_escaped_as_the_crate_escapes_them() {
    let odd = "a\"b\\c\nd";
    let mut state = MetricsState::register(Registry::new()).unwrap();
    state.record(MetricsMsg::InvalidConfig(InstanceKey {
        namespace: odd.into(),
        name: "x".into(),
    }));
    let text = state.render().unwrap();
    assert!(
        text.contains(
            r#"redis_operator_invalid_configs_total{instance="x",namespace="a\"b\\c\nd"} 1"#
        ),
        "{text}"
    );

    let registry = Registry::new();
    let reference =
        prometheus::IntCounterVec::new(prometheus::Opts::new("n", "h"), &["namespace"]).unwrap();
    registry.register(Box::new(reference.clone())).unwrap();
    reference.with_label_values(&[odd]).inc();
    let crate_text = TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        crate_text.contains(r#"{namespace="a\"b\\c\nd"}"#),
        "{crate_text}"
    );
    assert_well_formed(&text);
}
