//! The Grafana dashboard read as Grafana reads it: its variables, and its queries with the
//! variables substituted; plus the static check that every query is filtered by `$job`.

use serde_json::Value;

pub const DASHBOARD: &str = include_str!("../../dashboards/redis-operator.json");

/// The matcher every selector must carry, so the dashboard works whatever the job is named.
const JOB_MATCHER: &str = r#"job=~"$job""#;

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("the dashboard is JSON")
}

/// The template variable called `name`.
fn variable(dashboard: &Value, name: &str) -> Option<Value> {
    dashboard["templating"]["list"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
        .cloned()
}

/// A query variable's PromQL: Grafana stores it as a string or as `{query: ...}`.
fn variable_query(variable: &Value) -> &str {
    variable["query"]["query"]
        .as_str()
        .or(variable["query"].as_str())
        .unwrap_or_default()
}

/// The PromQL of the variable called `name`; panics when there is none.
pub fn variable_query_of(name: &str) -> String {
    let variable = variable(&dashboard(), name).unwrap_or_else(|| panic!("no variable {name}"));
    variable_query(&variable).to_owned()
}

/// Every panel target as `(panel title, expr)`, rows' nested panels included.
pub fn targets() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let mut panels: Vec<Value> = dashboard["panels"].as_array().cloned().unwrap_or_default();
    let nested: Vec<Value> = panels
        .iter()
        .flat_map(|p| p["panels"].as_array().cloned().unwrap_or_default())
        .collect();
    panels.extend(nested);
    panels
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |target| {
                    let expr = target["expr"].as_str().unwrap_or_default().to_owned();
                    (title.clone(), expr)
                })
        })
        .collect()
}

/// Every panel's queries as `(panel title, expr)`, with the variables set as Grafana sets them
/// for someone looking at `namespace`, all instances, and the operator scraped as `job`;
/// windows cover the whole test. Panics on a variable the dashboard does not define.
pub fn panel_queries(namespace: &str, job: &str) -> Vec<(String, String)> {
    let dashboard = dashboard();
    // "All" selected: Grafana puts the variable's allValue in the query.
    let all_instances = variable(&dashboard, "instance")
        .and_then(|v| v["allValue"].as_str().map(str::to_owned))
        .expect("an instance variable with an allValue");
    // A single value of a multi-value variable goes in regex-escaped; these names need none.
    assert!(
        [namespace, job]
            .iter()
            .all(|v| v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')),
        "{namespace} and {job} would need Grafana's regex escaping"
    );
    targets()
        .into_iter()
        .map(|(title, expr)| {
            let substituted = expr
                .replace("$namespace", namespace)
                .replace("$instance", &all_instances)
                .replace("$job", job)
                .replace("$__rate_interval", "10m")
                .replace("$__range", "10m");
            assert!(
                !substituted.contains('$'),
                "panel {title:?} uses a variable the test does not set: {expr}"
            );
            (title, substituted)
        })
        .collect()
}

/// The `{...}` matcher lists of an expression, and the metric names written without one.
fn selectors(expr: &str) -> (Vec<&str>, Vec<&str>) {
    let matchers = expr
        .split('{')
        .skip(1)
        .map(|after| after.split_once('}').map_or(after, |(inside, _)| inside))
        .collect();
    let mut bare = Vec::new();
    let mut at = 0;
    for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        let end = at + word.len();
        let metric =
            word.starts_with("redis_operator_") || word.starts_with("process_") || word == "up";
        if metric && !expr[end..].starts_with('{') {
            bare.push(word);
        }
        at = end + expr[end..].chars().next().map_or(0, char::len_utf8);
    }
    (matchers, bare)
}

/// Why `expr` is not filtered by the job variable everywhere, if it is not.
fn unfiltered(expr: &str) -> Option<String> {
    let (matchers, bare) = selectors(expr);
    if !bare.is_empty() {
        return Some(format!("{bare:?} without a selector"));
    }
    if matchers.is_empty() {
        return Some("no selector".into());
    }
    let missing: Vec<&str> = matchers
        .into_iter()
        .filter(|m| !m.split(',').any(|matcher| matcher.trim() == JOB_MATCHER))
        .collect();
    (!missing.is_empty()).then(|| format!("selectors without {JOB_MATCHER}: {missing:?}"))
}

#[test]
fn the_dashboard_has_the_variables_the_grafana_linter_asks_for() {
    let dashboard = dashboard();
    let datasource = variable(&dashboard, "datasource").expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource", "{datasource}");
    assert_eq!(datasource["query"], "prometheus", "{datasource}");

    let job = variable(&dashboard, "job").expect("a job variable");
    assert_eq!(job["type"], "query", "{job}");
    assert_eq!(job["label"], "Job", "{job}");
    assert_eq!(job["datasource"]["uid"], "${datasource}", "{job}");
    assert_eq!(job["multi"], true, "{job}");
    assert_eq!(job["includeAll"], true, "{job}");
    assert_eq!(job["allValue"], ".+", "{job}");
    assert_eq!(job["refresh"], 2, "{job}");
    let query = variable_query(&job);
    assert!(
        query.starts_with("label_values(") && query.ends_with(", job)"),
        "the job variable should list the jobs that scrape the operator: {query}"
    );

    // The instance variable is the RedisInstance's name, shaped as the linter wants.
    let instance = variable(&dashboard, "instance").expect("an instance variable");
    assert_eq!(instance["label"], "Instance", "{instance}");
    assert_eq!(instance["multi"], true, "{instance}");
    assert_eq!(instance["allValue"], ".+", "{instance}");

    // The other query variables list only what the selected jobs export.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" && variable["name"] != "job" {
            let query = variable_query(variable);
            assert!(
                query.contains(JOB_MATCHER),
                "variable {} should be filtered by {JOB_MATCHER}: {query}",
                variable["name"]
            );
            assert_eq!(variable["datasource"]["uid"], "${datasource}");
        }
    }
}

#[test]
fn every_dashboard_query_is_filtered_by_the_job_variable() {
    let targets = targets();
    assert!(targets.len() >= 15, "{targets:?}");
    let failures: Vec<String> = targets
        .iter()
        .filter_map(|(title, expr)| {
            unfiltered(expr).map(|why| format!("panel {title:?}: {why}\n  {expr}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "every query should be filtered by {JOB_MATCHER} (hard-coding a job name shows nothing \
         on a Prometheus that names the job otherwise):\n{}",
        failures.join("\n")
    );
    for panel in dashboard()["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "panel {} should use the datasource variable",
                panel["title"]
            );
        }
    }
}

#[test]
fn the_job_check_sees_unfiltered_selectors() {
    assert_eq!(unfiltered(r#"sum(up{job=~"$job"})"#), None);
    assert_eq!(unfiltered(r#"sum(x{job=~"$job"}) or on() vector(0)"#), None);
    assert_eq!(unfiltered("vector(0)"), Some("no selector".into()));
    assert!(unfiltered(r#"sum(up{job="redis-operator-metrics"})"#).is_some());
    assert!(unfiltered("process_open_fds").is_some());
    assert!(
        unfiltered(r#"rate(redis_operator_a_total{job=~"$job"}[5m]) / redis_operator_b"#).is_some()
    );
    assert!(unfiltered(r#"a{job=~"$job"} * on() b{namespace="x"}"#).is_some());
}
