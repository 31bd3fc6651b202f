//! Commands a bench script sends a running writer or poller: stdin lines and SIGUSR1.
//!
//! `mark <text>` records a mark (`mark rollout-3 start` ... `mark rollout-3 end` frames an
//! event), `stop` ends the run early; SIGUSR1 records the mark `signal-<n>`. End of input
//! changes nothing: the run lasts its duration.

use std::io::BufRead;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// One command for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Mark(String),
    Stop,
}

/// Parses one input line; anything else is reported on stderr and ignored.
pub fn parse(line: &str) -> Option<Control> {
    let line = line.trim();
    if line == "stop" {
        return Some(Control::Stop);
    }
    match line.strip_prefix("mark ").map(str::trim) {
        Some(text) if !text.is_empty() => Some(Control::Mark(text.to_owned())),
        _ => None,
    }
}

/// Starts reading stdin and SIGUSR1; commands arrive on the returned channel.
pub fn listen() -> mpsc::UnboundedReceiver<Control> {
    let (tx, rx) = mpsc::unbounded_channel();
    let from_stdin = tx.clone();
    // A plain thread: blocking reads need no tokio feature, and it dies with the process.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            match parse(&line) {
                Some(control) => {
                    if from_stdin.send(control).is_err() {
                        return;
                    }
                }
                None if line.trim().is_empty() => {}
                None => {
                    eprintln!("ledger: ignoring input line {line:?} (want `mark <text>` or `stop`)")
                }
            }
        }
    });
    tokio::spawn(async move {
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
            return;
        };
        let mut n = 0u32;
        while usr1.recv().await.is_some() {
            n += 1;
            if tx.send(Control::Mark(format!("signal-{n}"))).is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_marks_or_a_stop() {
        assert_eq!(
            parse("mark rollout-3 start\n"),
            Some(Control::Mark("rollout-3 start".into()))
        );
        assert_eq!(parse(" stop "), Some(Control::Stop));
        assert_eq!(parse("mark "), None);
        assert_eq!(parse("rollout-3 start"), None);
    }
}
