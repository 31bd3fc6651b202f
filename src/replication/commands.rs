//! The Redis commands of replication, one pod at a time; every one that changes a role passes
//! the leader fence, like an API write.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};

use super::info::{FailoverState, PodReplication, parse_info};
use crate::auth::Access;
use crate::config::render::REDIS_PORT;
use crate::limiter::{Limiter, NotLeader};
use crate::live::pods::{PodAddress, connect, connect_within};

/// Why a replication command did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod could not be reached.
    #[error(transparent)]
    Unreachable(#[from] crate::live::pods::Error),
    /// Redis answered with an error.
    #[error("pod {pod}: {command} failed: {message}")]
    Refused {
        /// The pod.
        pod: String,
        /// The command.
        command: &'static str,
        /// Redis's reason.
        message: String,
    },
    /// `INFO replication` named no role.
    #[error("pod {pod}: INFO replication names no role")]
    NoRole {
        /// The pod.
        pod: String,
    },
    /// Not surely the leader: no role is changed.
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
}

/// A pod's link state for status: `up`, `down` or `syncing`.
pub type Link = &'static str;

fn refused<'a>(
    pod: &'a PodAddress,
    command: &'static str,
) -> impl Fn(redis::RedisError) -> Error + 'a {
    move |e| Error::Refused {
        pod: pod.pod.clone(),
        command,
        message: e.to_string(),
    }
}

/// `INFO replication` of one pod. A pod on the pod network answers within milliseconds; one
/// whose network is gone would hold a probe for the whole default timeout, which delays a
/// failover by as much.
pub async fn probe(pod: &PodAddress, access: &Access) -> Result<PodReplication, Error> {
    let quick = Duration::from_secs(1);
    let mut conn = connect_within(pod, access.login.as_ref(), quick, quick).await?;
    let text: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .map_err(refused(pod, "INFO replication"))?;
    parse_info(&text).ok_or_else(|| Error::NoRole {
        pod: pod.pod.clone(),
    })
}

async fn fenced(
    gate: &Limiter,
    conn: &mut MultiplexedConnection,
    cmd: &redis::Cmd,
) -> Result<redis::RedisResult<()>, NotLeader> {
    gate.write_to_pod(cmd.query_async(conn)).await
}

/// Whether a command is preceded by telling the pod how to log in to a primary it follows:
/// done on every pod that follows or hands over its role, since a pod restarts without it (it
/// is never in a file).
#[derive(Clone, Copy, PartialEq, Eq)]
enum PrimaryLogin {
    Leave,
    SetFirst,
}

async fn run(
    pod: &PodAddress,
    access: &Access,
    gate: &Limiter,
    name: &'static str,
    cmd: redis::Cmd,
    primary_login: PrimaryLogin,
) -> Result<(), Error> {
    let mut conn = connect(pod, access.login.as_ref()).await?;
    let set_first = primary_login == PrimaryLogin::SetFirst;
    if let Some(replication) = access.replication.as_ref().filter(|_| set_first) {
        let mut login = redis::cmd("CONFIG");
        login
            .arg("SET")
            .arg("masteruser")
            .arg(&replication.user)
            .arg("masterauth")
            .arg(&replication.password);
        fenced(gate, &mut conn, &login)
            .await?
            .map_err(refused(pod, "CONFIG SET masteruser masterauth"))?;
    }
    fenced(gate, &mut conn, &cmd)
        .await?
        .map_err(refused(pod, name))
}

fn port() -> u16 {
    u16::try_from(REDIS_PORT).expect("the Redis port fits")
}

/// `REPLICAOF NO ONE`: the pod becomes the primary, keeping its data and history.
pub async fn promote(pod: &PodAddress, access: &Access, gate: &Limiter) -> Result<(), Error> {
    let mut cmd = redis::cmd("REPLICAOF");
    cmd.arg("NO").arg("ONE");
    run(
        pod,
        access,
        gate,
        "REPLICAOF NO ONE",
        cmd,
        PrimaryLogin::Leave,
    )
    .await
}

