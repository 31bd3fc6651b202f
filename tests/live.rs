//! Live config on the local cluster with real Redis: changes Redis takes at runtime are applied
//! to every pod without a restart, all or nothing, and kept there.

mod common;
mod e2e;
#[path = "live/relays.rs"]
mod relays;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use redis_operator::config::render::render;
use redis_operator::crd::{ConfigUpdate, RedisInstance};
use redis_operator::live::{live_hash, split};

use common::{TestNamespace, pod_ip, try_redis_cli_with, wait_for};
use e2e::*;
use relays::{ApiProxy, WriteHolder, api_server_address};

const NAME: &str = "redis-example";
const PASSWORD: &str = "live-secret";

fn live_instance(replicas: i32, config: &[(&str, &str)]) -> RedisInstance {
    let mut instance = example("redis-example.yaml");
    instance.spec.replicas = replicas;
    instance.spec.config_update = ConfigUpdate::Live;
    instance.spec.config = config
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    instance
}

/// `redis-cli` on the pod as `default`, with `password` or else the one the operator generated.
async fn cli(pod: &Pod, password: Option<&str>, args: &[&str]) -> String {
    let password = match password {
        Some(p) => Some(p.to_owned()),
        None => common::generated_password(pod).await,
    };
    try_redis_cli_with(&pod_ip(pod), password.as_deref(), args)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `CONFIG GET` of each name on the pod.
async fn running(pod: &Pod, password: Option<&str>, names: &[&str]) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for name in names {
        let out = cli(pod, password, &["CONFIG", "GET", name]).await;
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some(*name), "CONFIG GET {name}: {out:?}");
        values.insert(
            (*name).to_owned(),
            lines.next().unwrap_or_default().to_owned(),
        );
    }
    values
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Waits until status says every pod was verified on the live part of `instance`'s config and
/// the ConfigMap holds all of it.
async fn wait_live_applied(ns: &TestNamespace, instance: &RedisInstance) -> RedisInstance {
    // Replicas of a password-protected instance also get masterauth.
    let config = redis_operator::config::effective(instance);
    let want_live = live_hash(&split(&config, ConfigUpdate::Live).live);
    let want_text = render(&config).text;
    let api = ns.api::<RedisInstance>();
    wait_for(
        Duration::from_secs(120),
        "the live change to be applied",
        || {
            let (api, want_live, want_text) = (api.clone(), want_live.clone(), want_text.clone());
            async move {
                let ri = api.get(NAME).await.map_err(|e| e.to_string())?;
                let status = ri.status.clone().unwrap_or_default();
                let (text, _) = config_map_and_hash(ns, NAME).await;
                let done = status.live_config_hash.as_deref() == Some(want_live.as_str())
                    && text == want_text
                    && status.observed_generation == ri.metadata.generation
                    && status.phase.map(|p| p.as_str()) == Some("Running");
                if done {
                    Ok(ri)
                } else {
                    Err(format!("{status:?}"))
                }
            }
        },
    )
    .await
}

async fn edit_config(ns: &TestNamespace, instance: &mut RedisInstance, pairs: &[(&str, &str)]) {
    for (k, v) in pairs {
        instance
            .spec
            .config
            .insert((*k).to_owned(), (*v).to_owned());
    }
    apply_instance(ns, instance).await.unwrap();
}

/// Freezes a process with SIGSTOP, and lets it go on (SIGCONT) when dropped, whatever happens.
struct Frozen(u32);

impl Frozen {
    fn signal(pid: u32, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    fn new(pid: u32) -> Self {
        Self::signal(pid, "STOP");
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        Self::signal(self.0, "CONT");
    }
}

/// A leader frozen past its lease (SIGSTOP, as a stalled machine or a long pause would do) and
/// then woken, after a standby took over and applied a newer live value: the woken leader,
/// whose caches and overdue timers still hold the old spec, sets nothing back on the pods,
/// sees the Lease taken and stops.
/// A one-pod `configUpdate: Live` instance at `maxmemory: 100mb`, a leader acting on it and a
/// standby, both with a short lease and frequent live checks.
struct Takeover {
    _client: kube::Client,
    ns: TestNamespace,
    leader: Operator,
    standby: Operator,
    instance: RedisInstance,
    history: PodHistory,
}

/// The lease and live check of both operators of a [`Takeover`].
const TAKEOVER_FLAGS: [&str; 4] = ["--lease-duration", "6", "--live-check-seconds", "2"];

/// `maxmemory: 150mb` as Redis reports it.
const NEW_MAXMEMORY: &str = "157286400";

impl Takeover {
    /// The leader starts with `leader_flags` beside [`TAKEOVER_FLAGS`].
    async fn start(prefix: &str, leader_flags: &[&str]) -> Self {
        let flags = [&TAKEOVER_FLAGS[..], leader_flags].concat();
        let (client, ns, leader) = setup(prefix, &flags).await;
        let instance = live_instance(1, &[("maxmemory", "100mb")]);
        apply_instance(&ns, &instance).await.unwrap();
        wait_ready(&ns, NAME, None, Duration::from_secs(180)).await;
        wait_live_applied(&ns, &instance).await;
        let standby = Operator::start_with(&ns.name, &TAKEOVER_FLAGS);
        standby.wait_standby().await;
        let history = PodHistory::start(&ns).await;
        Self {
            _client: client,
            ns,
            leader,
            standby,
            instance,
            history,
        }
    }

