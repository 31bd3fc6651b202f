//! Monitoring as users run it: the alert rules through `promtool`, and every dashboard panel
//! and alert expression on a real Prometheus that scrapes an operator, first with a healthy
//! fleet, then after it restarted one instance and refused a config.

mod common;
#[path = "monitoring/dashboard.rs"]
mod dashboard;
mod e2e;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis_operator::crd::RedisInstance;
use serde_json::Value;

use common::{TestNamespace, wait_for};
use e2e::*;

const NAME: &str = "redis-example";
/// An instance the namespace's quota has no room for.
const CROWDED: &str = "redis-crowded";
const RULES: &str = include_str!("../deploy/components/monitoring/prometheusrule.yaml");
const RULE_TESTS: &str = include_str!("prometheus/alerts.test.yaml");
/// The job name Prometheus gives the operator here: not the ServiceMonitor's
/// (`redis-operator-metrics`), so that a query or rule that hard-codes that name finds nothing.
const JOB: &str = "kubernetes-service-endpoints";

/// A fresh directory under `target/` holding the PrometheusRule's `spec` as a Prometheus rules
/// file (`rules.yaml`) and the promtool unit tests beside it.
fn rules_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/prometheus")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rule: serde_yaml::Value = serde_yaml::from_str(RULES).unwrap();
    std::fs::write(
        dir.join("rules.yaml"),
        serde_yaml::to_string(&rule["spec"]).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("alerts.test.yaml"), RULE_TESTS).unwrap();
    dir
}

fn promtool(dir: &Path, args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus; make test installs it)");
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn no_alert_rule_depends_on_the_job_name() {
    for (alert, expr) in alert_rules() {
        assert!(
            !expr.contains("job="),
            "alert {alert} hard-codes a job, so it misfires on a Prometheus that names the \
             operator's job otherwise: {expr}"
        );
    }
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = rules_dir("promtool");
    promtool(&dir, &["check", "rules", "rules.yaml"]);
    promtool(&dir, &["test", "rules", "alerts.test.yaml"]);
}

/// A Prometheus server on loopback, scraping one target every second; killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Self {
        // honor_labels as the ServiceMonitor sets it, so the operator's own `namespace` and
        // `instance` labels are kept; but a job name other than the ServiceMonitor's.
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [rules.yaml]\n\
             scrape_configs:\n\
             - job_name: {JOB}\n  honor_labels: true\n  static_configs: [{{targets: ['{target}']}}]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus; make test installs it)");
        Self { child, addr }
    }

    /// `GET /api/v1/<path>`'s `data`, or why not.
    async fn api(&self, path: &str) -> Result<Value, String> {
        let body = try_http_get(&self.addr, &format!("/api/v1/{path}")).await?;
        let reply: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body:?}"))?;
        if reply["status"] != "success" {
            return Err(format!("{path}: {reply}"));
        }
        Ok(reply["data"].clone())
    }

    /// The instant-query result of `expr`.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("query?query={}", encode(expr))).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn value_of(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// What a query variable (`label_values(<selector>, <label>)`) lists, with the job variable
