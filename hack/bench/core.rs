//! Benchmarks of the operator's hot paths and per-instance memory; prints a table.
//!
//! Run with `make bench`. Figures are medians of several rounds on whatever machine runs it;
//! compare runs on the same machine, never assert on them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use ractor::Actor;
use redis_operator::actors::instance::{
    InstanceArgs, InstanceMsg, RedisInstanceActor, Stores, Timings,
};
use redis_operator::actors::metrics::{InstanceKey, MetricsActor};
use redis_operator::config::render::render;
use redis_operator::config::validate::validate;
use redis_operator::crd::{RedisInstance, RedisInstanceSpec, RestartStrategy, StorageSpec};
use redis_operator::decide::{Deadlines, Desired, Snapshot, decide};
use redis_operator::kube_io::InstanceApi;
use redis_operator::limiter::{Limiter, Limits};
use redis_operator::resources::{
    CachedConfigMap, CachedNetworkPolicy, CachedSecret, CachedService, CachedStatefulSet,
    headless_service, service, statefulset,
};

/// Counts live heap bytes and allocation calls, so memory is measured, not guessed.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn config(n: usize) -> BTreeMap<String, String> {
    let mut config: BTreeMap<String, String> = [
        ("maxmemory", "200mb"),
        ("maxmemory-policy", "allkeys-lfu"),
        ("appendonly", "yes"),
        ("save", "900 1 300 10 60 10000"),
        ("hz", "10"),
        ("timeout", "300"),
        ("tcp-keepalive", "60"),
        ("notify-keyspace-events", "KEA"),
        ("client-output-buffer-limit", "normal 0 0 0"),
        ("lazyfree-lazy-eviction", "yes"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    config.retain(|k, _| !k.is_empty());
    config.into_iter().take(n).collect()
}

fn instance(config: BTreeMap<String, String>) -> RedisInstance {
    let mut instance = RedisInstance::new(
        "bench",
        RedisInstanceSpec {
            image: "redis:7.0".into(),
            replicas: 3,
            storage: StorageSpec {
                size: "1Gi".into(),
                storage_class_name: Some("standard".into()),
                retention_policy: None,
            },
            config,
            restart_strategy: RestartStrategy::RollingUpdate,
            config_update: Default::default(),
            rollout: Default::default(),
            replication: Default::default(),
            tls: None,
            network_policy: Default::default(),
            paused: false,
            auth: Default::default(),
        },
    );
    instance.metadata.namespace = Some("bench".into());
    instance.metadata.uid = Some("00000000-0000-4000-8000-000000000000".into());
    instance
}

/// Median ns per call over 7 rounds, and allocations per call.
fn measure(iterations: u32, mut f: impl FnMut()) -> (f64, f64) {
    let mut rounds = Vec::new();
    let calls_before = CALLS.load(Ordering::Relaxed);
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        rounds.push(start.elapsed().as_nanos() as f64 / f64::from(iterations));
    }
    let calls = (CALLS.load(Ordering::Relaxed) - calls_before) as f64 / f64::from(iterations * 7);
    rounds.sort_by(f64::total_cmp);
    (rounds[3], calls)
}

fn row(name: &str, (ns, allocs): (f64, f64)) {
    println!("| {name:<44} | {:>12.0} | {:>12.1} |", ns, allocs);
}

fn cache<K>(objects: impl Iterator<Item = K>) -> redis_operator::actors::cache::Cache<K>
where
    K: kube::Resource + Clone,
{
    let (reader, mut writer) = redis_operator::actors::cache::store();
    for obj in objects {
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(obj));
    }
    reader
}

/// Instance `redis-{i}` with 10 directives.
fn named_instance(i: usize) -> RedisInstance {
    let mut inst = instance(config(10));
    inst.metadata.name = Some(format!("redis-{i}"));
    inst
}

/// The three Secrets an instance owns, with passwords as the operator generates them.
fn owned_secrets(inst: &RedisInstance) -> [k8s_openapi::api::core::v1::Secret; 3] {
    use redis_operator::auth::{acl, generate_password};
    let password = || generate_password().expect("randomness");
    let system = redis_operator::resources::SystemPasswords {
        operator: password(),
        replication: password(),
    };
    let default = password();
    let users = acl::instance_users(
        vec![acl::AclUser::with_passwords(
            "default",
            [default.as_str()],
            "~* &* +@all",
        )],
        &system.operator,
        &system.replication,
    );
    [
        redis_operator::resources::generated_auth_secret(inst, &default),
        redis_operator::resources::system_secret(inst, &system),
        redis_operator::resources::acl_secret(inst, &acl::render(&users), None),
    ]
}

