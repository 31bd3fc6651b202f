//! Credentials on the local cluster with real Redis: a new instance gets a generated password
//! and refuses unauthenticated clients (a password in its `spec.config` is refused); replicas
//! log in as the operator's replication user; no password is found anywhere but the Secrets; a
//! rotation of a user's password under a client load fails no command and restarts no pod.

mod common;
mod e2e;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use redis_operator::crd::{AuthUser, RedisInstance};
use serde_json::json;

use common::{TestNamespace, pod_ip, redis_cli, try_redis_cli, try_redis_cli_with, wait_for};
use e2e::*;

const NAME: &str = "redis-example";

async fn secret_value(ns: &TestNamespace, name: &str, key: &str) -> String {
    let secret: Secret = ns.api().get(name).await.unwrap();
    String::from_utf8(secret.data.unwrap()[key].0.clone()).unwrap()
}

/// Waits until both pods of the instance are Ready and linked as primary and replica.
async fn replicated_ready(ns: &TestNamespace) -> Vec<Pod> {
    wait_ready(ns, NAME, None, Duration::from_secs(180)).await;
    wait_for(Duration::from_secs(60), "the replica linked", || async {
        let ri = ns.api::<RedisInstance>().get(NAME).await.unwrap();
        let replication = ri.status.and_then(|s| s.replication).unwrap_or_default();
        let linked = replication
            .pods
            .iter()
            .filter(|p| p.role == "replica" && p.link.as_deref() == Some("up"))
            .count();
        (linked == 1)
            .then_some(())
            .ok_or(format!("{replication:?}"))
    })
    .await;
    pods(ns, NAME).await
}

/// Every place a password must never be: the namespace's ConfigMaps (the rendered redis.conf
/// among them), pod specs, Events and the instance's status, the operator's log, every
/// process's command line on this machine, and `/metrics`. Returns where each was found.
async fn places_holding(
    ns: &TestNamespace,
    operator: &Operator,
    passwords: &[&str],
) -> Vec<String> {
    let mut texts: Vec<(String, String)> = Vec::new();
    for cm in ns
        .api::<ConfigMap>()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        texts.push((
            format!("ConfigMap {}", cm.name_any()),
            json!(cm.data).to_string(),
        ));
    }
    for pod in ns.api::<Pod>().list(&ListParams::default()).await.unwrap() {
        texts.push((
            format!("pod {}", pod.name_any()),
            json!(pod.spec).to_string(),
        ));
    }
    for (_, reason, note) in instance_events(ns, NAME).await {
        texts.push((format!("Event {reason}"), note));
    }
    let ri = ns.api::<RedisInstance>().get(NAME).await.unwrap();
    texts.push(("status".into(), json!(ri.status).to_string()));
    let log = operator.log_lines();
    texts.push(("operator log".into(), json!(log).to_string()));
    texts.push(("/metrics".into(), operator.metrics().await));
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            texts.push((format!("cmdline of pid {:?}", entry.file_name()), cmdline));
        }
    }
    let mut found = Vec::new();
    for password in passwords {
        for (place, text) in &texts {
            if text.contains(password) {
                found.push(format!("{place} holds a password"));
            }
        }
    }
    found
}