/// `REPLICAOF <primary> <port>`: the pod follows the primary at `host`.
pub async fn follow(
    pod: &PodAddress,
    host: &str,
    access: &Access,
    gate: &Limiter,
) -> Result<(), Error> {
    let mut cmd = redis::cmd("REPLICAOF");
    cmd.arg(host).arg(port());
    run(pod, access, gate, "REPLICAOF", cmd, PrimaryLogin::SetFirst).await
}

/// Points a pod back at the boot placeholder: it keeps its data, serves reads only, and takes
/// no writes until given a role again.
pub async fn demote(pod: &PodAddress, access: &Access, gate: &Limiter) -> Result<(), Error> {
    let mut cmd = redis::cmd("REPLICAOF");
    cmd.arg(super::BOOT_PRIMARY_HOST)
        .arg(super::BOOT_PRIMARY_PORT);
    run(pod, access, gate, "REPLICAOF", cmd, PrimaryLogin::Leave).await
}

/// `FAILOVER TO <target> <port> TIMEOUT <ms>` on the primary: it pauses writes until the target
/// has every write, then hands it the primary role and follows it. Never `FORCE`: a target
/// that does not catch up in time leaves the primary as it was. Redis answers at once; the
/// outcome shows in `INFO replication` of both pods.
pub async fn failover_to(
    primary: &PodAddress,
    target_ip: &str,
    timeout: Duration,
    access: &Access,
    gate: &Limiter,
) -> Result<(), Error> {
    let mut cmd = redis::cmd("FAILOVER");
    cmd.arg("TO")
        .arg(target_ip)
        .arg(port())
        .arg("TIMEOUT")
        .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
    // The primary becomes a replica of the target: it logs in there like any replica.
    run(
        primary,
        access,
        gate,
        "FAILOVER",
        cmd,
        PrimaryLogin::SetFirst,
    )
    .await
}

/// How often [`await_handover`] looks: the primary Service's label moves only once it is over.
const HANDOVER_POLL: Duration = Duration::from_millis(10);

/// Waits until the `FAILOVER` sent to `primary` at `sent` is over (done or abandoned), at most
/// until `bound` after `sent`; returns how long after `sent` it was seen over.
///
/// Meanwhile it asks the target to acknowledge its replication offset at every look
/// (`REPLCONF GETACK`, as the replication user, whose rules allow it). The primary keeps writes
/// paused until the target has acknowledged its last byte, and a replica acknowledges on its
/// own once a second, while the primary sends no `GETACK` during the pause: that wait, up to a
/// second, was most of the pause. Asking is harmless: an acknowledgement only reports the
/// offset the replica has processed.
pub async fn await_handover(
    primary: &PodAddress,
    target: &PodAddress,
    access: &Access,
    sent: Instant,
    bound: Duration,
) -> Result<Duration, Error> {
    let mut conn = connect(primary, access.login.as_ref()).await?;
    let kick_login = access.replication.as_ref().or(access.login.as_ref());
    let mut kick = connect(target, kick_login).await.ok();
    // `REPLCONF GETACK` has no reply (the replica answers its primary, on the replication
    // link): the PING after it gives the one reply awaited.
    let mut getack = redis::pipe();
    getack.cmd("REPLCONF").arg("GETACK").arg("*").cmd("PING");
    loop {
        if let Some(link) = kick.as_mut() {
            let answered = link.req_packed_commands(&getack, 0, 1).await;
            if !matches!(answered.as_deref(), Ok([redis::Value::SimpleString(_)])) {
                // Refused (no replication user, say): the replica's own once-a-second ack.
                kick = None;
            }
        }
        let text: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .map_err(refused(primary, "INFO replication"))?;
        let over = parse_info(&text).is_none_or(|p| p.failover == FailoverState::None);
        if over || sent.elapsed() >= bound {
            return Ok(sent.elapsed());
        }
        tokio::time::sleep(HANDOVER_POLL).await;
    }
}
