//! Host-side helpers: running `ip`/`nsenter`, finding executables, and identifying processes.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

/// A host tool failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program could not be started at all (usually: not installed).
    #[error("failed to run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Runs a program to completion and returns its stdout; stderr goes into the error.
pub async fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| Error::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Failed {
            command: std::iter::once(program)
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" "),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Resolves a command name on `path` (a `PATH` value) the way `execvp` would; names with a
/// slash are taken as they are.
pub fn find_executable(name: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|p| is_executable(p))
}

/// A process's start time in clock ticks since boot, field 22 of `/proc/<pid>/stat`. Together
/// with the pid it identifies a process across pid reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses; fields after it don't.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_time_despite_odd_command_names() {
        let stat = "4242 (redis (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 4 0 987654 1000 200";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn finds_executables_on_the_path() {
        assert_eq!(
            find_executable("sh", "/nonexistent:/bin"),
            Some("/bin/sh".into())
        );
        assert_eq!(find_executable("sh", "/nonexistent"), None);
        assert_eq!(find_executable("/bin/sh", ""), Some("/bin/sh".into()));
    }
}
