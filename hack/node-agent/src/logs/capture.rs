//! Copies a container's stdout and stderr, as a runtime's shim does, into the raw log and a
//! timestamped record per line in the run's file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::read::{Stream, format_record};
use super::{ContainerLogs, Registry};

/// Longest record content; a longer line is split into partial records (containerd's default).
pub const MAX_RECORD: usize = 16 * 1024;

/// Cuts a pipe's bytes into records: lines without their newline, or `MAX_RECORD` pieces of a
/// longer line, marked partial.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// The records that `bytes` completes, as (content, partial).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(Vec<u8>, bool)> {
        self.pending.extend_from_slice(bytes);
        let mut records = Vec::new();
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            match rest.iter().position(|b| *b == b'\n') {
                Some(end) if end <= MAX_RECORD => {
                    records.push((rest[..end].to_vec(), false));
                    start += end + 1;
                }
                _ if rest.len() >= MAX_RECORD => {
                    records.push((rest[..MAX_RECORD].to_vec(), true));
                    start += MAX_RECORD;
                }
                _ => break,
            }
        }
        self.pending.drain(..start);
        records
    }

    /// What is left when the pipe closes: a last line without a newline, kept as a partial
    /// record so that the output reproduces the bytes written.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// The open files of one run. The run counts as active (followers wait for more) from
/// [`Sink::open`] until the sink is dropped: when both pipes closed, or the start failed.
#[derive(Debug)]
pub struct Sink {
    raw: File,
    run: File,
    run_path: PathBuf,
    registry: Arc<Registry>,
}

impl Sink {
    /// Opens (appending) the raw log and the file of run `run`, and prunes older runs.
    pub fn open(logs: &ContainerLogs, run: i32, registry: Arc<Registry>) -> io::Result<Self> {
        std::fs::create_dir_all(&logs.runs_dir)?;
        let append = |path| OpenOptions::new().create(true).append(true).open(path);
        let raw = append(&logs.raw)?;
        let run_path = logs.run_file(run);
        let run = append(&run_path)?;
        logs.prune();
        registry.set_active(&run_path, true);
        Ok(Self {
            raw,
            run,
            run_path,
            registry,
        })
    }

    fn write(&mut self, stream: Stream, content: &[u8], partial: bool) -> io::Result<()> {
        let mut raw = content.to_vec();
        if !partial {
            raw.push(b'\n');
        }
        // Plain blocking writes: appends of a line to the page cache, as elsewhere in the agent.
        self.raw.write_all(&raw)?;
        self.run
            .write_all(&format_record(Timestamp::now(), stream, partial, content))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.registry.set_active(&self.run_path, false);
    }
}

/// Copies both pipes into `sink` until both close: the container, and whatever it forked
/// into its process group, have exited. The task ends when everything is written.
pub fn start<O, E>(sink: Sink, stdout: O, stderr: E) -> tokio::task::JoinHandle<()>
where
    O: AsyncRead + Unpin + Send + 'static,
    E: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let sink = Mutex::new(sink);
        tokio::join!(
            pump(stdout, Stream::Stdout, &sink),
            pump(stderr, Stream::Stderr, &sink)
        );
    })
}

async fn pump(mut pipe: impl AsyncRead + Unpin, stream: Stream, sink: &Mutex<Sink>) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0; 8192];
    let mut failed = false;
    loop {
        let records = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => splitter.push(&buf[..n]),
        };
        emit(sink, stream, records, &mut failed);
    }
    let rest = splitter.finish().map(|r| (r, true));
    emit(sink, stream, rest.into_iter().collect(), &mut failed);
}

/// Writes records; a write error is logged once per pipe, and the pipe is still drained so
/// that the container never blocks on a full pipe.
fn emit(sink: &Mutex<Sink>, stream: Stream, records: Vec<(Vec<u8>, bool)>, failed: &mut bool) {
    if records.is_empty() {
        return;
    }
    let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
    for (content, partial) in records {
        if let Err(error) = sink.write(stream, &content, partial)
            && !std::mem::replace(failed, true)
        {
            tracing::warn!(file = %sink.run_path.display(), %error, "failed to write container log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::read::{LogOptions, LogReader};

    #[test]
    fn lines_are_cut_at_newlines_across_chunks() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"one\ntw"), [(b"one".to_vec(), false)]);
        assert_eq!(
            splitter.push(b"o\n\nthr"),
            [(b"two".to_vec(), false), (b"".to_vec(), false)]
        );
        assert_eq!(splitter.finish(), Some(b"thr".to_vec()));
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn a_long_line_becomes_partial_records() {
        let mut splitter = LineSplitter::default();
        let mut line = vec![b'x'; MAX_RECORD * 2 + 5];
        line.push(b'\n');
        let records = splitter.push(&line);
        let shape: Vec<(usize, bool)> = records.iter().map(|(c, p)| (c.len(), *p)).collect();
        assert_eq!(shape, [(MAX_RECORD, true), (MAX_RECORD, true), (5, false)]);
        let exact = [vec![b'y'; MAX_RECORD], vec![b'\n']].concat();
        assert_eq!(splitter.push(&exact), [(vec![b'y'; MAX_RECORD], false)]);
    }

    #[tokio::test]
    async fn both_streams_land_in_the_raw_log_and_the_run_file_until_they_close() {
        let dir = std::env::temp_dir().join(format!("node-agent-capture-{}", std::process::id()));
        let logs = ContainerLogs::new(&dir, "app");
        let registry = Arc::new(Registry::default());
        let sink = Sink::open(&logs, 3, registry.clone()).unwrap();
        let run_file = logs.run_file(3);
        assert!(registry.is_active(&run_file));

        let (mut out_w, out_r) = tokio::io::duplex(64);
        let (mut err_w, err_r) = tokio::io::duplex(64);
        start(sink, out_r, err_r);
        use tokio::io::AsyncWriteExt;
        out_w.write_all(b"hello\nwor").await.unwrap();
        err_w.write_all(b"oops\n").await.unwrap();
        out_w.write_all(b"ld\nno newline").await.unwrap();
        drop((out_w, err_w));
        for _ in 0..200 {
            if !registry.is_active(&run_file) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            !registry.is_active(&run_file),
            "capture ends with its pipes"
        );

        // The two pipes' records interleave in no fixed order.
        let raw = std::fs::read_to_string(&logs.raw).unwrap();
        let pieces = ["hello\n", "world\n", "oops\n", "no newline"];
        assert!(pieces.iter().all(|p| raw.contains(p)), "{raw:?}");
        assert_eq!(raw.len(), pieces.concat().len(), "{raw:?}");
        let mut reader = LogReader::open(&run_file, LogOptions::default()).unwrap();
        let served = String::from_utf8(reader.read_more().unwrap()).unwrap();
        assert!(served.contains("hello\n") && served.contains("world\n"));
        let opts = LogOptions::from_query("stream=Stderr", Timestamp::now()).unwrap();
        let mut stderr_only = LogReader::open(&run_file, opts).unwrap();
        assert_eq!(stderr_only.read_more().unwrap(), b"oops\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
