//! Reads every acknowledged key of a ledger back and reports the ones that are gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::Value;
use serde::Serialize;

use crate::conn::{self, Failure};

/// Keys asked for per round trip.
const BATCH: usize = 500;
/// Lost keys listed by name in the report (all are counted).
const LISTED: usize = 10;
/// Acknowledgement times of lost keys given in the report, so a script can tell which event
/// lost them; past this many only the count is exact.
const TIMES_LISTED: usize = 10_000;

/// Failures that stop a verification.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ledger file could not be read.
    #[error("failed to read the ledger {0}: {1}")]
    Ledger(PathBuf, #[source] std::io::Error),
    /// A ledger line is not `<key>\t<ack ms>`.
    #[error("malformed ledger line {line} in {path}")]
    Malformed { path: PathBuf, line: usize },
    /// Redis did not answer.
    #[error("failed to read keys from {addr}: {failure}")]
    Redis { addr: String, failure: &'static str },
}

/// The JSON the `verify` command prints.
#[derive(Debug, Serialize, PartialEq)]
pub struct VerifyReport {
    pub addr: String,
    pub checked: usize,
    pub lost: usize,
    /// Keys present with another value than the writer wrote (the key itself).
    pub changed: usize,
    pub lost_first: Vec<String>,
    /// When each lost key was acknowledged, in ms from the writer's start.
    pub lost_acked_at_ms: Vec<f64>,
}

/// One acknowledged key and when.
struct Entry {
    key: String,
    acked_at_ms: f64,
}

fn read_ledger(path: &Path) -> Result<Vec<Entry>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Ledger(path.to_path_buf(), e))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| {
            let malformed = || Error::Malformed {
                path: path.to_path_buf(),
                line: n + 1,
            };
            let (key, at) = line.split_once('\t').ok_or_else(malformed)?;
            Ok(Entry {
                key: key.to_owned(),
                acked_at_ms: at.parse().map_err(|_| malformed())?,
            })
        })
        .collect()
}

/// Reads back every key of `ledger` from `addr`.
pub async fn run(ledger: &Path, addr: &str, timeout: Duration) -> Result<VerifyReport, Error> {
    let entries = read_ledger(ledger)?;
    let redis_error = |failure: Failure| Error::Redis {
        addr: addr.to_owned(),
        failure: failure.label(),
    };
    let mut connection = conn::connect(addr, timeout).await.map_err(redis_error)?;
    let mut report = VerifyReport {
        addr: addr.to_owned(),
        checked: 0,
        lost: 0,
        changed: 0,
        lost_first: Vec::new(),
        lost_acked_at_ms: Vec::new(),
    };
    for batch in entries.chunks(BATCH) {
        let mut mget = redis::cmd("MGET");
        for entry in batch {
            mget.arg(&entry.key);
        }
        let values: Vec<Value> = conn::query(&mut connection, &mget, timeout)
            .await
            .map_err(redis_error)?;
        for (entry, value) in batch.iter().zip(values) {
            report.checked += 1;
            match value {
                Value::Nil => {
                    report.lost += 1;
                    if report.lost_first.len() < LISTED {
                        report.lost_first.push(entry.key.clone());
                    }
                    if report.lost_acked_at_ms.len() < TIMES_LISTED {
                        report.lost_acked_at_ms.push(entry.acked_at_ms);
                    }
                }
                Value::BulkString(bytes) if bytes == entry.key.as_bytes() => {}
                _ => report.changed += 1,
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_lines_are_key_tab_time() {
        let dir = std::env::temp_dir().join(format!("ledger-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "a:0:1\t12.5\na:1:1\t13.0\n").unwrap();
        let entries = read_ledger(&good).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (entries[1].key.as_str(), entries[1].acked_at_ms),
            ("a:1:1", 13.0)
        );
        let bad = dir.join("bad");
        std::fs::write(&bad, "a:0:1\t12.5\nno-tab\n").unwrap();
        let error = read_ledger(&bad).err().unwrap().to_string();
        assert!(error.contains("line 2"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