    /// Edits `maxmemory` to 150mb, which only the standby (by now the leader) can apply, and
    /// waits until the pod runs it.
    async fn apply_new_value(&mut self) {
        edit_config(&self.ns, &mut self.instance, &[("maxmemory", "150mb")]).await;
        wait_live_applied(&self.ns, &self.instance).await;
        assert_eq!(
            self.running().await,
            NEW_MAXMEMORY,
            "the new leader applied it"
        );
    }

    async fn running(&self) -> String {
        let pod = pods(&self.ns, NAME).await.remove(0);
        running(&pod, None, &["maxmemory"]).await["maxmemory"].clone()
    }

    /// Samples the pod every 250 ms for `samples` times: it keeps the new value throughout.
    async fn new_value_kept(&self, samples: usize, deposed: &str) {
        for _ in 0..samples {
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert_eq!(
                self.running().await,
                NEW_MAXMEMORY,
                "the {deposed} set it back"
            );
        }
    }
}

/// A leader frozen past its lease (SIGSTOP, as a stalled machine or a long pause would do) and
/// then woken, after a standby took over and applied a newer live value: the woken leader,
/// whose caches and overdue timers still hold the old spec, sets nothing back on the pods,
/// sees the Lease taken and stops.
/// The standby filled its caches while it stood by: from taking over to applying the new value
/// it lists nothing again.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_leader_woken_after_a_takeover_sets_nothing_back() {
    let mut takeover = Takeover::start("live-frozen", &[]).await;
    let listed = warm_lists(&takeover.standby).await;
    let frozen = Frozen::new(takeover.leader.pid());
    takeover.apply_new_value().await;
    assert_eq!(
        lists(&takeover.standby).await,
        listed,
        "the standby listed again after it took over"
    );
    let agent = redis_operator::run::user_agent(&lease_identity(&takeover.leader));
    let after_waking = common::AuditLog::from_now();
    drop(frozen);
    // The woken leader's live check is long overdue and its caches say 100mb: for the next
    // five seconds, and after it has stopped, the pod keeps the new leader's value.
    takeover.new_value_kept(20, "woken leader").await;
    let leader = &mut takeover.leader;
    let status = wait_for(Duration::from_secs(30), "the woken leader to stop", || {
        let exited = leader.exited();
        async move { exited.ok_or_else(|| "still running".to_owned()) }
    })
    .await;
    assert!(!status.success(), "losing the lease is a failure: {status}");
    // Nor did any API write it sent after waking land: the audit log, which names each
    // replica by its identity, shows what it asked and the answers.
    let asked = after_waking.requests(&agent, &takeover.ns.name);
    assert!(
        asked.iter().any(|r| r.resource == "leases"),
        "no request of the woken leader for its Lease in the audit log: {asked:#?}"
    );
    let landed: Vec<_> = asked.iter().filter(|r| r.landed()).collect();
    assert!(landed.is_empty(), "the woken leader wrote: {landed:#?}");
    assert_eq!(takeover.running().await, NEW_MAXMEMORY);
    assert!(takeover.history.restarts().await.values().all(|n| *n == 0));
}

/// The identity `operator` holds the Lease as, from its log.
fn lease_identity(operator: &Operator) -> String {
    let lines = operator.log_lines();
    let acquired = lines
        .iter()
        .find(|l| l["message"] == "acquired the lease; acting on instances")
        .expect("the operator acquired the lease");
    acquired["identity"].as_str().unwrap().to_owned()
}

/// The operator's list requests so far, by its own count.
async fn lists(operator: &Operator) -> u64 {
    let metrics = operator.metrics().await;
    samples(
        &metrics,
        "redis_operator_api_requests_total",
        "verb=\"list\"",
    )
    .filter_map(|value| value.parse::<u64>().ok())
    .sum()
}

