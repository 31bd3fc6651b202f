//! `redis-operator logs`: one instance's story in one place. The operator's lines about it (from
//! its `/logs` endpoint) and its Redis pods' own output (through the `pods/log` API),
//! interleaved by time, each line tagged with where it came from.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, LogParams};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::resources::INSTANCE_LABEL;

/// Failures of `redis-operator logs`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operator's HTTP server did not answer.
    #[error(
        "cannot reach the operator at {addr} ({source}); in a cluster, run \
         `kubectl -n redis-operator port-forward deploy/redis-operator 8081` and pass --addr 127.0.0.1:8081"
    )]
    Connect {
        /// Where.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The operator answered with an error (404: it knows no such instance).
    #[error("the operator answered {status}: {body}")]
    Refused {
        /// The status line.
        status: String,
        /// What it said.
        body: String,
    },
    /// Reading the operator's answer failed.
    #[error("reading the operator's log stream: {0}")]
    Read(#[source] std::io::Error),
    /// No Kubernetes client for the pods' logs.
    #[error("cannot load a Kubernetes client config for the pods' logs: {0}")]
    Config(String),
    /// Listing the instance's pods failed.
    #[error("listing the pods of {0}: {1}")]
    Pods(String, #[source] kube::Error),
}

/// What to print.
#[derive(Debug, Clone)]
pub struct LogsRequest {
    /// Namespace of the RedisInstance.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Keep printing new lines.
    pub follow: bool,
    /// Only lines of this recent past.
    pub since: Option<Duration>,
    /// The operator's HTTP address.
    pub addr: String,
    /// Also read the pods' logs (needs API access).
    pub pods: bool,
    /// Kubeconfig for the pods' logs.
    pub kubeconfig: Option<PathBuf>,
}

/// One line, from the operator or a pod.
#[derive(Debug, Clone, PartialEq)]
struct Tagged {
    at: Timestamp,
    source: String,
    text: String,
}

/// Prints the instance's lines to stdout: sorted by time, or as they come with `follow`.
pub async fn print(request: LogsRequest) -> Result<(), Error> {
    let (sink, mut lines) = mpsc::channel::<Tagged>(1024);
    let operator = tokio::spawn(operator_lines(request.clone(), sink.clone()));
    if request.pods {
        let client = client(request.kubeconfig.as_ref()).await?;
        let pods: Api<Pod> = Api::namespaced(client, &request.namespace);
        let mut followed = HashSet::new();
        follow_new_pods(&pods, &request, &sink, &mut followed).await?;
        if request.follow {
            // Pods come and go (a Recreate, a scale-up): look for new names now and then.
            let (pods, request, sink) = (pods.clone(), request.clone(), sink.clone());
            tokio::spawn(async move {
                while !sink.is_closed() {
                    tokio::time::sleep(POD_LIST_INTERVAL).await;
                    // A failed list is tried again at the next interval.
                    let _ = follow_new_pods(&pods, &request, &sink, &mut followed).await;
                }
            });
        }
    }
    drop(sink);
    if request.follow {
        // Ends when the operator's stream ends (the instance was deleted, or it stopped).
        let mut operator = operator;
        loop {
            tokio::select! {
                line = lines.recv() => match line {
                    Some(line) => write_line(&line),
                    None => break,
                },
                done = &mut operator => {
                    done.unwrap_or(Ok(()))?;
                    while let Ok(line) = lines.try_recv() {
                        write_line(&line);
                    }
                    break;
                }
            }
        }
        return Ok(());
    }
    let mut all = Vec::new();
    while let Some(line) = lines.recv().await {
        all.push(line);
    }
    operator.await.unwrap_or(Ok(()))?;
    all.sort_by_key(|l| l.at);
    for line in &all {
        write_line(line);
    }
    Ok(())
}

fn write_line(line: &Tagged) {
    use std::io::Write;
    // A closed stdout (piped into `head`) ends the output; nothing to report.
    let _ = writeln!(
        std::io::stdout().lock(),
        "{} {:<24} {}",
        line.at,
        line.source,
        line.text
    );
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<Client, Error> {
    let config = crate::run::client_config(kubeconfig)
        .await
        .map_err(Error::Config)?;
    Client::try_from(config).map_err(|e| Error::Config(e.to_string()))
}

/// How often `-f` looks for pods it does not follow yet.
const POD_LIST_INTERVAL: Duration = Duration::from_secs(2);

/// Starts reading the logs of the instance's pods (by uid) not in `followed` yet.
async fn follow_new_pods(
    pods: &Api<Pod>,
    request: &LogsRequest,
    sink: &mpsc::Sender<Tagged>,
    followed: &mut HashSet<String>,
) -> Result<(), Error> {
    let selector = format!("{INSTANCE_LABEL}={}", request.name);
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::Pods(format!("{}/{}", request.namespace, request.name), e))?;
    for pod in listed.items {
        let uid = pod.uid().unwrap_or_default();
        if followed.insert(uid.clone()) {
            tokio::spawn(pod_lines(
                pods.clone(),
                pod.name_any(),
                uid,
                request.clone(),
                sink.clone(),
            ));
        }
    }
    Ok(())
}

/// Reads `GET /logs/{namespace}/{name}` (HTTP/1.0: the body ends when the connection closes).
async fn operator_lines(request: LogsRequest, sink: mpsc::Sender<Tagged>) -> Result<(), Error> {
    let addr = request.addr.clone();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|source| Error::Connect {
            addr: addr.clone(),
            source,
        })?;
    let mut query = format!("follow={}", request.follow);
    if let Some(since) = request.since {
        query.push_str(&format!("&since_seconds={}", since.as_secs()));
    }
    let (read, mut write) = stream.into_split();
    let head = format!(
        "GET /logs/{}/{}?{query} HTTP/1.0\r\nHost: {addr}\r\n\r\n",
        request.namespace, request.name
    );
    write
        .write_all(head.as_bytes())
        .await
        .map_err(Error::Read)?;
    let mut reader = BufReader::new(read);
    let mut status = String::new();
    reader.read_line(&mut status).await.map_err(Error::Read)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await.map_err(Error::Read)? == 0 || header == "\r\n" {
            break;
        }
    }
    if !status.contains(" 200 ") {
        let mut body = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut body).await;
        return Err(Error::Refused {
            status: status.trim().to_owned(),
            body: body.trim().to_owned(),
        });
    }
    let mut lines = reader.lines();
    while let Some(line) = lines.next_line().await.map_err(Error::Read)? {
        if let Some(tagged) = operator_line(&line)
            && sink.send(tagged).await.is_err()
        {
            break;
        }
    }
    Ok(())
}

