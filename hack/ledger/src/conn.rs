//! Connecting to Redis with bounded waits, and naming why a command failed.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};

/// Why a command or a connection attempt failed, as counted in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server is a replica (`-READONLY`).
    ReadOnly,
    /// Nothing listens at the address.
    Refused,
    /// No answer in time.
    Timeout,
    /// The connection closed or broke (EOF, reset).
    Io,
    /// The address could not be found (target command failed).
    NoTarget,
    /// `WAIT` returned fewer replicas than asked for.
    Wait,
    /// Any other error reply (`-LOADING`, `-MASTERDOWN`, ...).
    Other,
}

impl Failure {
    /// The label in reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::ReadOnly => "readonly",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Io => "io",
            Self::NoTarget => "no-target",
            Self::Wait => "wait",
            Self::Other => "other",
        }
    }

    /// Whether the connection is still worth using: a short `WAIT` says nothing bad about it.
    pub fn keeps_connection(self) -> bool {
        self == Self::Wait
    }
}

impl From<&RedisError> for Failure {
    fn from(error: &RedisError) -> Self {
        if error.code() == Some("READONLY") {
            Self::ReadOnly
        } else if error.is_connection_refusal() {
            Self::Refused
        } else if error.is_timeout() {
            Self::Timeout
        } else if error.is_io_error() || error.is_connection_dropped() {
            Self::Io
        } else {
            Self::Other
        }
    }
}

/// Opens a connection to `addr` (`host:port`), giving up after `timeout`. Logs in as `default`
/// with `$REDISCLI_AUTH` when it is set, the variable redis-cli reads, so the password stays
/// off every command line.
pub async fn connect(addr: &str, timeout: Duration) -> Result<MultiplexedConnection, Failure> {
    let url = match std::env::var("REDISCLI_AUTH") {
        Ok(password) if !password.is_empty() => format!("redis://:{password}@{addr}/"),
        _ => format!("redis://{addr}/"),
    };
    let client = Client::open(url).map_err(|e| Failure::from(&e))?;
    // Commands are bounded by the caller's own timeouts (WAIT may block longer than a default).
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None);
    match tokio::time::timeout(
        timeout,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(Failure::from(&e)),
        Err(_) => Err(Failure::Timeout),
    }
}

/// Runs `cmd` on `connection`, giving up after `timeout`.
pub async fn query<T: redis::FromRedisValue>(
    connection: &mut MultiplexedConnection,
    cmd: &redis::Cmd,
    timeout: Duration,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, cmd.query_async::<T>(connection)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failure::from(&e)),
        Err(_) => Err(Failure::Timeout),
    }
}