/// The values of the samples of family `name` whose labels hold `label`.
fn samples<'a>(metrics: &'a str, name: &str, label: &str) -> impl Iterator<Item = &'a str> {
    let family = format!("{name}{{");
    let label = label.to_owned();
    metrics
        .lines()
        .filter(move |l| l.starts_with(&family) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next())
}

/// A standby's [`lists`] once its caches are filled: its instances routed, and no list
/// request for a second.
async fn warm_lists(standby: &Operator) -> u64 {
    let routed = "initial list of RedisInstances routed";
    wait_for(Duration::from_secs(30), routed, || {
        let lines = standby.log_lines();
        async move {
            match lines.iter().any(|l| l["message"] == routed) {
                true => Ok(()),
                false => Err("not yet".to_owned()),
            }
        }
    })
    .await;
    wait_for(
        Duration::from_secs(30),
        "the standby's lists done",
        || async {
            let before = lists(standby).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            match lists(standby).await {
                0 => Err("no list yet".to_owned()),
                after if after == before => Ok(after),
                after => Err(format!("{before} then {after}")),
            }
        },
    )
    .await
}

/// The leader cut off from the API server while it still reaches the pods (its API relay
/// cut): a standby takes over and applies a newer live value, and for as long as the partition
/// lasts the cut-off leader, whose caches and live checks still hold the old spec, sets nothing
/// back on the pods; it says it is no longer the leader.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_cut_off_from_the_api_server_sets_nothing_back_on_the_pods() {
    let proxy = ApiProxy::start(api_server_address()).await;
    let relayed = proxy.kubeconfig("live-cut-leader");
    let relayed = relayed.to_string_lossy();
    let mut takeover = Takeover::start("live-cut", &["--kubeconfig", &relayed]).await;
    proxy.cut();
    takeover.apply_new_value().await;
    // The cut-off leader's live check comes every 2 s and its caches say 100mb: over the
    // next ten seconds the pod keeps the new leader's value.
    takeover.new_value_kept(40, "cut-off leader").await;
    let fenced = takeover
        .leader
        .log_lines()
        .iter()
        .filter(|l| {
            l["message"] == "live config drift left alone: this operator may no longer lead"
        })
        .count();
    assert!(
        fenced > 0,
        "the cut-off leader never found the drift it would set back"
    );
    let metrics = takeover.leader.metrics().await;
    assert!(
        metrics.lines().any(|l| l == "redis_operator_leader 0"),
        "the cut-off leader still says it leads"
    );
    assert!(takeover.history.restarts().await.values().all(|n| *n == 0));
}

/// A [`Takeover`] whose leader reaches the API server through a [`WriteHolder`], to hold one
/// of its writes until after the standby has taken over and written the same object.
struct HeldTakeover {
    takeover: Takeover,
    holder: WriteHolder,
    /// The old leader's User-Agent, which names its Lease identity.
    agent: String,
    audit: common::AuditLog,
}

impl HeldTakeover {
    async fn start(prefix: &str) -> Self {
        let holder = WriteHolder::start().await;
        let relayed = holder.kubeconfig(&format!("{prefix}-leader"));
        let relayed = relayed.to_string_lossy();
        let takeover = Takeover::start(prefix, &["--kubeconfig", &relayed]).await;
        let agent = redis_operator::run::user_agent(&lease_identity(&takeover.leader));
        Self {
            takeover,
            holder,
            agent,
            audit: common::AuditLog::from_now(),
        }
    }

    /// Holds the old leader's next write of `path` (`configmaps/<name>`, say) in its
    /// namespace, sent to `api` (`/api/v1`, `/apis/apps/v1`).
    fn arm(&self, api: &str, path: &str) {
        let ns = &self.takeover.ns.name;
        self.holder
            .arm(format!("PATCH {api}/namespaces/{ns}/{path}?"));
    }

    /// Delivers the held write, once the new leader has written its object since: the API
    /// server refuses it (409), and nothing the old leader sent from the hold on landed.
    async fn release_refused(&self, resource: &str, name: &str) {
        let (held, held_at) = self.holder.held().expect("the old leader's write was held");
        let answer = self.holder.release().await;
        assert!(
            answer.starts_with("HTTP/1.1 409"),
            "the old leader's write ({held}) delivered after the takeover was answered {answer:?}"
        );
        let asked = self.audit.requests(&self.agent, &self.takeover.ns.name);
        assert!(
            asked
                .iter()
                .any(|r| r.resource == resource && r.name == name && r.code == 409),
            "the audit log shows no refused write of the old leader: {asked:#?}"
        );
        // Nothing it sent from then on landed: not its Lease renewals, not its retries.
        let landed: Vec<_> = asked
            .iter()
            .filter(|r| r.landed() && r.received.is_none_or(|at| at >= held_at))
            .collect();
        assert!(
            landed.is_empty(),
            "the old leader wrote after its write was held: {landed:#?}"
        );
    }
}

