//! Brings a running pod's ACL users in line with the desired ones without restarting it: one
//! `ACL SETUSER` per user (atomic, and clients already logged in as that user stay connected),
//! and `ACL DELUSER` of users no longer declared. `ACL LOAD` is never used: on Redis 7.0 it
//! disconnects every client, replication links included.

use redis::aio::MultiplexedConnection;

use super::Credentials;
use super::acl::AclUser;
use crate::limiter::{Limiter, NotLeader};
use crate::live::pods::{self, PodAddress, connect};

/// Why a pod's users were not brought in line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod could not be reached, or refused every login tried.
    #[error(transparent)]
    Unreachable(#[from] pods::Error),
    /// Redis refused an ACL command.
    #[error("pod {pod}: {command} failed: {message}")]
    Refused {
        /// The pod.
        pod: String,
        /// The command, without its arguments (they hold password hashes).
        command: String,
        /// Redis's reason.
        message: String,
    },
    /// Not surely the leader: nothing is changed.
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
}

/// Connects with the first of `logins` the pod accepts: the operator's own user on a pod that
/// runs the ACL file, or what an older pod still accepts (its `default` password, or none)
/// while it has not been given the operator's user yet.
async fn log_in(
    pod: &PodAddress,
    logins: &[Option<Credentials>],
) -> Result<MultiplexedConnection, pods::Error> {
    let mut last = pods::Error::LoginRefused {
        pod: pod.pod.clone(),
    };
    for login in logins {
        match connect(pod, login.as_ref()).await {
            Ok(conn) => return Ok(conn),
            Err(e @ pods::Error::LoginRefused { .. }) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Sets every user of `users` on the pod and deletes the others. Each command states a user
/// whole, so a repeat after a lost reply is harmless.
pub async fn sync(
    pod: &PodAddress,
    logins: &[Option<Credentials>],
    users: &[AclUser],
    gate: &Limiter,
) -> Result<(), Error> {
    let mut conn = log_in(pod, logins).await?;
    let refused = |command: &str| {
        let pod = pod.pod.clone();
        let command = command.to_owned();
        move |e: redis::RedisError| Error::Refused {
            pod,
            command,
            message: e.to_string(),
        }
    };
    for user in users {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg(&user.name);
        for rule in user.rules_from_scratch() {
            cmd.arg(rule);
        }
        gate.write_to_pod(cmd.query_async::<()>(&mut conn))
            .await?
            .map_err(refused(&format!("ACL SETUSER {}", user.name)))?;
    }
    let present: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut conn)
        .await
        .map_err(refused("ACL USERS"))?;
    for stale in present
        .iter()
        .filter(|name| !users.iter().any(|u| &u.name == *name))
    {
        let mut deluser = redis::cmd("ACL");
        deluser.arg("DELUSER").arg(stale);
        gate.write_to_pod(deluser.query_async::<()>(&mut conn))
            .await?
            .map_err(refused(&format!("ACL DELUSER {stale}")))?;
    }
    Ok(())
}
