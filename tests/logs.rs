//! Per-instance log streams on the local cluster: each instance's `/logs` holds only its own
//! lines (the spec's four messages among them), a follower gets lines written after it asked,
//! `redis-operator logs` interleaves the operator's lines with the pods' own, and a deleted
//! instance's buffer is freed.

mod common;
mod e2e;

use std::process::Command;
use std::time::Duration;

use redis_operator::crd::{RedisInstance, RestartStrategy};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use common::{TestNamespace, kubeconfig_path, wait_for};
use e2e::*;

const SPEC_MESSAGES: [&str; 4] = [
    "ConfigMap configuration changed, updating",
    "Config hash comparison",
    "ConfigMap was updated or StatefulSet needs restart",
    "StatefulSet not found or needs recreation, creating new one",
];

fn instance(name: &str, file: &str, strategy: RestartStrategy) -> RedisInstance {
    let mut instance = example(file);
    instance.metadata.name = Some(name.into());
    instance.spec.restart_strategy = strategy;
    instance
}

async fn buffered(operator: &Operator, ns: &TestNamespace, name: &str) -> Vec<Value> {
    operator
        .debug_get(&format!("/logs/{}/{name}", ns.name))
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Follows `/logs/{ns}/{name}`; each line arrives on the channel, which closes at the end of
/// the stream.
async fn follow(addr: &str, ns: &str, name: &str) -> mpsc::UnboundedReceiver<Value> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /logs/{ns}/{name}?follow=true HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut lines = BufReader::new(stream).lines();
    // The response head ends with an empty line.
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.is_empty() {
            break;
        }
    }
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(value) = serde_json::from_str(&line)
                && tx.send(value).is_err()
            {
                return;
            }
        }
    });
    rx
}

