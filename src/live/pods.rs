//! Applies live directives to every pod: one `CONFIG SET` per pod carrying all of them (Redis 7
//! applies those all or nothing), checked with `CONFIG GET`, and undone on the pods that took
//! it when a later pod refuses, so a refused change leaves every pod as it was.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::normalize::same;
use crate::auth::Credentials;
use crate::config::render::REDIS_PORT;
use crate::limiter::{Limiter, NotLeader};

/// Why a live apply did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pod has no IP yet.
    #[error("pod {pod} has no IP address yet")]
    NoAddress {
        /// The pod.
        pod: String,
    },
    /// The pod's Redis did not answer.
    #[error("cannot talk to Redis in pod {pod}: {message}")]
    Unreachable {
        /// The pod.
        pod: String,
        /// What the client said.
        message: String,
    },
    /// Redis answered but refused the user name and password.
    #[error("Redis in pod {pod} refused the operator's login")]
    LoginRefused {
        /// The pod.
        pod: String,
    },
    /// Redis refused the change; the pods that took it were set back.
    #[error("pod {pod} refused CONFIG SET of {directives}: {message}{}", undone(.rolled_back))]
    Refused {
        /// The pod.
        pod: String,
        /// The directives in the refused call, comma separated.
        directives: String,
        /// Redis's reason (it names the directive it failed on).
        message: String,
        /// Pods that had taken the change and were set back.
        rolled_back: Vec<String>,
    },
    /// This process does not surely hold the leader Lease, so it sets nothing: a `CONFIG SET`
    /// is a write like any API write, fenced the same way.
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    /// Redis took the change but reads back something else.
    #[error(
        "pod {pod}: after CONFIG SET, CONFIG GET {directive} answers {got:?} instead of {wanted:?}"
    )]
    Unverified {
        /// The pod.
        pod: String,
        /// The directive.
        directive: String,
        /// Value asked for.
        wanted: String,
        /// Value read back.
        got: String,
    },
}

fn undone(pods: &[String]) -> String {
    match pods {
        [] => String::new(),
        pods => format!("; set back on {}, which had taken it", pods.join(", ")),
    }
}

impl Error {
    /// Whether Redis itself said no (as opposed to a pod that could not be reached).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Refused { .. } | Error::Unverified { .. })
    }

    /// The pod whose Redis did not answer or refused the operator's login; `None` for a pod
    /// not started yet (no IP) and for what Redis answered.
    pub fn unanswered_pod(&self) -> Option<&str> {
        match self {
            Error::Unreachable { pod, .. } | Error::LoginRefused { pod } => Some(pod),
            _ => None,
        }
    }
}

/// Whether the pod's Redis is still loading its dataset (`INFO persistence` says `loading:1`).
/// Such a server answers commands with `LOADING` and stays unready, which is progress, not a
/// config that never serves. Asked only of a pod at its readiness deadline, within 1 s.
pub async fn loading(pod: &PodAddress, login: Option<&Credentials>) -> Result<bool, Error> {
    let quick = Duration::from_secs(1);
    let mut conn = connect_within(pod, login, quick, quick).await?;
    let text: String = redis::cmd("INFO")
        .arg("persistence")
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::Unreachable {
            pod: pod.pod.clone(),
            message: e.to_string(),
        })?;
    Ok(reports_loading(&text))
}

fn reports_loading(info: &str) -> bool {
    info.lines().any(|line| line.trim_end() == "loading:1")
}

/// A pod to apply to.
#[derive(Debug, Clone)]
pub struct PodAddress {
    /// Pod name.
    pub pod: String,
    /// Pod IP, if assigned.
    pub ip: Option<String>,
    /// Under `spec.tls`, how to reach it: verified TLS, never plain TCP.
    pub tls: Option<std::sync::Arc<crate::tls::client::ClientTls>>,
}

/// What changed on one pod: `(directive, before, after)` as `CONFIG GET` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodChange {
    /// The pod.
    pub pod: String,
    /// Directives whose value changed.
    pub changed: Vec<(String, String, String)>,
}

/// A pod that took the change, with what to restore if a later pod refuses.
struct Taken {
    pod: String,
    conn: MultiplexedConnection,
    before: Vec<(String, String)>,
}

pub(crate) async fn connect(
    pod: &PodAddress,
    login: Option<&Credentials>,
) -> Result<MultiplexedConnection, Error> {
    connect_within(pod, login, Duration::from_secs(3), Duration::from_secs(5)).await
}

