//! The Helm chart of deploy/helm/ kept in step with the kustomize manifests of deploy/: with
//! matching values both render the same objects, a changed chart is caught, and the chart
//! passes `helm lint --strict`. Rendering only; no cluster needed.

mod common;
mod e2e;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

use e2e::{helm, helm_template, kubectl, repo_path};

const CHART: &str = "deploy/helm/redis-operator";

/// An object's identity: apiVersion, kind, namespace ("" when cluster-wide) and name.
type Key = (String, String, String, String);

/// Labels every object of a Helm chart carries by convention and kustomize has no reason to
/// set: which chart and release made it, and the app's version. They, and any `helm.sh/`
/// label or annotation (such as `helm.sh/resource-policy`), are all the comparison ignores.
const HELM_LABELS: [&str; 3] = [
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

fn is_helm_convention(key: &str) -> bool {
    key.starts_with("helm.sh/") || HELM_LABELS.contains(&key)
}

/// Every object of a multi-document YAML stream, by identity.
fn objects(yaml: &str) -> BTreeMap<Key, Value> {
    let mut objects = BTreeMap::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let object = Value::deserialize(document).expect("valid YAML");
        if object.is_null() {
            continue;
        }
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        let key = (
            text(&object["apiVersion"]),
            text(&object["kind"]),
            text(&object["metadata"]["namespace"]),
            text(&object["metadata"]["name"]),
        );
        assert!(
            objects.insert(key.clone(), object).is_none(),
            "{key:?} twice"
        );
    }
    objects
}

/// The object without Helm's conventional labels and annotations (and without the maps when
/// nothing else is left in them).
fn without_helm_metadata(mut object: Value) -> Value {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_mapping_mut) else {
        return object;
    };
    for field in ["labels", "annotations"] {
        let Some(map) = metadata.get_mut(field).and_then(Value::as_mapping_mut) else {
            continue;
        };
        map.retain(|key, _| !is_helm_convention(key.as_str().unwrap_or_default()));
        if map.is_empty() {
            metadata.remove(field);
        }
    }
    object
}

/// The object with every whole float as an integer: kustomize writes the CRD's `maximum:
/// 86400.0` as `86400`, the same number in JSON, which is what the API server stores.
fn with_whole_numbers(value: Value) -> Value {
    match value {
        Value::Number(number) => match number.as_f64() {
            Some(float)
                if number.is_f64() && float.fract() == 0.0 && float.abs() < 2f64.powi(53) =>
            {
                Value::Number((float as i64).into())
            }
            _ => Value::Number(number),
        },
        Value::Sequence(items) => {
            Value::Sequence(items.into_iter().map(with_whole_numbers).collect())
        }
        Value::Mapping(map) => Value::Mapping(
            map.into_iter()
                .map(|(key, value)| (key, with_whole_numbers(value)))
                .collect(),
        ),
        other => other,
    }
}

/// The differences between what the chart renders and what kustomize builds, or Ok when they
/// install the same objects. The operator's own Namespace is the one object only kustomize
/// has: with Helm it is the release namespace, made by `helm install --create-namespace`
/// before the release is stored in it.
fn differences(chart: &str, kustomize: &str) -> Result<(), String> {
    let chart: BTreeMap<Key, Value> = objects(chart)
        .into_iter()
        .map(|(key, object)| (key, with_whole_numbers(without_helm_metadata(object))))
        .collect();
    let mut kustomize: BTreeMap<Key, Value> = objects(kustomize)
        .into_iter()
        .map(|(key, object)| (key, with_whole_numbers(object)))
        .collect();
    let release_namespace = (
        "v1".to_owned(),
        "Namespace".to_owned(),
        String::new(),
        "redis-operator".to_owned(),
    );
    assert!(
        kustomize.remove(&release_namespace).is_some(),
        "deploy/ no longer creates the namespace redis-operator"
    );

    let mut report = Vec::new();
    for (key, object) in &kustomize {
        match chart.get(key) {
            None => report.push(format!("only in deploy/: {key:?}")),
            Some(rendered) if rendered != object => report.push(format!(
                "{key:?} differs\n--- deploy/:\n{}--- chart:\n{}",
                serde_yaml::to_string(object).unwrap(),
                serde_yaml::to_string(rendered).unwrap()
            )),
            Some(_) => {}
        }
    }
    for key in chart.keys().filter(|key| !kustomize.contains_key(*key)) {
        report.push(format!("only in the chart: {key:?}"));
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report.join("\n"))
    }
}

/// `kubectl kustomize` of a directory of the repository.
fn kustomize(dir: &Path) -> String {
    kubectl(&["kustomize", &dir.to_string_lossy()])
}

/// The base with the monitoring component, as a user adds it: a kustomization of its own
/// under target/ (deploy/ has none that includes the component).
fn kustomize_with_monitoring() -> String {
    let dir = repo_path("target/helm-drift/monitoring");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources: [../../../deploy]\n\
         components: [../../../deploy/components/monitoring]\n",
    )
    .unwrap();
    kustomize(&dir)
}

