//! TLS on the local cluster with real Redis: a CA and certificates made in the test, a
//! `kubernetes.io/tls` Secret, an instance of two pods that serves TLS only (plain RESP gets no
//! answer, a client without a certificate is refused when clients must authenticate),
//! replicates over TLS and takes a live config change from the operator over verified TLS;
//! then the Secret is renewed and every pod serves the new certificate with no restart, and
//! removing `spec.tls` from the running replicated instance is refused at admission.

mod common;
mod e2e;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use redis_operator::crd::{ConfigUpdate, RedisInstance, TlsSpec};
use redis_operator::tls::client::ClientTls;
use redis_operator::tls::material::Material;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{TestNamespace, pod_ip, uid, wait_for};
use e2e::*;

const NAME: &str = "redis-example";
const SECRET: &str = "redis-example-tls";

/// A directory of PEM files made with the `openssl` CLI (hack/local-cluster installs it).
struct Pki {
    dir: PathBuf,
    /// The `default` user's password, from the Secret the operator generates.
    password: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs (hack/local-cluster installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A fresh P-256 CA.
    fn new(namespace: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("redis-operator-tls-{namespace}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ca.key",
            ],
        );
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=tls-test-ca",
                "-days",
                "1",
                "-out",
                "ca.crt",
            ],
        );
        Self {
            dir,
            password: String::new(),
        }
    }

    /// A certificate for the instance's pods, signed by the CA, with `serial`: the names the
    /// docs tell users to issue, usable for server and client authentication (Redis presents
    /// it to the primary it replicates, and the probe and the operator present it too).
    fn issue(&self, namespace: &str, serial: u32) -> BTreeMap<String, Vec<u8>> {
        let dir = &self.dir;
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "tls.key",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                "tls.key",
                "-subj",
                "/CN=redis-example",
                "-out",
                "tls.csr",
            ],
        );
        let ext = format!(
            "subjectAltName=DNS:{NAME}.{namespace}.svc,DNS:*.{NAME}.{namespace}.svc,DNS:{NAME}-primary.{namespace}.svc\n\
             extendedKeyUsage=serverAuth,clientAuth\n"
        );
        std::fs::write(dir.join("ext.cnf"), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "tls.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial.to_string(),
                "-days",
                "1",
                "-extfile",
                "ext.cnf",
                "-out",
                "tls.crt",
            ],
        );
        ["tls.crt", "tls.key", "ca.crt"]
            .into_iter()
            .map(|f| (f.to_owned(), std::fs::read(dir.join(f)).unwrap()))
            .collect()
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn secret(files: &BTreeMap<String, Vec<u8>>) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(SECRET.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            files
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                .collect(),
        ),
        ..Default::default()
    }
}

async fn apply_secret(ns: &TestNamespace, files: &BTreeMap<String, Vec<u8>>) {
    ns.api::<Secret>()
        .patch(
            SECRET,
            &PatchParams::apply("e2e-user").force(),
            &Patch::Apply(&secret(files)),
        )
        .await
        .unwrap();
}

/// The Secret's content as the operator reads it, for its fingerprint and a verifying client.
fn material(files: &BTreeMap<String, Vec<u8>>) -> Material {
    let data = files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    Material::from_data(SECRET, &data).unwrap()
}

