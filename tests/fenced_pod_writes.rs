//! Every command the operator sends to change a Redis (`CONFIG SET`, `REPLICAOF`, `FAILOVER`,
//! `ACL SETUSER`, `ACL DELUSER`) is held back by a closed fence, against a real redis-server.
//!
//! A leader that lost its Lease closes its fence; the end-to-end tests show a frozen leader
//! setting no live directive back. Here each of the other commands is sent through the
//! functions the operator uses, first with the fence closed (Redis must be untouched) and then
//! open (Redis must change), so the test fails if a command skips the fence or if the call
//! never reaches Redis at all. Needs `redis-server` and `redis-cli` on PATH.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_operator::auth::acl::AclUser;
use redis_operator::auth::{Access, Credentials};
use redis_operator::leader::Fence;
use redis_operator::limiter::{Limiter, Limits};
use redis_operator::live::pods::PodAddress;

/// A redis-server on its own loopback address (the operator always dials port 6379), killed
/// on drop.
struct Server {
    child: Child,
    ip: String,
    dir: PathBuf,
}

impl Server {
    fn start(last_octet: u8) -> Self {
        let pid = std::process::id();
        let ip = format!(
            "127.{}.{}.{last_octet}",
            100 + (pid >> 8) % 100,
            pid % 250 + 1
        );
        let dir = std::env::temp_dir().join(format!("fenced-pod-writes-{pid}-{last_octet}"));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let child = Command::new("redis-server")
            .args([
                "--bind",
                &ip,
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let server = Self { child, ip, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server answered no PING");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", &self.ip, "-p", "6379"])
            .args(args)
            .output()
            .expect("redis-cli on PATH");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn role(&self) -> String {
        let info = self.cli(&["INFO", "replication"]);
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        match field("role:").as_str() {
            "slave" => format!("replica of {}", field("master_host:")),
            role => role.to_owned(),
        }
    }

    fn pod(&self) -> PodAddress {
        PodAddress {
            pod: "redis-0".into(),
            ip: Some(self.ip.clone()),
            tls: None,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn gates() -> (Limiter, Limiter) {
    let closed = Limiter::new(Limits::default(), Arc::new(Fence::closed()));
    let open = Limiter::new(Limits::default(), Arc::new(Fence::open()));
    (closed, open)
}

/// The call was refused by the fence.
fn held<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) {
    let text = result.expect_err("a closed fence refuses").to_string();
    assert!(text.contains("leader"), "not the fence's refusal: {text}");
}

#[tokio::test]
async fn replication_commands_wait_for_the_fence() {
    let redis = Server::start(1);
    let (closed, open) = gates();
    let pod = redis.pod();
    let access = Access::default();
    assert_eq!(redis.role(), "master");

    held(redis_operator::replication::follow(&pod, "10.1.2.3", &access, &closed).await);
    held(redis_operator::replication::demote(&pod, &access, &closed).await);
    assert_eq!(
        redis.role(),
        "master",
        "a closed fence let REPLICAOF through"
    );

    redis_operator::replication::follow(&pod, "10.1.2.3", &access, &open)
        .await
        .expect("REPLICAOF with the fence open");
    assert_eq!(redis.role(), "replica of 10.1.2.3");

    held(redis_operator::replication::promote(&pod, &access, &closed).await);
    assert_eq!(
        redis.role(),
        "replica of 10.1.2.3",
        "a closed fence let REPLICAOF NO ONE through"
    );
    redis_operator::replication::promote(&pod, &access, &open)
        .await
        .expect("REPLICAOF NO ONE with the fence open");
    assert_eq!(redis.role(), "master");

    // FAILOVER: Redis refuses it here (no replica is connected), which shows it was sent; with
    // the fence closed it must not be, so the refusal is the fence's.
    let timeout = Duration::from_secs(1);
    held(
        redis_operator::replication::failover_to(&pod, "10.1.2.3", timeout, &access, &closed).await,
    );
    let sent = redis_operator::replication::failover_to(&pod, "10.1.2.3", timeout, &access, &open)
        .await
        .expect_err("no replica to fail over to");
    assert!(sent.to_string().contains("FAILOVER"), "{sent}");
    assert!(!sent.to_string().contains("leader"), "{sent}");
}

#[tokio::test]
async fn acl_and_config_commands_wait_for_the_fence() {
    let redis = Server::start(2);
    let (closed, open) = gates();
    let pod = redis.pod();
    let users = [AclUser {
        name: "app".into(),
        enabled: true,
        password_hashes: BTreeSet::new(),
        rules: "+ping".into(),
    }];
    let logins: [Option<Credentials>; 1] = [None];
    redis.cli(&["ACL", "SETUSER", "stale", "on", "nopass"]);
    let users_now = || {
        redis
            .cli(&["ACL", "USERS"])
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(users_now(), ["default", "stale"]);

    // ACL SETUSER is the first command sync sends; ACL DELUSER of the stale user would follow.
    held(redis_operator::auth::pods::sync(&pod, &logins, &users, &closed).await);
    assert_eq!(
        users_now(),
        ["default", "stale"],
        "a closed fence let ACL through"
    );

    // The user the spec names, and `default`, kept; the stale one deleted.
    let mut with_default = users.to_vec();
    with_default.push(AclUser {
        name: "default".into(),
        enabled: true,
        password_hashes: BTreeSet::new(),
        rules: "nopass +@all ~* &*".into(),
    });
    redis_operator::auth::pods::sync(&pod, &logins, &with_default, &open)
        .await
        .expect("ACL SETUSER and DELUSER with the fence open");
    assert_eq!(users_now(), ["app", "default"]);

    let want = BTreeMap::from([("maxmemory".to_owned(), "12345678".to_owned())]);
    let before = redis.cli(&["CONFIG", "GET", "maxmemory"]);
    held(redis_operator::live::pods::apply(std::slice::from_ref(&pod), &want, None, &closed).await);
    assert_eq!(
        redis.cli(&["CONFIG", "GET", "maxmemory"]),
        before,
        "a closed fence let CONFIG SET through"
    );
    redis_operator::live::pods::apply(std::slice::from_ref(&pod), &want, None, &open)
        .await
        .expect("CONFIG SET with the fence open");
    assert_eq!(
        redis.cli(&["CONFIG", "GET", "maxmemory"]),
        "maxmemory\n12345678"
    );
}