/// set to [`JOB`] and the namespace to `namespace`.
async fn variable_values(
    prometheus: &Prometheus,
    query: &str,
    namespace: &str,
) -> Result<Vec<Value>, String> {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .ok_or_else(|| format!("not a label_values query: {query}"))?;
    let (selector, label) = inner
        .rsplit_once(',')
        .ok_or_else(|| format!("no label in {query}"))?;
    let selector = selector
        .replace("$job", JOB)
        .replace("$namespace", namespace);
    let path = format!(
        "label/{}/values?match[]={}",
        label.trim(),
        encode(&selector)
    );
    Ok(prometheus
        .api(&path)
        .await?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Every panel query on a healthy fleet: each returns a series, and each value is a number
/// (0 where nothing happened), but for quantiles, which are undefined until something is
/// observed. `Err` lists the panels that do not.
async fn panels_without_numbers(
    prometheus: &Prometheus,
    queries: &[(String, String)],
) -> Result<(), String> {
    let mut failures = Vec::new();
    for (title, expr) in queries {
        let result = prometheus.query(expr).await?;
        let quantile = expr.starts_with("histogram_quantile(");
        if result.is_empty() {
            failures.push(format!("panel {title:?} shows No data: {expr}"));
        } else if !quantile && result.iter().any(|s| value_of(s).is_nan()) {
            failures.push(format!("panel {title:?} shows NaN: {expr}: {result:?}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("\n{}", failures.join("\n")))
    }
}

/// `(alert name, expr)` of every rule.
fn alert_rules() -> Vec<(String, String)> {
    let rule: serde_yaml::Value = serde_yaml::from_str(RULES).unwrap();
    rule["spec"]["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap().iter())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Metric names an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("redis_operator_") || *w == "up")
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A ValidatingAdmissionPolicy refusing Services of one name in one namespace, as a cluster's
/// policy might; removed on drop.
struct RefuseService {
    name: String,
}

impl RefuseService {
    async fn install(namespace: &str, service: &str) -> Self {
        let name = format!("refuse-{namespace}");
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "List", "items": [{
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": name},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {"resourceRules": [{
                        "apiGroups": [""], "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"], "resources": ["services"],
                    }]},
                    "validations": [{
                        "expression": format!("object.metadata.name != '{service}'"),
                        "message": "this cluster's policy refuses the Service",
                    }],
                },
            }, {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": name},
                "spec": {
                    "policyName": name,
                    "validationActions": ["Deny"],
                    "matchResources": {"namespaceSelector": {"matchLabels": {
                        "kubernetes.io/metadata.name": namespace,
                    }}},
                },
            }],
        });
        let path = std::env::temp_dir().join(format!("{name}.json"));
        std::fs::write(&path, manifest.to_string()).unwrap();
        kubectl(&["apply", "-f", &path.to_string_lossy()]);
        // A policy takes effect once the API server has loaded it: probe with a dry run.
        let probe = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service, "namespace": namespace},
            "spec": {"ports": [{"port": 6379}]},
        });
        let probe_path = std::env::temp_dir().join(format!("{name}-probe.json"));
        std::fs::write(&probe_path, probe.to_string()).unwrap();
        wait_for(
            Duration::from_secs(60),
            "the admission policy to refuse the Service",
            || async {
                let out = kubectl_output(&[
                    "create",
                    "--dry-run=server",
                    "-f",
                    &probe_path.to_string_lossy(),
                ]);
                if out.status.success() {
                    Err("still admitted".to_owned())
                } else {
                    Ok(())
                }
            },
        )
        .await;
        Self { name }
    }
}

impl Drop for RefuseService {
    fn drop(&mut self) {
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            let _ = kubectl_output(&["delete", kind, &self.name, "--ignore-not-found"]);
        }
    }
}

