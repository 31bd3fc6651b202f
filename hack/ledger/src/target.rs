//! Where to connect: a fixed `host:port`, or the output of a shell command run again on reconnect.

use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::Mutex;

/// How long a target command may run before its answer is treated as a failure.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Failures to find an address.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command could not be started or did not finish in time.
    #[error("failed to run the target command: {0}")]
    Run(String),
    /// The command exited with an error or printed no address.
    #[error("the target command gave no address: {0}")]
    NoAddress(String),
}

/// An address source shared by every connection of a run.
///
/// A command is run at most once per `refresh`, however many connections reconnect at once:
/// during an outage they all do, and the command is typically a `kubectl` call.
pub struct Target {
    fixed: Option<String>,
    command: Option<String>,
    refresh: Duration,
    cached: Mutex<Option<(Instant, String)>>,
}

impl Target {
    /// A target that is always `addr`.
    pub fn fixed(addr: impl Into<String>) -> Self {
        Self {
            fixed: Some(addr.into()),
            command: None,
            refresh: Duration::ZERO,
            cached: Mutex::new(None),
        }
    }

    /// A target found by running `command` (through `sh -c`); its first line is `host:port`.
    /// `fallback`, when given, is used while the command fails.
    pub fn command(
        command: impl Into<String>,
        fallback: Option<String>,
        refresh: Duration,
    ) -> Self {
        Self {
            fixed: fallback,
            command: Some(command.into()),
            refresh,
            cached: Mutex::new(None),
        }
    }

    /// The address to connect to now.
    pub async fn resolve(&self) -> Result<String, Error> {
        let Some(command) = &self.command else {
            return Ok(self
                .fixed
                .clone()
                .expect("a target has an address or a command"));
        };
        let mut cached = self.cached.lock().await;
        if let Some((at, addr)) = cached.as_ref()
            && at.elapsed() < self.refresh
        {
            return Ok(addr.clone());
        }
        match run_for_lines(command).await.and_then(|lines| {
            lines
                .into_iter()
                .next()
                .ok_or_else(|| Error::NoAddress("empty output".into()))
        }) {
            Ok(addr) => {
                *cached = Some((Instant::now(), addr.clone()));
                Ok(addr)
            }
            Err(e) => self.fixed.clone().ok_or(e),
        }
    }
}

/// Runs `command` with `sh -c` and returns its non-empty output lines, trimmed.
pub async fn run_for_lines(command: &str) -> Result<Vec<String>, Error> {
    let output = tokio::time::timeout(
        COMMAND_TIMEOUT,
        Command::new("sh")
            .args(["-c", command])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| Error::Run(format!("no answer within {COMMAND_TIMEOUT:?}")))?
    .map_err(|e| Error::Run(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::NoAddress(format!(
            "{}: {}",
            output.status,
            stderr.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_is_asked_again_only_after_the_refresh_interval() {
        let dir = std::env::temp_dir().join(format!("ledger-target-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("addr");
        std::fs::write(&file, "10.0.0.1:6379\n").unwrap();
        let target = Target::command(
            format!("cat {}", file.display()),
            None,
            Duration::from_millis(200),
        );
        assert_eq!(target.resolve().await.unwrap(), "10.0.0.1:6379");
        std::fs::write(&file, "10.0.0.2:6379\n").unwrap();
        assert_eq!(target.resolve().await.unwrap(), "10.0.0.1:6379", "cached");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(target.resolve().await.unwrap(), "10.0.0.2:6379");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_failing_command_falls_back_or_reports_why() {
        let failing = Target::command("echo nope >&2; exit 3", None, Duration::ZERO);
        let error = failing.resolve().await.unwrap_err().to_string();
        assert!(error.contains("nope"), "{error}");
        let with_fallback = Target::command("exit 1", Some("127.0.0.1:1".into()), Duration::ZERO);
        assert_eq!(with_fallback.resolve().await.unwrap(), "127.0.0.1:1");
    }
}