/// `redis-operator logs NS/NAME -f`, its stdout read line by line; killed on drop.
struct StoryFollower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl StoryFollower {
    fn start(ns: &str, name: &str, addr: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_redis-operator"))
            .args(["logs", &format!("{ns}/{name}"), "-f", "--addr", addr])
            .args(["--kubeconfig", &kubeconfig_path().to_string_lossy()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line from `[source, text]` stamped after `after`.
    async fn wait_for_line(&mut self, wanted: &[&str; 2], after: k8s_openapi::jiff::Timestamp) {
        let [source, text] = *wanted;
        wait_for(
            Duration::from_secs(60),
            &format!("logs -f to print {source}: {text}"),
            || {
                self.seen.extend(self.lines.try_iter());
                let found = self.seen.iter().any(|line| {
                    let mut words = line.split_whitespace();
                    let at = words
                        .next()
                        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
                    at.is_some_and(|at| at > after)
                        && words.next() == Some(source)
                        && line.contains(text)
                });
                let seen = self.seen.len();
                std::future::ready(if found {
                    Ok(())
                } else {
                    let tail = &self.seen[self.seen.len().saturating_sub(8)..];
                    Err(format!("{seen} lines so far, the last: {tail:#?}"))
                })
            },
        )
        .await;
    }
}

impl Drop for StoryFollower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn messages(lines: &[Value]) -> Vec<&str> {
    lines.iter().filter_map(|l| l["message"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_instance_has_its_own_log_stream_that_follows_and_ends_with_it() {
    let client = common::client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "logs").await;
    let operator = Operator::start(&ns.name);
    let (a, b) = ("redis-a", "redis-b");
    for (name, strategy) in [
        (a, RestartStrategy::RollingUpdate),
        (b, RestartStrategy::Recreate),
    ] {
        let created = instance(name, "redis-example.yaml", strategy);
        apply_instance(&ns, &created).await.unwrap();
    }
    wait_ready(&ns, a, None, Duration::from_secs(180)).await;
    wait_ready(&ns, b, None, Duration::from_secs(180)).await;

    let addr = operator.debug_addr();
    let mut followed = follow(&addr, &ns.name, a).await;
    let asked_at = k8s_openapi::jiff::Timestamp::now();
    let mut story_followed = StoryFollower::start(&ns.name, a, &addr);
    // It has connected once it prints the instance's earlier lines.
    story_followed
        .wait_for_line(
            &["operator", SPEC_MESSAGES[3]],
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        )
        .await;
    // Both change at once.
    for (name, strategy) in [
        (a, RestartStrategy::RollingUpdate),
        (b, RestartStrategy::Recreate),
    ] {
        let changed = instance(name, "redis-example-updated.yaml", strategy);
        apply_instance(&ns, &changed).await.unwrap();
    }
    wait_restarts(&ns, a, 1).await;
    wait_restarts(&ns, b, 1).await;
    for name in [a, b] {
        wait_for(
            Duration::from_secs(30),
            "the config change's Events",
            || async {
                let told = [
                    event_count(&ns, name, "ConfigUpdated").await,
                    event_count(&ns, name, "RestartStarted").await,
                    event_count(&ns, name, "RestartCompleted").await,
                ];
                if told == [1, 1, 1] {
                    Ok(())
                } else {
                    Err(format!(
                        "{told:?} of {:?}",
                        instance_events(&ns, name).await
                    ))
                }
            },
        )
        .await;
    }

    for name in [a, b] {
        let lines = buffered(&operator, &ns, name).await;
        for line in &lines {
            assert_eq!(line["instance"], name, "{name}'s stream holds {line}");
            assert_eq!(line["namespace"], ns.name.as_str(), "{line}");
        }
        let said = messages(&lines);
        for message in SPEC_MESSAGES {
            assert!(
                said.contains(&message),
                "{name}'s stream lacks {message:?}: {said:?}"
            );
        }
    }

    // The follower got the restart's lines, written after it asked.
    let restart_line = wait_for(
        Duration::from_secs(30),
        "the follower to get the restart line",
        || {
            let mut seen = None;
            while let Ok(line) = followed.try_recv() {
                if line["message"] == SPEC_MESSAGES[2] {
                    seen = Some(line);
                }
            }
            std::future::ready(seen.ok_or_else(|| "not yet".to_owned()))
        },
    )
    .await;
    let written_at: k8s_openapi::jiff::Timestamp =
        restart_line["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(written_at > asked_at, "{restart_line}");
    assert_eq!(restart_line["instance"], a);

    // Followed, the story goes on across the restart: the operator's restart line, and the
    // replacement pod's start-up, opened again under the same pod name.
    let pod = format!("{a}-0");
    story_followed
        .wait_for_line(&["operator", SPEC_MESSAGES[2]], asked_at)
        .await;
    story_followed
        .wait_for_line(&[pod.as_str(), "Ready to accept connections"], asked_at)
        .await;
    drop(story_followed);

    // One instance's story: the operator's lines and the pod's own, each tagged.
    let out = Command::new(env!("CARGO_BIN_EXE_redis-operator"))
        .args([
            "logs",
            &format!("{}/{a}", ns.name),
            "--addr",
            &addr,
            "--since",
            "1h",
        ])
        .args(["--kubeconfig", &kubeconfig_path().to_string_lossy()])
        .output()
        .unwrap();
    let story = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tagged = |source: &str, text: &str| {
        story
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(source) && l.contains(text))
    };
    assert!(tagged("operator", SPEC_MESSAGES[2]), "{story}");
    assert!(
        tagged(&format!("{a}-0"), "Ready to accept connections"),
        "{story}"
    );
    assert!(!story.contains(b), "{story}");

    // At rest, nothing more is logged about an instance.
    let at_rest = buffered(&operator, &ns, b).await.len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(buffered(&operator, &ns, b).await.len(), at_rest);

    // Deleted: the buffer is freed and the follower's stream ends.
    ns.api::<RedisInstance>()
        .delete(a, &Default::default())
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "a's log buffer to be freed",
        || async {
            let body = operator.debug_get(&format!("/logs/{}/{a}", ns.name)).await;
            if body.starts_with("no RedisInstance") {
                Ok(())
            } else {
                Err(format!("{} lines still served", body.lines().count()))
            }
        },
    )
    .await;
    wait_for(
        Duration::from_secs(10),
        "the follower's stream to end",
        || {
            let ended = loop {
                match followed.try_recv() {
                    Ok(_) => continue,
                    Err(mpsc::error::TryRecvError::Empty) => break false,
                    Err(mpsc::error::TryRecvError::Disconnected) => break true,
                }
            };
            std::future::ready(if ended {
                Ok(())
            } else {
                Err("open".to_owned())
            })
        },
    )
    .await;
    assert!(
        !buffered(&operator, &ns, b).await.is_empty(),
        "b keeps its lines"
    );
}