/// `redis-cli` over TLS, verifying the server against the test's CA and logged in with the
/// password the operator generated (in the environment, never on a command line);
/// `with_cert` presents the pods' certificate as the client's.
async fn tls_cli(pki: &Pki, ip: &str, with_cert: bool, args: &[&str]) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("redis-cli");
    cmd.env("REDISCLI_AUTH", &pki.password);
    cmd.args(["--tls", "--cacert", &pki.path("ca.crt")]);
    if with_cert {
        cmd.args([
            "--cert",
            &pki.path("tls.crt"),
            "--key",
            &pki.path("tls.key"),
        ]);
    }
    let out = cmd
        .args(["-h", ip])
        .args(args)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
    let refused = ["ERR", "NOAUTH", "WRONGPASS", "AUTH failed"]
        .iter()
        .any(|e| stdout.starts_with(e));
    if out.status.success() && !refused && !stdout.is_empty() {
        Ok(stdout)
    } else {
        Err(format!(
            "{} {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What a plain-TCP client gets for `PING` on the Redis port within 2 s.
async fn plain_ping(ip: &str) -> String {
    let Ok(Ok(mut tcp)) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect((ip, 6379)),
    )
    .await
    else {
        return "connection refused".into();
    };
    let _ = tcp.write_all(b"PING\r\n").await;
    let mut buf = vec![0u8; 64];
    match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer".into(),
    }
}

fn restart_counts(pods: &[Pod]) -> Vec<i32> {
    pods.iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .collect()
}

#[tokio::test]
async fn serves_tls_only_replicates_over_it_and_reloads_a_renewed_certificate_without_restarts() {
    let (_client, ns, _operator) = setup("tls", &[]).await;
    let mut pki = Pki::new(&ns.name);
    let first = pki.issue(&ns.name, 1);
    apply_secret(&ns, &first).await;

    let mut instance = example("redis-example.yaml");
    instance.spec.replicas = 2;
    instance.spec.config_update = ConfigUpdate::Live;
    instance.spec.tls = Some(TlsSpec {
        secret_name: SECRET.into(),
        auth_clients: true,
    });
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, NAME, None, Duration::from_secs(180)).await;
    let auth: Secret = ns.api().get(&format!("{NAME}-auth")).await.unwrap();
    pki.password = String::from_utf8(auth.data.unwrap()["password"].0.clone()).unwrap();

    // Replication over TLS: the replica's link to the primary is up.
    let replication = wait_for(
        Duration::from_secs(60),
        "a replica linked to the primary",
        || async {
            let ri = ns
                .api::<RedisInstance>()
                .get(NAME)
                .await
                .map_err(|e| e.to_string())?;
            let repl = ri.status.and_then(|s| s.replication).unwrap_or_default();
            let linked = repl
                .pods
                .iter()
                .any(|p| p.role == "replica" && p.link.as_deref() == Some("up"));
            if linked && repl.primary.is_some() {
                Ok(repl)
            } else {
                Err(format!("{repl:?}"))
            }
        },
    )
    .await;
    let pods = pods(&ns, NAME).await;
    assert_eq!(pods.len(), 2);
    let replica = pods
        .iter()
        .find(|p| Some(p.name_any()) != replication.primary)
        .unwrap();
    let info = tls_cli(&pki, &pod_ip(replica), true, &["INFO", "replication"])
        .await
        .unwrap();
    assert!(info.contains("master_link_status:up"), "{info}");

    for pod in &pods {
        let ip = pod_ip(pod);
        // TLS only: plain RESP gets no PONG.
        let plain = plain_ping(&ip).await;
        assert!(!plain.contains("PONG"), "plain TCP answered {plain:?}");
        // Clients must authenticate: no certificate, no PONG.
        let anonymous = tls_cli(&pki, &ip, false, &["PING"]).await;
        assert!(
            anonymous.is_err(),
            "a client without a certificate got {anonymous:?}"
        );
        assert_eq!(tls_cli(&pki, &ip, true, &["PING"]).await.unwrap(), "PONG");
    }

    // The operator talks to the pods over verified TLS: a live change reaches both.
    let mut changed = instance.clone();
    changed
        .spec
        .config
        .insert("maxmemory".into(), "120mb".into());
    apply_instance(&ns, &changed).await.unwrap();
    for pod in &pods {
        wait_for(
            Duration::from_secs(60),
            "maxmemory 120mb set live",
            || async {
                let got =
                    tls_cli(&pki, &pod_ip(pod), true, &["CONFIG", "GET", "maxmemory"]).await?;
                if got.ends_with("125829120") {
                    Ok(())
                } else {
                    Err(got)
                }
            },
        )
        .await;
    }

    // Renewal: same CA, new key and serial. Every pod serves it, none restarts.
    let history = PodHistory::start(&ns).await;
    let uids: Vec<String> = pods.iter().map(uid).collect();
    let renewed = pki.issue(&ns.name, 2);
    let renewed_material = material(&renewed);
    assert_ne!(renewed_material.fingerprint, material(&first).fingerprint);
    apply_secret(&ns, &renewed).await;
    let verifier =
        ClientTls::new(&renewed_material, None, &format!("{NAME}.{}.svc", ns.name)).unwrap();
    let began = std::time::Instant::now();
    for pod in &pods {
        let ip = pod_ip(pod);
        wait_for(
            Duration::from_secs(60),
            "the renewed certificate served",
            || async {
                let dialed = verifier
                    .dial(&ip, 6379, Duration::from_secs(2))
                    .await
                    .map_err(|e| e.to_string())?;
                if dialed.served == renewed_material.fingerprint {
                    Ok(())
                } else {
                    Err(format!("{} serves {}", pod.name_any(), dialed.served))
                }
            },
        )
        .await;
    }
    eprintln!(
        "renewed certificate served by every pod {:?} after the Secret's update",
        began.elapsed()
    );
    assert!(event_count_once(&ns, NAME, "CertificateReloaded", 1).await >= 1);
    let after = e2e::pods(&ns, NAME).await;
    assert_eq!(
        after.iter().map(uid).collect::<Vec<_>>(),
        uids,
        "pods were replaced"
    );
    assert_eq!(restart_counts(&after), vec![0, 0], "containers restarted");
    assert!(
        history.restarts().await.values().all(|n| *n == 0),
        "a pod was recreated: {:?}",
        history.restarts().await
    );
    // Replication still runs, over the renewed certificate for new connections.
    let info = tls_cli(&pki, &pod_ip(replica), true, &["INFO", "replication"])
        .await
        .unwrap();
    assert!(info.contains("master_link_status:up"), "{info}");
    let ri = ns.api::<RedisInstance>().get(NAME).await.unwrap();
    assert_eq!(ri.status.unwrap().restarts, 0);

    // Turning TLS off in place would leave new plain pods unable to replicate from TLS ones:
    // the API server refuses it while the instance has two pods.
    let mut plain = changed.clone();
    plain.spec.tls = None;
    let refused = apply_instance(&ns, &plain).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("spec.tls cannot be added or removed"),
        "{refused}"
    );
}
