//! A step talking to Redis gives its step permit back first: while a pod sits on a live
//! apply's or a live check's `CONFIG SET`, on a switchover's `FAILOVER` or on a certificate
//! reload's `CONFIG SET`, another instance's step can start (here, with one step at a time, the
//! test takes the only permit). Checks of pods wait for a pod check permit of their own.

use std::collections::BTreeMap;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::crd::ConfigUpdate;

/// What a stand-in pod's Redis answers: `CONFIG GET` from `config`, `INFO` with `info`, and
/// `+OK` to anything else but the commands that change it (`CONFIG SET`, `FAILOVER`), which it
/// never answers.
pub(super) struct SilentPod {
    config: BTreeMap<String, String>,
    info: &'static str,
}

/// Serves `pod` at `ip`; counts in `held` the commands it sits on. With `tls`, over TLS with
/// that certificate.
pub(super) async fn serve_silent_pod(
    ip: &str,
    pod: SilentPod,
    held: Arc<AtomicUsize>,
) -> JoinHandle<()> {
    serve_silent_pod_over(ip, pod, held, None).await
}

async fn serve_silent_pod_over(
    ip: &str,
    pod: SilentPod,
    held: Arc<AtomicUsize>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> JoinHandle<()> {
    let port = u16::try_from(crate::config::render::REDIS_PORT).unwrap();
    let listener = TcpListener::bind((ip, port)).await.expect("bind");
    let pod = Arc::new(pod);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (pod, held) = (pod.clone(), held.clone());
            match tls.clone() {
                None => drop(tokio::spawn(serve(socket, pod, held))),
                Some(acceptor) => drop(tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(socket).await {
                        serve(stream, pod, held).await;
                    }
                })),
            }
        }
    })
}

async fn serve<S>(socket: S, pod: Arc<SilentPod>, held: Arc<AtomicUsize>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut socket = BufReader::new(socket);
    while let Some(command) = read_command(&mut socket).await {
        let verb: Vec<String> = command.iter().take(2).map(|w| w.to_uppercase()).collect();
        let reply = match verb.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["CONFIG", "SET"] | ["FAILOVER", ..] => {
                held.fetch_add(1, Ordering::SeqCst);
                // Held open, unanswered, until the client gives up.
                std::future::pending::<()>().await;
                unreachable!()
            }
            ["CONFIG", "GET"] => {
                let pairs: Vec<&String> = command[2..]
                    .iter()
                    .filter_map(|name| pod.config.get_key_value(name))
                    .flat_map(|(name, value)| [name, value])
                    .collect();
                let mut reply = format!("*{}\r\n", pairs.len());
                for word in pairs {
                    reply += &format!("${}\r\n{word}\r\n", word.len());
                }
                reply
            }
            ["INFO", ..] => format!("${}\r\n{}\r\n", pod.info.len(), pod.info),
            _ => "+OK\r\n".to_owned(),
        };
        if socket.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        let _ = socket.get_mut().flush().await;
    }
}

/// A pod that runs `directive` at `value`.
pub(super) fn running(directive: &str, value: &str) -> SilentPod {
    SilentPod {
        config: BTreeMap::from([(directive.to_owned(), value.to_owned())]),
        info: "",
    }
}

/// One command as an array of bulk strings, as clients send them; `None` once the client has
/// gone or sent anything else.
async fn read_command<S: AsyncRead + Unpin>(socket: &mut BufReader<S>) -> Option<Vec<String>> {
    let mut line = String::new();
    socket.read_line(&mut line).await.ok()?;
    let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut words = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        socket.read_line(&mut line).await.ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut word = vec![0; len + 2];
        socket.read_exact(&mut word).await.ok()?;
        word.truncate(len);
        words.push(String::from_utf8(word).ok()?);
    }
    Some(words)
}

/// Caches of a converged instance under `configUpdate: Live`, its one pod at `pod_ip`.
pub(super) fn live_caches(instance: &RedisInstance, pod_ip: &str) -> (Stores, Watches) {
    let (stores, mut watches) = converged_caches_and_watches(instance);
    pod_changed(&stores, &mut watches, pod_ip, |_| {});
    (stores, watches)
}

pub(super) fn live_instance() -> RedisInstance {
    let mut instance = converged_instance();
    instance.spec.config_update = ConfigUpdate::Live;
    instance
}