/// Pod `ordinal` of `inst`'s StatefulSet, running and ready, as the API server shows it: its
/// template's labels and annotations, what the StatefulSet controller and the kubelet add.
fn running_pod(inst: &RedisInstance, ordinal: usize) -> k8s_openapi::api::core::v1::Pod {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    let hash = redis_operator::config::rendered(inst).hash;
    let sts = statefulset(inst, &hash, None);
    let spec = sts.spec;
    let template = spec.template;
    let name = sts.metadata.name.expect("name");
    let mut meta = template.metadata.unwrap_or_default();
    let labels = meta.labels.get_or_insert_default();
    for (key, value) in [
        ("controller-revision-hash", format!("{name}-5d4f8b9c7f")),
        (
            "statefulset.kubernetes.io/pod-name",
            format!("{name}-{ordinal}"),
        ),
        ("apps.kubernetes.io/pod-index", ordinal.to_string()),
    ] {
        labels.insert(key.into(), value);
    }
    meta.name = Some(format!("{name}-{ordinal}"));
    meta.generate_name = Some(format!("{name}-"));
    meta.namespace = sts.metadata.namespace;
    meta.uid = Some(format!("00000000-0000-4000-8000-{ordinal:012}"));
    meta.resource_version = Some("123456".into());
    meta.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: name.clone(),
        uid: "00000000-0000-4000-8000-000000000001".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    let now = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    let condition = |type_: &str| PodCondition {
        type_: type_.into(),
        status: "True".into(),
        last_transition_time: now.clone(),
        ..Default::default()
    };
    Pod {
        metadata: meta,
        spec: template.spec,
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(
                [
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                ]
                .map(condition)
                .into(),
            ),
            container_statuses: Some(vec![ContainerStatus {
                name: "redis".into(),
                image: inst.spec.image.clone(),
                image_id: String::new(),
                ready: true,
                restart_count: 0,
                started: Some(true),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: now.clone(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            pod_ip: Some(format!("10.244.0.{}", ordinal + 10)),
            host_ip: Some("10.0.0.1".into()),
            start_time: now,
            ..Default::default()
        }),
    }
}

/// Heap bytes per instance that `make` leaves behind, and what it made.
fn per_instance<T>(count: usize, make: impl FnOnce() -> T) -> (f64, T) {
    let before = LIVE.load(Ordering::Relaxed);
    let made = make();
    (
        (LIVE.load(Ordering::Relaxed) - before) as f64 / count as f64,
        made,
    )
}

/// Heap bytes per instance in the watch caches, by kind, in the order they are printed.
type CacheBytes = Vec<(&'static str, f64)>;

/// Heap bytes per instance: its objects in the watch caches (as the supervisor keeps them: no
/// managed fields, each kind in its cached form), by kind, then its actor after it took a step,
/// and the bytes the actor holds inline: its state, and its handler's future.
async fn instance_memory(count: usize) -> (CacheBytes, (f64, f64), (usize, usize)) {
    use redis_operator::resources::CachedPod;
    let named = named_instance;
    let mut bytes = CacheBytes::new();
    let (instances_bytes, instances) = per_instance(count, || cache((0..count).map(named)));
    bytes.push(("RedisInstance", instances_bytes));
    // Each instance's ConfigMaps: the spec's `<name>-config` and its revision's.
    let (config_map_bytes, (config_maps, revisions)) = per_instance(count, || {
        let objects: Vec<CachedConfigMap> = (0..count)
            .flat_map(|i| {
                let inst = named(i);
                let rendered = redis_operator::config::rendered(&inst);
                [
                    redis_operator::resources::config_map(&inst, &rendered),
                    redis_operator::resources::revision_config_map(
                        &inst,
                        &rendered,
                        &rendered.hash,
                    ),
                ]
            })
            .map(|cm| CachedConfigMap::from(&cm))
            .collect();
        let revisions = redis_operator::actors::revision_index::RevisionIndex::default();
        for cm in &objects {
            revisions.follow(&kube::runtime::watcher::Event::Apply(cm.clone()));
        }
        (cache(objects.into_iter()), revisions)
    });
    bytes.push(("2 ConfigMaps and the revision index", config_map_bytes));
    let (statefulset_bytes, statefulsets) = per_instance(count, || {
        cache((0..count).map(|i| {
            let inst = named(i);
            CachedStatefulSet::from(&statefulset(
                &inst,
                &redis_operator::config::rendered(&inst).hash,
                None,
            ))
        }))
    });
    bytes.push(("StatefulSet", statefulset_bytes));
    let (service_bytes, services) = per_instance(count, || {
        cache((0..count).flat_map(|i| {
            let inst = named(i);
            [service(&inst), headless_service(&inst)].map(|svc| CachedService::from(&svc))
        }))
    });
    bytes.push(("2 Services", service_bytes));
    let (pod_bytes, pods) = per_instance(count, || {
        cache((0..count * 3).map(|i| {
            let mut pod = CachedPod::from(&running_pod(&named(i / 3), i % 3));
            // As the pod watch trims it.
            pod.metadata.generate_name = None;
            if let Some(conditions) = pod.status.as_mut().and_then(|s| s.conditions.as_mut()) {
                conditions.retain(|c| c.type_ == redis_operator::resources::READY_CONDITION);
            }
            pod
        }))
    });
    bytes.push(("3 pods", pod_bytes));
    let (network_policy_bytes, network_policies) = per_instance(count, || {
        cache((0..count).map(|i| {
            CachedNetworkPolicy::from(&redis_operator::resources::network_policy(&named(i), None))
        }))
    });
    bytes.push(("NetworkPolicy", network_policy_bytes));
    let (whole_policy_bytes, whole) = per_instance(count, || {
        cache((0..count).map(|i| redis_operator::resources::network_policy(&named(i), None)))
    });
    drop(whole);
    bytes.push((
        "(NetworkPolicy cached whole, not counted)",
        whole_policy_bytes,
    ));
    let (secret_bytes, secrets) = per_instance(count, || {
        cache((0..count).flat_map(|i| owned_secrets(&named(i)).map(|s| CachedSecret::from(&s))))
    });
    bytes.push(("3 Secrets", secret_bytes));
    let stores = std::sync::Arc::new(Stores {
        instances,
        config_maps,
        revisions,
        statefulsets,
        services,
        pods,
        network_policies,
        versions: Default::default(),
        secrets,
        secret_versions: Default::default(),
    });
    let cached = bytes
        .iter()
        .filter(|(kind, _)| !kind.starts_with('('))
        .map(|(_, b)| b)
        .sum();
    bytes.push(("all", cached));

    // A client that answers nothing: the actors' first status write fails and they back off.
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (metrics, _) = Actor::spawn(None, MetricsActor, prometheus::Registry::new())
        .await
        .unwrap();
    let snapshots = std::sync::Arc::new(DashMap::new());
    let reporter = kube::runtime::events::Reporter {
        controller: "bench".into(),
        instance: None,
    };
    let limiter = Limiter::unfenced(Limits::default());
    let events = redis_operator::events::EventPoster::new(client.clone(), reporter);
    let before = LIVE.load(Ordering::Relaxed);
    let mut actors = Vec::with_capacity(count);
    for i in 0..count {
        let key = InstanceKey {
            namespace: "bench".into(),
            name: format!("redis-{i}"),
        };
        let args = InstanceArgs {
            key,
            api: InstanceApi::new(client.clone(), "bench", events.clone(), limiter.clone()),
            stores: stores.clone(),
            metrics: metrics.clone(),
            snapshots: snapshots.clone(),
            timings: Timings::default(),
            supervisor: None,
        };
        let (actor, handle) = Actor::spawn(None, RedisInstanceActor, args).await.unwrap();
        actor.send_message(InstanceMsg::Changed).unwrap();
        actors.push((actor, handle));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let per_actor = (LIVE.load(Ordering::Relaxed) - before) as f64 / count as f64;
    // What each actor holds inline, whatever its heap: its state (in its task) and its
    // handler's future (in ractor's message loop, at its largest even while idle).
    let args = InstanceArgs {
        key: InstanceKey {
            namespace: "bench".into(),
            name: "redis-0".into(),
        },
        api: InstanceApi::new(client.clone(), "bench", events.clone(), limiter.clone()),
        stores: stores.clone(),
        metrics: metrics.clone(),
        snapshots: snapshots.clone(),
        timings: Timings::default(),
        supervisor: None,
    };
    let myself = actors[0].0.clone();
    let mut state = RedisInstanceActor
        .pre_start(myself.clone(), args)
        .await
        .unwrap();
    let handler = RedisInstanceActor.handle(myself, InstanceMsg::Step, &mut state);
    let inline = (
        std::mem::size_of::<redis_operator::actors::instance::InstanceState>(),
        std::mem::size_of_val(&handler),
    );
    drop(handler);
    drop(state);
    for (actor, handle) in actors {
        actor.stop(None);
        let _ = handle.await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // What an instance keeps once its actor stopped, as when it hibernates: its snapshot and
    // metric series.
    let kept = LIVE.load(Ordering::Relaxed).saturating_sub(before) as f64 / count as f64;
    (bytes, (per_actor, kept), inline)
}

#[tokio::main]
async fn main() {
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "operation", "ns/op", "allocs/op"
    );
    println!("|{:-<46}|{:->14}|{:->14}|", "", "", "");
    for n in [3, 10] {
        let cfg = config(n);
        // Benchmark the accepting path: a refused config would measure the error path instead.
        assert!(validate(&cfg).is_empty(), "bench config must be valid");
        row(
            &format!("validate ({n} directives)"),
            measure(20_000, || {
                black_box(validate(black_box(&cfg)));
            }),
        );
        row(
            &format!("render + sha256 ({n} directives)"),
            measure(20_000, || {
                black_box(render(black_box(&cfg)));
            }),
        );
    }
    let inst = instance(config(10));
    let rendered = redis_operator::config::rendered(&inst);
    row(
        "build StatefulSet",
        measure(20_000, || {
            black_box(statefulset(black_box(&inst), &rendered.hash, None));
        }),
    );
    let live = statefulset(&inst, &rendered.hash, None);
    let revision = redis_operator::resources::revision_of(&inst, &rendered.hash);
    let shared = redis_operator::resources::config_map_name(&inst);
    let revisions = [std::sync::Arc::new(CachedConfigMap::from(
        &redis_operator::resources::revision_config_map(&inst, &rendered, &rendered.hash),
    ))];
    let svc = service(&inst);
    let headless = headless_service(&inst);
    let desired = Desired {
        config_text: &rendered.text,
        hash: &rendered.hash,
        strategy: RestartStrategy::RollingUpdate,
        statefulset: &live,
        service: &svc,
        headless: &headless,
        live: false,
        revision: &revision,
        shared: &shared,
    };
    let cached = CachedStatefulSet::from(&live);
    let cached_svc = CachedService::from(&svc);
    let cached_headless = CachedService::from(&headless);
    let snapshot = Snapshot {
        config_text: Some(&rendered.text),
        statefulset: Some(&cached),
        service: Some(&cached_svc),
        headless: Some(&cached_headless),
        pods: &[],
        rollout: None,
        settling: false,
        now: k8s_openapi::jiff::Timestamp::now(),
        live_refused: false,
        paused: false,
        halted: false,
        failed_hash: None,
        stalled: false,
        revisions: &revisions,
        primary: None,
    };
    let deadlines = Deadlines {
        progress: std::time::Duration::from_secs(300),
    };
    row(
        "decide (converged instance, drift checked)",
        measure(20_000, || {
            black_box(decide(
                black_box(&desired),
                black_box(&snapshot),
                &deadlines,
            ));
        }),
    );
    println!();
    let count = 1000;
    let secrets = |as_cached: bool| {
        let before = LIVE.load(Ordering::Relaxed);
        // As the watch keeps them: no owner references; the cached ones keep one label.
        let objects = (0..count)
            .flat_map(|i| owned_secrets(&named_instance(i)))
            .map(|mut s| {
                s.metadata.owner_references = None;
                s
            });
        let held: Box<dyn std::any::Any> = if as_cached {
            Box::new(cache(objects.map(|s| {
                let mut cached = CachedSecret::from(&s);
                if let Some(labels) = cached.metadata.labels.as_mut() {
                    labels.retain(|key, _| key == redis_operator::resources::INSTANCE_LABEL);
                }
                cached
            })))
        } else {
            Box::new(cache(objects))
        };
        let bytes = (LIVE.load(Ordering::Relaxed) - before) as f64 / count as f64;
        drop(held);
        bytes
    };
    println!(
        "| {:<44} | {:>12.0} |",
        format!("heap bytes per instance, its 3 Secrets cached whole"),
        secrets(false)
    );
    println!(
        "| {:<44} | {:>12.0} |",
        format!("heap bytes per instance, its 3 CachedSecrets"),
        secrets(true)
    );
    let (cached, (actor, kept), (state, handler)) = instance_memory(count).await;
    for (kind, bytes) in cached {
        println!(
            "| {:<44} | {:>12.0} |",
            format!("caches (n={count}), per instance: {kind}"),
            bytes
        );
    }
    println!(
        "| {:<44} | {:>12.0} |",
        format!("heap bytes per instance actor after a step"),
        actor
    );
    println!(
        "| {:<44} | {:>12.0} |",
        "of which kept once its actor stopped", kept
    );
    println!(
        "| {:<44} | {:>12} |",
        "bytes of its state (inline in its task)", state
    );
    println!(
        "| {:<44} | {:>12} |",
        "bytes of its handler's future (inline, idle)", handler
    );
}