/// [`connect`] with the given connect and reply timeouts.
pub(crate) async fn connect_within(
    pod: &PodAddress,
    login: Option<&Credentials>,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<MultiplexedConnection, Error> {
    let unreachable = |e: redis::RedisError| Error::Unreachable {
        pod: pod.pod.clone(),
        message: e.to_string(),
    };
    let ip = pod.ip.clone().ok_or_else(|| Error::NoAddress {
        pod: pod.pod.clone(),
    })?;
    let port = u16::try_from(REDIS_PORT).expect("the Redis port fits");
    let mut settings = RedisConnectionInfo::default();
    if let Some(login) = login {
        settings = settings
            .set_username(&login.user)
            .set_password(&login.password);
    }
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout));
    let refused_or_unreachable = |e: redis::RedisError| match e.kind() {
        redis::ErrorKind::AuthenticationFailed => Error::LoginRefused {
            pod: pod.pod.clone(),
        },
        _ if e.code().is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH") => Error::LoginRefused {
            pod: pod.pod.clone(),
        },
        _ => unreachable(e),
    };
    if let Some(tls) = &pod.tls {
        let dialed =
            tls.dial(&ip, port, connect_timeout)
                .await
                .map_err(|e| Error::Unreachable {
                    pod: pod.pod.clone(),
                    message: e.to_string(),
                })?;
        let (conn, driver) =
            MultiplexedConnection::new_with_config(&settings, dialed.stream, config)
                .await
                .map_err(refused_or_unreachable)?;
        tokio::spawn(driver);
        return Ok(conn);
    }
    let info = ConnectionAddr::Tcp(ip, port)
        .into_connection_info()
        .map_err(unreachable)?
        .set_redis_settings(settings);
    redis::Client::open(info)
        .map_err(unreachable)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(refused_or_unreachable)
}

/// `CONFIG GET` of several directives in one call.
async fn config_get(
    conn: &mut MultiplexedConnection,
    names: &[&String],
) -> redis::RedisResult<BTreeMap<String, String>> {
    let flat: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(names)
        .query_async(conn)
        .await?;
    Ok(flat
        .chunks(2)
        .filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone())))
        .collect())
}

async fn config_set(
    conn: &mut MultiplexedConnection,
    pairs: &[(String, String)],
) -> redis::RedisResult<()> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("SET");
    for (name, value) in pairs {
        cmd.arg(name).arg(value);
    }
    cmd.query_async(conn).await
}

/// One `CONFIG SET`, sent as [`Limiter::write_to_pod`] says.
async fn fenced_config_set(
    gate: &Limiter,
    conn: &mut MultiplexedConnection,
    pairs: &[(String, String)],
) -> Result<redis::RedisResult<()>, NotLeader> {
    gate.write_to_pod(config_set(conn, pairs)).await
}

/// Sets back every pod that took the change; returns their names and any failure to do so.
async fn undo(gate: &Limiter, taken: Vec<Taken>) -> (Vec<String>, Vec<String>) {
    let mut undone = Vec::new();
    let mut failures = Vec::new();
    for mut t in taken.into_iter().rev() {
        match fenced_config_set(gate, &mut t.conn, &t.before).await {
            Ok(Ok(())) => undone.push(t.pod),
            Ok(Err(e)) => failures.push(format!("pod {} could not be set back: {e}", t.pod)),
            Err(e) => failures.push(format!("pod {} was not set back: {e}", t.pod)),
        }
    }
    (undone, failures)
}

/// One pod read before any is written: its connection, the values it runs and the ones to set.
struct Prepared {
    pod: String,
    conn: MultiplexedConnection,
    before: BTreeMap<String, String>,
    pairs: Vec<(String, String)>,
    /// Of `pairs`, the directives whose value is surely another than the one wanted (the
    /// others only a `CONFIG SET` that changes nothing shows equal).
    differs: Vec<String>,
}

/// What one pod runs, as read before anything is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodRead {
    /// The pod.
    pub pod: String,
    /// Directives whose running value is surely not the wanted one.
    pub differs: Vec<String>,
    /// Directives whose running value cannot be compared with the wanted one without setting
    /// it (see [`same`]).
    pub unsure: Vec<String>,
}

/// Every pod reached and read, ready for [`Read::set`].
pub struct Read {
    prepared: Vec<Prepared>,
}

impl Read {
    /// What each pod runs against what is wanted.
    pub fn pods(&self) -> Vec<PodRead> {
        self.prepared
            .iter()
            .map(|p| PodRead {
                pod: p.pod.clone(),
                differs: p.differs.clone(),
                unsure: p
                    .pairs
                    .iter()
                    .map(|(n, _)| n)
                    .filter(|n| !p.differs.contains(n))
                    .cloned()
                    .collect(),
            })
            .collect()
    }

    /// Sets each pod's values it does not run yet, one `CONFIG SET` a pod; on any failure the
    /// pods changed so far (and the one that failed, in case its reply was lost after it
    /// applied) are set back, and the error says which pod, which directives and Redis's
    /// reason.
    pub async fn set(self, gate: &Limiter) -> Result<Vec<PodChange>, Error> {
        let mut taken: Vec<Taken> = Vec::new();
        let mut changes = Vec::new();
        for p in self.prepared {
            let mut change = PodChange {
                pod: p.pod.clone(),
                changed: Vec::new(),
            };
            if p.pairs.is_empty() {
                changes.push(change);
                continue;
            }
            let restore: Vec<(String, String)> = p
                .pairs
                .iter()
                .map(|(n, _)| (n.clone(), p.before.get(n).cloned().unwrap_or_default()))
                .collect();
            taken.push(Taken {
                pod: p.pod.clone(),
                conn: p.conn,
                before: restore,
            });
            let conn = &mut taken.last_mut().expect("just pushed").conn;
            match set_and_verify(gate, conn, &p.pod, &p.pairs, &p.before).await {
                Ok(changed) => {
                    change.changed = changed;
                    changes.push(change);
                }
                Err(mut error) => {
                    let (undone, failures) = undo(gate, taken).await;
                    if let Error::Refused {
                        rolled_back,
                        message,
                        ..
                    } = &mut error
                    {
                        *rolled_back = undone.into_iter().filter(|u| *u != p.pod).collect();
                        for failure in failures {
                            message.push_str("; ");
                            message.push_str(&failure);
                        }
                    }
                    return Err(error);
                }
            }
        }
        Ok(changes)
    }
}