/// A deposed leader's write delayed in the network past the takeover: the leader applies a live
/// edit to the pod, and its write of `<name>-config` is held on the way (its relay holds that
/// request and cuts everything else). The standby takes over and applies the same edit, then a
/// newer one. Delivered only then, the old leader's write is refused by the API server: it
/// carries the resourceVersion it was decided from, which the new leader's writes moved on.
#[tokio::test(flavor = "multi_thread")]
async fn a_deposed_leaders_write_delivered_after_the_takeover_is_refused() {
    let mut held = HeldTakeover::start("live-held").await;
    let config_map = format!("{NAME}-config");
    held.arm("/api/v1", &format!("configmaps/{config_map}"));
    // The old leader sets 150mb on the pod, then its write of the ConfigMap is held; the
    // standby takes over and writes the ConfigMap itself.
    let takeover = &mut held.takeover;
    takeover.apply_new_value().await;
    edit_config(
        &takeover.ns,
        &mut takeover.instance,
        &[("maxmemory", "200mb")],
    )
    .await;
    wait_live_applied(&takeover.ns, &takeover.instance).await;
    held.release_refused("configmaps", &config_map).await;
    let takeover = &held.takeover;
    let (text, _) = config_map_and_hash(&takeover.ns, NAME).await;
    assert!(
        text.lines().any(|l| l == "maxmemory 200mb"),
        "the ConfigMap lost the new leader's value: {text}"
    );
    assert_eq!(takeover.running().await, "209715200");
    assert!(takeover.history.restarts().await.values().all(|n| *n == 0));
}