#[test]
fn default_values_install_what_deploy_installs() {
    let chart = helm_template(&repo_path(CHART), &[]);
    differences(&chart, &kustomize(&repo_path("deploy"))).unwrap_or_else(|report| {
        panic!("the chart and deploy/ drifted apart:\n{report}");
    });
}

#[test]
fn namespaced_values_install_what_the_namespaced_overlay_installs() {
    let chart = helm_template(
        &repo_path(CHART),
        &["watchNamespace=redis", "createWatchNamespace=true"],
    );
    let overlay = kustomize(&repo_path("deploy/overlays/namespaced"));
    differences(&chart, &overlay).unwrap_or_else(|report| {
        panic!("the chart and deploy/overlays/namespaced drifted apart:\n{report}");
    });
}

#[test]
fn monitoring_values_install_what_the_monitoring_component_adds() {
    let chart = helm_template(
        &repo_path(CHART),
        &["serviceMonitor.enabled=true", "prometheusRule.enabled=true"],
    );
    let rendered = objects(&chart);
    assert!(
        rendered
            .keys()
            .any(|(_, kind, _, _)| kind == "PrometheusRule")
            && rendered
                .keys()
                .any(|(_, kind, _, _)| kind == "ServiceMonitor"),
        "monitoring values rendered no ServiceMonitor or PrometheusRule"
    );
    differences(&chart, &kustomize_with_monitoring()).unwrap_or_else(|report| {
        panic!("the chart and deploy/components/monitoring drifted apart:\n{report}");
    });
}

/// The labels a Prometheus selects rules by go on the PrometheusRule, and on nothing else of it.
#[test]
fn prometheus_rule_labels_label_the_rule_alone() {
    let chart = helm_template(
        &repo_path(CHART),
        &[
            "prometheusRule.enabled=true",
            "prometheusRule.labels.release=prom",
        ],
    );
    let rendered = objects(&chart);
    let (_, rule) = rendered
        .iter()
        .find(|((_, kind, _, _), _)| kind == "PrometheusRule")
        .expect("a PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prom", "{chart}");
    let rules = rule["spec"]["groups"][0]["rules"].as_sequence().unwrap();
    let alerts: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    let mut unique = alerts.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), alerts.len(), "an alert twice: {alerts:?}");
    assert!(
        alerts.contains(&"RedisInstancePodUnreachable"),
        "{alerts:?}"
    );
    assert!(!chart.contains("labels:\n        - alert"), "{chart}");
}

/// The check is only worth something if it fails: a chart whose ClusterRole grants one verb
/// more, and a rendering that lost an object, are both reported by name.
#[test]
fn the_drift_check_reports_a_changed_chart() {
    let copy = repo_path("target/helm-drift/changed-chart");
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(&repo_path(CHART), &copy);
    let helpers = copy.join("templates/_helpers.tpl");
    let original = std::fs::read_to_string(&helpers).unwrap();
    let pods_rule = r#"verbs: ["list", "watch", "patch", "delete"]"#;
    assert!(original.contains(pods_rule), "{original}");
    std::fs::write(
        &helpers,
        original.replace(
            pods_rule,
            r#"verbs: ["list", "watch", "patch", "delete", "get"]"#,
        ),
    )
    .unwrap();

    let deploy = kustomize(&repo_path("deploy"));
    let report = differences(&helm_template(&copy, &[]), &deploy)
        .expect_err("a ClusterRole with one more verb went unnoticed");
    assert!(
        report.contains(r#""ClusterRole", "", "redis-operator") differs"#),
        "{report}"
    );

    let without_service: String = helm_template(&repo_path(CHART), &[])
        .split("\n---")
        .filter(|document| !document.contains("kind: Service\n"))
        .collect::<Vec<_>>()
        .join("\n---");
    let report =
        differences(&without_service, &deploy).expect_err("a missing Service went unnoticed");
    assert!(
        report.contains(
            r#"only in deploy/: ("v1", "Service", "redis-operator", "redis-operator-metrics")"#
        ),
        "{report}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_chart_crd_is_the_generated_one() {
    let generated = std::fs::read(repo_path("deploy/base/crd.yaml")).unwrap();
    let chart = std::fs::read(repo_path(&format!("{CHART}/crds/crd.yaml"))).unwrap();
    assert!(
        generated == chart,
        "{CHART}/crds/crd.yaml differs from deploy/base/crd.yaml: run `make crd`"
    );
}

#[test]
fn the_chart_app_version_is_the_crate_version() {
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_path(&format!("{CHART}/Chart.yaml"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_chart_passes_helm_lint() {
    let chart = repo_path(CHART);
    let chart = chart.to_string_lossy();
    let every_option = "watchNamespace=redis,createWatchNamespace=true,\
                        serviceMonitor.enabled=true,prometheusRule.enabled=true";
    for args in [
        vec!["lint", "--strict", &chart],
        vec!["lint", "--strict", &chart, "--set", every_option],
    ] {
        let out = helm(&args);
        assert!(out.contains("0 chart(s) failed"), "{args:?}: {out}");
    }
}