/// Reaches and reads every pod, all at once, so an unreachable pod stops a change before
/// anything is set (and costs its timeouts once, not once per pod).
pub async fn read(
    pods: &[PodAddress],
    want: &BTreeMap<String, String>,
    login: Option<&Credentials>,
) -> Result<Read, Error> {
    read_each(pods, want, login)
        .await
        .map_err(|mut unread| unread.swap_remove(0))
}

/// [`read`], failing with why each pod that failed could not be read, in pod order (never
/// empty), so a check can tell every pod that did not answer.
pub async fn read_each(
    pods: &[PodAddress],
    want: &BTreeMap<String, String>,
    login: Option<&Credentials>,
) -> Result<Read, Vec<Error>> {
    let names: Vec<&String> = want.keys().collect();
    let (prepared, unread): (Vec<_>, Vec<_>) =
        futures::future::join_all(pods.iter().map(|pod| prepare(pod, want, &names, login)))
            .await
            .into_iter()
            .partition(Result::is_ok);
    if unread.is_empty() {
        let prepared = prepared.into_iter().filter_map(Result::ok).collect();
        Ok(Read { prepared })
    } else {
        Err(unread.into_iter().filter_map(Result::err).collect())
    }
}

/// Makes every pod run `want` (live directives by primary name), all or nothing: [`read`],
/// then [`Read::set`].
pub async fn apply(
    pods: &[PodAddress],
    want: &BTreeMap<String, String>,
    login: Option<&Credentials>,
    gate: &Limiter,
) -> Result<Vec<PodChange>, Error> {
    read(pods, want, login).await?.set(gate).await
}

async fn prepare(
    pod: &PodAddress,
    want: &BTreeMap<String, String>,
    names: &[&String],
    login: Option<&Credentials>,
) -> Result<Prepared, Error> {
    let mut conn = connect(pod, login).await?;
    let before = config_get(&mut conn, names)
        .await
        .map_err(|e| Error::Unreachable {
            pod: pod.pod.clone(),
            message: e.to_string(),
        })?;
    let mut pairs = Vec::new();
    let mut differs = Vec::new();
    for (name, value) in want {
        let got = before.get(name).map_or("", String::as_str);
        match same(name, value, got) {
            Some(true) => continue,
            Some(false) => differs.push(name.clone()),
            None => {}
        }
        pairs.push((name.clone(), value.clone()));
    }
    Ok(Prepared {
        pod: pod.pod.clone(),
        conn,
        before,
        pairs,
        differs,
    })
}

/// Redis said no to the change itself (an error reply or a missing permission), as opposed to
/// a pod busy loading, a script running, or a lost connection, which are retried.
fn refused(e: &redis::RedisError) -> bool {
    matches!(e.code(), Some("ERR" | "NOPERM"))
}

/// One `CONFIG SET` of `pairs`, read back; returns what changed.
async fn set_and_verify(
    gate: &Limiter,
    conn: &mut MultiplexedConnection,
    pod: &str,
    pairs: &[(String, String)],
    before: &BTreeMap<String, String>,
) -> Result<Vec<(String, String, String)>, Error> {
    let unreachable = |e: redis::RedisError| Error::Unreachable {
        pod: pod.to_owned(),
        message: e.to_string(),
    };
    if let Err(e) = fenced_config_set(gate, conn, pairs).await? {
        if !refused(&e) {
            return Err(unreachable(e));
        }
        return Err(Error::Refused {
            pod: pod.to_owned(),
            directives: pairs
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            message: e.to_string(),
            rolled_back: Vec::new(),
        });
    }
    let set: Vec<&String> = pairs.iter().map(|(n, _)| n).collect();
    let after = config_get(conn, &set).await.map_err(unreachable)?;
    let mut changed = Vec::new();
    for (name, wanted) in pairs {
        let got = after.get(name).cloned().unwrap_or_default();
        if same(name, wanted, &got) == Some(false) {
            return Err(Error::Unverified {
                pod: pod.to_owned(),
                directive: name.clone(),
                wanted: crate::auth::shown(name, wanted).to_owned(),
                got: crate::auth::shown(name, &got).to_owned(),
            });
        }
        let was = before.get(name).cloned().unwrap_or_default();
        if was != got {
            changed.push((name.clone(), was, got));
        }
    }
    Ok(changed)
}
