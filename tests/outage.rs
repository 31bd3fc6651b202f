//! The API server goes away and comes back. Alone in its test binary, because it stops the
//! shared local cluster's API server: `/readyz` says so while it lasts, and an edit made after
//! the return is acted on within seconds, not after a backoff grown during the outage.

mod common;
mod e2e;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestNamespace, wait_for};
use e2e::*;

fn local_cluster(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/local-cluster");
    let status = Command::new(script).args(args).status().unwrap();
    assert!(status.success(), "hack/local-cluster {args:?} failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_an_api_server_outage_the_operator_resumes_within_seconds() {
    let client = common::client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "outage").await;
    let operator = Operator::start(&ns.name);
    let mut instance = example("redis-example.yaml");
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, "redis-example", None, Duration::from_secs(180)).await;
    assert_eq!(operator.get("/readyz").await.trim(), "ok");

    local_cluster(&["stop", "kube-apiserver"]);
    let started = Instant::now();
    let outage = wait_for(
        Duration::from_secs(30),
        "/readyz to report the outage",
        || async {
            match operator.get("/readyz").await {
                body if body.contains("watches failing") => Ok(body),
                body => Err(body),
            }
        },
    )
    .await;
    // Long enough for an unbounded backoff to grow well past a few seconds.
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(started.elapsed())).await;
    assert_eq!(
        operator.get("/healthz").await.trim(),
        "ok",
        "a short outage does not make the operator want a restart: {outage}"
    );
    // Past a lease duration (15 s) without a renewal, it no longer shows as a ready leader.
    wait_for(
        Duration::from_secs(15),
        "the leader to report its lapsed lease",
        || async {
            let ready = operator.get("/readyz").await;
            let metrics = operator.metrics().await;
            if ready.contains("could not be renewed") && metrics.contains("redis_operator_leader 0")
            {
                Ok(())
            } else {
                Err(ready)
            }
        },
    )
    .await;
    local_cluster(&["start", "kube-apiserver"]);

    instance
        .spec
        .config
        .insert("maxmemory".into(), "130mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    let edited = Instant::now();
    wait_for(
        Duration::from_secs(60),
        "the operator to act on the edit",
        || async {
            let acted = operator
                .log_lines()
                .iter()
                .any(|l| l["message"] == "ConfigMap was updated or StatefulSet needs restart");
            if acted { Ok(()) } else { Err("not yet".into()) }
        },
    )
    .await;
    let took = edited.elapsed();
    eprintln!("acted on the edit {took:?} after the API server came back");
    // Before the watches' backoff was bounded, this took 38-44 s; the bound is generous.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let hash = redis_operator::config::rendered(&instance).hash;
    wait_ready(&ns, "redis-example", Some(&hash), Duration::from_secs(180)).await;
    assert_eq!(operator.get("/readyz").await.trim(), "ok");
    assert!(operator.metrics().await.contains("redis_operator_leader 1"));
}