/// A new instance, no `spec.auth`: the default user's password is generated into
/// `<name>-auth`; unauthenticated commands are refused; the replica syncs as the replication
/// user; the operator's own user may not run client commands; and no password shows anywhere
/// outside the Secrets.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_instance_has_a_generated_password_found_nowhere_else() {
    let (_client, ns, operator) = setup("auth", &[]).await;
    let mut instance = example("redis-example.yaml");
    instance.spec.replicas = 2;
    apply_instance(&ns, &instance).await.unwrap();
    let pods = replicated_ready(&ns).await;
    let generated = secret_value(&ns, &format!("{NAME}-auth"), "password").await;
    assert_eq!(generated.len(), 64, "a 32-byte random password, hex");

    for pod in &pods {
        let refused = try_redis_cli(&pod_ip(pod), &["PING"]).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("NOAUTH")),
            "{}: {refused:?}",
            pod.name_any()
        );
        assert_eq!(redis_cli(pod, &["PING"]).await, "PONG");
    }
    let primary = &pods[0];
    assert_eq!(redis_cli(primary, &["SET", "who", "primary"]).await, "OK");
    wait_for(Duration::from_secs(30), "the write replicated", || async {
        let got = redis_cli(&pods[1], &["GET", "who"]).await;
        (got == "primary").then_some(()).ok_or(got)
    })
    .await;
    let users = redis_cli(primary, &["ACL", "USERS"]).await;
    assert_eq!(
        users.lines().collect::<Vec<_>>(),
        ["default", "redis-operator", "replication"]
    );

    let system = format!("{NAME}-operator");
    let operator_password = secret_value(&ns, &system, "operator-password").await;
    let replication_password = secret_value(&ns, &system, "replication-password").await;
    let acl: Secret = ns.api().get(&format!("{NAME}-acl")).await.unwrap();
    let keys: Vec<String> = acl.data.unwrap().into_keys().collect();
    assert_eq!(
        keys,
        ["users.acl"],
        "the mounted Secret holds the hashed file only"
    );
    for (user, password) in [
        ("redis-operator", &operator_password),
        ("replication", &replication_password),
    ] {
        let denied = try_redis_cli(
            &pod_ip(primary),
            &[
                "--user",
                user,
                "--pass",
                password,
                "--no-auth-warning",
                "GET",
                "who",
            ],
        )
        .await;
        assert!(
            denied.as_ref().is_err_and(|e| e.contains("NOPERM"))
                || denied.as_ref().is_ok_and(|out| out.contains("NOPERM")),
            "{user} may read keys: {denied:?}"
        );
    }

    // A new instance may not carry a password in spec.config: refused, told, nothing created.
    let mut plain = example("redis-example.yaml");
    plain.metadata.name = Some("plain".into());
    plain
        .spec
        .config
        .insert("requirepass".into(), "in-the-spec".into());
    apply_instance(&ns, &plain).await.unwrap();
    let message = wait_for(Duration::from_secs(30), "the refusal in status", || {
        let api = ns.api::<RedisInstance>();
        async move {
            let ri = api.get("plain").await.map_err(|e| e.to_string())?;
            let status = ri.status.unwrap_or_default();
            status
                .conditions
                .iter()
                .find(|c| c.type_ == "ConfigValid" && c.reason == "InvalidConfig")
                .map(|c| c.message.clone())
                .ok_or_else(|| format!("{:?}", status.conditions))
        }
    })
    .await;
    assert!(
        message.contains("requirepass") && message.contains("Secret plain-auth"),
        "{message}"
    );
    assert!(!message.contains("in-the-spec"), "{message}");
    instance_events_once(&ns, "plain", |(t, r, n)| {
        t == "Warning" && r == "InvalidConfig" && n.contains("requirepass")
    })
    .await;
    let nothing_created = [
        ns.api::<Secret>()
            .get_opt("plain-auth")
            .await
            .unwrap()
            .is_none(),
        ns.api::<ConfigMap>()
            .get_opt("plain-config")
            .await
            .unwrap()
            .is_none(),
    ];
    assert_eq!(nothing_created, [true, true]);

    let found = places_holding(
        &ns,
        &operator,
        &[&generated, &operator_password, &replication_password],
    )
    .await;
    assert!(found.is_empty(), "{found:?}");
}

/// One client of the load: a new connection per command pair, logged in as `app` with the
/// password the test currently hands out, so both old and new connections are exercised.
fn start_load(
    ips: Vec<String>,
    password: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let ip = &ips[usize::try_from(n).unwrap() % ips.len()];
            let pw = password.lock().unwrap().clone();
            let url = format!("redis://app:{pw}@{ip}:6379");
            let result: redis::RedisResult<Option<String>> = async {
                let client = redis::Client::open(url)?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("GET")
                    .arg("rotation")
                    .query_async(&mut conn)
                    .await
            }
            .await;
            match result {
                Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    failed.lock().unwrap().push(format!("{ip}: {e}"));
                    0
                }
            };
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn patch_secret(ns: &TestNamespace, name: &str, data: BTreeMap<&str, &str>) {
    let data: BTreeMap<String, ByteString> = data
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
    ns.api::<Secret>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": data})),
        )
        .await
        .unwrap();
}