/// Waits (at most 10 s) until a pod sits on a command that changes it.
async fn sat_on(held: &AtomicUsize) {
    for _ in 0..400 {
        if held.load(Ordering::SeqCst) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts the instance's actor with one step permit in all, waits for a pod to be sent a
/// command that changes it, and takes the permit while the pod sits on it.
async fn permit_free_while_a_pod_is_silent(
    instance: &RedisInstance,
    stores: Stores,
    timings: Timings,
    held: &AtomicUsize,
) {
    let log = Log::default();
    let client = scripted_api(instance, log.clone(), Arc::default());
    let (actor, handle, limiter) = spawn_with_one_step(client, stores, timings).await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    sat_on(held).await;
    assert_eq!(
        held.load(Ordering::SeqCst),
        1,
        "a pod was sent a command that changes it; requests: {:?}",
        requests(&log)
    );
    // The client waits 5 s for a reply: a permit held by the step would come free only then.
    let taken = tokio::time::timeout(Duration::from_secs(3), limiter.step()).await;
    assert!(
        taken.is_ok(),
        "the step held its permit while the pod sat on the command; requests: {:?}",
        requests(&log)
    );
    actor.stop(None);
    handle.await.unwrap();
}

/// A spec edit of a live directive: the step applying it lets other steps run meanwhile.
#[tokio::test]
async fn a_live_apply_gives_its_step_permit_back() {
    const POD_IP: &str = "127.0.0.87";
    let held = Arc::new(AtomicUsize::new(0));
    let pod = running("maxmemory", "104857600");
    let redis = serve_silent_pod(POD_IP, pod, held.clone()).await;
    let (stores, mut watches) = live_caches(&live_instance(), POD_IP);
    let mut edited = live_instance();
    edited
        .spec
        .config
        .insert("maxmemory".into(), "200mb".into());
    edited.metadata.generation = Some(2);
    watches
        .instances
        .apply_watcher_event(&watcher::Event::Apply(edited.clone()));
    permit_free_while_a_pod_is_silent(&edited, stores, Timings::default(), &held).await;
    redis.abort();
}

/// A converged instance whose pod runs another value (set by hand): the check at rest that
/// sets it back lets other steps run meanwhile.
#[tokio::test]
async fn a_live_check_at_rest_gives_its_step_permit_back() {
    const POD_IP: &str = "127.0.0.88";
    let held = Arc::new(AtomicUsize::new(0));
    let redis = serve_silent_pod(POD_IP, running("maxmemory", "1"), held.clone()).await;
    let (stores, _watches) = live_caches(&live_instance(), POD_IP);
    permit_free_while_a_pod_is_silent(&live_instance(), stores, Timings::default(), &held).await;
    redis.abort();
}

/// A live check at rest waits for one of the pod check permits before it dials a pod, and
/// holds no step permit while it waits.
#[tokio::test]
async fn a_live_check_waits_for_a_pod_check_permit_and_not_in_a_step() {
    const POD_IP: &str = "127.0.0.92";
    let held = Arc::new(AtomicUsize::new(0));
    let redis = serve_silent_pod(POD_IP, running("maxmemory", "1"), held.clone()).await;
    let instance = live_instance();
    let (stores, _watches) = live_caches(&instance, POD_IP);
    let log = Log::default();
    let client = scripted_api(&instance, log.clone(), Arc::default());
    let (actor, handle, limiter) = spawn_with_one_step(client, stores, Timings::default()).await;
    let every_check = limiter.pod_check().await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    // Unchecked, the pod is sent its CONFIG SET within milliseconds of the step.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        held.load(Ordering::SeqCst),
        0,
        "the pod was dialled while every pod check permit was taken; requests: {:?}",
        requests(&log)
    );
    let step = tokio::time::timeout(Duration::from_secs(3), limiter.step()).await;
    assert!(step.is_ok(), "the waiting check holds the step permit");
    drop(step);
    drop(every_check);
    sat_on(&held).await;
    assert_eq!(
        held.load(Ordering::SeqCst),
        1,
        "with a permit free, the check sets the drifted value back"
    );
    actor.stop(None);
    handle.await.unwrap();
    redis.abort();
}

/// A switchover recorded from pod 0 to pod 1, pod 1 labelled and listed by the Services: the
/// step sending `FAILOVER` to pod 0 lets other steps run meanwhile.
#[tokio::test]
async fn a_switchover_gives_its_step_permit_back() {
    use crate::crd::{RedisInstanceStatus, ReplicationStatus, SwitchoverRecord};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    const PRIMARY_IP: &str = "127.0.0.89";
    let held = Arc::new(AtomicUsize::new(0));
    let primary = SilentPod {
        config: BTreeMap::new(),
        info: "role:master\r\nconnected_slaves:1\r\n\
            slave0:ip=127.0.0.90,port=6379,state=online,offset=100,lag=0\r\n\
            master_failover_state:no-failover\r\nmaster_replid:r1\r\nmaster_repl_offset:100\r\n",
    };
    let replica = SilentPod {
        config: BTreeMap::new(),
        info: "role:slave\r\nmaster_host:127.0.0.89\r\nmaster_port:6379\r\n\
            master_link_status:up\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:100\r\n\
            master_failover_state:no-failover\r\nmaster_replid:r1\r\nmaster_repl_offset:100\r\n",
    };
    let primary = serve_silent_pod(PRIMARY_IP, primary, held.clone()).await;
    let replica = serve_silent_pod(ROUTED_IP, replica, held.clone()).await;

    let mut instance = converged_instance();
    instance.spec.replicas = 2;
    instance.status = Some(RedisInstanceStatus {
        replication: Some(ReplicationStatus {
            primary: Some("redis-example-0".into()),
            switchover: Some(SwitchoverRecord {
                from: "redis-example-0".into(),
                to: "redis-example-1".into(),
                started_at: Time(k8s_openapi::jiff::Timestamp::now()),
            }),
            ..ReplicationStatus::default()
        }),
        ..RedisInstanceStatus::default()
    });
    let (mut stores, mut watches) = converged_caches_and_watches(&instance);
    // Nothing of the Services to write: the step goes straight to replication.
    with_role_services(&mut stores, &instance);
    // Both pods labelled primary: the target joins the primary's Service before FAILOVER.
    let first = stores.pods.state()[0].as_ref().clone();
    for (ordinal, ip) in [(0, PRIMARY_IP), (1, ROUTED_IP)] {
        let mut pod = first.clone();
        pod.metadata.name = Some(format!("redis-example-{ordinal}"));
        pod.metadata.uid = Some(format!("pod-uid-{ordinal}"));
        pod.labels.insert(crate::resources::ROLE_LABEL, "primary");
        if let Some(status) = pod.status.as_mut() {
            status.pod_ip = Some(ip.into());
        }
        watches
            .pods
            .apply_watcher_event(&watcher::Event::Apply(pod));
    }
    let timings = Timings {
        route_settle: Duration::ZERO,
        ..Timings::default()
    };
    permit_free_while_a_pod_is_silent(&instance, stores, timings, &held).await;
    primary.abort();
    replica.abort();
}

/// The TLS Secret of the certificate test, as the mocked API server returns it.
pub(super) const TLS_SECRET: &str = "redis-tls";

/// The test material (see `tls/README.md`).
const CA_PEM: &str = include_str!("tls/ca.crt");
const SERVED_CERT: &str = include_str!("tls/served.crt");
const SERVED_KEY: &str = include_str!("tls/served.key");
const WANTED_CERT: &str = include_str!("tls/wanted.crt");
const WANTED_KEY: &str = include_str!("tls/wanted.key");

/// [`TLS_SECRET`] holding the certificate the pods are to serve.
pub(super) fn tls_secret() -> Value {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let data = [
        ("ca.crt", CA_PEM),
        ("tls.crt", WANTED_CERT),
        ("tls.key", WANTED_KEY),
    ]
    .into_iter()
    .map(|(key, pem)| (key.to_owned(), ByteString(pem.as_bytes().to_vec())))
    .collect();
    let mut secret = Secret {
        data: Some(data),
        type_: Some("kubernetes.io/tls".into()),
        ..Secret::default()
    };
    secret.metadata.name = Some(TLS_SECRET.into());
    secret.metadata.namespace = Some("team-a".into());
    secret.metadata.resource_version = Some("7".into());
    serde_json::to_value(secret).unwrap()
}

/// Serves the older certificate, signed by the same CA.
fn served_tls() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(SERVED_CERT.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(SERVED_KEY.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A converged TLS instance whose Secret holds a newer certificate than its pod serves: the
/// step reloading it lets other steps run meanwhile.
#[tokio::test]
async fn a_certificate_reload_gives_its_step_permit_back() {
    const POD_IP: &str = "127.0.0.91";
    let held = Arc::new(AtomicUsize::new(0));
    let pod = running("maxmemory", "104857600");
    let redis = serve_silent_pod_over(POD_IP, pod, held.clone(), Some(served_tls())).await;
    let mut instance = converged_instance();
    instance.spec.tls = Some(crate::crd::TlsSpec {
        secret_name: TLS_SECRET.into(),
        auth_clients: false,
    });
    let (stores, mut watches) = converged_caches_and_watches(&instance);
    pod_changed(&stores, &mut watches, POD_IP, |pod| {
        pod.annotations
            .insert(crate::resources::TLS_ANNOTATION, "true");
    });
    permit_free_while_a_pod_is_silent(&instance, stores, Timings::default(), &held).await;
    redis.abort();
}