/// The same for a restart: the old leader records a restart and its template write is held;
/// the new leader finishes that restart, then rolls the pod out on a newer config. The old
/// leader's template write, delivered then, is refused (it carries the resourceVersion it was
/// decided from), so the pod is not rolled back onto the older config: one restart per edit.
#[tokio::test(flavor = "multi_thread")]
async fn a_deposed_leaders_template_write_delivered_after_a_newer_rollout_is_refused() {
    let mut held = HeldTakeover::start("live-held-sts").await;
    held.arm("/apis/apps/v1", &format!("statefulsets/{NAME}"));
    let takeover = &mut held.takeover;
    let before = takeover.ns.api::<RedisInstance>().get(NAME).await.unwrap();
    let restarts = before.status.map_or(0, |s| s.restarts);
    edit_config(&takeover.ns, &mut takeover.instance, &[("databases", "20")]).await;
    // Waited for by its count: during the wait for edits to settle, status says Running too.
    wait_restarts(&takeover.ns, NAME, restarts + 1).await;
    assert!(
        held.holder.held().is_some(),
        "the old leader's template write was held"
    );
    let takeover = &mut held.takeover;
    let pod = pods(&takeover.ns, NAME).await.remove(0);
    assert_eq!(running(&pod, None, &["databases"]).await["databases"], "20");
    edit_config(&takeover.ns, &mut takeover.instance, &[("databases", "24")]).await;
    let ready = wait_restarts(&takeover.ns, NAME, restarts + 2).await;
    held.release_refused("statefulsets", NAME).await;
    // Had it landed, the StatefulSet would roll the pod back: give it the time to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let takeover = &held.takeover;
    let (_, hash) = config_map_and_hash(&takeover.ns, NAME).await;
    assert_eq!(hash, ready.status.and_then(|s| s.config_hash));
    let pod = pods(&takeover.ns, NAME).await.remove(0);
    assert_eq!(running(&pod, None, &["databases"]).await["databases"], "24");
    let restarts = takeover.history.restarts().await;
    assert!(
        restarts.values().all(|n| *n == 2),
        "one restart per edit: {restarts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_edit_restarts_no_pod_and_a_mixed_edit_restarts_once() {
    let client = common::client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "live-edit").await;
    let mut instance = live_instance(
        3,
        &[
            ("maxmemory", "100mb"),
            ("maxmemory-policy", "allkeys-lru"),
            ("save", "900 1"),
            ("databases", "16"),
            ("requirepass", PASSWORD),
        ],
    );
    // An instance of an earlier operator version, which rendered spec.config.requirepass into
    // the file: its status records the config it ran. A new instance's requirepass is refused
    // (tests/auth.rs); this one's moves into <name>-auth.
    apply_instance(&ns, &instance).await.unwrap();
    let earlier = render(&instance.spec.config).hash;
    ns.api::<RedisInstance>()
        .patch_status(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": { "configHash": earlier } })),
        )
        .await
        .unwrap();
    let operator = Operator::start_with(&ns.name, &[]);
    wait_ready(&ns, NAME, None, Duration::from_secs(240)).await;
    let history = PodHistory::start(&ns).await;
    let names = ["maxmemory", "maxmemory-policy", "save", "databases"];

    edit_config(
        &ns,
        &mut instance,
        &[
            ("maxmemory", "200mb"),
            ("maxmemory-policy", "volatile-lfu"),
            ("save", "300 10 60 1000"),
        ],
    )
    .await;
    let ri = wait_live_applied(&ns, &instance).await;
    let started = pods(&ns, NAME).await;
    assert_eq!(started.len(), 3);
    for pod in &started {
        assert_eq!(
            running(pod, Some(PASSWORD), &names).await,
            expect(&[
                ("maxmemory", "209715200"),
                ("maxmemory-policy", "volatile-lfu"),
                ("save", "300 10 60 1000"),
                ("databases", "16"),
            ]),
            "pod {}",
            kube::ResourceExt::name_any(pod)
        );
    }
    assert!(
        history.restarts().await.values().all(|n| *n == 0),
        "{:?}",
        history.restarts().await
    );
    let status = ri.status.unwrap();
    assert_eq!(status.restarts, 0);
    assert_eq!(event_count_once(&ns, NAME, "ConfigAppliedLive", 1).await, 1);
    // The pods took spec.config.requirepass from <name>-auth (the live checks above logged in
    // with it), and a Warning says so.
    assert_eq!(event_count_once(&ns, NAME, "PasswordMoved", 1).await, 1);
    let (text, _) = config_map_and_hash(&ns, NAME).await;
    assert!(
        !text.contains(PASSWORD),
        "the password is in no rendered file"
    );
    assert_eq!(event_count(&ns, NAME, "RestartStarted").await, 0);

    // An operator killed between the live change and its Event (here: the Event deleted, as if
    // it had never got through): the one taking over tells it from the ConfigMap's mark, once.
    delete_events(&ns, NAME, "ConfigAppliedLive").await;
    operator.kill();
    let operator = Operator::start_with(&ns.name, &[]);
    let leading = "acquired the lease; acting on instances";
    operator.wait_for_passes(1, Some(leading)).await;
    assert_eq!(event_count_once(&ns, NAME, "ConfigAppliedLive", 1).await, 1);

    // `databases` only changes at start-up: this edit restarts each pod once, and the live
    // directive changed with it arrives through the new file.
    edit_config(
        &ns,
        &mut instance,
        &[("databases", "8"), ("maxmemory", "300mb")],
    )
    .await;
    wait_restarts(&ns, NAME, 1).await;
    for pod in &pods(&ns, NAME).await {
        let now = running(pod, Some(PASSWORD), &["maxmemory", "databases"]).await;
        assert_eq!(
            now,
            expect(&[("maxmemory", "314572800"), ("databases", "8")])
        );
    }
    let restarts = history.restarts().await;
    assert!(
        restarts.values().all(|n| *n == 1),
        "each pod restarted once: {restarts:?}"
    );
    let (text, _) = config_map_and_hash(&ns, NAME).await;
    assert_eq!(
        text,
        render(&redis_operator::config::effective(&instance)).text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_live_change_is_undone_everywhere_and_hand_drift_is_set_back() {
    let (_client, ns, operator) = setup("live-refused", &["--live-check-seconds", "3"]).await;
    let mut instance = live_instance(2, &[("maxmemory", "100mb"), ("appendonly", "yes")]);
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, NAME, None, Duration::from_secs(180)).await;
    let history = PodHistory::start(&ns).await;
    let before = redis_operator::config::rendered(&instance).text;
    let pods = pods(&ns, NAME).await;
    // The operator's user may no longer run CONFIG SET on the second pod: the first pod takes
    // the change, the second refuses it, so the first must be set back.
    assert_eq!(
        cli(
            &pods[1],
            None,
            &["ACL", "SETUSER", "redis-operator", "-config|set"]
        )
        .await,
        "OK"
    );

    edit_config(&ns, &mut instance, &[("maxmemory", "150mb")]).await;
    let api = ns.api::<RedisInstance>();
    let refused = wait_for(Duration::from_secs(60), "the refusal in status", || {
        let api = api.clone();
        async move {
            let ri = api.get(NAME).await.map_err(|e| e.to_string())?;
            let status = ri.status.clone().unwrap_or_default();
            let condition = status
                .conditions
                .iter()
                .find(|c| c.type_ == "ConfigValid")
                .cloned();
            match condition {
                Some(c)
                    if c.reason == "LiveConfigRefused"
                        && status.refused_live_config_hash.is_some() =>
                {
                    Ok(c.message)
                }
                _ => Err(format!("{status:?}")),
            }
        }
    })
    .await;
    assert!(
        refused.contains("redis-example-1") && refused.contains("maxmemory"),
        "{refused}"
    );
    assert!(
        refused.contains("no permissions"),
        "Redis's reason is quoted: {refused}"
    );
    assert!(refused.contains("set back on redis-example-0"), "{refused}");
    instance_events_once(&ns, NAME, |(t, r, n)| {
        t == "Warning" && r == "LiveConfigRefused" && n.contains("redis-example-1")
    })
    .await;
    for pod in &pods {
        assert_eq!(
            running(pod, None, &["maxmemory"]).await["maxmemory"],
            "104857600"
        );
    }
    let (text, _) = config_map_and_hash(&ns, NAME).await;
    assert_eq!(text, before, "the ConfigMap keeps the config the pods run");
    assert!(history.restarts().await.values().all(|n| *n == 0));

    // Allowed again, the next edit goes through on both pods.
    assert_eq!(
        cli(
            &pods[1],
            None,
            &["ACL", "SETUSER", "redis-operator", "+config|set"]
        )
        .await,
        "OK"
    );
    edit_config(&ns, &mut instance, &[("maxmemory", "160mb")]).await;
    wait_live_applied(&ns, &instance).await;
    for pod in &pods {
        assert_eq!(
            running(pod, None, &["maxmemory"]).await["maxmemory"],
            "167772160"
        );
    }

    // Someone sets a value by hand: the next check puts the spec's value back.
    assert_eq!(
        cli(&pods[0], None, &["CONFIG", "SET", "maxmemory", "1mb"]).await,
        "OK"
    );
    let pod0 = pods[0].clone();
    wait_for(
        Duration::from_secs(60),
        "the hand-set maxmemory to be set back",
        || {
            let pod0 = pod0.clone();
            async move {
                let now = running(&pod0, None, &["maxmemory"]).await["maxmemory"].clone();
                if now == "167772160" { Ok(()) } else { Err(now) }
            }
        },
    )
    .await;
    wait_for(Duration::from_secs(30), "the drift Event", || async {
        let n = event_count(&ns, NAME, "LiveDriftRepaired").await;
        if n >= 1 { Ok(()) } else { Err(n.to_string()) }
    })
    .await;
    let metrics = operator.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("redis_operator_drift_repairs_total")
                && l.contains("kind=\"LiveConfig\"")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
    let sample = |outcome: &str| {
        let label = format!("outcome=\"{outcome}\"");
        samples(&metrics, "redis_operator_live_config_changes_total", &label)
            .next()
            .map(str::to_owned)
    };
    assert_eq!(sample("Refused").as_deref(), Some("1"), "{metrics}");
    assert_eq!(sample("Applied").as_deref(), Some("1"), "{metrics}");
    assert!(history.restarts().await.values().all(|n| *n == 0));

    // An operator killed between setting the drift back and its Event (here: the Event
    // deleted, as if it had never got through): the one taking over finds the repair's mark on
    // the ConfigMap, reads the pods running the spec's value, and tells it, once.
    delete_events(&ns, NAME, "LiveDriftRepaired").await;
    operator.kill();
    let operator = Operator::start_with(&ns.name, &["--live-check-seconds", "3"]);
    let leading = "acquired the lease; acting on instances";
    operator.wait_for_passes(1, Some(leading)).await;
    assert_eq!(event_count_once(&ns, NAME, "LiveDriftRepaired", 1).await, 1);
    // Later checks find no drift: once the new leader's first steps are done, nothing is told
    // or written again.
    let told = "telling a live drift repair marked before this operator";
    wait_checks(&operator, told, 2).await;
    let quiet = common::AuditLog::from_now();
    wait_checks(&operator, told, 4).await;
    assert_eq!(event_count(&ns, NAME, "LiveDriftRepaired").await, 1);
    let writes = quiet.operator_writes(&ns.name);
    assert!(writes.is_empty(), "writes at rest: {writes:?}");

    // An operator killed after marking a repair and before its CONFIG SET (here: a mark of
    // this second written by hand, the drift still there): the one taking over tells no
    // repair that did not happen; it repairs the drift and tells its own, once.
    operator.kill();
    assert_eq!(
        cli(&pods[0], None, &["CONFIG", "SET", "maxmemory", "1mb"]).await,
        "OK"
    );
    let config_maps = ns.api::<k8s_openapi::api::core::v1::ConfigMap>();
    let key = "redis.github.com/live-drift";
    let config_map = config_maps.get("redis-example-config").await.unwrap();
    let marked = config_map.metadata.annotations.unwrap_or_default()[key].clone();
    let (repair, _) = marked.rsplit_once(' ').unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let unlanded = format!("{repair} {now}");
    config_maps
        .patch(
            "redis-example-config",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {key: unlanded}}})),
        )
        .await
        .unwrap();
    delete_events(&ns, NAME, "LiveDriftRepaired").await;
    let operator = Operator::start_with(&ns.name, &["--live-check-seconds", "3"]);
    operator.wait_for_passes(1, Some(leading)).await;
    wait_checks(&operator, "live config drift repaired", 2).await;
    assert_eq!(
        running(&pods[0], None, &["maxmemory"]).await["maxmemory"],
        "167772160"
    );
    let notes: Vec<String> = events_about(&ns, NAME)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("LiveDriftRepaired"))
        .map(|e| e.note.unwrap_or_default())
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        !notes[0].contains("took over"),
        "the repairer's own words: {notes:?}"
    );

    // The replica's Redis frozen: the check cannot read it, counts it and tells it once; it
    // answers again once woken.
    let replica = replica_of(&ns, &pods).await;
    let frozen = Frozen::new(common::container_pid(&replica).parse().unwrap());
    let replica_name = replica.metadata.name.clone().unwrap();
    let unreachable = wait_for(Duration::from_secs(60), "the PodUnreachable Event", || {
        let ns = &ns;
        async move {
            let notes: Vec<String> = events_about(ns, NAME)
                .await
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("PodUnreachable"))
                .filter_map(|e| Some((e.type_?, e.note?)))
                .map(|(kind, note)| format!("{kind}: {note}"))
                .collect();
            match &notes[..] {
                [one] => Ok(one.clone()),
                _ => Err(format!("{notes:?}")),
            }
        }
    })
    .await;
    assert!(
        unreachable.starts_with("Warning: ")
            && unreachable.contains(&format!("could not read {replica_name}:")),
        "{unreachable}"
    );
    assert_eq!(unreachable_pods(&operator).await.as_deref(), Some("1"));
    // Unready once frozen, the pod holds the live checks back until it is ready again; then it
    // is read, and nothing more is told.
    drop(frozen);
    wait_for(Duration::from_secs(60), "every pod read again", || async {
        match unreachable_pods(&operator).await {
            Some(n) if n == "0" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(event_count(&ns, NAME, "PodUnreachable").await, 1);
    assert!(history.restarts().await.values().all(|n| *n == 0));
}

/// The pod of `pods` that is not the instance's recorded primary.
async fn replica_of(ns: &TestNamespace, pods: &[Pod]) -> Pod {
    let ri = ns.api::<RedisInstance>().get(NAME).await.unwrap();
    let primary = ri.status.and_then(|s| s.replication?.primary);
    let primary = primary.expect("a replicated instance records its primary");
    pods.iter()
        .find(|p| p.metadata.name.as_deref() != Some(primary.as_str()))
        .cloned()
        .expect("a pod beside the primary")
}

/// The instance's `redis_operator_pods_unreachable` value, once a live check has run.
async fn unreachable_pods(operator: &Operator) -> Option<String> {
    let metrics = operator.metrics().await;
    let label = format!("instance=\"{NAME}\"");
    samples(&metrics, "redis_operator_pods_unreachable", &label)
        .next()
        .map(str::to_owned)
}

/// Waits until `operator` has logged `count` live checks that found no drift since its first
/// line with message `after`.
async fn wait_checks(operator: &Operator, after: &str, count: usize) {
    let what = format!("{count} live checks after {after:?}");
    wait_for(Duration::from_secs(60), &what, || {
        let lines = operator.log_lines();
        async move {
            let start = lines.iter().position(|l| l["message"] == after);
            let checks = start.map_or(0, |i| {
                lines[i..]
                    .iter()
                    .filter(|l| l["message"] == "live config verified on every pod")
                    .count()
            });
            if checks >= count {
                Ok(())
            } else {
                Err(format!("{checks} checks"))
            }
        }
    })
    .await;
}

/// `redis-operator diff -f <manifest>` against the local cluster: stdout and exit status.
fn diff(ns: &TestNamespace, instance: &RedisInstance) -> (String, i32) {
    let mut manifest = instance.clone();
    manifest.metadata.namespace = Some(ns.name.clone());
    let path = std::env::temp_dir().join(format!(
        "{}-{}.yaml",
        ns.name,
        manifest.metadata.name.clone().unwrap()
    ));
    std::fs::write(&path, serde_yaml::to_string(&manifest).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redis-operator"))
        .args(["diff", "-f"])
        .arg(&path)
        .arg("--kubeconfig")
        .arg(common::kubeconfig_path())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(out.status.code().is_some(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_gives_the_verdict_of_each_kind_of_edit_and_writes_nothing() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::ConfigMap;
    let (_client, ns, _operator) = setup("live-diff", &[]).await;
    let instance = live_instance(1, &[("maxmemory", "100mb"), ("databases", "16")]);
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, NAME, None, Duration::from_secs(180)).await;
    let versions = || async {
        let ri = ns.api::<RedisInstance>().get(NAME).await.unwrap();
        let cm = ns
            .api::<ConfigMap>()
            .get(&format!("{NAME}-config"))
            .await
            .unwrap();
        let sts = ns.api::<StatefulSet>().get(NAME).await.unwrap();
        [
            ri.metadata.resource_version,
            cm.metadata.resource_version,
            sts.metadata.resource_version,
        ]
    };
    let before = versions().await;
    let edit = |pairs: &[(&str, &str)]| {
        let mut i = instance.clone();
        for (k, v) in pairs {
            i.spec.config.insert((*k).to_owned(), (*v).to_owned());
        }
        i
    };

    let (out, code) = diff(&ns, &instance);
    assert_eq!(
        (out.as_str(), code),
        (
            format!(
                "{}/{NAME}: nothing: the pods already run this config\n",
                ns.name
            )
            .as_str(),
            0
        )
    );
    let (out, code) = diff(&ns, &edit(&[("maxmemory", "200mb"), ("save", "60 100")]));
    assert!(
        out.contains(": live: CONFIG SET maxmemory, save on every pod, no restart"),
        "{out}"
    );
    assert_eq!(code, 0);
    let (out, _) = diff(&ns, &edit(&[("maxmemory", "200mb"), ("databases", "8")]));
    assert!(
        out.contains(": restart (RollingUpdate): forced by databases"),
        "{out}"
    );
    assert!(out.contains("changing with it: maxmemory"), "{out}");
    let (out, code) = diff(&ns, &edit(&[("maxmemory", "lots")]));
    assert!(
        out.contains(": refused: nothing would change") && out.contains("maxmemory:"),
        "{out}"
    );
    assert_eq!(code, 1);
    let mut other = instance.clone();
    other.metadata.name = Some("not-there-yet".into());
    let (out, _) = diff(&ns, &other);
    assert!(out.contains("not-there-yet: create:"), "{out}");
    // What only the API server knows: the storage of a StatefulSet's claims cannot change.
    let mut bigger = instance.clone();
    bigger.spec.storage.size = "2Gi".into();
    let (out, code) = diff(&ns, &bigger);
    assert!(out.contains(": refused by the API server"), "{out}");
    assert!(out.contains("storage"), "the API server's reason: {out}");
    assert_eq!(code, 1);
    // One pod to three: it becomes the primary of two replicas, which its template says.
    let mut more = instance.clone();
    more.spec.replicas = 3;
    let (out, code) = diff(&ns, &more);
    assert!(
        out.contains("restart (RollingUpdate): forced by replication")
            && out.contains("scale 1 -> 3: 2 pod(s) created\n"),
        "{out}"
    );
    assert_eq!(code, 0);
    let mut without = instance.clone();
    without.spec.config.remove("maxmemory");
    let (out, _) = diff(&ns, &without);
    assert!(out.contains("forced by maxmemory (removed)"), "{out}");
    let mut paused = edit(&[("databases", "4")]);
    paused.spec.paused = true;
    let (out, _) = diff(&ns, &paused);
    assert!(
        out.contains("restart (RollingUpdate)") && out.contains("held while spec.paused"),
        "{out}"
    );

    assert_eq!(versions().await, before, "diff writes nothing");
}