/// An operator JSON line as `LEVEL message key=value`, without the fields every line shares.
fn operator_line(line: &str) -> Option<Tagged> {
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(line) else {
        return None;
    };
    let at = fields
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(Timestamp::now);
    for shared in ["namespace", "instance", "target", "timestamp"] {
        fields.remove(shared);
    }
    let text = crate::telemetry::text_of(&fields);
    Some(Tagged {
        at,
        source: "operator".into(),
        text: text.trim_start().to_owned(),
    })
}

/// One pod's output (one pod object, by uid), with the API's timestamps. While following, the
/// log is opened again when its container ends and restarts in the same pod; once the name
/// belongs to another pod (a restart's replacement), that pod's own reader takes over.
async fn pod_lines(
    api: Api<Pod>,
    pod: String,
    uid: String,
    request: LogsRequest,
    sink: mpsc::Sender<Tagged>,
) {
    let mut since_time = None;
    loop {
        let params = LogParams {
            container: Some("redis".into()),
            follow: request.follow,
            timestamps: true,
            since_seconds: since_time
                .is_none()
                .then(|| request.since.map(|s| s.as_secs() as i64))
                .flatten(),
            since_time,
            ..LogParams::default()
        };
        if let Ok(stream) = api.log_stream(&pod, &params).await {
            let mut lines = stream.lines();
            while let Some(Ok(line)) = lines.next().await {
                let tagged = pod_line(&pod, &line);
                if since_time.is_some_and(|t| tagged.at <= t) {
                    continue;
                }
                since_time = Some(tagged.at);
                if sink.send(tagged).await.is_err() {
                    return;
                }
            }
        }
        if !request.follow || sink.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let current = api.get_opt(&pod).await.ok().flatten();
        if current.and_then(|p| p.uid()).as_deref() != Some(uid.as_str()) {
            return;
        }
    }
}

/// `TIMESTAMP text`, as the API gives it with `timestamps=true`.
fn pod_line(pod: &str, line: &str) -> Tagged {
    let (at, text) = match line.split_once(' ') {
        Some((time, text)) => match time.parse::<Timestamp>() {
            Ok(at) => (at, text),
            Err(_) => (Timestamp::now(), line),
        },
        None => (Timestamp::now(), line),
    };
    Tagged {
        at,
        source: pod.to_owned(),
        text: text.to_owned(),
    }
}

/// `NAMESPACE/NAME` into its parts.
pub fn parse_target(target: &str) -> Result<(String, String), String> {
    match target.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {target:?}")),
    }
}

/// `30s`, `5m`, `2h`, `1d`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 30s, 5m or 2h, got {text:?}"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}; use s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_lines_drop_the_shared_fields() {
        let line = r#"{"timestamp":"2026-11-30T08:00:00Z","level":"INFO","target":"redis_operator","namespace":"ns","instance":"a","message":"Config hash comparison","old_hash":"1","new_hash":"2"}"#;
        let tagged = operator_line(line).unwrap();
        assert_eq!(tagged.source, "operator");
        assert_eq!(
            tagged.at,
            "2026-11-30T08:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            tagged.text,
            "INFO Config hash comparison new_hash=2 old_hash=1"
        );
        assert!(operator_line("not json").is_none());
    }

    #[test]
    fn pod_lines_keep_the_api_timestamp() {
        let tagged = pod_line(
            "r-0",
            "2026-11-30T08:00:01.5Z 1:M Ready to accept connections",
        );
        assert_eq!(tagged.text, "1:M Ready to accept connections");
        assert_eq!(tagged.source, "r-0");
        assert_eq!(
            tagged.at,
            "2026-11-30T08:00:01.5Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn targets_and_durations_parse() {
        assert_eq!(parse_target("ns/r"), Ok(("ns".into(), "r".into())));
        assert!(parse_target("r").is_err());
        assert!(parse_target("ns/r/x").is_err());
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }
}