async fn wait_refused(ns: &TestNamespace) {
    let api = ns.api::<RedisInstance>();
    wait_for(
        Duration::from_secs(60),
        "the bad config to be refused in status",
        || {
            let api = api.clone();
            async move {
                let ri = api.get(NAME).await.map_err(|e| e.to_string())?;
                let status = ri.status.unwrap_or_default();
                match status.phase.map(|p| p.as_str()) {
                    Some("Invalid") if status.observed_generation == ri.metadata.generation => {
                        Ok(())
                    }
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
}

/// An example with two pods: a primary and a replica, so the replication series have data.
fn two_pods(file: &str) -> RedisInstance {
    let mut instance = example(file);
    instance.spec.replicas = 2;
    instance
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_panel_and_alert_answers_from_a_real_prometheus() {
    let client = common::client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "monitoring").await;
    let operator = Operator::start(&ns.name);
    apply_instance(&ns, &two_pods("redis-example.yaml"))
        .await
        .unwrap();
    wait_ready(&ns, NAME, None, Duration::from_secs(180)).await;

    let dir = rules_dir("e2e");
    let prometheus = Prometheus::start(&dir, &operator.http_addr());
    // The restart series is scraped at 0 before the restart, as in a cluster scraped all along,
    // so that `increase()` sees the restart.
    let selector = format!("redis_operator_restarts_total{{namespace=\"{}\"}}", ns.name);
    wait_for(
        Duration::from_secs(60),
        "Prometheus to scrape the restart series at 0",
        || async {
            match prometheus.query(&selector).await?.as_slice() {
                [one] if value_of(one) == 0.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // A healthy fleet: each variable lists what this test runs, and every panel shows a number
    // rather than "No data", errors and refusals included.
    let healthy = dashboard::panel_queries(&ns.name, JOB);
    wait_for(
        Duration::from_secs(60),
        "every dashboard panel to show a number on a healthy fleet",
        || panels_without_numbers(&prometheus, &healthy),
    )
    .await;
    // These fall back to 0 when nothing is scraped: here they must see the operator itself.
    for (title, expr) in &healthy {
        if ["Operator up", "Live instance actors"].contains(&title.as_str()) {
            let result = prometheus.query(expr).await.unwrap();
            assert!(
                result.iter().all(|s| value_of(s) >= 1.0),
                "panel {title:?} should count the operator: {expr}: {result:?}"
            );
        }
    }
    let expected = [
        ("job", JOB),
        ("namespace", ns.name.as_str()),
        ("instance", NAME),
    ];
    for (name, value) in expected {
        let query = dashboard::variable_query_of(name);
        let values = variable_values(&prometheus, &query, &ns.name)
            .await
            .unwrap();
        assert!(
            values.contains(&Value::from(value)),
            "variable {name} ({query}) should list {value}: {values:?}"
        );
    }

    apply_instance(&ns, &two_pods("redis-example-updated.yaml"))
        .await
        .unwrap();
    wait_restarts(&ns, NAME, 1).await;
    let mut bad = two_pods("redis-example-updated.yaml");
    bad.spec.config.insert("maxmemory".into(), "lots".into());
    apply_instance(&ns, &bad).await.unwrap();
    wait_refused(&ns).await;

    // A second instance whose Service an admission policy refuses: its steps fail, so the
    // error series have data too.
    let _policy = RefuseService::install(&ns.name, CROWDED).await;
    let mut crowded = example("redis-example.yaml");
    crowded.metadata.name = Some(CROWDED.into());
    apply_instance(&ns, &crowded).await.unwrap();
    let errors = format!("redis_operator_reconcile_errors_total{{instance=\"{CROWDED}\"}}");
    wait_for(
        Duration::from_secs(60),
        "the refused Service to be counted as an error",
        || async {
            match prometheus.query(&errors).await?.as_slice() {
                [one, ..] if value_of(one) >= 1.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // The refused config fires its alert, for this instance.
    wait_for(
        Duration::from_secs(60),
        "RedisInstanceConfigInvalid to fire for the instance",
        || async {
            let alerts = prometheus.api("alerts").await?;
            let firing = alerts["alerts"].as_array().into_iter().flatten().any(|a| {
                a["labels"]["alertname"] == "RedisInstanceConfigInvalid"
                    && a["labels"]["instance"] == NAME
                    && a["labels"]["namespace"] == ns.name.as_str()
                    && a["state"] == "firing"
            });
            if firing {
                Ok(())
            } else {
                Err(alerts.to_string())
            }
        },
    )
    .await;

    let queries = dashboard::panel_queries(&ns.name, JOB);
    assert!(queries.len() >= 15, "{queries:?}");
    for (title, expr) in queries {
        let result = wait_for(
            Duration::from_secs(30),
            &format!("panel {title:?} to return data: {expr}"),
            || async {
                let result = prometheus.query(&expr).await?;
                if result.is_empty() {
                    Err("no data".into())
                } else {
                    Ok(result)
                }
            },
        )
        .await;
        if title.starts_with("Restart") && expr.contains("restarts_total") {
            let counted = result.iter().any(|sample| {
                let labelled = sample["metric"].get("instance").is_none_or(|i| i == NAME);
                labelled && value_of(sample) >= 1.0
            });
            assert!(
                counted,
                "panel {title:?} should show the restart: {result:?}"
            );
        }
        if title.starts_with("Config hash mismatches") {
            // The edit changed both the file and the template's hash.
            for kind in ["ConfigMapDiffers", "AnnotationDiffers"] {
                let counted = result.iter().any(|s| {
                    s["metric"]["instance"] == NAME
                        && s["metric"]["kind"] == kind
                        && value_of(s) >= 1.0
                });
                assert!(counted, "panel {title:?} should count {kind}: {result:?}");
            }
        }
        if expr.contains("by (namespace, instance)") {
            assert!(
                result.iter().any(|s| s["metric"]["instance"] == NAME),
                "panel {title:?} should be labelled with the instance: {result:?}"
            );
        }
    }

    for (alert, expr) in alert_rules() {
        prometheus
            .query(&expr)
            .await
            .unwrap_or_else(|e| panic!("alert {alert}'s expression failed: {e}"));
        for name in metric_names(&expr) {
            let found = prometheus.query(&name).await.unwrap();
            assert!(
                !found.is_empty(),
                "alert {alert} reads {name}, which Prometheus has no data for"
            );
        }
    }
}