/// A user whose Secret is missing is reported and waited for. Then `app`'s password is rotated
/// by editing its Secret: the new one is added on both pods live,
/// clients move to it, the old one is removed; under a load of fresh logins, no command fails
/// and no pod restarts; `default` is off since the spec declares its own user.
#[tokio::test(flavor = "multi_thread")]
async fn a_password_rotation_under_load_fails_no_command_and_restarts_nothing() {
    let (_client, ns, operator) = setup("rotate", &[]).await;
    let (old, new) = ("old-pass-0123456789", "new-pass-9876543210");
    let mut instance = example("redis-example.yaml");
    instance.spec.replicas = 2;
    instance.spec.auth.users = vec![AuthUser {
        name: "app".into(),
        password_secret: "app-password".into(),
        rules: "~* &* +@all".into(),
    }];
    apply_instance(&ns, &instance).await.unwrap();
    // The user's Secret does not exist yet: a Warning says so, and nothing starts without it.
    wait_for(
        Duration::from_secs(30),
        "the SecretMissing Warning",
        || async {
            let events = instance_events(&ns, NAME).await;
            events
                .iter()
                .any(|(t, r, n)| {
                    t == "Warning" && r == "SecretMissing" && n.contains("app-password")
                })
                .then_some(())
                .ok_or(format!("{events:?}"))
        },
    )
    .await;
    let mut secret = Secret {
        data: Some(BTreeMap::from([(
            "v1".to_owned(),
            ByteString(old.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    secret.metadata.name = Some("app-password".into());
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let pods = replicated_ready(&ns).await;
    let history = PodHistory::start(&ns).await;
    let ips: Vec<String> = pods.iter().map(pod_ip).collect();
    for ip in &ips {
        let off = try_redis_cli_with(ip, Some(old), &["PING"]).await;
        assert!(off.is_err(), "default is off beside app: {off:?}");
    }

    let password = Arc::new(Mutex::new(old.to_owned()));
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let failed = Arc::new(Mutex::new(Vec::new()));
    let load = start_load(
        ips.clone(),
        password.clone(),
        stop.clone(),
        done.clone(),
        failed.clone(),
    );
    let app_login = |ip: String, pw: &'static str| async move {
        let url = format!("redis://app:{pw}@{ip}:6379");
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };

    patch_secret(
        &ns,
        "app-password",
        BTreeMap::from([("v1", old), ("v2", new)]),
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        "the new password on every pod",
        || {
            let ips = ips.clone();
            async move {
                for ip in ips {
                    app_login(ip, new).await?;
                }
                Ok(())
            }
        },
    )
    .await;
    *password.lock().unwrap() = new.to_owned();
    // Logins already under way with the old password finish first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ns.api::<Secret>()
        .patch(
            "app-password",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v1": null}})),
        )
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the old password refused", || {
        let ips = ips.clone();
        async move {
            for ip in ips {
                if app_login(ip.clone(), old).await.is_ok() {
                    return Err(format!("{ip} still takes the old password"));
                }
            }
            Ok(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    let failed = failed.lock().unwrap().clone();
    let done = done.load(Ordering::Relaxed);
    println!(
        "rotation under load: {done} commands, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "first failures: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(done > 50, "the load ran ({done} commands)");
    let restarts = history.restarts().await;
    assert!(restarts.values().all(|n| *n == 0), "{restarts:?}");
    for pod in e2e::pods(&ns, NAME).await {
        let name = pod.name_any();
        let statuses = pod.status.and_then(|s| s.container_statuses).unwrap();
        assert_eq!(statuses[0].restart_count, 0, "{name}");
    }
    // The file a restarted pod would load holds the new password's hash only.
    let acl = secret_value(&ns, &format!("{NAME}-acl"), "users.acl").await;
    let hash = |p: &str| redis_operator::auth::acl::hash_password(p);
    assert!(
        acl.contains(&hash(new)) && !acl.contains(&hash(old)),
        "{acl}"
    );
    let found = places_holding(&ns, &operator, &[old, new]).await;
    assert!(found.is_empty(), "{found:?}");
}

/// Pods that run without ACL users (as every pod did before this operator version, or with
/// `spec.auth.disabled`) get them when auth is turned on: the operator logs in the old way,
/// gives each pod its users live, then rolls the pods onto the ACL file with one switchover;
/// the data stays and no client is ever let in without a password again.
#[tokio::test(flavor = "multi_thread")]
async fn pods_without_users_get_them_live_then_restart_onto_the_acl_file() {
    let (_client, ns, _operator) = setup("auth-upgrade", &[]).await;
    let mut instance = example("redis-example.yaml");
    instance.spec.replicas = 2;
    instance.spec.auth.disabled = true;
    apply_instance(&ns, &instance).await.unwrap();
    let before = replicated_ready(&ns).await;
    assert_eq!(
        try_redis_cli(&pod_ip(&before[0]), &["SET", "kept", "yes"]).await,
        Ok("OK".into()),
        "no password while auth is off"
    );

    instance.spec.auth.disabled = false;
    apply_instance(&ns, &instance).await.unwrap();
    let hash = redis_operator::config::rendered(&instance).hash;
    wait_ready(&ns, NAME, Some(&hash), Duration::from_secs(180)).await;
    let after = replicated_ready(&ns).await;
    for pod in &after {
        assert_ne!(pod.uid(), before[0].uid());
        let refused = try_redis_cli(&pod_ip(pod), &["GET", "kept"]).await;
        assert!(refused.is_err_and(|e| e.contains("NOAUTH")));
        assert_eq!(redis_cli(pod, &["GET", "kept"]).await, "yes");
    }
    let ri = ns.api::<RedisInstance>().get(NAME).await.unwrap();
    let status = ri.status.unwrap();
    assert!(status.acl_hash.is_some());
    assert_eq!(
        status.replication.unwrap().role_changes,
        1,
        "one switchover"
    );
}
